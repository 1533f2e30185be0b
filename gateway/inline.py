"""An event handler that runs where the message arrives, without a worker.

Nameko runs every entrypoint in a worker from the container's pool
(``max_workers``). In the gateway that pool is mostly held by HTTP requests
waiting for their RPC answers; under load the ``mypage_changed`` broadcasts,
three per reservation, queued behind them (``make bench``: the gateway's
broadcast queue grew by 86 messages a second), so cached MyPages were dropped
and live pages told late. Handing a change on takes microseconds (drop a
cache entry, put a message on the open streams' queues) and never waits, so
``@inline_event_handler`` runs it in the green thread that reads the message
(docs/performance.md).

That thread is a queue consumer of its own (``HintConsumer``, one connection
per process), not the one the RPC replies share, and it takes the hints as
they come: no acknowledgement (the queue is the replica's own, deleted with
it, and a hint lost with the process or the broker is what a page that
reconnects refetches anyway), so no prefetch window for the broker to wait
on while the process is busy serving HTTP (under overload Nameko's consumer,
ten unacknowledged at a time and a green thread spawned for each, fell
behind: docs/performance.md), and no green thread per message.

The method is called with an object holding only the dependencies named in
``uses`` (their ``get_dependency`` must not need a worker, and what they
return must be the process's own, the same for every call: it is taken
once), and must not block. With ``idle="name"``, the method of that name is
called first with the same object: when it says there is nothing to do
(nobody to tell), the message is dropped undecoded.
"""
import json
import logging
from types import SimpleNamespace

from nameko.events import BROADCAST, EventHandler

from common.consumer import SettlingQueueConsumer

log = logging.getLogger(__name__)


class HintConsumer(SettlingQueueConsumer):
    """The process's consumer of the queues of ``InlineEventHandler``s: no
    acknowledgement, and each message handled in this consumer's thread."""

    def get_consumers(self, consumer_cls, channel):
        for provider in self._providers:
            self._consumers[provider] = consumer_cls(queues=[provider.queue], on_message=provider.handle_hint,
                                                     no_ack=True, accept=self.accept)
        return self._consumers.values()


class InlineEventHandler(EventHandler):
    queue_consumer = HintConsumer()

    def __init__(self, source_service, event_type, uses=(), idle=None, **kwargs):
        super().__init__(source_service, event_type, **kwargs)
        self.uses = tuple(uses)
        self.idle = idle
        self._target = None

    def handle_hint(self, message):
        """A message as it comes (kombu's ``on_message``: not yet decoded)."""
        try:
            target = self._target
            if target is None:
                target = self._target = SimpleNamespace(**{
                    provider.attr_name: provider.get_dependency(None)
                    for provider in self.container.dependencies if provider.attr_name in self.uses})
            service_cls = self.container.service_cls
            if self.idle is not None and getattr(service_cls, self.idle)(target):
                return
            getattr(service_cls, self.method_name)(target, _decoded(message))
        except Exception:
            log.exception("%s failed on %s", self.method_name, self.event_type)


def _decoded(message):
    """The body: JSON (what Nameko's events are) read straight, without
    kombu's serializer registry and object hooks; anything else as kombu does."""
    if message.content_type == "application/json" and message.content_encoding in ("utf-8", "utf8", None):
        return json.loads(message.body)
    return message.decode()


def inline_event_handler(source_service, event_type, uses=(), idle=None):
    """``@event_handler(..., handler_type=BROADCAST, reliable_delivery=False)``,
    run inline (see above)."""
    return InlineEventHandler.decorator(source_service, event_type, uses=uses, idle=idle, handler_type=BROADCAST,
                                        reliable_delivery=False)
