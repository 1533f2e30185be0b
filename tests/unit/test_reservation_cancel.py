"""The synchronous cancel, whole or absent (SPEC §1.5), in plain Python.

First the domain's rules (``Reservation.delivery_canceled``, ``CancelIntent``),
then the cancel's handlers, run as cosmicpython runs its handlers: the real
service methods (``worker_factory``) over a fake store (the Store's shape,
over an in-memory SQLite database) and a fake delivery whose answers, and
whose failures, the test scripts. Every interleaving the service must survive
is played here step by step; tests/faults plays them on real processes.
"""
import contextlib
import types

import pytest
from nameko.testing.services import worker_factory
from sqlalchemy import create_engine, select
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import StaticPool

import common.faults
import reservation.service as service_module
from common import correlation, events
from common.errors import NotAllowed, NotFound, Unavailable
from reservation import models
from reservation.domain import (
    CANCELED, COMMIT_GRACE, COMPLETE, CONFIRMED, DELIVERED, DROP, REQUESTED, RETURNED, SHIPPED, WAIT,
    WAITLISTED, CancelIntent, Reservation,
)
from reservation.service import ReservationService
from helpers import event_types

NOW = 1_700_000_000.0


def at(minute):
    return f"2024-05-01T10:{minute:02d}:00.000000+00:00"


def reservation_in(status):
    reservation, _ = Reservation.request("r-1", 7, "alice", at(0))
    path = {
        REQUESTED: [], WAITLISTED: [Reservation.waitlisted], CONFIRMED: [Reservation.copy_allocated],
        SHIPPED: [Reservation.copy_allocated, Reservation.shipped],
        DELIVERED: [Reservation.copy_allocated, Reservation.shipped, Reservation.delivered],
        RETURNED: [Reservation.copy_allocated, Reservation.shipped, Reservation.delivered, Reservation.return_book],
        CANCELED: [Reservation.cancel],
    }[status]
    for minute, step in enumerate(path, start=1):
        step(reservation, at(minute))
    return reservation


# -- the domain ----------------------------------------------------------------

@pytest.mark.parametrize("start", [REQUESTED, WAITLISTED, CONFIRMED, SHIPPED])
def test_a_canceled_delivery_cancels_a_live_reservation(start):
    reservation = reservation_in(start)

    assert event_types(reservation.delivery_canceled(at(30))) == ["reservation_canceled"]
    assert reservation.status == CANCELED
    assert reservation.updated_at == at(30)


@pytest.mark.parametrize("start", [CANCELED, DELIVERED, RETURNED])
def test_a_canceled_delivery_changes_nothing_once_canceled_or_delivered(start):
    reservation = reservation_in(start)
    updated_at = reservation.updated_at

    assert reservation.delivery_canceled(at(30)) == []
    assert reservation.status == start
    assert reservation.updated_at == updated_at


@pytest.mark.parametrize("start", [CONFIRMED, SHIPPED])
def test_an_intent_to_cancel_is_allowed_exactly_where_a_cancel_is(start):
    intent = reservation_in(start).intend_cancel("corr-1", NOW + 2)

    assert (intent.reservation_id, intent.correlation_id, intent.expires_at) == ("r-1", "corr-1", NOW + 2)


@pytest.mark.parametrize("start", [DELIVERED, RETURNED])
def test_no_intent_to_cancel_a_delivered_reservation(start):
    with pytest.raises(NotAllowed):
        reservation_in(start).intend_cancel("corr-1", NOW + 2)


def test_a_second_request_renews_the_intent_until_the_later_deadline():
    intent = CancelIntent("r-1", "corr-1", NOW + 2)

    intent.renew(CancelIntent("r-1", "corr-2", NOW + 5))
    assert (intent.correlation_id, intent.expires_at) == ("corr-2", NOW + 5)
    intent.renew(CancelIntent("r-1", "corr-3", NOW + 1))  # an older deadline never shortens it
    assert intent.expires_at == NOW + 5


@pytest.mark.parametrize("delivery_status", [None, "preparing", "shipped", "delivered"])
def test_an_intent_is_dropped_only_once_delivery_can_no_longer_act_on_it(delivery_status):
    intent = CancelIntent("r-1", "corr-1", NOW)

    assert intent.outcome(delivery_status, NOW - 1) == WAIT  # its request still waits
    assert intent.outcome(delivery_status, NOW + COMMIT_GRACE) == WAIT  # a commit may still be landing
    assert intent.outcome(delivery_status, NOW + COMMIT_GRACE + 0.1) == DROP


