"""On PostgreSQL, with several reservation replicas (SPEC §8):

- the lending limits hold when one customer sends twenty reservations at
  once: each ``create`` checks the customer's live reservations and writes
  the new one while it holds the customer's advisory lock
  (``reservation.models.Reservations.serialize_customer``);
- a loan past due is marked overdue, and ``loan_overdue`` emitted, once,
  whichever replicas' overdue checks run at the same moment (a conditional
  UPDATE, ``Reservations.mark_overdue``).

The service-wide turn of ``Store.transaction`` is switched off here, so what
is tested is the lock and the conditional UPDATE alone."""
import eventlet
import pytest
from nameko.testing.services import worker_factory
from sqlalchemy import select

from common.errors import NotAllowed
from reservation import models
from reservation.domain import Reservation
from reservation.service import ReservationService
from stores import set_up

REPLICAS = 4
REQUESTS = 20


@pytest.fixture
def replicas(pg_database):
    uri = pg_database("reservation")
    stores = [set_up(models.ReservationStore(models.Base), ReservationService, uri) for _ in range(REPLICAS)]
    for store in stores:
        store.serial_key = None  # no service-wide turn: only the customer's lock
    yield stores
    for store in stores:
        store.kill()


def service(store, **config):
    handle = store.get_dependency(type("Ctx", (), {"context_data": {}})())
    return worker_factory(ReservationService, store=handle, config={"MAX_ACTIVE_RESERVATIONS": 5, **config})


@pytest.mark.parametrize("same_title", [False, True], ids=["different-titles", "same-title"])
def test_twenty_concurrent_reservations_of_one_customer_keep_the_limits(replicas, same_title):
    workers = [service(store) for store in replicas]

    def attempt(n):
        try:
            return workers[n % REPLICAS].create(7 if same_title else 100 + n, "carol")
        except NotAllowed as refused:
            return refused.message

    answers = list(eventlet.GreenPool(REQUESTS).imap(attempt, range(REQUESTS)))
    made = [answer for answer in answers if isinstance(answer, dict)]
    assert len(made) == (1 if same_title else 5), answers
    with replicas[0].reading() as session:
        assert len(session.scalars(select(models.Reservation.id).where(
            models.Reservation.customer == "carol")).all()) == len(made)


def test_replicas_checking_at_the_same_moment_mark_a_loan_overdue_once(replicas):
    with replicas[0].transaction() as tx:
        for n in range(10):
            loan, _ = Reservation.request(f"r-{n}", 7, "carol", "2024-05-01T10:00:00.000000+00:00")
            loan.status = "delivered"
            loan.due_at = "2024-05-15T10:00:00.000000+00:00"
            tx.session.add(loan)
    workers = [service(store) for store in replicas]

    for thread in [eventlet.spawn(worker.check_overdue) for worker in workers for _ in range(3)]:
        thread.wait()

    sent = [event for store in replicas for event in store.publisher.sent if event["event_type"] == "loan_overdue"]
    assert sorted(event["reservation_id"] for event in sent) == [f"r-{n}" for n in range(10)]
    with replicas[0].reservations() as reservations:
        assert len(reservations.loans_due("2025-01-01T00:00:00.000000+00:00", 100)) == 0
