"""The product service on the real broker and a real SQLite file.

product owns the titles, their stock and the waitlist: librarians reach it
by RPC, reservations reach it by events, and every change it makes to a
reservation's copy is announced as an event of its own.
"""
import time

import pytest
from kombu import Producer
from nameko.exceptions import RemoteError, RpcTimeout
from nameko.standalone.events import get_event_exchange
from nameko.testing.services import entrypoint_waiter, worker_factory

from common import events
from product.service import ProductService
from helpers import isbn13
from support import assert_envelope, event, handled, handler_queue

REQUESTED_QUEUE = handler_queue("reservation", "reservation_requested", "product", "on_reservation_requested")


SERVICE = "product"  # the service under test: what ``emitted`` (conftest) watches


@pytest.fixture
def product(start):
    return start(ProductService)


@pytest.fixture
def product_db(db, product):
    return db("product")


def register(rpc, copies=1, **extra):
    return rpc().product.register_book(isbn13(), extra.get("title", "Dune"), "F. Herbert", copies)


def request(reservation_id, book_id, customer="alice", correlation_id="corr-req"):
    return event("reservation_requested", correlation_id,
                 reservation_id=reservation_id, book_id=book_id, customer=customer)


# -- RPC ----------------------------------------------------------------------


def test_register_book_stores_the_title_and_announces_it_with_the_callers_correlation_id(
        product, rpc, emitted, product_db):
    book = rpc(correlation_id="test-123").product.register_book("0-441-17271-7", "Dune", "F. Herbert", 3)

    assert book == {"id": book["id"], "isbn": "9780441172719", "title": "Dune", "author": "F. Herbert", "stock": 3}
    row = product_db.one("SELECT * FROM titles WHERE id = :id", id=book["id"])
    assert (row["stock"], row["stocked"]) == (3, 3)

    registered = emitted.wait_for("book_registered")
    assert_envelope(registered, "book_registered", "test-123")
    assert registered["book_id"] == book["id"]
    assert (registered["title"], registered["isbn"], registered["stock"]) == ("Dune", "9780441172719", 3)
    assert emitted.headers(registered["event_id"])["nameko.correlation_id"] == "test-123"
    # The outbox row was published and marked at once, not left to the sweep
    # (which would wait 2 s): the relay marks within ``mark_every`` (0.5 s).
    deadline = time.time() + 1.5
    while product_db.one("SELECT published_at FROM outbox WHERE event_id = :e",
                         e=registered["event_id"])["published_at"] is None:
        assert time.time() < deadline, "the outbox row was not marked sent"
        time.sleep(0.05)


def test_add_stock_get_book_list_books_and_inventory(product, rpc, emitted):
    cluster = rpc(correlation_id="test-stock")
    book = cluster.product.register_book(isbn13(), "Dune", "F. Herbert", 1)
    others = [cluster.product.register_book(isbn13(), f"Book {n}", "A", 0) for n in range(2)]

    assert cluster.product.add_stock(book["id"], 2)["stock"] == 3
    assert cluster.product.get_book(book["id"])["stock"] == 3
    assert cluster.product.inventory(book["id"]) == {
        "book_id": book["id"], "stock": 3, "stocked": 3, "allocated": 0, "waiting": 0}
    restocked = emitted.wait_for("book_restocked")
    assert_envelope(restocked, "book_restocked", "test-stock")
    assert (restocked["book_id"], restocked["quantity"], restocked["stock"]) == (book["id"], 2, 3)

    first = cluster.product.list_books(limit=2)
    assert [b["id"] for b in first["items"]] == [book["id"], others[0]["id"]]
    assert first["next"] == others[0]["id"]
    rest = cluster.product.list_books(after_id=first["next"], limit=2)
    assert [b["id"] for b in rest["items"]] == [others[1]["id"]] and rest["next"] is None


