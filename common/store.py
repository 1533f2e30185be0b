"""Storage for a service: its own database, a transactional outbox and a log
of the events it has applied.

``Store`` is the one outbound adapter every service uses. A worker writes
its state change, the events it causes (``tx.emit``) and the id of the event
it is applying (``tx.first_time``) in **one** transaction. The events are
published right after the commit; if the process dies before that, the
relay that runs in every replica publishes them when it comes back. So an
event is published at least once and applied at most once: at-least-once
delivery plus idempotent handlers is the "exactly once" a broker can give.
"""
import functools
import json
import logging
import os
import time
import zlib
from contextlib import contextmanager

import eventlet
from eventlet.event import Event
from eventlet.semaphore import Semaphore
from nameko.amqp.publish import Publisher
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.standalone.events import get_event_exchange
from nameko_sqlalchemy.database import DB_URIS_KEY, Database
from sqlalchemy import Column, Float, Integer, MetaData, String, Text, create_engine, event, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, sessionmaker

from common import correlation, errors, events, migrate
from common.metrics import OUTBOX_FAILURES, OUTBOX_PUBLISHED
from common.rpc import DEADLINE

log = logging.getLogger(__name__)

PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5}

# Fault injection for the tests that prove the outbox (tests/faults): with
# BOOKRENTAL_FAULT=crash-before-publish the process dies, as if killed, right
# after committing its first transaction that emitted events and before
# publishing them. Unset in every real deployment.
FAULT = os.environ.get("BOOKRENTAL_FAULT", "")


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def declare_base():
    """A declarative base for one service, with the tables every service has."""

    class Base(DeclarativeBase):
        # Constraints get predictable names on every database, so a later
        # migration can name the one it drops or changes.
        metadata = MetaData(naming_convention=NAMING_CONVENTION)

    class OutboxEvent(Base):
        __tablename__ = "outbox"
        seq = Column(Integer, primary_key=True, autoincrement=True)
        event_id = Column(String(64), unique=True, nullable=False)
        event_type = Column(String(64), nullable=False)
        payload = Column(Text, nullable=False)
        created_at = Column(Float, nullable=False)
        published_at = Column(Float, nullable=True, index=True)

    class ProcessedEvent(Base):
        __tablename__ = "processed_events"
        event_id = Column(String(64), primary_key=True)
        handler = Column(String(100), primary_key=True)
        processed_at = Column(Float, nullable=False)

    Base.OutboxEvent = OutboxEvent
    Base.ProcessedEvent = ProcessedEvent
    return Base


class Transaction:
    """What a worker writes through: the session, plus events and dedup."""

    def __init__(self, session, base):
        self.session = session
        self._base = base
        self.emitted = []

    def emit(self, event_type, **fields):
        """Record an event in the outbox; it is published once this commits."""
        event = events.make(event_type, correlation.current(), **fields)
        row = self._base.OutboxEvent(
            event_id=event["event_id"], event_type=event_type,
            payload=json.dumps(event), created_at=time.time())
        self.session.add(row)
        self.emitted.append(row)
        return event

    def first_time(self, event, handler):
        """True, and remembered with this transaction, the first time
        ``handler`` applies ``event``; False for a redelivery or duplicate."""
        Processed = self._base.ProcessedEvent
        key = {"event_id": event["event_id"], "handler": handler}
        if self.session.get_bind().dialect.name in ("sqlite", "postgresql"):
            # One statement instead of an ORM get and a flushed add: a third
            # of a handler's database time (docs/performance.md). A twin being
            # applied by another replica makes this wait for it, then ignore.
            inserted = self.session.execute(_insert_ignoring_duplicates(Processed.__table__.name),
                                            {"processed_at": time.time(), **key})
            return inserted.rowcount == 1
        if self.session.get(Processed, key) is not None:
            return False
        self.session.add(Processed(processed_at=time.time(), **key))
        return True


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
    transactions begin with ``BEGIN IMMEDIATE``; a reader's with ``BEGIN``."""
    if uri.startswith("sqlite"):
        return _sqlite_engine(uri, immediate=write)
    return create_engine(uri, pool_pre_ping=True, pool_size=20, max_overflow=20)


