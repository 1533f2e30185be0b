"""The reservation service on the real broker and a real SQLite file.

reservation is the core: it takes reservations by RPC, follows them through
product's and delivery's events, announces every step as an event, and
cancels synchronously with delivery (SPEC §1.5): when ``cancel`` returns the
delivery is canceled; when delivery cannot be reached, ``Unavailable`` comes
back within ``CANCEL_TIMEOUT`` and nothing has changed.
"""
import time
from unittest import mock

import eventlet
import pytest
from kombu import Queue
from nameko.exceptions import RemoteError
from nameko.extensions import DependencyProvider
from nameko.rpc import get_rpc_exchange, rpc as nameko_rpc
from nameko.testing.services import entrypoint_waiter, worker_factory

from common import events
from common.errors import NotAllowed
from delivery.service import DeliveryService
from reservation.domain import Reservation
from reservation.service import ReservationService
from support import CANCEL_TIMEOUT, CIRCUIT_FAIL_MAX, CIRCUIT_RESET_TIMEOUT, assert_envelope, event, handled, handler_queue


class ContextValue(DependencyProvider):
    """The value of one context-data key in the current worker."""

    def __init__(self, key):
        self.key = key

    def get_dependency(self, worker_ctx):
        return worker_ctx.context_data.get(self.key)


def fake_delivery(delay=0.0, error=None):
    """A stand-in for the delivery service: only its ``cancel`` RPC, which
    records each call (and the correlation id it carried)."""
    calls = []

    class FakeDelivery:
        name = "delivery"
        correlation_id = ContextValue("correlation_id")

        @nameko_rpc
        def cancel(self, reservation_id, book_id, customer):
            calls.append({"reservation_id": reservation_id, "book_id": book_id, "customer": customer,
                          "correlation_id": self.correlation_id})
            if delay:
                eventlet.sleep(delay)
            if error is not None:
                raise error
            return {"id": "d-1", "reservation_id": reservation_id, "book_id": book_id, "customer": customer,
                    "status": "canceled"}

    FakeDelivery.calls = calls
    return FakeDelivery


SERVICE = "reservation"  # the service under test: what ``emitted`` (conftest) watches


@pytest.fixture
def reservation(start):
    return start(ReservationService)


@pytest.fixture
def reservation_db(db, reservation):
    return db("reservation")


@pytest.fixture
def delivery_down(amqp, config):
    """delivery has run here before but is stopped now: its RPC queue is
    there, nobody consumes it."""
    channel = amqp.channel()
    queue = Queue("rpc-delivery", exchange=get_rpc_exchange(config), routing_key="delivery.*", durable=True)(channel)
    queue.declare()
    yield queue
    channel.close()


def create(rpc, book_id=7, customer="alice", **kwargs):
    return rpc().reservation.create(book_id, customer, **kwargs)


def step(container, publish, event_type, reservation_, correlation_id="corr-step"):
    """Publish ``event_type`` about the reservation, as its producer does, and wait until handled."""
    sent = event(event_type, correlation_id, reservation_id=reservation_["id"], book_id=reservation_["book_id"],
                 customer=reservation_["customer"], **_extra(event_type, reservation_))
    return handled(container, publish, sent)


def _extra(event_type, reservation_):
    if event_type.startswith("delivery_"):
        return {"delivery_id": "d-1", "status": event_type.split("_", 1)[1]}
    if event_type == "waitlist_joined":
        return {"position": 1}
    if event_type == "allocation_refused":
        return {"reason": "no such title"}
    return {}


def confirm(container, publish, reservation_, correlation_id="corr-allocated"):
    return step(container, publish, "copy_allocated", reservation_, correlation_id)


def status(reservation_db, reservation_id):
    return reservation_db.one("SELECT status FROM reservations WHERE id = :id", id=reservation_id)["status"]


# -- RPC ----------------------------------------------------------------------