@pytest.mark.parametrize("now", [NOW - 1, NOW + COMMIT_GRACE + 60])
def test_a_canceled_delivery_completes_the_intent_whenever_it_is_seen(now):
    assert CancelIntent("r-1", "corr-1", NOW).outcome("canceled", now) == COMPLETE


def test_an_intent_has_expired_once_its_deadline_has_passed():
    intent = CancelIntent("r-1", "corr-1", NOW)
    assert not intent.expired(NOW)
    assert intent.expired(NOW + 0.001)


# -- the handlers, with a fake store and a fake delivery --------------------------

class FakeTx:
    def __init__(self, session, store):
        self.session = session
        self.reservations = models.Reservations(session)
        self.emitted = []
        self._store = store
        self._applied = set()

    def emit(self, event_type, **fields):
        self.emitted.append((event_type, correlation.current(), fields))

    def first_time(self, event, handler):
        key = (event["event_id"], handler)
        if key in self._store.applied or key in self._applied:
            return False
        self._applied.add(key)
        return True


class FakeStore:
    """The ReservationStore's service-facing shape (``transaction()`` ->
    ``tx.reservations``, ``tx.emit``, ``tx.first_time``; ``reservations()``) over an in-memory SQLite
    database. ``outbox`` holds what committed transactions emitted."""

    def __init__(self):
        self.engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
        models.Base.metadata.create_all(self.engine)
        self.Session = sessionmaker(bind=self.engine, expire_on_commit=False)
        self.ReadSession = sessionmaker(bind=self.engine)
        self.outbox = []
        self.applied = set()

    @contextlib.contextmanager
    def transaction(self):
        session = self.Session()
        tx = FakeTx(session, self)
        try:
            yield tx
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
        self.outbox += tx.emitted
        self.applied |= tx._applied

    @contextlib.contextmanager
    def reservations(self):
        session = self.ReadSession()
        try:
            yield models.Reservations(session)
        finally:
            session.rollback()  # as the real one: what was read is expired, detached
            session.close()

    def add(self, thing):
        with self.transaction() as tx:
            tx.session.add(thing)

    def status(self, reservation_id):
        with self.Session() as session:
            return models.Reservations(session).get(reservation_id).status

    def intents(self):
        with self.Session() as session:
            return {i.reservation_id: i.expires_at for i in session.scalars(select(CancelIntent))}

    def emitted(self, event_type="reservation_canceled"):
        return [(correlation_id, fields["reservation_id"]) for kind, correlation_id, fields in self.outbox
                if kind == event_type]


class FakeDelivery:
    """delivery as reservation sees it: ``cancel`` and ``statuses``, scripted.

    ``status`` is the delivery's status in delivery's database; ``on_cancel``
    what happens when it is asked to cancel: "cancel" (and answer), "lost"
    (cancel, but the answer never arrives), "down" (nothing happens, no
    answer), "delivered" (refused), or a function run first (an interleaving)."""

    timeout = 2.0

    def __init__(self, status="preparing"):
        self.status = status
        self.on_cancel = "cancel"
        self.cancels = 0
        self.reachable = True

    def cancel(self, reservation_id, book_id, customer):
        self.cancels += 1
        action = self.on_cancel
        if callable(action):
            action()
            action = "cancel"
        if action == "down":
            raise Unavailable("delivery did not answer within 2s")
        if action == "delivered" or self.status == "delivered":
            raise NotAllowed("the book has already been delivered")
        self.status = "canceled"
        if action == "lost":
            raise Unavailable("delivery did not answer within 2s")
        return {"reservation_id": reservation_id, "status": "canceled"}

    def statuses(self, reservation_ids):
        if not self.reachable:
            raise Unavailable("delivery is not running")
        return {rid: self.status for rid in reservation_ids}

    def with_timeout(self, seconds):
        return self

    def until(self, deadline):
        self.deadline = deadline
        return self


class Clock:
    def __init__(self):
        self.now = NOW

    def time(self):
        return self.now


class Crash(BaseException):
    """The process dies here (as BOOKRENTAL_FAULT's ``crash`` would)."""


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(service_module, "time", clock)
    return clock


@pytest.fixture
def store():
    return FakeStore()


@pytest.fixture
def delivery():
    return FakeDelivery()


@pytest.fixture
def service(store, delivery, clock):
    correlation.bind("request-1")
    yield worker_factory(ReservationService, store=store, delivery=delivery)
    correlation.bind(None)


