"""On PostgreSQL, the writers of one service run side by side in every
replica; what must be serialized is serialized by a row lock; readers never
wait for them.

The services' handlers read a row, decide, and write it back (the domain
objects are plain Python). Under READ COMMITTED two replicas doing that to
one row at once both read the old state, and the second write undoes the
first: a reservation canceled and confirmed at once, a copy released while
it is being allocated, a MyPage status that moves backwards. So the rows a
decision rests on are read with ``SELECT ... FOR UPDATE`` in a write
transaction (``common.store.for_update``, the services' repositories in ``models``): the
second test shows what happens without it. There is no service-wide lock:
a write to another title commits while one title is locked."""
import time
import uuid

import eventlet
import pytest
from sqlalchemy import select

from common import events, isbn
from product import models
from product.domain import Title
from product.service import ProductService
from stores import replica, set_up

WRITERS = 8


@pytest.fixture
def replicas(pg_database):
    """replicas(n) -> n product stores on one throwaway PostgreSQL database."""
    uri = pg_database("product")
    opened = []

    def make(n):
        stores = [set_up(models.ProductStore(models.Base), ProductService, uri) for _ in range(n)]
        opened.extend(stores)
        return stores

    yield make
    for store in opened:
        store.kill()


def new_title(store):
    with store.transaction() as tx:
        title = Title(isbn.with_check_digit(f"978{uuid.uuid4().int % 10 ** 9:09d}"), "Dune", "F. H.", 0)
        tx.catalogue.add_title(title)
        return title.id


def add_one_copy_slowly(store, book_id, lock=True):
    """What a handler does: read (locking the title, as product does), think
    (a green switch), write."""
    with store.transaction() as tx:
        title = tx.catalogue.title(book_id, for_update=lock)
        stock = title.stock
        eventlet.sleep(0.005)
        title.stock = stock + 1


def stock(store, book_id):
    with store.reading() as session:
        return session.scalars(select(Title.stock).where(Title.id == book_id)).one()


def race(stores, book_id, lock=True):
    threads = [eventlet.spawn(add_one_copy_slowly, store, book_id, lock)
               for store in stores for _ in range(WRITERS)]
    for thread in threads:
        thread.wait()


def test_replicas_writing_one_row_lose_no_update(replicas):
    stores = replicas(3)
    book_id = new_title(stores[0])
    race(stores, book_id)
    assert stock(stores[0], book_id) == 3 * WRITERS


def test_without_the_row_lock_updates_are_lost(replicas):
    """Why the lock is there: the same race without it."""
    stores = replicas(3)
    book_id = new_title(stores[0])
    race(stores, book_id, lock=False)
    assert stock(stores[0], book_id) < 3 * WRITERS


def test_a_write_to_another_title_commits_while_one_title_is_locked(replicas):
    first, second = replicas(2)
    locked, other = new_title(first), new_title(first)
    holding, release = eventlet.event.Event(), eventlet.event.Event()

    def hold_the_lock():
        with first.transaction() as tx:
            tx.catalogue.title(locked, for_update=True)
            holding.send()
            release.wait()

    holder = eventlet.spawn(hold_the_lock)
    holding.wait()
    with eventlet.Timeout(5):
        add_one_copy_slowly(second, other)  # another replica, another title: no wait
        add_one_copy_slowly(first, other)  # the same replica too
    assert stock(second, other) == 2
    waiter = eventlet.spawn(add_one_copy_slowly, second, locked)
    eventlet.sleep(0.1)
    assert stock(second, locked) == 0 and not waiter.dead  # the locked title waits its turn
    release.send()
    holder.wait()
    waiter.wait()
    assert stock(second, locked) == 1


def test_concurrent_allocations_on_one_title_never_oversell(replicas):
    """Two replicas of product apply reservation_requested events for one
    title with 5 copies at the same time: 5 allocated, the rest wait."""
    stores = replicas(2)
    book_id = new_title(stores[0])
    with stores[0].transaction() as tx:
        tx.catalogue.title(book_id, for_update=True).add_copies(5, [])
    services = [replica(ProductService, store) for store in stores]
    requests = [events.make("reservation_requested", "corr", reservation_id=f"r-{n}", book_id=book_id,
                            customer=f"c{n}", address=None) for n in range(16)]
    threads = [eventlet.spawn(services[n % 2].on_reservation_requested, event) for n, event in enumerate(requests)]
    for thread in threads:
        thread.wait()
    with stores[1].catalogue() as catalogue:
        assert (catalogue.allocated_count(book_id), catalogue.waiting_count(book_id)) == (5, 11)
    assert stock(stores[1], book_id) == 0


def test_a_replica_waiting_for_its_turn_still_reads(replicas):
    """psycopg2 waits as a green thread (eventlet's wait callback), so a
    replica whose writer waits for another replica's turn keeps answering."""
    first, second = replicas(2)
    book_id = new_title(first)
    holding = eventlet.event.Event()

    def long_write():
        with first.transaction() as tx:
            tx.catalogue.title(book_id, for_update=True)
            holding.send()
            eventlet.sleep(0.5)

    holder = eventlet.spawn(long_write)
    holding.wait()
    waiter = eventlet.spawn(add_one_copy_slowly, second, book_id)
    eventlet.sleep(0.05)  # the second replica's writer is now waiting for the title's lock
    started = time.time()
    assert stock(second, book_id) == 0
    assert time.time() - started < 0.2
    assert not waiter.dead
    holder.wait()
    waiter.wait()
    assert stock(second, book_id) == 1