def test_create_stores_a_requested_reservation_and_announces_it(reservation, rpc, emitted, reservation_db):
    created = rpc(correlation_id="test-123").reservation.create(7, "alice")

    assert created["status"] == "requested" and created["book_id"] == 7 and created["customer"] == "alice"
    row = reservation_db.one("SELECT * FROM reservations")
    assert (row["id"], row["status"], row["book_id"], row["customer"]) == (created["id"], "requested", 7, "alice")

    requested = emitted.wait_for("reservation_requested")
    assert_envelope(requested, "reservation_requested", "test-123")
    assert (requested["reservation_id"], requested["book_id"], requested["customer"]) == (created["id"], 7, "alice")
    assert emitted.headers(requested["event_id"])["nameko.correlation_id"] == "test-123"


def test_get_shows_a_reservation_only_to_its_customer(reservation, rpc):
    created = create(rpc)
    cluster = rpc()
    assert cluster.reservation.get(created["id"]) == created
    assert cluster.reservation.get(created["id"], "alice") == created
    for args in ((created["id"], "bob"), ("no-such-id",)):
        with pytest.raises(RemoteError) as error:
            cluster.reservation.get(*args)
        assert error.value.exc_type == "NotFound"


def test_an_idempotency_key_creates_one_reservation(reservation, rpc, emitted, reservation_db):
    first = create(rpc, idempotency_key="key-1")
    again = create(rpc, idempotency_key="key-1")
    assert again == first
    assert create(rpc, customer="bob", idempotency_key="key-1")["id"] != first["id"]  # keys are per customer
    with pytest.raises(RemoteError) as error:
        create(rpc, book_id=8, idempotency_key="key-1")
    assert error.value.exc_type == "NotAllowed"

    assert reservation_db.count("reservations") == 2
    assert len([e for e in emitted.settle(0.2) if e["event_type"] == "reservation_requested"]) == 2


def test_concurrent_creates_with_one_idempotency_key_make_one_reservation(reservation, rpc, emitted, reservation_db):
    cluster = rpc()
    calls = [cluster.reservation.create.call_async(7, "alice", idempotency_key="same") for _ in range(5)]
    assert len({call.result()["id"] for call in calls}) == 1
    assert reservation_db.count("reservations") == 1
    assert len([e for e in emitted.settle(0.2) if e["event_type"] == "reservation_requested"]) == 1


# -- following the other services' events -------------------------------------


def test_a_reservation_follows_allocation_and_delivery_to_its_return(
        reservation, rpc, publish, emitted, reservation_db):
    created = create(rpc)
    rid = created["id"]

    confirm(reservation, publish, created, correlation_id="corr-allocated")
    assert status(reservation_db, rid) == "confirmed"
    confirmed = emitted.wait_for("reservation_confirmed")
    assert_envelope(confirmed, "reservation_confirmed", "corr-allocated")  # from the event it handled
    assert (confirmed["reservation_id"], confirmed["book_id"], confirmed["customer"]) == (rid, 7, "alice")

    step(reservation, publish, "delivery_shipped", created, "corr-ship")
    assert status(reservation_db, rid) == "shipped"
    assert emitted.wait_for("reservation_shipped")["correlation_id"] == "corr-ship"

    step(reservation, publish, "delivery_delivered", created, "corr-deliver")
    assert status(reservation_db, rid) == "delivered"
    assert emitted.wait_for("reservation_delivered")["correlation_id"] == "corr-deliver"

    returned = rpc(correlation_id="test-return").reservation.return_book(rid, "alice")
    assert returned["status"] == "returned"
    assert status(reservation_db, rid) == "returned"
    assert_envelope(emitted.wait_for("reservation_returned"), "reservation_returned", "test-return")


def test_a_waitlisted_reservation_is_confirmed_when_a_copy_comes(reservation, rpc, publish, emitted, reservation_db):
    created = create(rpc)
    step(reservation, publish, "waitlist_joined", created)
    assert status(reservation_db, created["id"]) == "waitlisted"
    emitted.wait_for("reservation_waitlisted")
    confirm(reservation, publish, created)
    assert status(reservation_db, created["id"]) == "confirmed"