@pytest.mark.parametrize("call, exc_type", [
    pytest.param(lambda p: p.get_book(999), "NotFound", id="get_book"),
    pytest.param(lambda p: p.add_stock(999, 1), "NotFound", id="add_stock"),
    pytest.param(lambda p: p.inventory(999), "NotFound", id="inventory"),
    pytest.param(lambda p: p.register_book(isbn13(), "Dune", "F. Herbert", -1), "BadRequest", id="negative-copies"),
    pytest.param(lambda p: p.register_book("978-0-00-000000-0", "Dune", "F. Herbert", 1), "BadRequest",
                 id="bad-check-digit"),
])
def test_business_errors_cross_rpc_by_name_and_change_nothing(product, rpc, product_db, emitted, call, exc_type):
    cluster = rpc()
    with pytest.raises(RemoteError) as error:
        call(cluster.product)
    assert error.value.exc_type == exc_type
    assert product_db.count("titles") == 0
    assert emitted.settle(0.2) == []


def test_a_second_title_with_the_same_isbn_is_refused_however_it_is_typed(product, rpc, product_db):
    cluster = rpc()
    first = cluster.product.register_book("978-0-441-17271-9", "Dune", "F. Herbert", 1)
    for typed in ("9780441172719", "0441172717", "0-441-17271-7", "978 0 441 17271 9"):
        with pytest.raises(RemoteError) as error:
            cluster.product.register_book(typed, "Dune again", "F. Herbert", 1)
        assert error.value.exc_type == "NotAllowed"
    assert product_db.count("titles") == 1
    assert cluster.product.get_book(first["id"])["title"] == "Dune"


def test_two_librarians_registering_one_isbn_at_once_make_one_title(product, rpc, product_db):
    """The unique index decides, not a look first: of simultaneous requests one wins, the others are 409."""
    cluster = rpc()
    isbn = isbn13()
    replies = [cluster.product.register_book.call_async(isbn, f"Twin {n}", "A", 1) for n in range(6)]
    outcomes = []
    for reply in replies:
        try:
            outcomes.append(reply.result()["isbn"])
        except RemoteError as error:
            outcomes.append(error.exc_type)
    assert sorted(outcomes) == sorted(["NotAllowed"] * 5 + [isbn])
    assert product_db.count("titles") == 1


def test_list_books_with_a_query_keeps_the_matching_titles_paged(product, rpc):
    cluster = rpc()
    dune = cluster.product.register_book("0-441-17271-7", "Dune", "Frank Herbert", 1)
    messiah = cluster.product.register_book(isbn13(), "Dune Messiah", "Frank Herbert", 1)
    cluster.product.register_book(isbn13(), "Solaris", "Stanisław Lem", 1)
    odd = cluster.product.register_book(isbn13(), "100% _pure_ fiction", "Someone", 1)

    def found(query, **page):
        return [book["id"] for book in cluster.product.list_books(query=query, **page)["items"]]

    assert found("dUNE") == [dune["id"], messiah["id"]]
    assert found("herbert") == [dune["id"], messiah["id"]]
    assert found("978-0-441") == [dune["id"]] and found("044117") == [dune["id"]]
    assert found("0-441-17271-7") == [dune["id"]]  # the ISBN-10 of the stored ISBN-13
    assert found("100%") == [odd["id"]] and found("_pure_") == [odd["id"]] and found("%") == [odd["id"]]
    assert found("zzz") == []
    assert len(found("STANISŁAW")) == 1 and len(found("ŁAW LEM")) == 1  # any letter, not only ASCII
    first = cluster.product.list_books(query="dune", limit=1)
    assert [b["id"] for b in first["items"]] == [dune["id"]] and first["next"] == dune["id"]
    assert found("dune", after_id=first["next"], limit=1) == [messiah["id"]]


