"""The delivery service on the real broker and a real SQLite file.

delivery makes one delivery per confirmed reservation (from reservation's
events), lets couriers ship and deliver it by RPC, takes the synchronous
cancel from reservation by RPC, and announces every step as an event. It
never calls reservation: nothing here runs one, and couriers still work.
"""
import pytest
from nameko.exceptions import RemoteError
from nameko.testing.services import entrypoint_waiter, worker_factory

from common import handlers
from delivery.domain import Delivery
from delivery.service import DeliveryService
from support import assert_envelope, event, handled, handler_queue

CONFIRMED_QUEUE = handler_queue("reservation", "reservation_confirmed", "delivery", "on_reservation_confirmed")


SERVICE = "delivery"  # the service under test: what ``emitted`` (conftest) watches


@pytest.fixture
def delivery(start):
    return start(DeliveryService)


@pytest.fixture
def delivery_db(db, delivery):
    return db("delivery")


def reservation_event(event_type, reservation_id="r-1", correlation_id="corr-res", customer="alice", book_id=7):
    return event(event_type, correlation_id, reservation_id=reservation_id, book_id=book_id, customer=customer)


def confirmed(container, publish, reservation_id="r-1", **kwargs):
    sent = reservation_event("reservation_confirmed", reservation_id, **kwargs)
    handled(container, publish, sent, "on_reservation_confirmed")
    return sent


def only_delivery(delivery_db):
    return delivery_db.one("SELECT id, reservation_id, book_id, customer, status FROM deliveries")


# -- a confirmed reservation gets a delivery ----------------------------------


def test_a_delivery_goes_to_the_address_its_confirmation_carries(delivery, publish, rpc, delivery_db):
    sent = {**reservation_event("reservation_confirmed", "r-1"), "address": "12 Reading Lane\nBooktown"}
    handled(delivery, publish, sent, "on_reservation_confirmed")
    handled(delivery, publish, reservation_event("reservation_confirmed", "r-2"), "on_reservation_confirmed")

    by_reservation = {d["reservation_id"]: d for d in rpc().delivery.list()["items"]}
    assert by_reservation["r-1"]["address"] == "12 Reading Lane\nBooktown"
    assert by_reservation["r-2"]["address"] is None  # a confirmation from before addresses: none known


def test_a_confirmed_reservation_gets_a_delivery_in_preparation(delivery, publish, emitted, delivery_db):
    confirmed(delivery, publish, correlation_id="corr-confirm")

    row = only_delivery(delivery_db)
    assert (row["reservation_id"], row["book_id"], row["customer"], row["status"]) == ("r-1", 7, "alice", "preparing")
    created = emitted.wait_for("delivery_created")
    assert_envelope(created, "delivery_created", "corr-confirm")
    assert (created["delivery_id"], created["reservation_id"], created["status"]) == (row["id"], "r-1", "preparing")
    assert created["book_id"] == 7 and created["customer"] == "alice"


def test_the_same_confirmation_twice_makes_one_delivery(delivery, publish, emitted, delivery_db):
    twice = reservation_event("reservation_confirmed")
    handled(delivery, publish, twice, "on_reservation_confirmed")
    handled(delivery, publish, twice, "on_reservation_confirmed")
    confirmed(delivery, publish)  # and a republished one, with a new event id

    assert delivery_db.count("deliveries") == 1
    assert delivery_db.processed(twice["event_id"]) == [
        {"event_id": twice["event_id"], "handler": "on_reservation_confirmed"}]
    assert delivery_db.count("processed_events") == 2
    assert len([e for e in emitted.settle(0.2) if e["event_type"] == "delivery_created"]) == 1


def test_two_replicas_handle_each_confirmation_once(start, delivery, publish, emitted, delivery_db):
    start(DeliveryService)  # a second replica, same queues, same database
    sent = [reservation_event("reservation_confirmed", f"r-{n}") for n in range(6)]
    for one in sent:
        publish("reservation", one)

    created = emitted.wait_for("delivery_created", count=6)
    assert sorted(e["reservation_id"] for e in created) == [f"r-{n}" for n in range(6)]
    assert len(emitted.settle(0.3)) == 6
    assert delivery_db.count("deliveries") == 6
    assert delivery_db.count("processed_events") == 6


# -- couriers, by RPC ------------------------------------------------------------


