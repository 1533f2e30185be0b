"""An event handler that runs where the message arrives, without a worker.

Nameko runs every entrypoint in a worker from the container's pool
(``max_workers``). In the gateway that pool is mostly held by HTTP requests
waiting for their RPC answers; under load the ``mypage_changed`` broadcasts,
three per reservation, queued behind them (``make bench``: the gateway's
broadcast queue grew by 86 messages a second), so cached MyPages were dropped
and live pages told late. Handing a change on takes microseconds (drop a
cache entry, put a message on the open streams' queues) and never waits, so
``@inline_event_handler`` runs it in the consumer's green thread, then acks:
no worker slot to wait for, no worker to set up (docs/performance.md).

The method is called with an object holding only the dependencies named in
``uses`` (their ``get_dependency`` must not need a worker), and must not block.
"""
import logging
from types import SimpleNamespace

from nameko.events import BROADCAST, EventHandler

from common.consumer import SettlingQueueConsumer

log = logging.getLogger(__name__)


class InlineEventHandler(EventHandler):
    queue_consumer = SettlingQueueConsumer()

    def __init__(self, source_service, event_type, uses=(), **kwargs):
        super().__init__(source_service, event_type, **kwargs)
        self.uses = tuple(uses)

    def handle_message(self, body, message):
        try:
            deps = {provider.attr_name: provider.get_dependency(None)
                    for provider in self.container.dependencies if provider.attr_name in self.uses}
            getattr(self.container.service_cls, self.method_name)(SimpleNamespace(**deps), body)
        except Exception:
            log.exception("%s failed on %s", self.method_name, self.event_type)
        finally:
            self.queue_consumer.ack_message(message)


def inline_event_handler(source_service, event_type, uses=()):
    """``@event_handler(..., handler_type=BROADCAST, reliable_delivery=False)``,
    run inline (see above)."""
    return InlineEventHandler.decorator(source_service, event_type, uses=uses, handler_type=BROADCAST,
                                        reliable_delivery=False)
