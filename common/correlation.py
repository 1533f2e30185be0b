"""The correlation id: one id per HTTP request or RPC call, on every log
line and every event it causes.

It travels in Nameko's context data (an AMQP header on every RPC call) and
in each event's envelope; this dependency provider picks it up at the start
of every worker, whatever its entrypoint, and keeps it where the log
formatter can find it.
"""
import sys
import threading
import uuid

from nameko.extensions import DependencyProvider

KEY = "correlation_id"
HTTP_HEADERS = ("X-Request-ID", "X-Correlation-ID")

# eventlet monkey-patches threading, so this is one value per green thread,
# i.e. per worker.
_current = threading.local()


def current():
    return getattr(_current, "value", None) or ""


def for_log():
    """(service, correlation id) of the worker logging: both read with one
    lookup of the green thread's locals."""
    here = _current.__dict__
    return (here.get("service") or _process_service or _service_from_argv(), here.get("value") or "")


def bind(value):
    _current.value = value


_process_service = None  # the service this process runs, once a container is set up


def service():
    """The name of the service whose worker (or process) is logging."""
    return getattr(_current, "service", None) or _process_service or _service_from_argv()


def _service_from_argv():
    # `nameko run ... product.service:ProductService`: known before any container exists.
    for arg in sys.argv[1:]:
        if ":" in arg and not arg.startswith("-") and "/" not in arg:
            return arg.split(".", 1)[0].split(":", 1)[0]
    return ""


def from_http(header):
    """The caller's request id (``header(name)`` reads one HTTP header), if it
    is a sane one; otherwise a new id."""
    for name in HTTP_HEADERS:
        value = header(name) or ""
        if value and len(value) <= 128 and value.isprintable():
            return value
    return str(uuid.uuid4())


def _from_worker(worker_ctx):
    if worker_ctx.context_data.get(KEY):
        return worker_ctx.context_data[KEY]
    args = worker_ctx.args or ()
    first = args[0] if args else None
    if isinstance(first, dict) and first.get(KEY):  # an event envelope
        return first[KEY]
    headers = getattr(first, "headers", None)  # a werkzeug request
    if headers is not None:
        return from_http(headers.get)
    return str(uuid.uuid4())


class Correlation(DependencyProvider):
    """Gives the worker its correlation id and propagates it to RPC calls;
    tells the log lines which service they come from."""

    def setup(self):
        global _process_service
        if _process_service is None:
            _process_service = self.container.service_name

    def get_dependency(self, worker_ctx):
        # Called first in every worker, before the other providers' setup.
        value = _from_worker(worker_ctx)
        worker_ctx.context_data[KEY] = value
        bind(value)
        _current.service = worker_ctx.service_name
        return value

    def worker_teardown(self, worker_ctx):
        bind(None)
        _current.service = None