@pytest.fixture
def confirmed(store):
    store.add(reservation_in(CONFIRMED))
    return "r-1"


def crash_at(monkeypatch, name):
    def point(reached):
        if reached == name:
            raise Crash(reached)

    monkeypatch.setattr(common.faults, "point", point)


def delivery_canceled_event(correlation_id="request-1"):
    return events.make("delivery_canceled", correlation_id, delivery_id="d-1", status="canceled",
                       reservation_id="r-1", book_id=7, customer="alice")


def test_a_cancel_cancels_the_delivery_then_the_reservation_and_leaves_no_intent(service, store, delivery, confirmed):
    assert service.cancel("r-1", "alice")["status"] == CANCELED

    assert delivery.cancels == 1 and delivery.status == "canceled"
    assert delivery.deadline == NOW + delivery.timeout  # the intent's: delivery acts no later
    assert store.status("r-1") == CANCELED
    assert store.emitted() == [("request-1", "r-1")]
    assert store.intents() == {}


def test_a_reservation_not_yet_confirmed_is_canceled_without_asking_delivery(service, store, delivery):
    store.add(reservation_in(WAITLISTED))

    assert service.cancel("r-1", "alice")["status"] == CANCELED
    assert delivery.cancels == 0
    assert store.emitted() == [("request-1", "r-1")]
    assert store.intents() == {}


def test_delivery_down_answers_unavailable_changes_nothing_and_the_recovery_drops_the_intent(
        service, store, delivery, confirmed, clock):
    delivery.on_cancel = "down"

    with pytest.raises(Unavailable):
        service.cancel("r-1", "alice")
    assert store.status("r-1") == CONFIRMED
    assert store.emitted() == []
    assert store.intents() == {"r-1": NOW + delivery.timeout}

    clock.now += delivery.timeout + 0.5  # the request has given up; delivery could still be committing
    service.recover_cancels()
    assert store.intents() == {"r-1": NOW + delivery.timeout}
    clock.now += COMMIT_GRACE
    service.recover_cancels()
    assert store.intents() == {}
    assert store.status("r-1") == CONFIRMED
    assert store.emitted() == []


def test_an_answer_lost_after_delivery_canceled_ends_canceled_without_a_request(
        service, store, delivery, confirmed, clock):
    delivery.on_cancel = "lost"

    with pytest.raises(Unavailable):  # the customer is told 503
        service.cancel("r-1", "alice")
    assert store.status("r-1") == CONFIRMED

    service.recover_cancels()  # the request has not given up yet: left alone
    assert store.status("r-1") == CONFIRMED
    clock.now += delivery.timeout + 0.1
    service.recover_cancels()
    assert store.status("r-1") == CANCELED
    assert store.emitted() == [("request-1", "r-1")]  # with the id of the request that asked
    assert store.intents() == {}


def test_a_reservation_that_dies_after_delivery_canceled_is_canceled_by_delivery_canceled(
        service, store, delivery, confirmed, monkeypatch):
    crash_at(monkeypatch, "reservation.cancel.after-delivery")
    with pytest.raises(Crash):
        service.cancel("r-1", "alice")
    assert (store.status("r-1"), delivery.status) == (CONFIRMED, "canceled")

    # A new process; its worker takes the event's correlation id (common.correlation),
    # which is the request's: it travelled with the RPC to delivery.
    correlation.bind("request-1")
    service.on_delivery_canceled(delivery_canceled_event())
    assert store.status("r-1") == CANCELED
    assert store.emitted() == [("request-1", "r-1")]
    assert store.intents() == {}

    # delivery announces it again (its own reaction to reservation_canceled): nothing more.
    service.on_delivery_canceled(delivery_canceled_event())
    service.recover_cancels()
    assert store.emitted() == [("request-1", "r-1")]


def test_a_reservation_that_dies_after_delivery_canceled_is_canceled_by_the_recovery_too(
        service, store, delivery, confirmed, monkeypatch, clock):
    crash_at(monkeypatch, "reservation.cancel.after-delivery")
    with pytest.raises(Crash):
        service.cancel("r-1", "alice")

    clock.now += delivery.timeout + 0.1  # started again; delivery_canceled not here (yet)
    service.recover_cancels()
    assert store.status("r-1") == CANCELED
    service.on_delivery_canceled(delivery_canceled_event())  # it comes after all
    assert store.emitted() == [("request-1", "r-1")]


