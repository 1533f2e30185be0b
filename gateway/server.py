"""The gateway's WSGI server (``JsonWebServer``): Nameko's web server,
answering in JSON even for unknown paths, counting and logging every request
by its route (``common.metrics``), serving ``GET /metrics``, and draining
when it stops (SIGTERM, a rollout) without dropping a request."""
import logging
import socket
import time
from functools import partial

import eventlet
from eventlet import greenio
from eventlet.event import Event
from eventlet.green import select
from eventlet.wsgi import STATE_CLOSE, STATE_IDLE
from nameko.extensions import ProviderCollector
from nameko.web.server import WebServer
from prometheus_client import make_wsgi_app
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request

from common import correlation, metrics
from gateway.errors import response_for

log = logging.getLogger("gateway.http")  # one line per request: its logger name is what the logs are filtered on

METRICS_PATH = "/metrics"  # Prometheus' scrape of this process (common.metrics), outside the API
QUIET_ROUTES = ("/health/live", "/health/ready", METRICS_PATH)  # probes and scrapes: logged at debug
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Stopping (SIGTERM): connections in use get this long to send their next
# request, answered with "Connection: close"; requests in hand, this long to finish.
DRAIN_LINGER = 1.0
DRAIN_TIMEOUT = 20.0


class JsonWebServer(WebServer):
    """Nameko's web server, answering unknown paths and methods in JSON too,
    stamping every response with the request's correlation id, counting and
    logging every request by its route template, serving ``GET /metrics``,
    and stopping without dropping a request.

    Starting, it listens only once its queue consumers are consuming, so its
    first request can already have an RPC answered. The socket is opened
    with SO_REUSEPORT (eventlet's default), so a new gateway can listen on
    the port of the one it replaces (``ops/run.py rollout``). Stopping, it
    ``drain``s: it closes its listening socket (new connections go to the
    other listener), answers what is in hand with ``Connection: close``,
    closes idle connections and only then lets Nameko stop the rest."""

    def __init__(self):
        super().__init__()
        self._connections = {}  # id -> eventlet's [address, socket, state] of each open connection
        self._drained = None

    def context_data_from_headers(self, request):
        return {}

    def get_wsgi_app(self):
        app = super().get_wsgi_app()
        metrics_app = make_wsgi_app()

        def wsgi(environ, start_response):
            started = time.perf_counter()
            rid = _environ_request_id(environ)
            environ["bookrental.correlation_id"] = rid
            method = environ.get("REQUEST_METHOD", "")
            status = [500]

            def start(status_line, headers, exc_info=None):
                status[0] = int(status_line.split(" ", 1)[0])
                headers.append(("X-Request-ID", rid))
                return start_response(status_line, headers, exc_info)

            if environ.get("PATH_INFO") == METRICS_PATH and method in ("GET", "HEAD"):
                route, handler = METRICS_PATH, metrics_app
            else:
                try:
                    rule, values = app.url_map.bind_to_environ(environ).match(return_rule=True)
                    route, handler = metrics.route_label(rule.rule), partial(_dispatch, rule.endpoint, values)
                except HTTPException as exc:
                    route, handler = metrics.UNMATCHED, response_for(exc)
            metrics.HTTP_IN_FLIGHT.inc()
            try:
                return handler(environ, start)
            finally:
                metrics.HTTP_IN_FLIGHT.dec()
                _observe(method, route, status[0], time.perf_counter() - started, environ, rid)

        return wsgi

    # -- starting and stopping ------------------------------------------

    def start(self):
        if not self._starting:
            self._starting = True
            self._gt = self.container.spawn_managed_thread(self._serve, identifier="http server")

    def _serve(self):
        _wait_for_consumers(self.container)
        self._sock = eventlet.listen(self.bind_addr)
        self._sock.settimeout(None)  # work around https://github.com/celery/kombu/issues/838
        self._serv = self.get_wsgi_server(self._sock, self.get_wsgi_app())
        log.info("serving HTTP on %s:%d", *self.bind_addr)
        self.run()

    def process_request(self, sock, address):
        # No Nagle: an answer written in two sends (a MyPage of 30 KB) would
        # otherwise wait for the client's delayed ACK, 40 ms, on every reuse
        # of a keep-alive connection (docs/performance.md).
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a test's socket pair)
        state = [address, sock, STATE_IDLE]  # eventlet's connection state, kept to drain it
        self._connections[id(state)] = state
        try:
            self._serv.process_request(state)
        except OSError as exc:
            if "raw readinto() returned invalid length" not in str(exc):  # see nameko's WebServer
                raise
        finally:
            self._connections.pop(id(state), None)

    def drain(self):
        """Stop taking connections and finish the requests in hand; returns
        when every connection is closed, or after ``DRAIN_TIMEOUT``."""
        if self._drained is not None:
            self._drained.wait()
            return
        self._drained = Event()
        try:
            self._drain()
        finally:
            self._drained.send()

    def _drain(self):
        started = time.monotonic()
        self._is_accepting = False
        if self._serv is not None:
            self._serv.keepalive = False  # every answer from now on says "Connection: close"
        if self._gt is not None:
            self._gt.kill()  # the accept loop
        self._close_listener()
        for dependency in self.container.dependencies:
            if callable(getattr(dependency, "drain", None)):
                dependency.drain()  # e.g. the live pages' streams end: browsers reconnect elsewhere
        while self._connections and time.monotonic() - started < DRAIN_LINGER:
            eventlet.sleep(0.05)
        for state in list(self._connections.values()):
            previous, state[2] = state[2], STATE_CLOSE
            if previous == STATE_IDLE:
                greenio.shutdown_safe(state[1])
        while self._connections and time.monotonic() - started < DRAIN_TIMEOUT:
            eventlet.sleep(0.05)
        log.info("HTTP server drained in %.1fs", time.monotonic() - started,
                 extra={"connections_left": len(self._connections)})

    def _close_listener(self):
        """Close the listening socket, first accepting the connections the
        kernel has already queued on it: they would be reset otherwise."""
        sock = self._sock
        if sock is None:
            return
        try:
            while select.select([sock], [], [], 0)[0]:
                client, address = sock.accept()
                client.settimeout(self._serv.socket_timeout)
                self.container.spawn_managed_thread(partial(self.process_request, client, address))
        except OSError:
            pass
        sock.close()

    def stop(self):
        self.drain()
        if self._gt is not None:
            self._gt.kill()
        ProviderCollector.stop(self)


