"""The gateway's inbound adapter: Nameko's HTTP entrypoint, made into an API.

``@api(method, path, roles=..., body=Schema, query=Schema, limit=...)``
declares a route. Before the service method runs, the entrypoint has, in
this order:

1. counted the request against its client address, and a sign-in or sign-up
   against the address's password checks (429, ``gateway.ratelimit``);
2. authenticated the caller from the verified bearer token only (401);
3. counted the request against the caller's account (429);
4. checked the role (403);
5. refused a body that is not JSON (415) or too large (413), and loaded the
   body and query through their marshmallow schemas (400, field by field);
   a route declared with ``form=`` (the OAuth 2 token endpoint) also takes
   an ``application/x-www-form-urlencoded`` body, loaded as an OAuth 2 token
   request (``form_grant``) whose errors are RFC 6749 §5.2's;
6. for ``limit="login"``, refused a client address + username whose failed
   sign-ins filled its window (429); for ``limit="signup"``, counted the
   registration against the client address (429).

Whatever goes wrong after that becomes the spec's error body with the right
status (or, for a form-encoded token request, RFC 6749's); a stack trace
goes to the log, never to the client.
"""
import json
import logging
import socket
import time
from functools import partial
from urllib.parse import parse_qsl

import eventlet
from eventlet import greenio
from eventlet.event import Event
from eventlet.green import select
from eventlet.wsgi import STATE_CLOSE, STATE_IDLE
from marshmallow import ValidationError
from nameko.extensions import ProviderCollector
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer
from prometheus_client import make_wsgi_app
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from common import correlation, errors, metrics
from gateway.authority import Authority
from gateway.ratelimit import RateLimiter, retry_after

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
RETRY_AFTER_SECONDS = 5
LIMITS = ("default", "login", "signup", "none")  # the rate limits a route may ask for
METRICS_PATH = "/metrics"  # Prometheus' scrape of this process (common.metrics), outside the API
QUIET_ROUTES = ("/health/live", "/health/ready", METRICS_PATH)  # probes and scrapes: logged at debug
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Stopping (SIGTERM): connections in use get this long to send their next
# request, answered with "Connection: close"; requests in hand, this long to finish.
DRAIN_LINGER = 1.0
DRAIN_TIMEOUT = 20.0
ROUTES = []  # every @api route, in declaration order: the OpenAPI document reads it


class Unauthorized(errors.BookRentalError):
    code = "unauthorized"


class Forbidden(errors.BookRentalError):
    code = "forbidden"


class TooManyRequests(errors.BookRentalError):
    code = "rate_limited"

    def __init__(self, message, wait):
        super().__init__(message, retry_after=retry_after(wait))
        self.retry_after = wait


class OAuthError(errors.BookRentalError):
    """An answer of the OAuth 2 token endpoint to a form-encoded request, in
    RFC 6749 §5.2's form: ``{"error": "invalid_grant", "error_description"}``."""

    code = "oauth"

    def __init__(self, error, description, status=400):
        super().__init__(description)
        self.error = error
        self.status = status


class PayloadTooLarge(errors.BookRentalError):
    code = "payload_too_large"


class UnsupportedMediaType(errors.BookRentalError):
    code = "unsupported_media_type"


STATUS = {
    errors.BadRequest: 400, Unauthorized: 401, Forbidden: 403, errors.NotFound: 404,
    errors.NotAllowed: 409, PayloadTooLarge: 413, UnsupportedMediaType: 415, TooManyRequests: 429,
    errors.Unavailable: 503,
}
CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
         429: "rate_limited", 500: "internal", 503: "unavailable"}


def json_response(payload, status=200, headers=None):
    response = Response(json.dumps(payload), status=status, mimetype="application/json", headers=headers)
    # An answer may carry a token or someone's reservations: no cache keeps it,
    # and no browser reads it as anything but JSON.
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def error_response(status, message, code=None, details=None, headers=None):
    body = {"error": {"code": code or CODES.get(status, "error"), "message": message, "details": details or {}}}
    return json_response(body, status, headers)


