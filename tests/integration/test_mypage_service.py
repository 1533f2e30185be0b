"""The mypage service on the real broker and a real SQLite file.

mypage is a read model built only from events (titles from product, steps
from reservation and delivery), read by RPC, and announces each change as
``mypage_changed`` for live pages. Events come late, twice, out of order,
or while it is down; the view only moves forward and misses nothing.
"""
import time

import pytest
from nameko.rpc import RpcProxy
from nameko.testing.services import entrypoint_waiter, worker_factory

from common import events
from common.rpc import ServiceRpc
from mypage.domain import ReservationView
from mypage.service import MyPageService
from support import assert_envelope, event, handled, handler_queue

SERVICE = "mypage"  # the service under test: what ``emitted`` (conftest) watches


@pytest.fixture
def mypage(start):
    return start(MyPageService)


@pytest.fixture
def mypage_db(db, mypage):
    return db("mypage")


def step(event_type, reservation_id="r-1", customer="alice", book_id=7, correlation_id=None):
    fields = {"reservation_id": reservation_id, "book_id": book_id, "customer": customer}
    if event_type.startswith("delivery_"):
        fields.update(delivery_id="d-1", status=event_type.split("_", 1)[1])
    return event(event_type, correlation_id or f"corr-{event_type}", **fields)


def page(rpc, customer="alice"):
    return rpc().mypage.get(customer)


def test_a_reservation_appears_with_its_title_and_the_change_is_announced(mypage, publish, rpc, emitted, mypage_db):
    handled(mypage, publish, event("book_registered", book_id=7, isbn="978-1", title="Dune", author="F. Herbert",
                                  stock=1))
    requested = handled(mypage, publish, step("reservation_requested", correlation_id="corr-42"))

    assert mypage_db.one("SELECT title FROM titles WHERE book_id = 7")["title"] == "Dune"
    assert page(rpc) == {"customer": "alice", "next": None, "reservations": [{
        "reservation_id": "r-1", "book_id": 7, "title": "Dune", "status": "requested", "delivery_status": None,
        "updated_at": requested["occurred_at"], "queue_position": None, "due_at": None, "overdue": False,
        "history": [{"status": "requested", "at": requested["occurred_at"]}]}]}

    changed = emitted.wait_for("mypage_changed")
    assert_envelope(changed, "mypage_changed", "corr-42")  # the correlation id of what caused it
    assert (changed["reservation_id"], changed["customer"], changed["status"], changed["delivery_status"]) == (
        "r-1", "alice", "requested", None)


def test_the_whole_story_builds_the_row_and_its_history(mypage, publish, rpc, emitted, mypage_db):
    story = ["reservation_requested", "reservation_confirmed", "delivery_created", "reservation_shipped",
             "delivery_shipped", "reservation_delivered", "delivery_delivered", "reservation_returned"]
    sent = [handled(mypage, publish, step(kind)) for kind in story]

    [row] = page(rpc)["reservations"]
    assert (row["status"], row["delivery_status"]) == ("returned", "delivered")
    assert [h["status"] for h in row["history"]] == ["requested", "confirmed", "shipped", "delivered", "returned"]
    assert row["updated_at"] == sent[-1]["occurred_at"]

    changes = emitted.wait_for("mypage_changed", count=len(story))
    assert [c["correlation_id"] for c in changes] == [f"corr-{kind}" for kind in story]
    assert [(c["status"], c["delivery_status"]) for c in changes][-2:] == [
        ("delivered", "delivered"), ("returned", "delivered")]
    assert mypage_db.count("processed_events") == len(story)


def test_a_page_shows_only_its_customers_reservations(mypage, publish, rpc):
    handled(mypage, publish, step("reservation_requested", "r-a", customer="alice"))
    handled(mypage, publish, step("reservation_requested", "r-b", customer="bob"))
    assert [r["reservation_id"] for r in page(rpc, "alice")["reservations"]] == ["r-a"]
    assert [r["reservation_id"] for r in page(rpc, "bob")["reservations"]] == ["r-b"]
    assert page(rpc, "carol") == {"customer": "carol", "next": None, "reservations": []}


