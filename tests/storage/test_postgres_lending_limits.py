"""On PostgreSQL, the lending limits (SPEC §8) hold when one customer sends
twenty reservations at once to several replicas: each ``create`` checks the
customer's live reservations and writes the new one while it holds the
customer's advisory lock (``reservation.models.serialize_customer``). The
service-wide turn of ``Store.transaction`` is switched off here, so the
customer's lock alone is what keeps the limit."""
import eventlet
import pytest
from nameko.testing.services import worker_factory
from sqlalchemy import select

from common.errors import NotAllowed
from common.store import Store
from reservation import models
from reservation.service import ReservationService
from stores import set_up

REPLICAS = 4
REQUESTS = 20


@pytest.fixture
def replicas(pg_database):
    uri = pg_database("reservation")
    stores = [set_up(Store(models.Base), ReservationService, uri) for _ in range(REPLICAS)]
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