class Store(Database):
    """nameko-sqlalchemy's Database, plus the outbox and its relay."""

    relay_interval = 1.0  # seconds between sweeps for events left unpublished
    relay_grace = 2.0  # an event this old was not published by its worker
    stop_timeout = 10.0  # seconds a stop waits for the relay's sweep in progress
    retention = 7 * 24 * 3600  # how long applied-event ids and sent events are kept

    def __init__(self, base, migrations=None):
        super().__init__(base)
        self.base = base
        # The package whose migrations/ makes the schema; by default the
        # service's own (product.service:ProductService -> product/migrations).
        self.migrations = migrations

    def setup(self):
        service_name = self.container.service_name
        config = self.container.config
        self.db_uri = config[DB_URIS_KEY][f"{service_name}:{self.base.__name__}"]
        self.setup_database()
        self.exchange = get_event_exchange(service_name, config)
        self.publisher = Publisher(config[AMQP_URI_CONFIG_KEY], serializer="json", retry_policy=PUBLISH_RETRY)
        # The exchange is declared with the first publish, and again after a
        # failure (the broker may have lost it); not on every publish, where
        # kombu copies the exchange before it finds it declared: 8% of a
        # service's CPU under load (docs/performance.md).
        self._declared = False
        self._stopping = False
        self._marks = None  # the _Marks that workers publishing now join (see _mark_published)
        self._marking = Semaphore(1)

    def setup_database(self):
        """The database side of ``setup``: engines, sessions, the writers'
        turn and the schema (mypage.views.RedisViewStore has its own)."""
        self.is_sqlite = self.db_uri.startswith("sqlite")
        self.engine = engine_for(self.db_uri)
        self.read_engine = engine_for(self.db_uri, write=False) if self.is_sqlite else self.engine
        self.Session = sessionmaker(bind=self.engine, expire_on_commit=False)
        self.ReadSession = sessionmaker(bind=self.read_engine)
        # Writers of one service take turns, as one writer per database is
        # what the services are written for (a handler reads, decides, then
        # writes). SQLite: BEGIN IMMEDIATE. PostgreSQL: every write
        # transaction first takes the service's advisory lock (see
        # transaction), so replicas take turns too; reads never wait.
        # Queueing this process's writers here, as green threads, keeps one
        # from holding a connection (or SQLite's busy handler) while it waits.
        self.write_lock = Semaphore(1)
        self.serial_key = _advisory_key(f"bookrental-writer:{self.container.service_name}") if self._postgres() else None
        self.create_schema()

    def create_schema(self):
        """Migrate the database to the newest revision of the service's
        migrations (common.migrate: one replica migrates, the others wait).
        A store with no migrations (a test's) gets ``create_all``."""
        package = self.migrations or self.container.service_cls.__module__.split(".")[0]
        if migrate.has_migrations(package):
            migrate.upgrade(package, self.engine)
            return
        for attempt in range(5):
            try:
                self.base.metadata.create_all(self.engine)
                return
            except OperationalError:  # another replica created it at the same moment
                if attempt == 4:
                    raise
                time.sleep(0.2)

    def start(self):
        self._relay_stopped = Event()
        self.container.spawn_managed_thread(self._relay_forever)

    def stop(self):
        """A graceful stop. Nameko has stopped the entrypoints and waited for
        every worker (each publishes what it committed) before it stops the
        dependencies; the relay finishes the sweep it is in, publishing and
        marking what it sent, before the connections close."""
        self._stopping = True
        stopped = getattr(self, "_relay_stopped", None)
        if stopped is not None:
            with eventlet.Timeout(self.stop_timeout, False):
                stopped.wait()
        self.engine.dispose()
        self.read_engine.dispose()

    def kill(self):
        self._stopping = True
        self.engine.dispose()
        self.read_engine.dispose()

    def get_dependency(self, worker_ctx):
        return StoreHandle(self, worker_ctx.context_data.get(DEADLINE))

    def worker_teardown(self, worker_ctx):
        pass

    # -- transactions ---------------------------------------------------

    def _postgres(self):
        if self.engine.dialect.name != "postgresql":
            return False
        _green_psycopg2()
        return True

    @contextmanager
    def transaction(self, deadline=None):
        lock = self.write_lock or _NoLock
        with lock:
            session = self.Session()
            tx = Transaction(session, self.base)
            try:
                if self.serial_key is not None:
                    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self.serial_key})
                yield tx
                if deadline is not None and time.time() > float(deadline):
                    # Whoever asked has been told "unavailable, nothing
                    # changed": keep that true.
                    raise errors.Unavailable("the caller gave up before this could be saved")
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()
        if tx.emitted and FAULT == "crash-before-publish":
            log.error("fault injected: exiting between commit and publish", extra={"pending": len(tx.emitted)})
            os._exit(137)
        if tx.emitted:
            self.publish([(row.seq, row.event_type, json.loads(row.payload)) for row in tx.emitted])

    @contextmanager
    def reading(self):
        session = self.ReadSession()
        try:
            yield session
        finally:
            session.rollback()
            session.close()

    def ping(self):
        with self.reading() as session:
            session.execute(text("SELECT 1"))

    # -- the outbox relay -----------------------------------------------

    def publish(self, rows):
        """Publish outbox rows (seq, type, event) and mark them sent.

        Failures are logged, not raised: the relay will try again."""
        sent = []
        try:
            for seq, event_type, payload in rows:
                self.publisher.publish(
                    payload, exchange=self.exchange, routing_key=event_type,
                    declare=() if self._declared else [self.exchange],
                    extra_headers={"nameko.correlation_id": payload.get("correlation_id") or ""})
                self._declared = True
                sent.append(seq)
        except Exception as error:  # the broker is away; the relay retries
            self._declared = False
            log.warning("outbox publish deferred: %s", error, extra={"pending": len(rows) - len(sent)})
            OUTBOX_FAILURES.labels(self.container.service_name).inc()
        if sent:
            OUTBOX_PUBLISHED.labels(self.container.service_name).inc(len(sent))
            self._mark_published(sent)
        return len(sent)

    def _mark_published(self, sent):
        """Mark ``sent`` published; returns once they are.

        Workers that publish at the same moment share one write (group
        commit): each adds its seqs to the batch being collected; the first
        to get the turn writes the whole batch, and the others find theirs
        written. Under load this is one write for many transactions instead
        of one each (docs/performance.md)."""
        marks = self._marks
        if marks is None:
            marks = self._marks = _Marks()
        marks.seqs.extend(sent)
        with self._marking:
            if self._marks is marks:  # not written yet: this worker writes it
                with (self.write_lock or _NoLock):
                    self._marks = None  # now: the seqs that joined while it waited go too
                    try:
                        self._write_marks(marks.seqs)
                    except Exception as error:
                        marks.error = error
                    finally:
                        marks.written = True
        if marks.error is not None:
            raise marks.error

    def _write_marks(self, seqs):
        outbox = self.base.OutboxEvent.__table__
        with self.engine.begin() as connection:  # SQL core: no ORM session for one UPDATE
            connection.execute(outbox.update().where(outbox.c.seq.in_(seqs)).values(published_at=time.time()))

    def _unpublished(self, cutoff, batch):
        """Outbox rows (seq, type, event) written before ``cutoff`` and not yet sent."""
        Outbox = self.base.OutboxEvent
        with self.reading() as session:
            rows = session.execute(
                select(Outbox.seq, Outbox.event_type, Outbox.payload)
                .where(Outbox.published_at.is_(None), Outbox.created_at <= cutoff)
                .order_by(Outbox.seq).limit(batch)).all()
        return [(seq, kind, json.loads(payload)) for seq, kind, payload in rows]

    def relay_pending(self, older_than=None, batch=500):
        cutoff = time.time() - (self.relay_grace if older_than is None else older_than)
        rows = self._unpublished(cutoff, batch)
        if not rows:
            return 0
        published = self.publish(rows)
        log.info("outbox relay published %d left-over events", published)
        return published

    def backlog(self):
        Outbox = self.base.OutboxEvent
        with self.reading() as session:
            return session.query(Outbox).filter(Outbox.published_at.is_(None)).count()

    def prune(self):
        cutoff = time.time() - self.retention
        with (self.write_lock or _NoLock):
            with self.Session() as session, session.begin():
                Outbox, Processed = self.base.OutboxEvent, self.base.ProcessedEvent
                session.execute(Outbox.__table__.delete().where(Outbox.published_at < cutoff))
                session.execute(Processed.__table__.delete().where(Processed.processed_at < cutoff))

    def _relay_forever(self):
        sweeps = 0
        try:
            while not self._stopping:
                try:
                    # At start, publish at once what a crashed predecessor left.
                    self.relay_pending(older_than=0 if sweeps == 0 else None)
                    if sweeps % 3600 == 1:
                        self.prune()
                except Exception:
                    log.exception("outbox relay sweep failed")
                sweeps += 1
                # Sleep in short steps, so that a stop does not wait a whole interval.
                until = time.monotonic() + self.relay_interval
                while not self._stopping and time.monotonic() < until:
                    eventlet.sleep(min(0.1, self.relay_interval))
        finally:
            stopped = getattr(self, "_relay_stopped", None)
            if stopped is not None and not stopped.ready():
                stopped.send()