def response_for(exc):
    """The one place an exception becomes an HTTP answer."""
    if isinstance(exc, ValidationError):
        return error_response(400, "the request is not valid", "bad_request", _details(exc.messages))
    if isinstance(exc, OAuthError):
        headers = {"Pragma": "no-cache"}
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="bookrental"'
        return json_response({"error": exc.error, "error_description": exc.message}, exc.status, headers)
    if isinstance(exc, errors.BookRentalError):
        status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 500)
        headers = {}
        if status == 503:
            headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        if status == 429:
            headers["Retry-After"] = str(retry_after(exc.retry_after))
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="bookrental"'
        return error_response(status, exc.message, exc.code, exc.details, headers)
    if isinstance(exc, HTTPException):
        headers = {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else None
        return error_response(exc.code, exc.description or exc.name, CODES.get(exc.code), headers=headers)
    log.error("unexpected error", exc_info=(type(exc), exc, exc.__traceback__))
    return error_response(500, "something went wrong on our side; it has been logged", "internal")


def _details(messages):
    return messages if isinstance(messages, dict) else {"_schema": messages}


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


class Api(HttpRequestHandler):
    server = JsonWebServer()
    limiter = RateLimiter()
    authority = Authority()

    def __init__(self, method, url, roles=None, body=None, query=None, form=None, status=200, tag=None,
                 limit="default", **kwargs):
        # A business answer (404, 409, 503...) is not an error of the gateway's.
        kwargs.setdefault("expected_exceptions", errors.BookRentalError)
        super().__init__(method, url, **kwargs)
        if limit not in LIMITS:
            raise ValueError(f"limit must be one of {LIMITS}")
        self.roles = roles
        self.body = body
        self.query = query
        self.form = form
        self.status = status
        self.limit = limit

    def stop(self):
        self.server.drain()  # the requests in hand finish before Nameko stops the rest
        super().stop()

    def handle_request(self, request):
        request.shallow = False
        rid = request.environ.get("bookrental.correlation_id") or correlation.from_http(request.headers.get)
        request.environ["bookrental.correlation_id"] = rid
        correlation.bind(rid)
        try:
            response = self._handle(request, rid)
        except Exception as exc:  # every failure leaves as the spec's error body
            response = response_for(exc)
        finally:
            correlation.bind(None)
        return response

    def _handle(self, request, rid):
        limited = self.limit != "none"
        address = self.limiter.address(request)
        if limited:
            self._take("address", address, "too many requests from your address")
        if self.limit in ("login", "signup"):
            self._take("password", address, "too many sign-ins and sign-ups from your address")
        kwargs = dict(request.path_values)
        user = self.authority.user_of(request)
        if limited and user is not None:
            self._take("account", user["username"], "too many requests for your account")
        if self.roles is not None:
            if user is None:
                raise Unauthorized("sign in first: send Authorization: Bearer <token>")
            if user["role"] not in self.roles:
                raise Forbidden(f"this needs the role {' or '.join(sorted(self.roles))}")
            kwargs["user"] = user
        if self.form is not None:
            kwargs["user"] = user  # who the client acts for, if it says (a refresh checks it)
            kwargs["form"] = form_grant(request, self.form) if request.mimetype == FORM else None
        if self.body is not None:
            kwargs["body"] = None if kwargs.get("form") else self.body().load(_json_body(request))
        if self.query is not None:
            kwargs["query"] = self.query().load(request.args.to_dict())
        login = None
        if self.limit == "login":
            sign_in = kwargs.get("form") or kwargs["body"]
            login = (address, sign_in.get("username")) if sign_in.get("username") is not None else None
        if login is not None:
            wait = self.limiter.wait("login", login)
            if wait:
                raise TooManyRequests("too many failed sign-ins for this username; wait and try again", wait)
        elif self.limit == "signup":
            self._take("signup", address, "too many sign-ups from your address")
        try:
            result = self._run(request, kwargs, rid)
        except (Unauthorized, OAuthError) as failure:
            if login is not None and (isinstance(failure, Unauthorized) or failure.error == "invalid_grant"):
                self.limiter.charge("login", login)
            raise
        return self.response_from_result(result)

    def _take(self, family, key, message):
        wait = self.limiter.take(family, key)
        if wait:
            raise TooManyRequests(message, wait)

    def _run(self, request, kwargs, rid):
        event = Event()
        self.container.spawn_worker(
            self, (request,), kwargs, context_data={correlation.KEY: rid},
            handle_result=partial(self.handle_result, event))
        return event.wait()

    def response_from_result(self, result):
        if isinstance(result, Response):
            return result
        if isinstance(result, tuple):
            status, payload = result
        else:
            status, payload = self.status, result
        return json_response(payload, status)


FORM = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 20


def form_grant(request, schemas_by_grant):
    """An OAuth 2 token request (RFC 6749 §4.3, §6) from a form-encoded body,
    loaded by the schema of its ``grant_type`` (``schemas_by_grant``);
    OAuthError in §5.2's terms otherwise. As §3.2 says: a parameter without
    a value is as if it were not sent, unknown parameters are ignored, and
    none may be sent twice. The client: ``client_id`` in the body or HTTP
    Basic; this server has public clients only, so a client secret cannot be
    right (``invalid_client``)."""
    try:
        raw = _raw_body(request)
        form = MultiDict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict",
                                   max_num_fields=MAX_FORM_FIELDS))
    except errors.BookRentalError as error:
        raise OAuthError("invalid_request", error.message) from None
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the body is not a valid form (UTF-8, URL-encoded)") from None
    repeated = sorted(name for name, values in form.lists() if len(values) > 1)
    if repeated:
        raise OAuthError("invalid_request", f"a parameter was sent more than once: {', '.join(repeated)[:200]}")
    values = {name: value for name, value in form.items() if value != ""}
    client_id = _client_of(request, values)
    grant_type = values.get("grant_type")
    if grant_type is None:
        raise OAuthError("invalid_request", "grant_type is missing: password or refresh_token")
    if grant_type not in schemas_by_grant:
        raise OAuthError("unsupported_grant_type", f"this server grants {' and '.join(schemas_by_grant)} only")
    try:
        grant = schemas_by_grant[grant_type]().load(values)
    except ValidationError as error:
        problems = "; ".join(f"{name}: {' '.join(map(str, messages)) if isinstance(messages, list) else messages}"
                             for name, messages in sorted(error.messages.items()))
        raise OAuthError("invalid_request", problems[:300]) from None
    if grant.get("scope"):
        raise OAuthError("invalid_scope", "this server has no scopes; leave scope out")
    grant["client_id"] = client_id
    return grant


