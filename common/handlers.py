"""The entrypoint for another service's events: ``@handles(source, type)``.

Every handler gets the same guarantees, so no service has to remember them:

- one durable queue per handler shared by all replicas (``SERVICE_POOL``):
  each event is handled once per service, and waits while the service is down;
- the event is validated against its schema before anything is touched;
- the effect and the event's id are committed in one transaction, so a
  redelivered or duplicated event changes nothing the second time;
- a failing event is retried a bounded number of times with backoff, then
  parked on the handler's dead-letter queue with the reason; it never loops
  forever and is never silently dropped (``make dlq`` shows and replays it);
- events are applied in batches: what has arrived on a handler's queue while
  its previous batch was applied (at most ``EVENT_BATCH_SIZE``) is applied in
  one worker and one transaction, each event's id recorded with it, and each
  delivery acked after the commit. At a low rate a batch is one event, as
  it always was; under load one commit, one worker and one session serve
  many events (docs/performance.md). If anything in a batch fails, the batch
  is rolled back and its events applied again one by one, so that only the
  failing one is retried and parked.

Longer than most modules here (about 280 lines) because it is one job, the
guarantees above, and each piece of it (the entrypoint, its batches, its
retries, applying one event and a batch) only makes sense beside the others.
"""
import functools
import logging

import eventlet
from eventlet.event import Event
from eventlet.queue import Empty, LightQueue
from kombu import Connection, Exchange, Queue
from nameko.amqp.publish import Publisher
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.events import SERVICE_POOL, EventHandler
from nameko.exceptions import ContainerBeingKilled

from common import correlation, events, queues
from common.metrics import EVENTS_HANDLED
from common.consumer import BROKER_ERRORS, SettlingQueueConsumer
from common.store import is_duplicate

log = logging.getLogger(__name__)

DEAD_LETTER_EXCHANGE = "bookrental.dead-letters"
RETRIES_HEADER = "x-bookrental-retries"
ERROR_HEADER = "x-bookrental-error"
MAX_RETRIES = 5
BACKOFF = 0.25  # seconds, doubled on each retry
BATCH_SIZE_KEY = "EVENT_BATCH_SIZE"
BATCH_SIZE = 10  # at most max_workers in effect: Nameko 2's prefetch per queue


def dead_letter_exchange():
    return Exchange(DEAD_LETTER_EXCHANGE, type="direct", durable=True)


def dead_letter_queue(queue_name, config=None):
    return Queue(f"{queue_name}.dead", exchange=dead_letter_exchange(), routing_key=queue_name, durable=True,
                 queue_arguments=queues.durable(config))


class ReliableEventHandler(EventHandler):
    """Nameko's event handler, with bounded retries and a dead-letter queue."""

    queue_consumer = SettlingQueueConsumer()

    def setup(self):
        super().setup()
        # Anything RabbitMQ itself rejects goes to the same place as our own
        # parked events.
        self.queue.queue_arguments = {
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": self.queue.name,
            **queues.handler(self.container.config),  # quorum in a cluster (common/queues.py)
        }
        self.amqp_uri = self.container.config[AMQP_URI_CONFIG_KEY]
        self.publisher = Publisher(self.amqp_uri, serializer="json")
        # A body that cannot be decoded (not JSON) never reaches
        # handle_message: kombu hands it to the consumer's on_decode_error,
        # whose default acks it, silently dropped. Rejected instead, it goes
        # through the queue's dead-letter arguments above to <queue>.dead.
        # (The container's RPC queues have none: there, it is dropped as before.)
        self.queue_consumer.on_decode_error = _park_undecodable
        self.batch_size = max(1, int(self.container.config.get(BATCH_SIZE_KEY) or BATCH_SIZE))
        self.arrived = LightQueue()

    def start(self):
        with Connection(self.amqp_uri) as connection:
            dead_letter_queue(self.queue.name, self.container.config)(connection.default_channel).declare()
        super().start()
        self.container.spawn_managed_thread(self._apply_in_batches, identifier=f"{self.method_name}.batches")

    def handle_message(self, body, message):
        # The queue consumer calls this for each delivery; the batches are
        # made and handed to workers by _apply_in_batches.
        self.arrived.put((body, message))

    def _apply_in_batches(self):
        """One batch of this queue in a worker at a time: what arrives
        meanwhile makes the next one. (Stopped with the container; what it
        holds unacked comes again from the broker.)"""
        while True:
            batch = [self.arrived.get()]
            while len(batch) < self.batch_size:
                try:
                    batch.append(self.arrived.get_nowait())
                except Empty:
                    break
            settled = Event()
            try:
                self.container.spawn_worker(
                    self, (Batch(body for body, _ in batch),), {},
                    context_data=self.unpack_message_headers(batch[0][1]),
                    handle_result=functools.partial(self._settle, batch, settled))
            except ContainerBeingKilled:
                for _, message in batch:
                    self.queue_consumer.requeue_message(message)
                return
            settled.wait()

    def _settle(self, batch, settled, worker_ctx, result=None, exc_info=None):
        """Acks what the batch applied (the next batch may start), then
        retries or parks each event that failed."""
        failures = result if exc_info is None else [exc_info[1]] * len(batch)
        try:
            for (_, message), failure in zip(batch, failures):
                if failure is None:
                    self.queue_consumer.ack_message(message)
        finally:
            settled.send()
        for (_, message), failure in zip(batch, failures):
            if failure is not None:
                self.handle_message_processed(message, exc_info=(type(failure), failure, failure.__traceback__))
        return result, exc_info

    def handle_message_processed(self, message, result=None, exc_info=None):
        # Settling never raises when the broker is away (common.consumer):
        # the event comes again, and its id makes that harmless.
        if exc_info is not None:
            try:
                self._retry_or_park(message, exc_info[1])
            except BROKER_ERRORS as error:
                # The broker went away: raising here would kill the service.
                # The event goes back to its queue as it was, to be tried again.
                log.warning("event neither retried nor parked, the broker is away: %s", error,
                            extra={"event_id": _event_id(message)})
                self.queue_consumer.requeue_message(message)
                return
        self.queue_consumer.ack_message(message)

    def _retry_or_park(self, message, error):
        retries = int(message.headers.get(RETRIES_HEADER, 0))
        reason = f"{type(error).__name__}: {error}"[:1000]
        if isinstance(error, events.InvalidEvent) or retries >= MAX_RETRIES:
            self._republish(message, dead_letter_exchange(), self.queue.name, retries, reason)
            EVENTS_HANDLED.labels(self.container.service_name, self.event_type, "dead_lettered").inc()
            log.error("event parked on %s.dead after %d retries: %s", self.queue.name, retries, reason,
                      extra={"event_id": _event_id(message)})
        else:
            eventlet.sleep(BACKOFF * 2 ** retries)
            self._republish(message, Exchange(""), self.queue.name, retries + 1, reason)
            EVENTS_HANDLED.labels(self.container.service_name, self.event_type, "retried").inc()
            log.warning("event retry %d of %d: %s", retries + 1, MAX_RETRIES, reason,
                        extra={"event_id": _event_id(message)})

    def _republish(self, message, exchange, routing_key, retries, reason):
        headers = dict(message.headers)
        headers.update({RETRIES_HEADER: retries, ERROR_HEADER: reason})
        self.publisher.publish(message.payload, exchange=exchange, routing_key=routing_key, headers=headers)


