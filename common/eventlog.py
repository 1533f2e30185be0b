"""The event log (SPEC §10): every published event, kept on the broker.

``events.log`` is a RabbitMQ stream queue (an append-only, replicated log
read by offset over AMQP 0.9.1) bound with ``#`` to every producer's Nameko
event exchange (``<service>.events``). The broker routes each published event
to the services' own queues *and* appends it to the log, envelope, headers
and all, in publication order per producer. Nothing in the normal flow reads
it; ``ops.events`` (``make events``) and ``ops.replay`` (``make replay``) do.

Retention: ``EVENT_LOG_MAX_AGE`` (default ``30D``; RabbitMQ's units Y, M, D,
h, m, s) and a size cap ``EVENT_LOG_MAX_BYTES`` (default 10 GB), whichever
comes first; the broker drops whole segments from the head of the log.

Declared idempotently by whichever service starts first (``EventLog``, a
dependency of ``common.service.ServiceBase``), by the
Kubernetes topology (``k8s/eventlog.yaml``) and by ``declare`` for tools and
tests. A stream's arguments never change once it exists: a service that
finds it declared with other ones keeps it as it is and says so (change the
retention with a policy, docs/eventlog.md).

Reading (``read``): a consumer on a channel with a prefetch and manual acks
(what streams require), starting at ``first``, an offset, or a time
(``x-stream-offset``); each message carries its offset in the
``x-stream-offset`` header. A read stops at the log's tail as it was when the
read began (``tail``), so it ends even while events keep arriving.

About 400 lines, one job: the log's declaration, its retention, and reading
it back by offset (``make events``, ``make replay``) share the stream's
arguments and the envelope's checks, which would otherwise be defined twice.
"""
import json
import logging
import re
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Optional

from amqp.exceptions import PreconditionFailed
from kombu import Connection, Exchange, Queue
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.extensions import DependencyProvider
from nameko.standalone.events import get_event_exchange

from common import events
from common.errors import Unavailable

log = logging.getLogger(__name__)

LOG_QUEUE = "events.log"
DEFAULT_MAX_AGE = "30D"
DEFAULT_MAX_BYTES = 10 * 1000 ** 3
PREFETCH = 500  # messages in flight to a reader (streams need a prefetch)
OFFSET_HEADER = "x-stream-offset"


def producers():
    """Every service that publishes events (``common.events``), in order."""
    return sorted({spec.producer for spec in events.TYPES.values()})


def arguments(config):
    """The stream's queue arguments, from ``EVENT_LOG_MAX_AGE`` / ``EVENT_LOG_MAX_BYTES``."""
    return {
        "x-queue-type": "stream",
        "x-max-age": str(config.get("EVENT_LOG_MAX_AGE") or DEFAULT_MAX_AGE),
        "x-max-length-bytes": int(config.get("EVENT_LOG_MAX_BYTES") or DEFAULT_MAX_BYTES),
    }


def log_queue(config, offset=None):
    consumer_arguments = {OFFSET_HEADER: offset} if offset is not None else None
    return Queue(LOG_QUEUE, durable=True, auto_delete=False, queue_arguments=arguments(config),
                 consumer_arguments=consumer_arguments)


def declare(connection, config):
    """Declare the stream and bind it to every producer's event exchange
    (declaring those as Nameko does). Idempotent. Returns the arguments the
    stream was declared with, or None when it already existed with others
    (kept as it is; logged)."""
    channel = connection.channel()
    declared = arguments(config)
    try:
        log_queue(config)(channel).declare()
    except PreconditionFailed as error:  # exists with other arguments: the channel is closed
        log.warning("event log %s kept as declared before: %s", LOG_QUEUE, error)
        declared = None
        channel = connection.channel()
    for producer in producers():
        exchange = get_event_exchange(producer, config)
        exchange(channel).declare()
        channel.queue_bind(LOG_QUEUE, exchange.name, "#")
    try:
        channel.close()
    except Exception:  # nothing to keep of a channel used once
        pass
    return declared