def test_a_courier_ships_and_delivers(delivery, publish, rpc, emitted, delivery_db):
    confirmed(delivery, publish)
    delivery_id = only_delivery(delivery_db)["id"]
    courier = rpc(correlation_id="test-courier")

    assert courier.delivery.ship(delivery_id)["status"] == "shipped"
    assert only_delivery(delivery_db)["status"] == "shipped"
    assert courier.delivery.deliver(delivery_id)["status"] == "delivered"
    assert only_delivery(delivery_db)["status"] == "delivered"

    shipped, delivered = emitted.wait_for("delivery_shipped"), emitted.wait_for("delivery_delivered")
    for sent, kind, state in ((shipped, "delivery_shipped", "shipped"), (delivered, "delivery_delivered", "delivered")):
        assert_envelope(sent, kind, "test-courier")
        assert (sent["delivery_id"], sent["reservation_id"], sent["status"]) == (delivery_id, "r-1", state)


@pytest.mark.parametrize("steps, exc_type", [
    (["deliver"], "NotAllowed"),  # not shipped yet
    (["ship", "ship"], "NotAllowed"),
    (["ship", "deliver", "ship"], "NotAllowed"),
])
def test_a_step_from_the_wrong_state_is_refused(delivery, publish, rpc, emitted, delivery_db, steps, exc_type):
    confirmed(delivery, publish)
    delivery_id = only_delivery(delivery_db)["id"]
    courier = rpc()
    for name in steps[:-1]:
        getattr(courier.delivery, name)(delivery_id)
    before = only_delivery(delivery_db)["status"]
    with pytest.raises(RemoteError) as error:
        getattr(courier.delivery, steps[-1])(delivery_id)
    assert error.value.exc_type == exc_type
    assert only_delivery(delivery_db)["status"] == before
    assert len(emitted.settle(0.2)) == len(steps)  # created + the steps that worked


def test_an_unknown_delivery_is_not_found(delivery, rpc):
    courier = rpc()
    for call in (courier.delivery.get, courier.delivery.ship, courier.delivery.deliver):
        with pytest.raises(RemoteError) as error:
            call("no-such-delivery")
        assert error.value.exc_type == "NotFound"


def test_list_pages_oldest_first_and_filters_by_status(delivery, publish, rpc, delivery_db):
    for n in range(3):
        confirmed(delivery, publish, f"r-{n}")
    cluster = rpc()
    first_id = delivery_db.one("SELECT id FROM deliveries WHERE reservation_id = 'r-0'")["id"]
    cluster.delivery.ship(first_id)

    page = cluster.delivery.list(limit=2)
    assert [d["reservation_id"] for d in page["items"]] == ["r-0", "r-1"]
    rest = cluster.delivery.list(after_seq=page["next"], limit=2)
    assert [d["reservation_id"] for d in rest["items"]] == ["r-2"] and rest["next"] is None
    assert [d["reservation_id"] for d in cluster.delivery.list(status="preparing")["items"]] == ["r-1", "r-2"]
    assert [d["id"] for d in cluster.delivery.list(status="shipped")["items"]] == [first_id]
    assert cluster.delivery.get(first_id) == {"id": first_id, "reservation_id": "r-0", "book_id": 7,
                                              "customer": "alice", "address": None, "status": "shipped"}


# -- canceling --------------------------------------------------------------------


def test_the_synchronous_cancel_cancels_the_delivery_once(delivery, publish, rpc, emitted, delivery_db):
    confirmed(delivery, publish)
    cluster = rpc(correlation_id="test-cancel")

    assert cluster.delivery.cancel("r-1", 7, "alice")["status"] == "canceled"
    assert cluster.delivery.cancel("r-1", 7, "alice")["status"] == "canceled"  # twice is fine

    assert only_delivery(delivery_db)["status"] == "canceled"
    [canceled] = [e for e in emitted.settle(0.2) if e["event_type"] == "delivery_canceled"]
    assert_envelope(canceled, "delivery_canceled", "test-cancel")
    assert canceled["reservation_id"] == "r-1" and canceled["status"] == "canceled"


def test_a_cancel_that_overtakes_the_confirmation_leaves_a_canceled_delivery(
        delivery, publish, rpc, emitted, delivery_db):
    rpc().delivery.cancel("r-1", 7, "alice")
    assert only_delivery(delivery_db)["status"] == "canceled"

    confirmed(delivery, publish)  # the confirmation, late

    assert only_delivery(delivery_db)["status"] == "canceled"
    assert [e["event_type"] for e in emitted.settle(0.2)] == ["delivery_canceled"]