def _environ_request_id(environ):
    return correlation.from_http(lambda name: environ.get("HTTP_" + name.upper().replace("-", "_")))


def _dispatch(entrypoint, path_values, environ, start_response):
    """Nameko's ``WsgiApp.__call__`` for a route already matched: matching
    the URL a second time was 6% of the gateway's time (docs/performance.md)."""
    request = Request(environ, shallow=True)
    request.path_values = path_values
    try:
        response = entrypoint.handle_request(request)
    except HTTPException as exc:
        response = exc
    return response(environ, start_response)


def _observe(method, route, status, seconds, environ, rid):
    """Count the request (``common.metrics``) and log it: one line per request."""
    method = method if method in METHODS else "OTHER"
    metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
    metrics.HTTP_SECONDS.labels(method, route).observe(seconds)
    level = logging.DEBUG if route in QUIET_ROUTES and status < 400 else logging.INFO
    if log.isEnabledFor(level):
        log.log(level, "%s %s %d", method, route, status, extra={
            "correlation_id": rid, "method": method, "route": route, "path": environ.get("PATH_INFO", "")[:200],
            "status": status, "duration_ms": round(seconds * 1000, 1)})


def _wait_for_consumers(container, timeout=60):
    """Wait until the container's queue consumers (nameko's QueueConsumer,
    whose ``_consumers_ready`` is sent once it consumes) are consuming: the
    RPC replies a request waits for can reach this process."""
    with eventlet.Timeout(timeout, False):
        for extension in list(container.subextensions):
            ready = getattr(extension, "_consumers_ready", None)
            if ready is not None:
                ready.wait()
