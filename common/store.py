"""Storage for a service: its own database, a transactional outbox and a log
of the events it has applied.

``Store`` is the one outbound adapter every service uses. A worker writes
its state change, the events it causes (``tx.emit``) and the id of the event
it is applying (``tx.first_time``) in **one** transaction. The events are
handed to the outbox relay (``common.relay``) right after the commit, which
publishes them in batches; if the process dies before that, the relay that
runs in every replica publishes them when it comes back. So an event is
published at least once and applied at most once: at-least-once delivery
plus idempotent handlers is the "exactly once" a broker can give.

The jobs are split: the port every store implements, with the relay's
lifecycle they share (``common.storeport``), engines and pragmas
(``common.engines``), what a worker writes through (``common.outbox``), the
relay (``common.relay``) and the batches it publishes with confirms
(``common.publisher``).
"""
import time
from contextlib import contextmanager

from eventlet.semaphore import Semaphore
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from common import errors, migrate
from common.engines import advisory_key, engine_for
from common.outbox import Pending, Transaction, declare_base, is_duplicate  # noqa: F401 (the services' imports)
from common.storeport import OutboxStore

class Store(OutboxStore):
    """A service's database, its outbox and the relay that publishes it.

    Who waits for whom when writing:

    - SQLite: one writer at a time per database (``BEGIN IMMEDIATE``); this
      process's writers queue as green threads for it (``write_lock``), so
      none holds a connection or SQLite's busy handler while it waits.
    - PostgreSQL: writers run side by side, in every replica. What must be
      serialized is serialized by the rows it reads to decide: a write
      transaction's session has ``info["for_update"]``, and the services'
      ``models`` read the rows a decision rests on with ``SELECT ... FOR
      UPDATE`` (one title's stock and queue, one reservation, one delivery,
      one MyPage row). Two writes to different titles commit together; a
      second replica adds write throughput.
    - ``serialized=True`` keeps the former service-wide turn on PostgreSQL
      (an advisory lock per transaction): for a service whose decisions read
      many rows (the gateway's refresh-token rotation, notification's mail
      leases), low in volume and off the reservation's path.
    """

    serialized = False
    # ``(name, Repository)``: a service's queries, over a session. Write
    # transactions carry one as ``tx.<name>``; ``store.<name>()`` (on the store
    # and the workers' handle) is a context manager that reads through one.
    repository = None

    def __init__(self, base, migrations=None, serialized=None):
        super().__init__(base)
        if self.repository is not None:
            setattr(self, self.repository[0], self.read_repository)
        # The package whose migrations/ makes the schema; by default the
        # service's own (product.service:ProductService -> product/migrations).
        self.migrations = migrations
        if serialized is not None:
            self.serialized = serialized

    def setup_database(self):
        """Engines, sessions, the writers' turn and the schema."""
        self.is_sqlite = self.db_uri.startswith("sqlite")
        self.engine = engine_for(self.db_uri)
        self.read_engine = engine_for(self.db_uri, write=False) if self.is_sqlite else self.engine
        self.Session = sessionmaker(bind=self.engine, expire_on_commit=False, info={"for_update": True})
        self.ReadSession = sessionmaker(bind=self.read_engine)
        postgres = self.engine.dialect.name == "postgresql"
        serial = postgres and self.serialized
        self.serial_key = advisory_key(f"bookrental-writer:{self.container.service_name}") if serial else None
        # See the class: SQLite and a serialized store take turns in this process too.
        self.write_lock = Semaphore(1) if (self.is_sqlite or serial or not postgres) else _NO_TURN
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

    def close(self):
        self.engine.dispose()
        self.read_engine.dispose()
        self.publisher.close()

    # -- transactions ---------------------------------------------------

    @contextmanager
    def transaction(self, deadline=None):
        with self.write_lock:
            session = self.Session()
            tx = Transaction(session, self.base)
            if self.repository is not None:
                name, repository = self.repository
                setattr(tx, name, repository(session))
            try:
                if self.serial_key is not None:
                    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self.serial_key})
                yield tx
                if deadline is not None and time.time() > float(deadline):
                    # Whoever asked has been told "unavailable, nothing
                    # changed": keep that true.
                    raise errors.Unavailable("the caller gave up before this could be saved")
                tx.write_outbox()
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()
        self.committed(tx.emitted)

    @contextmanager
    def read_repository(self):
        with self.reading() as session:
            yield self.repository[1](session)

    def get_dependency(self, worker_ctx):
        handle = super().get_dependency(worker_ctx)
        if self.repository is not None:
            setattr(handle, self.repository[0], self.read_repository)
        return handle

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

    # -- the outbox, as the relay sees it --------------------------------

    def mark_published(self, keys):
        outbox = self.base.OutboxEvent.__table__
        with self.write_lock:
            with self.engine.begin() as connection:  # SQL core: no ORM session for one UPDATE
                connection.execute(outbox.update().where(outbox.c.event_id.in_(keys)).values(published_at=time.time()))

    def unpublished(self, cutoff, limit):
        """Outbox events (Pending) written before ``cutoff`` and not yet sent, oldest first."""
        outbox = self.base.OutboxEvent.__table__
        with self.read_engine.connect() as connection:
            rows = connection.execute(
                select(outbox.c.event_id, outbox.c.event_type, outbox.c.payload)
                .where(outbox.c.published_at.is_(None), outbox.c.created_at <= cutoff)
                .order_by(outbox.c.seq).limit(limit)).all()
        return [Pending.stored(key, kind, payload) for key, kind, payload in rows]

    def backlog(self):
        Outbox = self.base.OutboxEvent
        with self.reading() as session:
            return session.query(Outbox).filter(Outbox.published_at.is_(None)).count()

    def prune(self):
        cutoff = time.time() - self.retention
        with self.write_lock:
            with self.Session() as session, session.begin():
                Outbox, Processed = self.base.OutboxEvent, self.base.ProcessedEvent
                session.execute(Outbox.__table__.delete().where(Outbox.published_at < cutoff))
                session.execute(Processed.__table__.delete().where(Processed.processed_at < cutoff))


class _NoTurn:
    """The write lock of a store whose writers need not take turns."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NO_TURN = _NoTurn()


def for_update(session):
    """Whether ``session`` writes: its reads a decision rests on lock their
    rows (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite has one writer)."""
    return session.info.get("for_update", False)