def test_a_delivered_book_cannot_be_canceled(delivery, publish, rpc, delivery_db):
    confirmed(delivery, publish)
    courier = rpc()
    delivery_id = only_delivery(delivery_db)["id"]
    courier.delivery.ship(delivery_id)
    courier.delivery.deliver(delivery_id)

    with pytest.raises(RemoteError) as error:
        courier.delivery.cancel("r-1", 7, "alice")
    assert error.value.exc_type == "NotAllowed"
    assert only_delivery(delivery_db)["status"] == "delivered"


def test_a_canceled_reservation_event_cancels_a_delivery_not_yet_delivered(
        delivery, publish, rpc, emitted, delivery_db, dead_letters):
    confirmed(delivery, publish, "r-1")
    confirmed(delivery, publish, "r-2")
    courier = rpc()
    delivered_id = delivery_db.one("SELECT id FROM deliveries WHERE reservation_id = 'r-2'")["id"]
    courier.delivery.ship(delivered_id)
    courier.delivery.deliver(delivered_id)

    for rid in ("r-1", "r-2", "r-unknown"):
        handled(delivery, publish, reservation_event("reservation_canceled", rid, correlation_id=f"corr-{rid}"),
               "on_reservation_canceled")

    statuses = {r["reservation_id"]: r["status"] for r in delivery_db.rows("SELECT * FROM deliveries")}
    assert statuses == {"r-1": "canceled", "r-2": "delivered"}
    [canceled] = [e for e in emitted.settle(0.2) if e["event_type"] == "delivery_canceled"]
    assert canceled["reservation_id"] == "r-1" and canceled["correlation_id"] == "corr-r-1"
    assert delivery_db.count("processed_events", "handler = 'on_reservation_canceled'") == 3
    queue = handler_queue("reservation", "reservation_canceled", "delivery", "on_reservation_canceled")
    assert dead_letters(queue, timeout=0.2) == []


# -- invalid and failing events -------------------------------------------------------


def test_an_invalid_event_is_dead_lettered_not_applied(delivery, publish, emitted, delivery_db, dead_letters):
    bad = reservation_event("reservation_confirmed")
    bad["book_id"] = "seven"
    with entrypoint_waiter(delivery, "on_reservation_confirmed", timeout=5):
        publish("reservation", bad)

    [parked] = dead_letters(CONFIRMED_QUEUE)
    assert parked.payload == bad
    assert parked.headers["x-bookrental-error"].startswith("InvalidEvent")
    assert parked.headers["x-bookrental-retries"] == 0
    assert delivery_db.count("deliveries") == 0
    assert delivery_db.count("processed_events") == 0
    assert emitted.settle(0.2) == []


def test_an_event_that_keeps_failing_is_retried_a_bounded_number_of_times_then_parked(
        delivery, publish, emitted, delivery_db, dead_letters, monkeypatch):
    monkeypatch.setattr(handlers, "BACKOFF", 0.01)
    delivery_db.execute("CREATE TRIGGER broken BEFORE INSERT ON deliveries "
                        "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
    attempts = []
    with entrypoint_waiter(delivery, "on_reservation_confirmed", timeout=10,
                           callback=lambda ctx, result, exc_info: attempts.append(exc_info) or
                           len(attempts) > handlers.MAX_RETRIES):
        sent = publish("reservation", reservation_event("reservation_confirmed"))

    assert len(attempts) == handlers.MAX_RETRIES + 1 and all(attempts)
    [parked] = dead_letters(CONFIRMED_QUEUE)
    assert parked.payload == sent
    assert parked.headers["x-bookrental-retries"] == handlers.MAX_RETRIES
    assert "disk on fire" in parked.headers["x-bookrental-error"]
    assert delivery_db.count("deliveries") == 0
    assert delivery_db.count("processed_events") == 0  # rolled back with the effect
    assert emitted.settle(0.2) == []


# -- worker_factory --------------------------------------------------------------------


def test_a_cancel_event_for_a_delivered_book_is_not_an_error():
    # Were it an error, the event would be retried and dead-lettered.
    service = worker_factory(DeliveryService)
    delivered = Delivery("d-1", "r-1", 7, "alice", "delivered", "2024-01-01T00:00:00+00:00")
    tx = service.store.transaction.return_value.__enter__.return_value
    tx.session.scalars.return_value.first.return_value = delivered

    service.on_reservation_canceled(reservation_event("reservation_canceled"))

    assert delivered.status == "delivered"
    tx.emit.assert_not_called()