def test_events_out_of_order_only_move_the_view_forward(mypage, publish, rpc):
    requested, confirmed, shipped = (step(kind) for kind in (
        "reservation_requested", "reservation_confirmed", "reservation_shipped"))
    delivery_shipped, delivery_created = step("delivery_shipped"), step("delivery_created")
    for sent in (shipped, delivery_shipped, confirmed, delivery_created, requested):
        handled(mypage, publish, sent)

    [row] = page(rpc)["reservations"]
    assert (row["status"], row["delivery_status"]) == ("shipped", "shipped")
    # Each step has its place in the history, by when it happened.
    assert [h["status"] for h in row["history"]] == ["requested", "confirmed", "shipped"]


def test_a_canceled_reservation_stays_canceled(mypage, publish, rpc):
    for kind in ("reservation_requested", "reservation_canceled", "delivery_canceled", "reservation_confirmed",
                 "delivery_created"):
        handled(mypage, publish, step(kind))
    [row] = page(rpc)["reservations"]
    assert (row["status"], row["delivery_status"]) == ("canceled", "canceled")


def test_a_delivery_event_first_makes_a_row_without_a_status_yet(mypage, publish, rpc, emitted):
    handled(mypage, publish, step("delivery_created"))
    [row] = page(rpc)["reservations"]
    assert (row["status"], row["delivery_status"], row["history"]) == (None, "preparing", [])
    changed = emitted.wait_for("mypage_changed")
    assert (changed["status"], changed["delivery_status"]) == (None, "preparing")


def test_the_same_event_twice_changes_the_page_once(mypage, publish, rpc, emitted, mypage_db):
    twice = step("reservation_requested")
    handled(mypage, publish, twice)
    handled(mypage, publish, twice)

    [row] = page(rpc)["reservations"]
    assert len(row["history"]) == 1
    assert mypage_db.processed() == [{"event_id": twice["event_id"], "handler": "on_reservation_requested"}]
    assert len(emitted.settle(0.2)) == 1


def test_an_invalid_event_is_dead_lettered_not_applied(mypage, publish, rpc, emitted, mypage_db, dead_letters):
    bad = step("reservation_requested")
    bad["occurred_at"] = "yesterday"
    with entrypoint_waiter(mypage, "on_reservation_requested", timeout=5):
        publish("reservation", bad)

    [parked] = dead_letters(handler_queue("reservation", "reservation_requested", "mypage", "on_reservation_requested"))
    assert parked.payload == bad
    assert parked.headers["x-bookrental-error"].startswith("InvalidEvent")
    assert mypage_db.count("reservation_views") == 0
    assert mypage_db.count("processed_events") == 0
    assert page(rpc)["reservations"] == []
    assert emitted.settle(0.2) == []


def test_mypage_catches_up_on_what_it_missed_while_down(start, publish, rpc, db):
    first = start(MyPageService)  # its queues exist from now on
    first.stop()

    story = [step(kind) for kind in ("reservation_requested", "reservation_confirmed", "delivery_created")]
    for sent in story:
        publish(events.TYPES[sent["event_type"]].producer, sent)
    time.sleep(0.2)

    start(MyPageService)
    deadline = time.time() + 5
    while db("mypage").count("processed_events") < len(story) and time.time() < deadline:
        time.sleep(0.05)
    [row] = page(rpc)["reservations"]
    assert (row["status"], row["delivery_status"]) == ("confirmed", "preparing")


def test_mypage_never_calls_another_service(mypage):
    assert not [dependency for dependency in mypage.dependencies if isinstance(dependency, (RpcProxy, ServiceRpc))]
    assert {entrypoint.method_name for entrypoint in mypage.entrypoints} >= {
        f"on_{kind}" for kind in events.TYPES if kind.startswith(("reservation_", "delivery_"))}


# -- worker_factory: a change is announced only when the view changes --------------


def test_mypage_changed_only_when_the_view_changes():
    service = worker_factory(MyPageService)
    tx = service.store.transaction.return_value.__enter__.return_value
    view = ReservationView("r-1", "alice", 7)
    tx.views.get.return_value = view  # the view store's port (mypage.views)

    requested, confirmed = step("reservation_requested"), step("reservation_confirmed")

    service.on_reservation_confirmed(confirmed)
    assert tx.emit.call_count == 1
    service.on_reservation_requested(requested)  # late: a place in the history, the status stays
    assert tx.emit.call_count == 2
    service.on_reservation_confirmed(step("reservation_confirmed"))  # republished: nothing new
    assert tx.emit.call_count == 2

    assert view.status == "confirmed"
    assert [h["status"] for h in view.history] == ["requested", "confirmed"]