def test_a_refused_allocation_cancels_the_reservation(reservation, rpc, publish, emitted, reservation_db):
    created = create(rpc)
    step(reservation, publish, "allocation_refused", created)
    assert status(reservation_db, created["id"]) == "canceled"
    emitted.wait_for("reservation_canceled")


def test_a_late_event_never_moves_a_reservation_back(reservation, rpc, publish, emitted, reservation_db):
    created = create(rpc)
    confirm(reservation, publish, created)
    step(reservation, publish, "delivery_shipped", created)
    step(reservation, publish, "waitlist_joined", created)
    confirm(reservation, publish, created)  # a second copy_allocated (another event id)

    assert status(reservation_db, created["id"]) == "shipped"
    kinds = [e["event_type"] for e in emitted.settle(0.2)]
    assert kinds == ["reservation_requested", "reservation_confirmed", "reservation_shipped"]


def test_return_is_refused_unless_delivered(reservation, rpc, reservation_db, emitted):
    created = create(rpc)
    with pytest.raises(RemoteError) as error:
        rpc().reservation.return_book(created["id"], "alice")
    assert error.value.exc_type == "NotAllowed"
    assert status(reservation_db, created["id"]) == "requested"
    assert [e["event_type"] for e in emitted.settle(0.2)] == ["reservation_requested"]


def test_an_event_about_an_unknown_reservation_is_consumed_and_ignored(
        reservation, publish, emitted, reservation_db, dead_letters):
    ghost = {"id": "ghost", "book_id": 1, "customer": "alice"}
    sent = confirm(reservation, publish, ghost)
    assert reservation_db.count("reservations") == 0
    assert reservation_db.processed(sent["event_id"]) == [{"event_id": sent["event_id"], "handler": "on_copy_allocated"}]
    assert emitted.settle(0.2) == []
    assert dead_letters(handler_queue("product", "copy_allocated", "reservation", "on_copy_allocated"),
                        timeout=0.2) == []


# -- the synchronous cancel -------------------------------------------------------


def test_cancel_before_allocation_needs_no_delivery_and_is_idempotent(
        reservation, start, rpc, emitted, reservation_db):
    delivery = fake_delivery()
    start(delivery)
    created = create(rpc)

    canceled = rpc(correlation_id="test-cancel").reservation.cancel(created["id"], "alice")
    assert canceled["status"] == "canceled"
    assert rpc().reservation.cancel(created["id"], "alice")["status"] == "canceled"  # again: no error

    assert delivery.calls == []  # nothing to cancel there yet
    assert status(reservation_db, created["id"]) == "canceled"
    [announced] = [e for e in emitted.settle(0.2) if e["event_type"] == "reservation_canceled"]
    assert_envelope(announced, "reservation_canceled", "test-cancel")


def test_cancel_of_a_confirmed_reservation_cancels_its_delivery_first(
        reservation, start, rpc, publish, emitted, reservation_db):
    delivery = fake_delivery()
    start(delivery)
    created = create(rpc)
    confirm(reservation, publish, created)

    canceled = rpc(correlation_id="test-cancel").reservation.cancel(created["id"], "alice")

    assert canceled["status"] == "canceled"
    assert delivery.calls == [{"reservation_id": created["id"], "book_id": 7, "customer": "alice",
                               "correlation_id": "test-cancel"}]
    assert status(reservation_db, created["id"]) == "canceled"
    assert_envelope(emitted.wait_for("reservation_canceled"), "reservation_canceled", "test-cancel")


