"""The delivery service's decisions over an in-memory repository.

As cosmicpython tests its handlers: no database at all. The service goes
through its repository (``tx.deliveries``, ``store.deliveries()``:
delivery.models.Deliveries); these fakes keep it in a dict, and a check
against the real repository over in-memory SQLite keeps the two alike.
"""
import contextlib
import types

import pytest
from nameko.testing.services import worker_factory
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from common import correlation, events
from common.errors import NotAllowed, NotFound
from delivery import models
from delivery.domain import CANCELED, DELIVERED, PREPARING, SHIPPED, Delivery
from delivery.service import DeliveryService

NOW = "2024-05-01T10:00:00.000000+00:00"


class InMemoryDeliveries:
    """What ``delivery.models.Deliveries`` does, in a dict (insertion order is ``seq``)."""

    def __init__(self):
        self.rows = {}

    def add(self, delivery):
        self.rows[delivery.id] = delivery

    def get(self, delivery_id):
        return self.rows.get(delivery_id)

    def for_reservation(self, reservation_id):
        return next((d for d in self.rows.values() if d.reservation_id == reservation_id), None)

    def statuses(self, reservation_ids):
        return {d.reservation_id: d.status for d in self.rows.values() if d.reservation_id in reservation_ids}


class InMemoryStore:
    """The DeliveryStore's service-facing shape: ``transaction()`` ->
    ``tx.deliveries``, ``tx.emit``, ``tx.first_time``; ``deliveries()``.
    Committed transactions add what they emitted to ``outbox``."""

    def __init__(self):
        self.repository = InMemoryDeliveries()
        self.outbox = []
        self.applied = set()

    @contextlib.contextmanager
    def transaction(self, deadline=None):
        tx = types.SimpleNamespace(deliveries=self.repository, emitted=[])
        tx.emit = lambda event_type, **fields: tx.emitted.append((event_type, fields))
        tx.first_time = self._first_time
        yield tx
        self.outbox += tx.emitted

    def _first_time(self, event, handler):
        key = (event["event_id"], handler)
        if key in self.applied:
            return False
        self.applied.add(key)
        return True

    @contextlib.contextmanager
    def deliveries(self):
        yield self.repository

    def emitted(self):
        return [kind for kind, _ in self.outbox]


@pytest.fixture
def memory():
    return InMemoryStore()


@pytest.fixture
def service(memory):
    correlation.bind("request-1")
    yield worker_factory(DeliveryService, store=memory)
    correlation.bind(None)


def delivery_in(memory, status):
    delivery, _ = Delivery.prepare("d-1", "r-1", 7, "alice", NOW, "1 Main St")
    for step in {PREPARING: [], SHIPPED: [Delivery.ship], DELIVERED: [Delivery.ship, Delivery.deliver]}[status]:
        step(delivery, NOW)
    memory.repository.add(delivery)
    return delivery


def reservation_event(event_type, **extra):
    return events.make(event_type, "request-1", reservation_id="r-1", book_id=7, customer="alice", **extra)


def test_a_cancel_before_the_delivery_exists_leaves_a_canceled_one_for_the_confirmation_to_find(service, memory):
    answer = service.cancel("r-1", 7, "alice")

    assert answer["status"] == CANCELED
    assert memory.repository.for_reservation("r-1").status == CANCELED
    assert memory.emitted() == ["delivery_canceled"]

    service.on_reservation_confirmed(reservation_event("reservation_confirmed", address="1 Main St"))
    assert len(memory.repository.rows) == 1  # the confirmation came late: no delivery is prepared
    assert memory.repository.for_reservation("r-1").status == CANCELED
    assert memory.emitted() == ["delivery_canceled"]


def test_a_confirmed_reservation_gets_one_delivery_however_often_it_is_told(service, memory):
    event = reservation_event("reservation_confirmed", address="1 Main St")

    service.on_reservation_confirmed(event)
    service.on_reservation_confirmed(event)  # redelivered
    service.on_reservation_confirmed(reservation_event("reservation_confirmed", address="1 Main St"))

    assert [d.status for d in memory.repository.rows.values()] == [PREPARING]
    assert memory.emitted() == ["delivery_created"]


def test_a_canceled_reservation_leaves_a_delivered_book_delivered(service, memory):
    delivery_in(memory, DELIVERED)

    service.on_reservation_canceled(reservation_event("reservation_canceled", canceled_by="customer"))

    assert memory.repository.get("d-1").status == DELIVERED
    assert memory.emitted() == []
    with pytest.raises(NotAllowed):
        service.cancel("r-1", 7, "alice")


def test_a_courier_moves_a_delivery_forward_and_an_unknown_one_is_not_found(service, memory):
    delivery_in(memory, PREPARING)

    assert service.ship("d-1")["status"] == SHIPPED
    assert service.deliver("d-1")["status"] == DELIVERED
    assert memory.emitted() == ["delivery_shipped", "delivery_delivered"]
    assert service.statuses(["r-1", "r-2"]) == {"r-1": DELIVERED, "r-2": None}
    with pytest.raises(NotFound):
        service.ship("d-2")


def test_the_real_repository_answers_as_the_fake_does():
    engine = create_engine("sqlite://")
    models.Base.metadata.create_all(engine)
    with sessionmaker(bind=engine)() as session:
        deliveries = models.Deliveries(session)
        for n in (1, 2, 3):
            deliveries.add(Delivery.prepare(f"d-{n}", f"r-{n}", 7, "alice", NOW)[0])
        session.flush()
        deliveries.get("d-2").ship(NOW)

        assert deliveries.for_reservation("r-3").id == "d-3"
        assert deliveries.get("d-9") is None and deliveries.for_reservation("r-9") is None
        assert deliveries.statuses(["r-1", "r-2", "r-9"]) == {"r-1": PREPARING, "r-2": SHIPPED}
        first = deliveries.page(None, 0, 2)
        assert [d.id for d in first] == ["d-1", "d-2"]
        assert [d.id for d in deliveries.page(PREPARING, first[-1].seq, 10)] == ["d-3"]
