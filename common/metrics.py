"""Prometheus metrics of a Book Rental process (prometheus-client).

What every service measures, in this process's default registry:

- ``bookrental_worker_duration_seconds{service, entrypoint, kind}``: how long
  each worker took (``kind``: rpc, event, http, timer...);
- ``bookrental_worker_calls_total{service, entrypoint, kind, outcome}``:
  ``outcome`` is ``ok``, ``rejected`` (a business answer: not found, not
  allowed, bad request), ``unavailable`` (a service it needed did not answer)
  or ``error`` (anything unexpected: a bug, a database that went away);
- ``bookrental_events_handled_total{service, event_type, outcome}``: what the
  ``@handles`` handlers did with each event: ``applied``, ``duplicate`` (a
  redelivery, changed nothing), ``retried`` or ``dead_lettered``;
- ``bookrental_outbox_published_total{service}`` and
  ``bookrental_outbox_publish_failures_total{service}``: the outbox at work;
- ``bookrental_outbox_backlog{service}``: events committed and not yet
  published (read from the database when scraped);
- ``bookrental_circuit_state{service, target}``: each circuit breaker, 0
  closed, 1 half-open, 2 open (read when scraped);
- ``bookrental_http_requests_total{method, route, status}``,
  ``bookrental_http_request_duration_seconds{method, route}`` and
  ``bookrental_http_requests_in_flight``: the gateway's HTTP traffic, by
  route template (``/reservations/{reservation_id}``), never by raw path;
- ``process_*`` and ``python_*``: what prometheus-client adds by itself.

A backend service serves them on ``METRICS_PORT`` (``[address:]port``; 0 or
empty is off: the default for a developer's processes, which ``ops/run.py``
gives a free port each). The gateway serves them on its own HTTP port, at
``GET /metrics`` (``gateway/server.py``).

The same server answers ``GET /health/live`` with ``{"status": "ok", "pid":
...}``, without reading anything: the liveness check of the supervised local
run (``ops/liveness.py``). It is served by this process's own green threads,
so a process that is stopped (SIGSTOP) or wedged does not answer it.
"""
import json
import logging
import os
import re
import threading
import time
import weakref
from wsgiref.simple_server import WSGIRequestHandler, make_server

from nameko.events import EventHandler
from nameko.extensions import DependencyProvider
from nameko.rpc import Rpc
from nameko.timer import Timer
from nameko.web.handlers import HttpRequestHandler
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer

from common import errors, rpc

log = logging.getLogger(__name__)

# Seconds: a worker is usually a few milliseconds; an RPC that waits on a
# stopped service gives up after RPC_TIMEOUT (5 s); an event handler backs
# off up to 4 s before a retry.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

WORKER_SECONDS = Histogram(
    "bookrental_worker_duration_seconds", "Time a worker took, by service and entrypoint.",
    ["service", "entrypoint", "kind"], buckets=BUCKETS)
WORKER_CALLS = Counter(
    "bookrental_worker_calls", "Workers run, by outcome: ok, rejected, unavailable, error.",
    ["service", "entrypoint", "kind", "outcome"])
EVENTS_HANDLED = Counter(
    "bookrental_events_handled", "Events handled: applied, duplicate, retried, dead_lettered.",
    ["service", "event_type", "outcome"])
OUTBOX_PUBLISHED = Counter(
    "bookrental_outbox_published", "Events published from the outbox.", ["service"])
OUTBOX_FAILURES = Counter(
    "bookrental_outbox_publish_failures", "Outbox publishes deferred to the relay (broker away).", ["service"])
HTTP_REQUESTS = Counter(
    "bookrental_http_requests", "HTTP requests answered by the gateway, by route template and status.",
    ["method", "route", "status"])
HTTP_SECONDS = Histogram(
    "bookrental_http_request_duration_seconds", "Time to answer an HTTP request (to its headers).",
    ["method", "route"], buckets=BUCKETS)
HTTP_IN_FLIGHT = Gauge("bookrental_http_requests_in_flight", "HTTP requests being answered right now.")

CIRCUIT_STATES = {"closed": 0, "half-open": 1, "open": 2}
UNMATCHED = "(unmatched)"  # the route label of a request no route answers (404, 405)


def route_label(rule):
    """``/books/<int(max=2147483647):book_id>`` -> ``/books/{book_id}``."""
    return re.sub(r"<(?:[^<>:]+:)?([^<>:]+)>", r"{\1}", rule)


def entrypoint_kind(entrypoint):
    for cls, kind in ((Rpc, "rpc"), (EventHandler, "event"), (HttpRequestHandler, "http"), (Timer, "timer")):
        if isinstance(entrypoint, cls):
            return kind
    return type(entrypoint).__name__.lower()