def _client_of(request, values):
    """The client_id the request names (body or HTTP Basic), or None."""
    if values.get("client_secret") is not None:
        raise OAuthError("invalid_client", "this server has public clients only: send no client secret", 401)
    client_id = values.get("client_id")
    header = request.headers.get("Authorization", "")
    if header[:6].lower() == "basic ":
        credentials = request.authorization
        if credentials is None or credentials.type != "basic" or not credentials.username:
            raise OAuthError("invalid_client", "the client's HTTP Basic credentials are malformed", 401)
        if credentials.password:
            raise OAuthError("invalid_client", "this server has public clients only: send no client secret", 401)
        if client_id is not None and client_id != credentials.username:
            raise OAuthError("invalid_request", "client_id differs from the HTTP Basic client")
        client_id = credentials.username
    if client_id is not None and not (0 < len(client_id) <= 64 and client_id.isprintable()):
        raise OAuthError("invalid_client", "client_id must be 1 to 64 printable characters", 401)
    return client_id


def _raw_body(request):
    """The body's bytes, at most MAX_BODY_BYTES (413 past them)."""
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes", limit=MAX_BODY_BYTES)
    if length is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        stream = request.environ["wsgi.input"]  # eventlet de-chunks; werkzeug would read nothing
    else:
        stream = request.stream
    raw = stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes", limit=MAX_BODY_BYTES)
    return raw


def _json_body(request):
    """The body as a JSON object. A body that says it is anything but JSON is
    refused with 415 (``application/json``, with or without a charset, or any
    ``application/*+json``; a body without a Content-Type is read as JSON)."""
    mimetype = request.mimetype
    if mimetype and mimetype != "application/json" and not (
            mimetype.startswith("application/") and mimetype.endswith("+json")):
        raise UnsupportedMediaType("send the body as application/json", **{"Content-Type": [mimetype[:100]]})
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType("send the body in UTF-8", **{"Content-Type": [f"charset={charset[:40]}"]})
    raw = _raw_body(request)
    if not raw.strip():
        raise errors.BadRequest("send a JSON object as the body")
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise errors.BadRequest("the body is not valid UTF-8") from None
    except RecursionError:
        raise errors.BadRequest("the body is nested too deeply") from None
    except ValueError:
        raise errors.BadRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise errors.BadRequest("the body must be a JSON object")
    _refuse_lone_surrogates(body)
    return body


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def _refuse_lone_surrogates(body):
    """JSON may escape half a UTF-16 pair ("\\ud800"); Python keeps it as a
    string no database or hash can encode. Refused here, field by field."""
    problems = {}
    for key, value in body.items():
        if not _encodable(key):
            problems["_schema"] = ["a field name is not valid Unicode text (a lone surrogate)"]
        elif not _encodable(value):
            problems[key] = ["not valid Unicode text (a lone surrogate)"]
    if problems:
        raise errors.BadRequest("the request is not valid", **problems)


def _encodable(value):
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def api(method, url, **kwargs):
    """Declare an HTTP route of the API (see the module's docstring)."""
    def decorator(fn):
        ROUTES.append({"method": method, "url": url, "name": fn.__name__, "doc": fn.__doc__ or "", **kwargs})
        return Api.decorator(method, url, **kwargs)(fn)

    return decorator