def test_cancel_with_the_real_delivery_service(reservation, start, rpc, publish, db, event_log):
    delivery = start(DeliveryService)
    deliveries = event_log("delivery")
    created = create(rpc)
    # copy_allocated -> reservation_confirmed (real event) -> delivery prepares one.
    with entrypoint_waiter(delivery, "on_reservation_confirmed", timeout=5):
        confirm(reservation, publish, created)
    delivery_db = db("delivery")
    assert delivery_db.one("SELECT status FROM deliveries")["status"] == "preparing"

    rpc(correlation_id="test-cancel").reservation.cancel(created["id"], "alice")

    # Synchronous: canceled in delivery's database by the time cancel returned.
    row = delivery_db.one("SELECT reservation_id, status FROM deliveries")
    assert row == {"reservation_id": created["id"], "status": "canceled"}
    assert deliveries.wait_for("delivery_canceled")["correlation_id"] == "test-cancel"


def test_cancel_with_no_delivery_service_is_unavailable_and_changes_nothing(
        reservation, rpc, publish, emitted, reservation_db):
    created = create(rpc)
    confirm(reservation, publish, created)

    began = time.time()
    with pytest.raises(RemoteError) as error:
        rpc().reservation.cancel(created["id"], "alice")
    assert error.value.exc_type == "Unavailable"
    assert time.time() - began < CANCEL_TIMEOUT + 0.5

    assert status(reservation_db, created["id"]) == "confirmed"
    assert "reservation_canceled" not in [e["event_type"] for e in emitted.settle(0.2)]


def test_cancel_while_delivery_is_stopped_gives_up_after_cancel_timeout_and_the_circuit_opens_then_recovers(
        reservation, start, rpc, publish, emitted, reservation_db, delivery_down):
    created = create(rpc)
    confirm(reservation, publish, created)
    cluster = rpc(timeout=10)

    for _ in range(CIRCUIT_FAIL_MAX):
        began = time.time()
        with pytest.raises(RemoteError) as error:
            cluster.reservation.cancel(created["id"], "alice")
        took = time.time() - began
        assert error.value.exc_type == "Unavailable"
        assert CANCEL_TIMEOUT * 0.9 <= took < CANCEL_TIMEOUT + 0.75, took
    opened = time.time()

    # The circuit is open now: the next cancel fails at once.
    with pytest.raises(RemoteError) as error:
        cluster.reservation.cancel(created["id"], "alice")
    assert error.value.exc_type == "Unavailable"
    assert time.time() - opened < 0.5

    # The requests expired in the broker with their deadline (the broker
    # drops an expired message when it reaches the head of the queue, a
    # moment after its deadline): a delivery that comes back will not
    # cancel what the caller was told is not canceled.
    deadline = time.time() + 5
    while delivery_down.queue_declare(passive=True).message_count and time.time() < deadline:
        time.sleep(0.05)
    assert delivery_down.queue_declare(passive=True).message_count == 0
    assert status(reservation_db, created["id"]) == "confirmed"
    assert "reservation_canceled" not in [e["event_type"] for e in emitted.settle(0.2)]

    # delivery comes back; after CIRCUIT_RESET_TIMEOUT one call is let through.
    delivery = fake_delivery()
    start(delivery)
    assert delivery.calls == []  # nothing stale was waiting for it
    time.sleep(max(0.0, opened + CIRCUIT_RESET_TIMEOUT - time.time()))
    assert cluster.reservation.cancel(created["id"], "alice")["status"] == "canceled"
    assert len(delivery.calls) == 1
    assert status(reservation_db, created["id"]) == "canceled"


def test_cancel_is_refused_when_delivery_says_the_book_was_delivered(
        reservation, start, rpc, publish, emitted, reservation_db):
    # reservation has not heard of the delivery yet; delivery knows better.
    delivery = fake_delivery(error=NotAllowed("the book has already been delivered"))
    start(delivery)
    created = create(rpc)
    confirm(reservation, publish, created)

    with pytest.raises(RemoteError) as error:
        rpc().reservation.cancel(created["id"], "alice")
    assert error.value.exc_type == "NotAllowed"
    assert len(delivery.calls) == 1
    assert status(reservation_db, created["id"]) == "confirmed"