class EventLog(DependencyProvider):
    """Declares the event log when a service starts. A broker that refuses
    (or is away) does not stop the service: the next start declares it."""

    def start(self):
        config = self.container.config
        try:
            with Connection(config[AMQP_URI_CONFIG_KEY], connect_timeout=5) as connection:
                declare(connection, config)
        except Exception as error:  # never a reason not to start
            log.warning("event log not declared: %s", error)

    def get_dependency(self, worker_ctx):
        return None


# -- reading ------------------------------------------------------------------


@dataclass
class Entry:
    """One message of the log: the event and where it sits."""

    offset: int
    producer: str  # from the exchange: "product.events" -> "product"
    event_type: str  # the routing key
    event: object  # the JSON body (a dict for every well-formed event)
    headers: dict


def _entry(message):
    info = message.delivery_info
    exchange = info.get("exchange") or ""
    try:
        body = message.decode()
    except Exception as error:  # not JSON: reported by the reader's caller
        body = error
    return Entry(int(message.headers.get(OFFSET_HEADER, -1)), exchange.removesuffix(".events"),
                 info.get("routing_key"), body, dict(message.headers or {}))


def _consume(connection, config, offset, on_entry, idle, within=None):
    """Consume from ``offset`` calling ``on_entry(entry) -> bool`` (False to stop);
    stops too once nothing arrived for ``idle`` seconds, or after ``within`` seconds."""
    deadline = None if within is None else time.monotonic() + within
    channel = connection.channel()
    channel.basic_qos(0, PREFETCH, False)
    done = []

    def callback(body, message):
        message.ack()
        if done:
            return
        if on_entry(_entry(message)) is False:
            done.append(True)

    consumer = connection.Consumer(queues=[log_queue(config, offset)], channel=channel,
                                   callbacks=[callback], accept=["json"], no_ack=False)
    with consumer:
        while not done and (deadline is None or time.monotonic() < deadline):
            try:
                connection.drain_events(timeout=idle)
            except socket.timeout:
                break
    try:
        channel.close()
    except Exception:
        pass


def tail(connection, config, idle=0.3, within=2.0):
    """The offset of the log's last event now, or a little later (-1 when empty)."""
    return _last(connection, config, idle, within)[0]


def _last(connection, config, idle=0.3, within=2.0):
    """(the offset of the log's last event, when it occurred or None)."""
    seen = [-1, None]

    def on_entry(entry):
        if entry.offset > seen[0]:
            seen[0] = entry.offset
            seen[1] = entry.event.get("occurred_at") if isinstance(entry.event, dict) else None

    # "last" attaches at the last chunk: a few messages, then silence, or
    # newer events while they keep coming (past the tail of when it was
    # asked: fine), hence the bound.
    _consume(connection, config, "last", on_entry, idle, within)
    return seen[0], seen[1]


def _before(occurred_at, moment):
    """Whether the event time ``occurred_at`` (ISO 8601) is before ``moment``."""
    try:
        return datetime.fromisoformat(occurred_at).astimezone(timezone.utc) < moment
    except (TypeError, ValueError, OverflowError):
        return False


def scan(amqp_uri, config, on_entry, start="first", until=None, idle=5.0, within=None):
    """Call ``on_entry(entry)`` for every entry from ``start`` ("first", an
    offset, or an aware datetime: the first chunk published at or after it)
    to ``until`` (an offset; by default the tail when the scan begins), in
    log order; ``on_entry`` returning False stops it there, and so does
    ``within`` seconds. Returns the offset it stopped at (-1: the log is empty).
    ``on_entry`` runs while the message is being consumed: the next ones
    wait (at most ``PREFETCH`` in flight), so a slow caller is no problem."""
    return _scan(amqp_uri, config, on_entry, start, until, idle, within)[0]


