"""On PostgreSQL, the writers of one service take turns across replicas, as
they do on SQLite; readers never wait for them.

The services' handlers read a row, decide, and write it back (the domain
objects are plain Python). Under READ COMMITTED two replicas doing that to
one row at once both read the old state, and the second write undoes the
first: a reservation canceled and confirmed at once, a copy released while
it is being allocated, a MyPage status that moves backwards. So every write
transaction starts with the service's advisory lock (``Store.transaction``);
the second test shows what happens without it."""
import time

import eventlet
import pytest
from sqlalchemy import select

from common.store import Store
from product import models
from product.domain import Title
from product.service import ProductService
from stores import set_up

WRITERS = 8


@pytest.fixture
def replicas(pg_database):
    """replicas(n) -> n product stores on one throwaway PostgreSQL database."""
    uri = pg_database("product")
    opened = []

    def make(n):
        stores = [set_up(Store(models.Base), ProductService, uri) for _ in range(n)]
        opened.extend(stores)
        return stores

    yield make
    for store in opened:
        store.kill()


def new_title(store):
    with store.transaction() as tx:
        title = Title("1", "Dune", "F. H.", 0)
        tx.session.add(title)
        tx.session.flush()
        return title.id


def add_one_copy_slowly(store, book_id):
    """What a handler does: read, think (a green switch), write."""
    with store.transaction() as tx:
        title = tx.session.scalars(select(Title).where(Title.id == book_id)).one()
        stock = title.stock
        eventlet.sleep(0.005)
        title.stock = stock + 1


def stock(store, book_id):
    with store.reading() as session:
        return session.scalars(select(Title.stock).where(Title.id == book_id)).one()


def race(stores, book_id):
    threads = [eventlet.spawn(add_one_copy_slowly, store, book_id) for store in stores for _ in range(WRITERS)]
    for thread in threads:
        thread.wait()


def test_replicas_writing_one_row_lose_no_update(replicas):
    stores = replicas(3)
    book_id = new_title(stores[0])
    race(stores, book_id)
    assert stock(stores[0], book_id) == 3 * WRITERS


def test_without_taking_turns_updates_are_lost(replicas):
    """Why the lock is there: the same race without it."""
    stores = replicas(3)
    for store in stores:
        store.serial_key = None
    book_id = new_title(stores[0])
    race(stores, book_id)
    assert stock(stores[0], book_id) < 3 * WRITERS


def test_a_replica_waiting_for_its_turn_still_reads(replicas):
    """psycopg2 waits as a green thread (eventlet's wait callback), so a
    replica whose writer waits for another replica's turn keeps answering."""
    first, second = replicas(2)
    book_id = new_title(first)
    holding = eventlet.event.Event()

    def long_write():
        with first.transaction() as tx:
            tx.session.scalars(select(Title).where(Title.id == book_id)).one()
            holding.send()
            eventlet.sleep(0.5)

    holder = eventlet.spawn(long_write)
    holding.wait()
    waiter = eventlet.spawn(add_one_copy_slowly, second, book_id)
    eventlet.sleep(0.05)  # the second replica's writer is now waiting for its turn
    started = time.time()
    assert stock(second, book_id) == 0
    assert time.time() - started < 0.2
    assert not waiter.dead
    holder.wait()
    waiter.wait()
    assert stock(second, book_id) == 1
