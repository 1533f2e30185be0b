"""What a worker writes through: the tables every service has (the outbox and
the applied-event log) and ``Transaction`` (its session, the events it emits,
the events it has applied)."""
import functools
import json
import time

from sqlalchemy import Column, Float, Integer, MetaData, String, Text, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase

from common import correlation, events

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


class Pending:
    """An event committed and not yet published: its outbox key (the event
    id), its type (the routing key) and its JSON text. ``durable`` False: a
    hint (an event type that is not ``persistent``), kept in no outbox."""

    __slots__ = ("key", "event_type", "body", "correlation_id", "durable")

    def __init__(self, key, event_type, body, correlation_id, durable=True):
        self.key = key
        self.event_type = event_type
        self.body = body
        self.correlation_id = correlation_id
        self.durable = durable

    @classmethod
    def of(cls, event, key=None, body=None, durable=True):
        return cls(key or event["event_id"], event["event_type"], body or json.dumps(event),
                   event.get("correlation_id") or "", durable)

    @classmethod
    def stored(cls, key, event_type, body):
        """One read back from the outbox (the relay's sweep)."""
        return cls(key, event_type, body, json.loads(body).get("correlation_id") or "")


class Transaction:
    """What a worker writes through: the session, plus events and dedup."""

    def __init__(self, session, base):
        self.session = session
        self._base = base
        self.emitted = []  # Pending, in the order emitted (announcements too)

    def emit(self, event_type, **fields):
        """Record an event in the outbox; it is published once this commits.
        An event type that is not ``persistent`` (a hint no consumer needs
        to be sure of: ``mypage_changed``) is kept in no outbox and published
        once this commits as a non-persistent message: cheap, and lost if the
        process or the broker dies first."""
        event = events.make(event_type, correlation.current(), **fields)
        self.emitted.append(Pending.of(event, durable=events.TYPES[event_type].persistent))
        return event

    def write_outbox(self):
        """Insert what was emitted, in one statement (SQL core, no ORM objects);
        ``Store.transaction`` calls it just before the commit."""
        rows = [{"event_id": p.key, "event_type": p.event_type, "payload": p.body, "created_at": time.time()}
                for p in self.emitted if p.durable]
        if rows:
            self.session.execute(self._base.OutboxEvent.__table__.insert(), rows)

    def first_time(self, event, handler):
        """True, and remembered with this transaction, the first time
        ``handler`` applies ``event``; False for a redelivery or duplicate."""
        Processed = self._base.ProcessedEvent
        key = {"event_id": event["event_id"], "handler": handler}
        bind = self.session.bind or self.session.get_bind()  # a store's sessions have one
        if bind.dialect.name in ("sqlite", "postgresql"):
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


@functools.lru_cache(maxsize=None)
def _insert_ignoring_duplicates(table):
    # Plain SQL (SQLite 3.24+, PostgreSQL 9.5+), made once: SQLAlchemy does
    # not cache the compiled form of its dialects' ON CONFLICT inserts.
    return text(f"INSERT INTO {table} (event_id, handler, processed_at) "
                "VALUES (:event_id, :handler, :processed_at) ON CONFLICT DO NOTHING")


def is_duplicate(error):
    """A unique-key clash on the processed-event log: a concurrent duplicate."""
    return isinstance(error, IntegrityError) and "processed_events" in str(error)


def emit_all(tx, caused):
    """Emit through ``tx`` what a domain method returned: every domain
    answers with the events its change caused, ``[(event_type, fields), ...]``."""
    for event_type, fields in caused:
        tx.emit(event_type, **fields)