def test_a_delivered_reservation_cannot_be_canceled(reservation, start, rpc, publish, reservation_db):
    delivery = fake_delivery()
    start(delivery)
    created = create(rpc)
    confirm(reservation, publish, created)
    step(reservation, publish, "delivery_shipped", created)
    step(reservation, publish, "delivery_delivered", created)

    for customer in ("alice", "bob"):
        with pytest.raises(RemoteError) as error:
            rpc().reservation.cancel(created["id"], customer)
        assert error.value.exc_type == {"alice": "NotAllowed", "bob": "NotFound"}[customer]
    assert delivery.calls == []
    assert status(reservation_db, created["id"]) == "delivered"


# -- idempotency and invalid events -------------------------------------------------


def test_the_same_event_delivered_twice_confirms_once(reservation, rpc, publish, emitted, reservation_db):
    created = create(rpc)
    twice = event("copy_allocated", reservation_id=created["id"], book_id=7, customer="alice")
    for _ in range(2):
        with entrypoint_waiter(reservation, "on_copy_allocated", timeout=5):
            publish("product", twice)

    assert reservation_db.processed() == [{"event_id": twice["event_id"], "handler": "on_copy_allocated"}]
    assert status(reservation_db, created["id"]) == "confirmed"
    assert len([e for e in emitted.settle(0.2) if e["event_type"] == "reservation_confirmed"]) == 1


def test_an_invalid_event_is_dead_lettered_not_applied(reservation, rpc, publish, emitted, reservation_db,
                                                       dead_letters):
    created = create(rpc)
    bad = event("copy_allocated", reservation_id=created["id"], book_id=7, customer="alice")
    del bad["customer"]
    with entrypoint_waiter(reservation, "on_copy_allocated", timeout=5):
        publish("product", bad)

    [parked] = dead_letters(handler_queue("product", "copy_allocated", "reservation", "on_copy_allocated"))
    assert parked.payload == bad
    assert "customer" in parked.headers["x-bookrental-error"]
    assert status(reservation_db, created["id"]) == "requested"
    assert reservation_db.count("processed_events") == 0
    assert "reservation_confirmed" not in [e["event_type"] for e in emitted.settle(0.2)]


# -- deadlines and the breaker under concurrency --------------------------------------


def test_concurrent_cancels_each_give_up_within_cancel_timeout(reservation, rpc, publish, delivery_down):
    reservations = [create(rpc, customer=f"c{n}") for n in range(2)]
    for created in reservations:
        confirm(reservation, publish, created)
    cluster = rpc(timeout=10)

    began = time.time()
    calls = [cluster.reservation.cancel.call_async(r["id"]) for r in reservations]
    for call in calls:
        with pytest.raises(RemoteError) as error:
            call.result()
        assert error.value.exc_type == "Unavailable"
    assert time.time() - began < CANCEL_TIMEOUT + 0.75


def test_a_cancel_whose_caller_gave_up_changes_nothing(reservation, start, rpc, publish, reservation_db):
    delivery = fake_delivery(delay=CANCEL_TIMEOUT * 0.6)  # slow, but within CANCEL_TIMEOUT
    start(delivery)
    created = create(rpc)
    confirm(reservation, publish, created)

    patience = CANCEL_TIMEOUT * 0.3  # as the gateway does: a deadline in the context
    impatient = rpc(timeout=patience, deadline=time.time() + patience)
    with pytest.raises(Exception):  # RpcTimeout: the caller reports "unavailable, nothing changed"
        impatient.reservation.cancel(created["id"], "alice")

    time.sleep(CANCEL_TIMEOUT)
    assert status(reservation_db, created["id"]) == "confirmed"


# -- worker_factory ---------------------------------------------------------------
# (The order of the synchronous cancel's steps, and every interleaving of
# them, is played with a fake store in tests/unit/test_reservation_cancel.py.)


def test_invalid_payloads_never_reach_the_domain():
    service = worker_factory(ReservationService)
    with mock.patch.object(Reservation, "copy_allocated") as step_:
        with pytest.raises(events.InvalidEvent):
            service.on_copy_allocated({"event_type": "copy_allocated", "reservation_id": "r-1"})
    step_.assert_not_called()