def test_add_stock_of_zero_is_refused_and_nothing_is_stocked(product, rpc, product_db):
    book = register(rpc, copies=1)
    with pytest.raises(RemoteError) as error:
        rpc().product.add_stock(book["id"], 0)
    assert error.value.exc_type == "BadRequest"
    assert product_db.one("SELECT stock, stocked FROM titles")["stocked"] == 1


def test_health_answers_with_the_outbox_backlog(product, rpc):
    health = rpc().product.health()
    assert health["service"] == "product" and health["status"] == "ok"
    assert health["outbox_backlog"] == 0


def test_a_request_whose_caller_has_given_up_is_dropped_not_executed(product, rpc, product_db):
    # common.rpc: a request that reaches the service after the caller's
    # deadline is acked and dropped, so nothing is registered.
    late = rpc(timeout=1, deadline=time.time() - 1)
    with pytest.raises(RpcTimeout):
        late.product.register_book("978-1", "Too late", "A", 1)
    assert product_db.count("titles") == 0


# -- handling reservation events ---------------------------------------------


def test_a_requested_reservation_gets_a_free_copy(product, rpc, publish, emitted, product_db):
    book = register(rpc, copies=2)
    requested = request("r-1", book["id"], correlation_id="corr-r1")
    handled(product, publish, requested, "on_reservation_requested")

    allocated = emitted.wait_for("copy_allocated")
    assert_envelope(allocated, "copy_allocated", "corr-r1")  # propagated from the event it handled
    assert (allocated["reservation_id"], allocated["book_id"], allocated["customer"]) == ("r-1", book["id"], "alice")
    assert product_db.one("SELECT state FROM allocations WHERE reservation_id = 'r-1'")["state"] == "allocated"
    assert product_db.one("SELECT stock FROM titles")["stock"] == 1
    assert product_db.processed() == [{"event_id": requested["event_id"], "handler": "on_reservation_requested"}]


def test_no_free_copy_means_the_waitlist_served_first_come_first_served_by_add_stock(
        product, rpc, publish, emitted, product_db):
    book = register(rpc, copies=0)
    for n in (1, 2):
        handled(product, publish, request(f"r-{n}", book["id"], customer=f"c{n}"), "on_reservation_requested")
    joined = emitted.wait_for("waitlist_joined", count=2)
    assert [(e["reservation_id"], e["position"]) for e in joined] == [("r-1", 1), ("r-2", 2)]

    rpc(correlation_id="corr-restock").product.add_stock(book["id"], 1)

    allocated = emitted.wait_for("copy_allocated")
    assert allocated["reservation_id"] == "r-1"  # the oldest waiting reservation
    assert allocated["correlation_id"] == "corr-restock"
    states = {r["reservation_id"]: r["state"] for r in product_db.rows("SELECT * FROM allocations")}
    assert states == {"r-1": "allocated", "r-2": "waiting"}
    assert rpc().product.inventory(book["id"]) == {
        "book_id": book["id"], "stock": 0, "stocked": 1, "allocated": 1, "waiting": 1}


def test_a_reservation_of_an_unknown_title_is_refused(product, publish, emitted, product_db):
    handled(product, publish, request("r-1", 404), "on_reservation_requested")
    refused = emitted.wait_for("allocation_refused")
    assert refused["reservation_id"] == "r-1" and refused["reason"] == "no such title"
    assert product_db.one("SELECT state FROM allocations")["state"] == "refused"


def test_a_canceled_reservation_releases_its_copy_to_the_next_in_line(product, rpc, publish, emitted, product_db):
    book = register(rpc, copies=1)
    handled(product, publish, request("r-1", book["id"]), "on_reservation_requested")
    handled(product, publish, request("r-2", book["id"], customer="bob"), "on_reservation_requested")

    canceled = event("reservation_canceled", "corr-cancel", reservation_id="r-1", book_id=book["id"], customer="alice")
    handled(product, publish, canceled, "on_reservation_canceled")

    released = emitted.wait_for("copy_released")
    assert released["reservation_id"] == "r-1" and released["correlation_id"] == "corr-cancel"
    assert released["stock"] == 1  # back in stock, before the waitlist takes it
    emitted.wait_for("copy_allocated", reservation_id="r-2")
    states = {r["reservation_id"]: r["state"] for r in product_db.rows("SELECT * FROM allocations")}
    assert states == {"r-1": "released", "r-2": "allocated"}
    inventory = rpc().product.inventory(book["id"])
    assert inventory["stock"] + inventory["allocated"] == inventory["stocked"] == 1