def _scan(amqp_uri, config, on_entry, start, until, idle, within):
    """``scan``, answering (the offset it stopped at, the tail it read to)."""
    if isinstance(start, datetime):
        start = start.astimezone(timezone.utc)
    with Connection(amqp_uri, connect_timeout=5) as connection:
        declare(connection, config)
        if until is None:
            end, last_at = _last(connection, config)
        else:
            end, last_at = until, None
        if end < 0 or (isinstance(start, int) and start > end):
            return -1, end  # nothing to read
        if isinstance(start, datetime) and last_at is not None and _before(last_at, start):
            return -1, end  # nothing since then: no wait for events that will not come
        reached = [-1]

        def each(entry):
            if isinstance(start, int) and entry.offset < start:
                return True  # the head of the chunk the broker attached at
            if entry.offset > end:
                return False
            reached[0] = entry.offset
            if on_entry(entry) is False:
                return False
            return entry.offset < end

        _consume(connection, config, start, each, idle, within)
        return reached[0], end


def read(amqp_uri, config, start="first", until=None, idle=5.0):
    """The entries ``scan`` finds, as a list."""
    found = []
    scan(amqp_uri, config, found.append, start, until, idle)
    return found


def first_offset(amqp_uri, config):
    """The offset of the oldest event still in the log (None when empty)."""
    found = []

    def first(entry):
        found.append(entry.offset)
        return False

    with Connection(amqp_uri, connect_timeout=5) as connection:
        declare(connection, config)
        _consume(connection, config, "first", first, 1.0)
    return found[0] if found else None


# -- one business case ----------------------------------------------------------
# What ``make events`` prints and the librarians' trace (GET
# /reservations/{id}/events) answers: the events of one reservation.

ENVELOPE = ("event_id", "event_type", "occurred_at", "correlation_id", "schema_version", "reservation_id")
_DURATION = re.compile(r"([0-9]{1,9})\s*(s|m|h|D|d)")
DURATION_PATTERN = r"^[0-9]{1,9}[smhDd]$"  # what the API documents (the code takes spaces too)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "D": "days", "d": "days"}
EPOCH = datetime(1970, 1, 2, tzinfo=timezone.utc)  # what a broker's timestamp can say, and a day more
FUTURE = datetime.max.replace(tzinfo=timezone.utc)


