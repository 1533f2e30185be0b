"""A service's store set up outside a container, as a replica would have it:
its real database, a publisher that records instead of sending."""
import json
import types

from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.testing.services import worker_factory
from nameko_sqlalchemy.database import DB_URIS_KEY


class RecordingPublisher:
    """``common.publisher.ConfirmedPublisher``'s interface; ``sent`` has the events."""

    def __init__(self):
        self.sent = []
        self.fail = False

    def publish_batch(self, messages):
        if self.fail:
            raise ConnectionError("the broker is away")
        self.sent.extend(json.loads(message.body) for message in messages)

    def close(self):
        pass


def set_up(provider, service_cls, uri):
    """``provider`` (a ``Store`` or ``ViewStore``) of ``service_cls``, set up
    on ``uri``; its publisher records what it would send."""
    provider.container = types.SimpleNamespace(
        service_name=service_cls.name, service_cls=service_cls,
        config={DB_URIS_KEY: {f"{service_cls.name}:Base": uri}, AMQP_URI_CONFIG_KEY: "memory://"},
        spawn_managed_thread=lambda fn, **_: None)
    provider.setup()
    store = getattr(provider, "impl", provider)
    store.publisher = RecordingPublisher()
    return store


def replica(service_cls, provider):
    """A service instance whose ``store`` is ``provider``'s, as a worker sees it."""
    handle = provider.get_dependency(types.SimpleNamespace(context_data={}))
    return worker_factory(service_cls, store=handle)
