"""The port of a service's store (``OutboxStore``), and what every store
shares: the publisher and the outbox relay, started and stopped with the
service, and the worker's handle (``StoreHandle``). The adapters:
``common.store.Store`` (SQL) and ``mypage.views.RedisViewStore`` (Redis)."""
import abc
import logging
import os

from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.extensions import DependencyProvider
from nameko.standalone.events import get_event_exchange
from nameko_sqlalchemy.database import DB_URIS_KEY

from common.publisher import ConfirmedPublisher
from common.relay import OutboxRelay
from common.rpc import DEADLINE

log = logging.getLogger("common.store")  # the fault's line keeps the logger it always had

# Fault injection for the tests that prove the outbox (tests/faults): with
# BOOKRENTAL_FAULT=crash-before-publish the process dies, as if killed, right
# after committing its first transaction that emitted events and before
# publishing them. Unset in every real deployment.
FAULT = os.environ.get("BOOKRENTAL_FAULT", "")


class OutboxStore(DependencyProvider, abc.ABC):
    """The port every store implements (the abstract methods): a transaction
    that writes a change and the events it causes together, reads, health,
    and the outbox as the relay sees it. The rest is shared."""

    stop_timeout = 10.0  # seconds a stop waits for the relay to publish what it holds
    retention = 7 * 24 * 3600  # how long applied-event ids and sent events are kept

    def __init__(self, base):
        self.base = base

    def setup(self):
        service_name = self.container.service_name
        config = self.container.config
        self.db_uri = config[DB_URIS_KEY][f"{service_name}:{self.base.__name__}"]
        self.setup_database()
        self.publisher = ConfirmedPublisher(config[AMQP_URI_CONFIG_KEY])
        self.relay = OutboxRelay(self, get_event_exchange(service_name, config).name, service_name)

    @abc.abstractmethod
    def setup_database(self):
        """The database side of ``setup``: connections and the schema."""

    def start(self):
        self.relay.start(self.container.spawn_managed_thread)

    def stop(self):
        """A graceful stop. Nameko has stopped the entrypoints and waited for
        every worker before it stops the dependencies; the relay publishes
        what the workers handed over, and finishes the sweep it is in, before
        the connections close."""
        self.relay.stop(self.stop_timeout)
        self.close()

    def kill(self):
        self.relay.stopping = True
        self.close()

    @abc.abstractmethod
    def close(self):
        """Close the database's connections and the publisher."""

    def get_dependency(self, worker_ctx):
        return StoreHandle(self, worker_ctx.context_data.get(DEADLINE))

    @abc.abstractmethod
    def transaction(self, deadline=None):
        """A context manager: a write (``first_time``, ``emit``, the state) committed
        at its end, unless ``deadline`` (an RPC caller's) has passed; then ``committed``."""

    def committed(self, pending):
        """Hand the events a transaction committed to the relay."""
        if pending and FAULT == "crash-before-publish":
            log.error("fault injected: exiting between commit and publish", extra={"pending": len(pending)})
            os._exit(137)
        if pending:
            self.relay.hand_over(pending)

    @abc.abstractmethod
    def reading(self):
        """A context manager: what a read goes through."""

    @abc.abstractmethod
    def ping(self):
        """Raise unless the database answers."""

    def publish(self, pending):
        """Publish these outbox events now and mark them sent (see common.relay)."""
        return self.relay.publish(pending)

    def relay_pending(self, older_than=None):
        return self.relay.sweep(older_than)

    @abc.abstractmethod
    def unpublished(self, cutoff, limit):
        """Outbox events (Pending) written before ``cutoff`` and not yet sent, oldest first."""

    @abc.abstractmethod
    def mark_published(self, keys):
        """Mark these outbox events sent."""

    @abc.abstractmethod
    def backlog(self):
        """How many outbox events are not yet sent."""

    @abc.abstractmethod
    def prune(self):
        """Forget applied-event ids and sent events older than ``retention``."""


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