def since(text, now=None):
    """A time window's start: an ISO 8601 time (UTC unless it says
    otherwise) or a duration back from now (``90m``, ``6h``, ``2D``);
    "first" (the whole log) when empty. ValueError when it is neither. A
    time out of the broker's range is the log's start, or a future nothing
    was published in."""
    if not text:
        return "first"
    match = _DURATION.fullmatch(text.strip())
    if match:
        try:
            return max((now or datetime.now(timezone.utc)) - timedelta(**{_UNITS[match[2]]: int(match[1])}), EPOCH)
        except OverflowError:
            return EPOCH  # longer ago than any log
    try:
        moment = datetime.fromisoformat(text.strip().upper().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO 8601 time nor a duration like 90m, 6h, 2D") from None
    try:
        moment = (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except OverflowError:
        return EPOCH if moment.year < 1970 else FUTURE
    return max(moment, EPOCH)


def fields(event):
    """An event's own fields: the envelope's ids, type, time and version left out."""
    return {key: value for key, value in event.items() if key not in ENVELOPE}


def line(entry):
    """One event, one line: time, producer, type, correlation id, its fields."""
    event = entry.event
    text = " ".join(f"{key}={_value(value)}" for key, value in fields(event).items())
    return "  ".join([event.get("occurred_at") or "-", entry.producer, entry.event_type,
                      event.get("correlation_id") or "-", text]).rstrip()


def _value(value):
    if isinstance(value, str) and value and not re.search(r"\s", value):
        return value
    return json.dumps(value)


def describe(entry):
    """One event of a story, as the trace route answers it."""
    event = entry.event
    return {"occurred_at": event.get("occurred_at"), "producer": entry.producer, "event_type": entry.event_type,
            "correlation_id": event.get("correlation_id"), "event_id": event.get("event_id"),
            "fields": fields(event)}


def of_reservation(entry, reservation_id):
    return isinstance(entry.event, dict) and entry.event.get("reservation_id") == reservation_id


@dataclass
class Story:
    """The events of one reservation a scan found, in log order."""

    entries: list
    scanned: int  # how many events of the log were read to find them
    next: Optional[int] = None  # the offset to go on from; None: the scan reached the tail


def story(amqp_uri, config, reservation_id, start="first", limit=None, max_scanned=None, within=None, idle=5.0,
          on_scanned=None):
    """The reservation's events from ``start`` ("first", an offset, or an
    aware datetime) to the log's tail as it was when the scan began. Bounded
    when asked: at most ``limit`` events found, ``max_scanned`` read,
    ``within`` seconds; then ``next`` says where to go on from.
    ``on_scanned(count)`` is called after each event read."""
    if isinstance(start, datetime) and start > datetime.now(timezone.utc) + timedelta(minutes=5):
        return Story([], 0)  # nothing is published in the future
    found, scanned = [], [0]

    def each(entry):
        scanned[0] += 1
        if on_scanned is not None:
            on_scanned(scanned[0])
        if of_reservation(entry, reservation_id):
            found.append(entry)
        if limit is not None and len(found) >= limit:
            return False
        if max_scanned is not None and scanned[0] >= max_scanned:
            return False
        return True

    reached, end = _scan(amqp_uri, config, each, start, None, idle, within)
    following = reached + 1 if 0 <= reached < end else None
    return Story(found, scanned[0], following)


class EventLogReader(DependencyProvider):
    """An outbound adapter: the event log, read for people (the librarians'
    trace of one reservation). Each call opens a connection of its own (a
    scan holds a consumer on the stream for its length), at most ``READERS``
    at once per process, each bounded: ``max_scanned`` events read (setting
    ``EVENT_TRACE_MAX_SCAN``), ``within`` seconds (``EVENT_TRACE_SECONDS``).
    A broker that cannot be reached, or readers all busy, is ``Unavailable``."""

    READERS = 2
    WAIT = 5.0  # seconds a call waits for a free reader
    YIELD_EVERY = 200  # events read between two turns given to the process's other work

    def setup(self):
        from eventlet.semaphore import Semaphore  # a nameko process is an eventlet one

        self.readers = Semaphore(self.READERS)

    def get_dependency(self, worker_ctx):
        return _Reader(self.container.config, self.readers, self.WAIT, self.YIELD_EVERY)


class _Reader:
    def __init__(self, config, readers, wait, yield_every):
        self.config, self.readers, self.wait, self.yield_every = config, readers, wait, yield_every

    def story(self, reservation_id, start="first", limit=100):
        import eventlet
        from amqp.exceptions import AMQPError
        from kombu.exceptions import OperationalError

        config = self.config
        if not self.readers.acquire(timeout=self.wait):
            raise Unavailable("the event log is busy with other searches; try again in a moment")

        def turn(count):
            if count % self.yield_every == 0:
                eventlet.sleep(0)  # a long scan does not hold up the other requests

        try:
            return story(config[AMQP_URI_CONFIG_KEY], config, reservation_id, start, limit=limit,
                         max_scanned=int(config.get("EVENT_TRACE_MAX_SCAN") or 20000),
                         within=float(config.get("EVENT_TRACE_SECONDS") or 10), idle=2.0, on_scanned=turn)
        except (OSError, OperationalError, AMQPError) as error:
            log.warning("event log not read: %s", error)
            raise Unavailable("the event log cannot be read now (the broker is not answering)") from None
        finally:
            self.readers.release()
