"""product's allocation decisions over an in-memory repository.

As cosmicpython tests its handlers: no database and no broker. The service
goes through its repository (``tx.catalogue``, ``store.catalogue()``:
product.models.Catalogue); these fakes keep titles and allocations in dicts
and record what a committed transaction emitted. The same decisions on a
real SQLite file and broker: tests/integration/test_product_service.py.
"""
import contextlib
import types

import pytest
from nameko.testing.services import worker_factory

from common import events
from common.errors import NotFound
from product.domain import ALLOCATED, REFUSED, WAITING, Title
from product.service import ProductService


class InMemoryCatalogue:
    """What ``product.models.Catalogue`` does for these handlers, in dicts."""

    def __init__(self):
        self.titles = {}
        self.allocations = {}

    def title(self, book_id, for_update=False):
        return self.titles.get(book_id)

    def add_title(self, title):
        title.id = len(self.titles) + 1
        self.titles[title.id] = title

    def allocation(self, reservation_id):
        return self.allocations.get(reservation_id)

    def has_allocation(self, reservation_id):
        return reservation_id in self.allocations

    def add_allocation(self, allocation):
        self.allocations[allocation.reservation_id] = allocation

    def reread(self, allocation):
        pass  # the dicts are the database

    def waitlist(self, book_id, limit):
        waiting = [a for a in self.allocations.values() if a.book_id == book_id and a.state == WAITING]
        return sorted(waiting, key=lambda a: (a.requested_at, a.reservation_id))[:limit]

    def waiting_count(self, book_id):
        return len(self.waitlist(book_id, limit=None))


class InMemoryStore:
    """A store whose transactions commit what they emitted to ``outbox`` and
    remember the events they applied (``first_time``)."""

    def __init__(self):
        self.repository = InMemoryCatalogue()
        self.outbox = []
        self.applied = set()

    @contextlib.contextmanager
    def transaction(self):
        tx = types.SimpleNamespace(catalogue=self.repository, emitted=[])
        tx.emit = lambda event_type, **fields: tx.emitted.append((event_type, fields))
        tx.first_time = lambda event, handler: self._first_time((event["event_id"], handler))
        yield tx
        self.outbox += tx.emitted

    def _first_time(self, key):
        seen = key in self.applied
        self.applied.add(key)
        return not seen

    @contextlib.contextmanager
    def catalogue(self):
        yield self.repository


def requested(reservation_id, book_id, customer):
    return events.make("reservation_requested", "corr-1", reservation_id=reservation_id, book_id=book_id,
                       customer=customer, address=None)


@pytest.fixture
def store():
    store = InMemoryStore()
    store.repository.add_title(Title("9780441013593", "Dune", "F. Herbert", 1))
    return store


@pytest.fixture
def service(store):
    return worker_factory(ProductService, store=store)


def test_the_last_copy_goes_to_the_first_reservation_and_the_next_one_waits(service, store):
    service.on_reservation_requested(requested("r-1", 1, "alice"))
    service.on_reservation_requested(requested("r-2", 1, "bob"))

    assert [kind for kind, _ in store.outbox] == ["copy_allocated", "waitlist_joined"]
    assert store.outbox[1][1]["position"] == 1
    assert (store.repository.allocation("r-1").state, store.repository.allocation("r-2").state) == (ALLOCATED, WAITING)
    assert store.repository.title(1).stock == 0


def test_a_reservation_delivered_twice_is_served_once(service, store):
    event = requested("r-1", 1, "alice")
    service.on_reservation_requested(event)
    service.on_reservation_requested(event)

    assert [kind for kind, _ in store.outbox] == ["copy_allocated"]
    assert store.repository.title(1).stock == 0


def test_a_reservation_of_an_unknown_title_is_refused(service, store):
    service.on_reservation_requested(requested("r-1", 99, "alice"))

    assert [kind for kind, _ in store.outbox] == ["allocation_refused"]
    assert store.outbox[0][1]["reason"] == "no such title"
    assert store.repository.allocation("r-1").state == REFUSED


def test_an_unknown_title_is_not_found(service):
    with pytest.raises(NotFound):
        service.get_book(99)
    assert service.get_book(1)["title"] == "Dune"