def test_a_returned_book_goes_back_to_stock(product, rpc, publish, emitted, product_db):
    book = register(rpc, copies=1)
    handled(product, publish, request("r-1", book["id"]), "on_reservation_requested")
    returned = event("reservation_returned", reservation_id="r-1", book_id=book["id"], customer="alice")
    handled(product, publish, returned, "on_reservation_returned")

    assert emitted.wait_for("copy_released")["stock"] == 1
    assert product_db.one("SELECT stock FROM titles")["stock"] == 1


def test_a_cancel_that_overtakes_its_request_means_the_request_is_never_served(
        product, rpc, publish, emitted, product_db):
    book = register(rpc, copies=1)
    canceled = event("reservation_canceled", reservation_id="r-1", book_id=book["id"], customer="alice")
    handled(product, publish, canceled, "on_reservation_canceled")
    handled(product, publish, request("r-1", book["id"]), "on_reservation_requested")

    assert product_db.one("SELECT state FROM allocations")["state"] == "withdrawn"
    assert product_db.one("SELECT stock FROM titles")["stock"] == 1
    assert [e["event_type"] for e in emitted.settle(0.2)] == ["book_registered"]


# -- idempotency -----------------------------------------------------------------


def test_the_same_event_delivered_twice_allocates_once(product, rpc, publish, emitted, product_db):
    book = register(rpc, copies=2)
    twice = request("r-1", book["id"])
    handled(product, publish, twice, "on_reservation_requested")
    handled(product, publish, twice, "on_reservation_requested")

    assert product_db.processed() == [{"event_id": twice["event_id"], "handler": "on_reservation_requested"}]
    assert product_db.count("allocations") == 1
    assert product_db.one("SELECT stock FROM titles")["stock"] == 1
    assert len([e for e in emitted.settle(0.2) if e["event_type"] == "copy_allocated"]) == 1


def test_a_second_request_event_for_the_same_reservation_is_recognised(product, rpc, publish, emitted, product_db):
    # A republished event has a new event_id; the allocation row still knows.
    book = register(rpc, copies=2)
    handled(product, publish, request("r-1", book["id"]), "on_reservation_requested")
    handled(product, publish, request("r-1", book["id"]), "on_reservation_requested")

    assert product_db.count("processed_events") == 2
    assert product_db.one("SELECT stock FROM titles")["stock"] == 1
    assert len([e for e in emitted.settle(0.2) if e["event_type"] == "copy_allocated"]) == 1


def test_two_replicas_never_allocate_a_copy_twice(product, start, rpc, publish, emitted, product_db):
    start(ProductService)  # a second replica: same queues, same database
    book = register(rpc, copies=3)
    for n in range(8):
        publish("reservation", request(f"r-{n}", book["id"], customer=f"c{n}"))

    emitted.wait_for("waitlist_joined", count=5)
    allocated = emitted.wait_for("copy_allocated", count=3)
    assert len({e["reservation_id"] for e in allocated}) == 3
    assert product_db.count("processed_events") == 8  # each event handled once, by one replica
    inventory = rpc().product.inventory(book["id"])
    assert inventory == {"book_id": book["id"], "stock": 0, "stocked": 3, "allocated": 3, "waiting": 5}
    positions = sorted(e["position"] for e in emitted.of_type("waitlist_joined"))
    assert positions == [1, 2, 3, 4, 5]


# -- invalid events ---------------------------------------------------------------


