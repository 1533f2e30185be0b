"""Helpers for the integration tests: building events, watching an
exchange, reading a service's database."""
import time
import uuid

from kombu import Queue
from nameko.testing.services import entrypoint_waiter
from sqlalchemy import create_engine, text

from common import events

# What config.yml sets and the backend services read, with values that keep
# the timing tests short.
CANCEL_TIMEOUT = 1.0
CIRCUIT_FAIL_MAX = 3
CIRCUIT_RESET_TIMEOUT = 1.5

def event(event_type, correlation_id="corr-test", **fields):
    """A valid event, built exactly as the producers build them."""
    return events.make(event_type, correlation_id, **fields)


class EventLog:
    """Every event published to one ``<service>.events`` exchange since it
    was created (its own queue, bound with ``#``)."""

    def __init__(self, connection, exchange):
        self.channel = connection.channel()
        exchange(self.channel).declare()
        self.queue = Queue(f"test-log-{uuid.uuid4().hex[:8]}", exchange=exchange, routing_key="#",
                           exclusive=True, auto_delete=True)(self.channel)
        self.queue.declare()
        self.messages = []

    def _drain(self):
        while True:
            message = self.queue.get(no_ack=True, accept=["json"])
            if message is None:
                return
            self.messages.append(message)

    @property
    def events(self):
        self._drain()
        return [message.payload for message in self.messages]

    def of_type(self, event_type):
        return [e for e in self.events if e["event_type"] == event_type]

    def headers(self, event_id):
        self._drain()
        return next(m.headers for m in self.messages if m.payload["event_id"] == event_id)

    def wait_for(self, event_type, count=1, timeout=5, **match):
        """The first ``count`` events of that type (with those fields)."""
        deadline = time.time() + timeout
        while True:
            found = [e for e in self.of_type(event_type) if all(e.get(k) == v for k, v in match.items())]
            if len(found) >= count:
                return found[:count] if count > 1 else found[0]
            if time.time() > deadline:
                raise AssertionError(f"{count} {event_type} {match or ''} not published within {timeout}s; "
                                     f"got {[e['event_type'] for e in self.events]}")
            time.sleep(0.05)

    def settle(self, quiet=0.3):
        """Every event, once none has arrived for ``quiet`` seconds."""
        seen = -1
        while len(self.events) != seen:
            seen = len(self.events)
            time.sleep(quiet)
        return self.events

    def close(self):
        self.channel.close()


def handler_queue(source, event_type, service, method):
    return f"evt-{source}-{event_type}--{service}.{method}"


class Database:
    """A service's SQLite file, read the way an operator would."""

    def __init__(self, uri):
        self.engine = create_engine(uri)

    def rows(self, sql, **params):
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(text(sql), params)]

    def one(self, sql, **params):
        rows = self.rows(sql, **params)
        assert len(rows) == 1, rows
        return rows[0]

    def count(self, table, where="1=1", **params):
        return self.rows(f"SELECT count(*) AS n FROM {table} WHERE {where}", **params)[0]["n"]

    def execute(self, sql, **params):
        with self.engine.begin() as connection:
            connection.execute(text(sql), params)

    def processed(self, event_id=None):
        if event_id is None:
            return self.rows("SELECT event_id, handler FROM processed_events")
        return self.rows("SELECT event_id, handler FROM processed_events WHERE event_id = :e", e=event_id)


def assert_envelope(event, event_type, correlation_id):
    """SPEC §4: every event carries the full envelope, and parses."""
    assert event["event_type"] == event_type
    assert event["correlation_id"] == correlation_id
    assert event["schema_version"] == events.SCHEMA_VERSION
    uuid.UUID(event["event_id"])
    assert event["occurred_at"].endswith("+00:00"), event["occurred_at"]
    events.parse(event_type, event)  # every field its schema requires


def handled(container, publish, sent, method=None):
    """Publish ``sent`` as its producer does, and wait until ``container``'s
    ``method`` (by default ``on_<event_type>``) has handled it, without error."""
    with entrypoint_waiter(container, method or f"on_{sent['event_type']}", timeout=5) as result:
        publish(events.TYPES[sent["event_type"]].producer, sent)
    result.get()
    return sent
