"""The gateway's inbound adapter: Nameko's HTTP entrypoint, made into an API.

``@api(method, path, roles=..., body=Schema, query=Schema, limit=...,
response=Schema, errors=(404, ...))`` declares a route and what it answers
(see ``api``; the OpenAPI document reads it). Before the service method
runs, the entrypoint has, in this order:

1. counted the request against its client address, and a sign-in or sign-up
   against the address's password checks (429, ``gateway.ratelimit``);
2. authenticated the caller from the verified bearer token only (401);
3. counted the request against the caller's account (429);
4. checked the role (403);
5. refused a body that is not JSON (415) or too large (413), and loaded the
   body and query through their marshmallow schemas (400, field by field);
   a route declared with ``form=`` (the OAuth 2 token endpoint) also takes
   an ``application/x-www-form-urlencoded`` body, loaded as an OAuth 2 token
   request (``gateway.bodies.form_grant``) whose errors are RFC 6749 §5.2's;
6. for ``limit="login"``, refused a client address + username whose failed
   sign-ins filled its window (429); for ``limit="signup"``, counted the
   registration against the client address (429).

Whatever goes wrong after that becomes the spec's error body with the right
status (or, for a form-encoded token request, RFC 6749's); a stack trace
goes to the log, never to the client.
"""
from functools import partial

from eventlet.event import Event
from nameko.web.handlers import HttpRequestHandler
from werkzeug.wrappers import Response

from common import correlation, errors
from gateway.authority import Authority
from gateway.bodies import FORM, form_grant, json_body
from gateway.errors import Forbidden, OAuthError, TooManyRequests, Unauthorized, json_response, response_for
from gateway.ratelimit import RateLimiter
from gateway.server import JsonWebServer

LIMITS = ("default", "login", "signup", "none")  # the rate limits a route may ask for
ROUTES = []  # every @api route, in declaration order: the OpenAPI document reads it


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

    def setup(self):
        super().setup()
        # Built once: a marshmallow schema keeps nothing of a load, and making
        # one per request was 4% of the gateway's CPU per reservation.
        self._load_body = self.body().load if self.body is not None else None
        self._load_query = self.query().load if self.query is not None else None

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
            if user is None and request.headers.get("Authorization"):
                raise Unauthorized("this token is refused (expired, signed out, or not one of ours): sign in again")
            if user is None:
                raise Unauthorized("sign in first: send Authorization: Bearer <token>")
            if user["role"] not in self.roles:
                raise Forbidden(f"this needs the role {' or '.join(sorted(self.roles))}")
            kwargs["user"] = user
        if self.form is not None:
            kwargs["user"] = user  # who the client acts for, if it says (a refresh checks it)
            kwargs["form"] = form_grant(request, self.form) if request.mimetype == FORM else None
        if self.body is not None:
            kwargs["body"] = None if kwargs.get("form") else self._load_body(json_body(request))
        if self.query is not None:
            kwargs["query"] = self._load_query(request.args.to_dict())
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


def api(method, url, response=None, media_type="application/json", errors=(), headers=(), **kwargs):
    """Declare an HTTP route of the API (see the module's docstring).

    What the route answers is declared with it, and the OpenAPI document
    (``gateway.openapi``) reads nothing else: ``response``, the success's
    body (a marshmallow schema, or a JSON schema of ``media_type``; none for
    ``status=204``); ``errors``, the statuses its own work may answer (404,
    409, 503...), beyond those the rest of the declaration brings (400 for
    a body, query or path parameter; 401 and 403 for ``roles``; 413 and 415
    for a body; 429 for a ``limit``); ``headers``, the request headers it
    reads, as OpenAPI parameters."""
    if (response is None) != (kwargs.get("status") == 204):
        raise ValueError(f"{method} {url}: a response schema, unless (and only if) status=204")

    def decorator(fn):
        ROUTES.append({"method": method, "url": url, "name": fn.__name__, "doc": fn.__doc__ or "",
                       "response": response, "media_type": media_type, "errors": tuple(errors),
                       "headers": tuple(headers), **kwargs})
        return Api.decorator(method, url, **kwargs)(fn)

    return decorator