@pytest.mark.parametrize("spoil", [
    pytest.param(lambda e: e.pop("reservation_id"), id="missing-field"),
    pytest.param(lambda e: e.update(book_id="one"), id="wrong-type"),
    pytest.param(lambda e: e.update(event_type="reservation_canceled"), id="type-not-routing-key"),
    pytest.param(lambda e: e.pop("event_id"), id="no-event-id"),
])
def test_an_invalid_event_is_dead_lettered_not_applied(product, rpc, publish, dead_letters, product_db, spoil):
    book = register(rpc, copies=1)
    bad = request("r-1", book["id"])
    spoil(bad)
    with entrypoint_waiter(product, "on_reservation_requested", timeout=5) as result:
        publish("reservation", bad, routing_key="reservation_requested")
    with pytest.raises(events.InvalidEvent):
        result.get()

    [parked] = dead_letters(REQUESTED_QUEUE)
    assert parked.payload == bad
    assert parked.headers["x-bookrental-error"].startswith("InvalidEvent")
    assert parked.headers["x-bookrental-retries"] == 0  # never retried
    assert product_db.count("allocations") == 0
    assert product_db.count("processed_events") == 0
    assert product_db.one("SELECT stock FROM titles")["stock"] == 1


def test_a_body_that_is_not_an_object_is_dead_lettered(product, publish, dead_letters, product_db):
    with entrypoint_waiter(product, "on_reservation_requested", timeout=5):
        publish("reservation", ["not", "an", "event"], routing_key="reservation_requested")
    [parked] = dead_letters(REQUESTED_QUEUE)
    assert parked.payload == ["not", "an", "event"]
    assert parked.headers["x-bookrental-error"].startswith("InvalidEvent")
    assert product_db.count("processed_events") == 0


@pytest.mark.parametrize("body, content_type", [
    (b"reservation_requested r-1", "text/plain"),  # a type the consumers do not accept
    (b'{"event_type": "reservation_', "application/json"),  # JSON that is cut off
])
def test_a_body_that_is_not_json_is_dead_lettered_not_dropped(product, config, amqp, dead_letters, body,
                                                               content_type):
    channel = amqp.channel()
    Producer(channel).publish(body, exchange=get_event_exchange("reservation", config),
                              routing_key="reservation_requested", content_type=content_type,
                              content_encoding="utf-8")
    [parked] = dead_letters(REQUESTED_QUEUE)
    assert parked.body == body.decode()  # as it came, for `make dlq` to show
    assert parked.headers["x-death"][0]["reason"] == "rejected"


# -- the outbox -------------------------------------------------------------------


def test_an_event_committed_but_never_published_is_published_when_the_service_comes_back(
        product, start, rpc, emitted, product_db):
    book = register(rpc, copies=1)
    first = emitted.wait_for("book_registered")
    product.stop()
    # As if the process had died between its commit and its publish.
    product_db.execute("UPDATE outbox SET published_at = NULL")

    start(ProductService)

    again = emitted.wait_for("book_registered", count=2)[1]
    assert again == first  # the same event, same id: handlers dedupe it
    assert again["book_id"] == book["id"]
    assert product_db.one("SELECT published_at FROM outbox")["published_at"] is not None


# -- worker_factory: the handler's guarantees, without a broker ---------------


def test_a_handler_validates_before_it_touches_the_store():
    service = worker_factory(ProductService)
    with pytest.raises(events.InvalidEvent):
        service.on_reservation_requested({"event_type": "reservation_requested"})
    service.store.transaction.assert_not_called()


def test_a_handler_skips_an_event_its_log_has_already_seen():
    service = worker_factory(ProductService)
    tx = service.store.transaction.return_value.__enter__.return_value
    tx.first_time.return_value = False
    service.on_reservation_requested(request("r-1", 1))
    tx.catalogue.allocation.assert_not_called()
    tx.emit.assert_not_called()