def _park_undecodable(message, error):
    log.error("event parked on its dead-letter queue, its body cannot be decoded: %s", error,
              extra={"routing_key": message.delivery_info.get("routing_key")})
    message.reject(requeue=False)


def _service_name(service):
    return getattr(service, "name", None) or type(service).__name__


def _event_id(message):
    payload = message.payload
    return payload.get("event_id") if isinstance(payload, dict) else None


class Batch(list):
    """The payloads of the deliveries one worker applies, in arrival order."""


def handles(source_service, event_type):
    """Make ``method(self, tx, event)`` the handler of ``source_service``'s
    ``event_type`` events. The service must name its ``Store`` ``store``.

    Its entrypoint takes a ``Batch`` (from the queue) or one payload (a
    test's hook, ``make replay``)."""

    def decorator(method):
        @functools.wraps(method)
        def entrypoint(self, payload):
            if isinstance(payload, Batch):
                return _apply_batch(self, method, event_type, payload)
            _apply(self, method, event_type, payload)

        return ReliableEventHandler.decorator(
            source_service, event_type, handler_type=SERVICE_POOL, reliable_delivery=True)(entrypoint)

    return decorator


def _apply(service, method, event_type, payload):
    """One event in a transaction of its own; raises what it raises."""
    name, caller = method.__name__, correlation.current()
    event = events.parse(event_type, payload)
    correlation.bind(event.get("correlation_id") or caller)  # on its log lines and what it emits
    try:
        with service.store.transaction() as tx:
            if not tx.first_time(event, name):
                _duplicate(service, event)
                return
            method(service, tx, event)
    except Exception as error:
        if is_duplicate(error):  # a twin delivered at the same moment won
            _duplicate(service, event, quiet=True)
            return
        raise
    else:
        _applied(service, event)
    finally:
        correlation.bind(caller)


def _apply_batch(service, method, event_type, payloads):
    """Every event of ``payloads`` in one transaction; the failures, one per
    payload (None: applied, or applied before). If anything fails, the
    events are applied again one by one, each in its own transaction, so
    that only the one that fails is retried (and parked). A batch of one
    raises, as a lone event always did."""
    if len(payloads) == 1:
        _apply(service, method, event_type, payloads[0])
        return [None]
    name, caller = method.__name__, correlation.current()
    applied, seen = [], set()
    try:
        with service.store.transaction() as tx:
            for payload in payloads:
                event = events.parse(event_type, payload)
                correlation.bind(event.get("correlation_id") or caller)  # on its log lines and what it emits
                if event["event_id"] in seen or not tx.first_time(event, name):
                    _duplicate(service, event)
                    continue
                seen.add(event["event_id"])
                method(service, tx, event)
                applied.append(event)
    except Exception as error:
        correlation.bind(caller)
        log.info("batch of %d %s events rolled back (%s: %s); applying them one by one", len(payloads),
                 event_type, type(error).__name__, error)
        return [_failure(service, method, event_type, payload) for payload in payloads]
    for event in applied:
        correlation.bind(event.get("correlation_id") or caller)
        _applied(service, event)
    correlation.bind(caller)
    return [None] * len(payloads)


def _failure(service, method, event_type, payload):
    try:
        _apply(service, method, event_type, payload)
    except Exception as error:
        return error
    return None


def _duplicate(service, event, quiet=False):
    if not quiet:
        log.info("%s %s already applied", event["event_type"], event["event_id"])
    _handled(_service_name(service), event["event_type"], "duplicate").inc()


def _applied(service, event):
    _handled(_service_name(service), event["event_type"], "applied").inc()
    log.info("applied %s", event["event_type"], extra={
        "event_id": event["event_id"], "reservation_id": event.get("reservation_id")})


@functools.lru_cache(maxsize=None)
def _handled(service_name, event_type, outcome):
    """The counter of one (service, event type, outcome), looked up once: the
    labels' lookup takes a lock and builds a key on every call. Bounded: the
    event types are the registry's (parsed before they are counted)."""
    return EVENTS_HANDLED.labels(service_name, event_type, outcome)