def test_a_retry_after_a_503_finishes_the_job(service, store, delivery, confirmed):
    delivery.on_cancel = "lost"
    with pytest.raises(Unavailable):
        service.cancel("r-1", "alice")

    delivery.on_cancel = "cancel"
    assert service.cancel("r-1", "alice")["status"] == CANCELED
    assert delivery.cancels == 2  # canceling a canceled delivery is fine
    assert store.emitted() == [("request-1", "r-1")]
    assert store.intents() == {}


def test_a_retry_after_a_503_that_changed_nothing_cancels_normally(service, store, delivery, confirmed):
    delivery.on_cancel = "down"
    with pytest.raises(Unavailable):
        service.cancel("r-1", "alice")

    delivery.on_cancel = "cancel"
    assert service.cancel("r-1", "alice")["status"] == CANCELED
    assert store.emitted() == [("request-1", "r-1")]


def test_a_delivered_book_cannot_be_canceled_and_the_intent_goes(service, store, delivery, confirmed):
    delivery.status = "delivered"  # delivery knows before reservation does

    with pytest.raises(NotAllowed):
        service.cancel("r-1", "alice")
    assert store.status("r-1") == CONFIRMED
    assert store.intents() == {}
    assert store.emitted() == []


def test_two_cancels_at_once_cancel_once(service, store, delivery, confirmed):
    # The second request runs whole while the first waits for delivery.
    second = []

    def meanwhile():
        delivery.on_cancel = "cancel"
        second.append(service.cancel("r-1", "alice"))

    delivery.on_cancel = meanwhile
    first = service.cancel("r-1", "alice")

    assert first["status"] == second[0]["status"] == CANCELED
    assert store.emitted() == [("request-1", "r-1")]
    assert store.intents() == {}


def test_delivery_canceled_while_the_request_waits_does_the_request_no_harm(service, store, delivery, confirmed):
    # delivery publishes delivery_canceled before it answers: reservation may
    # apply it before the request finishes.
    delivery.on_cancel = lambda: service.on_delivery_canceled(delivery_canceled_event())

    assert service.cancel("r-1", "alice")["status"] == CANCELED
    assert store.emitted() == [("request-1", "r-1")]
    assert store.intents() == {}


def test_the_recovery_leaves_an_intent_a_new_request_renewed(service, store, delivery, confirmed, clock):
    delivery.on_cancel = "down"
    with pytest.raises(Unavailable):
        service.cancel("r-1", "alice")
    clock.now += delivery.timeout + COMMIT_GRACE + 1
    with store.reservations() as reservations:  # what the recovery read; then a customer retries
        due = [i.reservation_id for i in reservations.expired_cancel_intents(clock.now, 10)]
    assert due == ["r-1"]
    with pytest.raises(Unavailable):
        service.cancel("r-1", "alice")

    with store.transaction() as tx:  # the recovery decides with delivery's (stale) answer
        assert service._settle(tx, "r-1", "preparing") == WAIT
    assert "r-1" in store.intents()


def test_the_recovery_keeps_the_intents_while_delivery_cannot_be_asked(service, store, delivery, confirmed, clock):
    delivery.on_cancel = "lost"
    with pytest.raises(Unavailable):
        service.cancel("r-1", "alice")
    delivery.reachable = False
    clock.now += 60

    service.recover_cancels()
    assert "r-1" in store.intents() and store.status("r-1") == CONFIRMED
    delivery.reachable = True
    service.recover_cancels()
    assert store.status("r-1") == CANCELED


def test_a_cancel_whose_last_write_comes_too_late_is_finished_by_delivery_canceled(
        service, store, delivery, confirmed, monkeypatch):
    # The caller's deadline passes between delivery's answer and the last
    # write (the Store refuses it): the customer hears 503, delivery is canceled.
    real = store.transaction
    writes = []

    @contextlib.contextmanager
    def refusing_the_second_write():
        writes.append(1)
        if len(writes) == 2:
            raise Unavailable("the caller gave up before this could be saved")
        with real() as tx:
            yield tx

    monkeypatch.setattr(store, "transaction", refusing_the_second_write)
    with pytest.raises(Unavailable):
        service.cancel("r-1", "alice")
    monkeypatch.setattr(store, "transaction", real)
    assert store.status("r-1") == CONFIRMED

    service.on_delivery_canceled(delivery_canceled_event())
    assert store.status("r-1") == CANCELED
    assert store.emitted() == [("request-1", "r-1")]



