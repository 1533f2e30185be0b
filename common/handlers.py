"""The entrypoint for another service's events: ``@handles(source, type)``.

Every handler gets the same guarantees, so no service has to remember them:

- one durable queue per handler shared by all replicas (``SERVICE_POOL``):
  each event is handled once per service, and waits while the service is down;
- the event is validated against its schema before anything is touched;
- the effect and the event's id are committed in one transaction, so a
  redelivered or duplicated event changes nothing the second time;
- a failing event is retried a bounded number of times with backoff, then
  parked on the handler's dead-letter queue with the reason; it never loops
  forever and is never silently dropped (``make dlq`` shows and replays it).
"""
import functools
import logging

import eventlet
from kombu import Connection, Exchange, Queue
from nameko.amqp.publish import Publisher
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.events import SERVICE_POOL, EventHandler

from common import events, queues
from common.metrics import EVENTS_HANDLED
from common.consumer import BROKER_ERRORS, SettlingQueueConsumer
from common.store import is_duplicate

log = logging.getLogger(__name__)

DEAD_LETTER_EXCHANGE = "bookrental.dead-letters"
RETRIES_HEADER = "x-bookrental-retries"
ERROR_HEADER = "x-bookrental-error"
MAX_RETRIES = 5
BACKOFF = 0.25  # seconds, doubled on each retry


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

    def start(self):
        with Connection(self.amqp_uri) as connection:
            dead_letter_queue(self.queue.name, self.container.config)(connection.default_channel).declare()
        super().start()

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


def handles(source_service, event_type):
    """Make ``method(self, tx, event)`` the handler of ``source_service``'s
    ``event_type`` events. The service must name its ``Store`` ``store``."""

    def decorator(method):
        name = method.__name__

        @functools.wraps(method)
        def entrypoint(self, payload):
            event = events.parse(event_type, payload)
            try:
                with self.store.transaction() as tx:
                    if not tx.first_time(event, name):
                        log.info("%s %s already applied", event_type, event["event_id"])
                        EVENTS_HANDLED.labels(_service_name(self), event_type, "duplicate").inc()
                        return
                    method(self, tx, event)
            except Exception as error:
                if is_duplicate(error):  # a twin delivered at the same moment won
                    EVENTS_HANDLED.labels(_service_name(self), event_type, "duplicate").inc()
                    return
                raise
            EVENTS_HANDLED.labels(_service_name(self), event_type, "applied").inc()
            log.info("applied %s", event_type, extra={
                "event_id": event["event_id"], "reservation_id": event.get("reservation_id")})

        return ReliableEventHandler.decorator(
            source_service, event_type, handler_type=SERVICE_POOL, reliable_delivery=True)(entrypoint)

    return decorator
