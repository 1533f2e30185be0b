"""Database engines for a service's store: SQLite with its pragmas, PostgreSQL
with green waits."""
import logging
import zlib

import eventlet
from sqlalchemy import create_engine, event

log = logging.getLogger(__name__)


def _lower(text):
    return text.lower() if isinstance(text, str) else text


def _sqlite_engine(uri, immediate):
    engine = create_engine(uri, pool_size=20, max_overflow=20, connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not pysqlite, say when a transaction begins.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash
        cursor.execute("PRAGMA busy_timeout=15000")  # replicas wait for each other
        cursor.close()
        # SQLite's lower() knows only ASCII letters; PostgreSQL's knows them all.
        # The same answers on both (a search ignoring case: GET /books?q=).
        dbapi_connection.create_function("lower", 1, _lower, deterministic=True)

    @event.listens_for(engine, "begin")
    def on_begin(conn):
        # A writer takes the lock up front, so two replicas can never read the
        # same stock and both decrement it.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def engine_for(uri, write=True):
    """The engine a ``Store`` uses for ``uri``: on SQLite, a writer's
    transactions begin with ``BEGIN IMMEDIATE``; a reader's with ``BEGIN``.
    On PostgreSQL, psycopg2 waits for the server as a green thread."""
    if uri.startswith("sqlite"):
        return _sqlite_engine(uri, immediate=write)
    engine = create_engine(uri, pool_pre_ping=True, pool_size=20, max_overflow=20)
    if engine.dialect.name == "postgresql":
        green_psycopg2()
    return engine


def green_psycopg2():
    """Make psycopg2 wait for the server as a green thread, not as the
    process. ``nameko run`` (eventlet.monkey_patch()) already does; this
    covers a process that patched eventlet without it. Measured in
    tests/storage/bench_psycogreen.py: without it, a query waiting 1 s for a
    lock stops the whole replica for 1 s (no RPC, no heartbeat)."""
    if not eventlet.patcher.is_monkey_patched("socket"):
        return  # not an eventlet process: threads, where blocking is right
    from psycopg2 import extensions

    if extensions.get_wait_callback() is None:
        from eventlet.support import psycopg2_patcher

        psycopg2_patcher.make_psycopg_green()
        log.info("psycopg2 made green (eventlet wait callback)")


def advisory_key(name):
    """The PostgreSQL advisory lock key (a signed 64-bit int) of ``name``: the
    one way every lock of the system (a migration, a service's writers) is named."""
    return zlib.crc32(name.encode()) - 2 ** 31