def test_a_lost_answer_is_no_503_when_delivery_canceled_already_reached_the_reservation(
        service, store, delivery, confirmed):
    # delivery publishes delivery_canceled, then its answer is lost; the
    # event is applied while the request still waits: the request says 200.
    def lost_after_the_event():
        service.on_delivery_canceled(delivery_canceled_event())
        raise Unavailable("delivery did not answer within 2s")

    delivery.on_cancel = lost_after_the_event

    assert service.cancel("r-1", "alice")["status"] == CANCELED
    assert store.emitted() == [("request-1", "r-1")]
    assert store.intents() == {}


# -- the cancel's decisions, over an in-memory repository -------------------------
# As cosmicpython tests its handlers: no database at all. The service goes
# through its repository (``tx.reservations``, ``store.reservations()``:
# reservation.models.Reservations); these fakes keep it in dicts.

class InMemoryReservations:
    """What ``reservation.models.Reservations`` does for a cancel, in dicts."""

    def __init__(self):
        self.rows = {}
        self.intents = {}

    def get(self, reservation_id):
        return self.rows.get(reservation_id)

    def add(self, reservation):
        self.rows[reservation.id] = reservation

    def record_cancel_intent(self, intent):
        current = self.intents.setdefault(intent.reservation_id, intent)
        if current is not intent:
            current.renew(intent)
        return current

    def forget_cancel_intent(self, reservation_id):
        return self.intents.pop(reservation_id, None)


class InMemoryStore:
    """A store whose transactions commit their events to ``outbox`` and, when
    they raise, put the intents back as they were and publish nothing (the
    cancel changes a reservation only in its last transaction, which does not)."""

    def __init__(self):
        self.repository = InMemoryReservations()
        self.outbox = []

    @contextlib.contextmanager
    def transaction(self):
        tx = types.SimpleNamespace(reservations=self.repository, emitted=[])
        tx.emit = lambda event_type, **fields: tx.emitted.append((event_type, fields))
        intents = dict(self.repository.intents)
        try:
            yield tx
        except BaseException:
            self.repository.intents = intents
            raise
        self.outbox += tx.emitted

    @contextlib.contextmanager
    def reservations(self):
        yield self.repository


@pytest.fixture
def memory():
    store = InMemoryStore()
    store.repository.add(reservation_in(CONFIRMED))
    return store


@pytest.fixture
def in_memory(memory, delivery, clock):
    correlation.bind("request-1")
    yield worker_factory(ReservationService, store=memory, delivery=delivery)
    correlation.bind(None)


def test_in_memory_a_confirmed_reservation_is_canceled_with_its_delivery(in_memory, memory, delivery):
    answer = in_memory.cancel("r-1", "alice")

    assert answer["status"] == CANCELED and memory.repository.get("r-1").status == CANCELED
    assert (delivery.cancels, delivery.status) == (1, "canceled")  # by RPC, before the reservation
    assert [kind for kind, _ in memory.outbox] == ["reservation_canceled"]
    assert memory.repository.intents == {}


def test_in_memory_a_delivered_reservation_is_409_and_delivery_is_not_asked(in_memory, memory, delivery):
    memory.repository.add(reservation_in(DELIVERED))

    with pytest.raises(NotAllowed):  # the gateway answers 409
        in_memory.cancel("r-1", "alice")
    assert delivery.cancels == 0
    assert memory.repository.get("r-1").status == DELIVERED
    assert (memory.outbox, memory.repository.intents) == ([], {})


def test_in_memory_a_book_delivery_already_handed_over_is_409_and_nothing_changes(in_memory, memory, delivery):
    delivery.status = "delivered"  # delivery knows before reservation does

    with pytest.raises(NotAllowed):
        in_memory.cancel("r-1", "alice")
    assert delivery.cancels == 1
    assert memory.repository.get("r-1").status == CONFIRMED
    assert (memory.outbox, memory.repository.intents) == ([], {})


def test_in_memory_delivery_unreachable_is_503_and_nothing_changes(in_memory, memory, delivery):
    delivery.on_cancel = "down"

    with pytest.raises(Unavailable):  # the gateway answers 503
        in_memory.cancel("r-1", "alice")
    assert memory.repository.get("r-1").status == CONFIRMED
    assert memory.outbox == []
    assert list(memory.repository.intents) == ["r-1"]  # left for the recovery to settle


def test_in_memory_someone_elses_reservation_does_not_exist(in_memory, memory, delivery):
    with pytest.raises(NotFound):
        in_memory.cancel("r-1", "bob")
    assert delivery.cancels == 0 and memory.repository.get("r-1").status == CONFIRMED
