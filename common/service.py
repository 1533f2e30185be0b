"""What every backend service class starts from."""
import os
import socket
import time

from common.correlation import Correlation
from common.eventlog import EventLog
from common.metrics import Metrics
from common.rpc import circuits, rpc

STARTED = time.time()


class ServiceBase:
    """Gives a service its correlation id, its metrics (``common.metrics``),
    the event log's declaration (``common.eventlog``) and a ``health`` RPC.

    A subclass declares ``name`` and a ``store`` (a ``common.store.Store``).
    """

    correlation_id = Correlation()
    metrics = Metrics()
    event_log = EventLog()  # declares the stream events.log at start (common.eventlog)

    @rpc
    def health(self):
        """Answers only when this service is consuming and its database is up."""
        self.store.ping()
        return {
            "service": self.name,
            "status": "ok",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "uptime": round(time.time() - STARTED, 1),
            "outbox_backlog": self.store.backlog(),
            "circuits": circuits(vars(self).values()),
        }