def _advisory_key(name):
    """A PostgreSQL advisory lock key (signed 64-bit) for ``name``."""
    return zlib.crc32(name.encode()) - 2 ** 31


def _green_psycopg2():
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


@functools.lru_cache(maxsize=None)
def _insert_ignoring_duplicates(table):
    # Plain SQL (SQLite 3.24+, PostgreSQL 9.5+), made once: SQLAlchemy does
    # not cache the compiled form of its dialects' ON CONFLICT inserts.
    return text(f"INSERT INTO {table} (event_id, handler, processed_at) "
                "VALUES (:event_id, :handler, :processed_at) ON CONFLICT DO NOTHING")


class _Marks:
    """Outbox seqs published by the workers of one moment, marked in one write."""

    __slots__ = ("seqs", "written", "error")

    def __init__(self):
        self.seqs = []
        self.written = False
        self.error = None


class _NoLockType:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NoLock = _NoLockType()


class StoreHandle:
    """The worker's view of the store."""

    def __init__(self, store, deadline=None):
        self._store = store
        self._deadline = deadline  # the RPC caller's, when a caller is waiting
        self.reading = store.reading
        self.ping = store.ping
        self.backlog = store.backlog


    def transaction(self):
        """A write that is committed only while its RPC caller still waits."""
        return self._store.transaction(deadline=self._deadline)


def is_duplicate(error):
    """A unique-key clash on the processed-event log: a concurrent duplicate."""
    return isinstance(error, IntegrityError) and "processed_events" in str(error)