def outcome(exc_info):
    if exc_info is None:
        return "ok"
    error = exc_info[1]
    if isinstance(error, errors.Unavailable):
        return "unavailable"
    if isinstance(error, errors.BookRentalError):  # the gateway's 401, 403, 429... too
        return "rejected"
    return "error"


def parse_address(value, default_host="0.0.0.0"):
    """``METRICS_PORT`` as (host, port): ``9100``, ``:9100`` or ``127.0.0.1:9100``;
    port 0 (or nothing) means off."""
    text = str(value or "").strip()
    host, _, port = text.rpartition(":")
    try:
        number = int(port or 0)
    except ValueError:
        raise ValueError(f"METRICS_PORT must be [address:]port, not {text!r}") from None
    return (host or default_host), number


LIVE_PATH = "/health/live"


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # scrapes and probes are not news
        pass


def serve(port, host):
    """The process's metrics (at any path, as prometheus-client serves them)
    and ``GET /health/live``, from a thread of their own; returns the server."""
    metrics = make_wsgi_app()

    def app(environ, start_response):
        if environ.get("PATH_INFO") == LIVE_PATH:
            body = json.dumps({"status": "ok", "pid": os.getpid()}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return metrics(environ, start_response)

    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Metrics(DependencyProvider):
    """Times every worker of the service and serves the process's metrics.

    ``serve=False`` for a service that exposes them itself (the gateway)."""

    def __init__(self, serve=True):
        self.serve = serve
        self.server = None
        self._started = {}

    def setup(self):
        self.service = self.container.service_name
        self.address = parse_address(self.container.config.get("METRICS_PORT"))

    def start(self):
        _LIVE.add(self)
        host, port = self.address
        if self.serve and port:
            try:
                self.server = serve(port, host)
                log.info("metrics served on http://%s:%d/metrics", host, port, extra={"metrics_port": port})
            except OSError as error:  # a second replica on the same port: keep working, say so
                log.error("metrics not served: %s:%d: %s", host, port, error)

    def stop(self):
        _LIVE.discard(self)
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def kill(self):
        self.stop()

    def worker_setup(self, worker_ctx):
        self._started[worker_ctx] = time.perf_counter()

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        started = self._started.pop(worker_ctx, None)
        if started is None:
            return
        entrypoint = worker_ctx.entrypoint
        labels = (self.service, entrypoint.method_name, entrypoint_kind(entrypoint))
        WORKER_SECONDS.labels(*labels).observe(time.perf_counter() - started)
        WORKER_CALLS.labels(*labels, outcome(exc_info)).inc()

    def worker_teardown(self, worker_ctx):
        self._started.pop(worker_ctx, None)

    # -- read when scraped ------------------------------------------------

    def backlog(self):
        """Events this service committed and has not published, or None."""
        for dependency in self.container.dependencies:
            if dependency is not self and callable(getattr(dependency, "backlog", None)):  # the store's outbox
                return dependency.backlog()
        return None

    def circuits(self):
        """{target service: circuit state} of this service's breakers."""
        return {target: circuit["state"] for target, circuit in rpc.circuits(self.container.dependencies).items()}


_LIVE = weakref.WeakSet()  # the started Metrics providers of this process


class _ScrapeTimeCollector:
    """The values that are read, not counted: the outbox backlog and the
    circuit breakers of every service container in this process."""

    def describe(self):
        return self._families()

    @staticmethod
    def _families():
        return (
            GaugeMetricFamily("bookrental_outbox_backlog", "Events committed and not yet published.",
                              labels=["service"]),
            GaugeMetricFamily("bookrental_circuit_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
                              labels=["service", "target"]),
        )

    def collect(self):
        backlog_family, circuit_family = self._families()
        backlogs, circuits = {}, {}
        for provider in list(_LIVE):
            service = provider.service
            if service not in backlogs:
                try:
                    value = provider.backlog()
                except Exception as error:  # the database is away: no value rather than a wrong one
                    log.warning("metrics: outbox backlog unreadable: %s", error)
                    value = None
                if value is not None:
                    backlogs[service] = value
            for target, state in provider.circuits().items():
                level = CIRCUIT_STATES.get(state, 0)
                circuits[(service, target)] = max(level, circuits.get((service, target), 0))
        for service, value in sorted(backlogs.items()):
            backlog_family.add_metric([service], value)
        for (service, target), level in sorted(circuits.items()):
            circuit_family.add_metric([service, target], level)
        yield backlog_family
        yield circuit_family


REGISTRY.register(_ScrapeTimeCollector())
