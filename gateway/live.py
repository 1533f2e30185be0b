"""Live MyPage: Server-Sent Events from the gateway to open pages.

How a change reaches a page:

1. ``mypage`` commits a change to its read model and emits ``mypage_changed``;
2. every gateway replica receives it (a BROADCAST handler: one auto-delete
   queue per replica) and hands it to this process's ``Hub``;
3. the hub puts it on the queue of each open stream of that customer, and only
   of that customer;
4. the stream (a generator that eventlet's WSGI server iterates in the
   connection's green thread, long after the Nameko worker has returned)
   writes it as an SSE ``mypage_changed`` event; the page then refetches
   ``GET /mypage``.

Nothing here is durable: a page that was not connected when a change happened
refetches ``GET /mypage`` when it (re)connects, so no change is lost.

Authentication. ``EventSource`` cannot send an ``Authorization`` header, and
the bearer token must not go into a URL (URLs end up in logs and history).
So the page trades its token for a *ticket* (``POST /mypage/events/ticket``):
a JWT signed with the gateway's token key for its own audience, valid for 30
seconds and redeemable once, that names the customer and when their token
expires. The page opens ``GET /mypage/events?ticket=...``; the stream ends
when the token would have expired, so a stream never outlives its sign-in.
The ticket is stateless (any replica can check it); "once" is enforced by the
replica that redeems it, which remembers the ids it has seen until they expire.
"""
import json
import logging
import secrets
import time

import jwt
from eventlet.queue import Empty, Full, LightQueue
from nameko.extensions import DependencyProvider
from werkzeug.wrappers import Response

from common.errors import Unavailable
from gateway import auth
from gateway.errors import Unauthorized

log = logging.getLogger(__name__)

TICKET_AUDIENCE = "bookrental-mypage-events"
TICKET_TTL = 30  # seconds
HEARTBEAT = 15.0  # seconds between comment lines, so proxies keep the stream open
MAX_STREAM = 3600  # seconds; a stream is also cut when the sign-in expires
RETRY_MS = 2000  # what the browser waits before it reconnects by itself
MAX_STREAMS_PER_CUSTOMER = 8  # one more closes the oldest (a forgotten tab)
QUEUE_SIZE = 64  # changes waiting for one slow stream; more are dropped (see publish)

_CLOSED = object()
# One event of the stream, as the OpenAPI document describes it (per event, as
# OpenAPI 3.2's itemSchema does and as tools read ``schema`` on 3.0 and 3.1:
# the HTML standard's fields; comments, such as the keep-alive, are no events).
EVENT_SCHEMA = {"type": "object", "required": ["event", "data"], "properties": {
    "event": {"type": "string", "enum": ["ready", "mypage_changed", "expired"]},
    "data": {"type": "string", "description": "a JSON object: what the event says"},
    "id": {"type": "string"}, "retry": {"type": "integer", "minimum": 0}}}


class Subscription:
    """One open stream: a bounded queue of changes for one customer."""

    def __init__(self, hub, customer, until):
        self.hub = hub
        self.customer = customer
        self.until = until
        self.queue = LightQueue(QUEUE_SIZE)
        self.closed = False

    def put(self, message):
        try:
            self.queue.put_nowait(message)
        except Full:
            # The page refetches the whole MyPage on every change, so with 64
            # changes still queued one more tells it nothing new.
            pass

    def get(self, timeout):
        """The next change, None on a heartbeat, or _CLOSED."""
        if self.closed:
            return _CLOSED
        try:
            return self.queue.get(timeout=timeout)
        except Empty:
            return None

    def close(self):
        if not self.closed:
            self.closed = True
            self.hub._forget(self)
            try:
                self.queue.put_nowait(_CLOSED)
            except Full:
                pass  # get() sees ``closed`` first


class Hub:
    """The open streams of this process, by customer; and the tickets used."""

    def __init__(self, max_per_customer=MAX_STREAMS_PER_CUSTOMER):
        self.max_per_customer = max_per_customer
        self.subscribers = {}  # customer -> [Subscription], oldest first
        self.used_tickets = {}  # ticket id -> its expiry
        self.closed = False

    def subscribe(self, customer, until=None):
        if self.closed:
            raise Unavailable("the gateway is shutting down; reconnect")
        subscription = Subscription(self, customer, until or time.time() + MAX_STREAM)
        streams = self.subscribers.setdefault(customer, [])
        streams.append(subscription)
        while len(streams) > self.max_per_customer:
            streams[0].close()
        return subscription

    def publish(self, customer, message):
        """Hand ``message`` to every open stream of ``customer``; how many."""
        streams = list(self.subscribers.get(customer, ()))
        for subscription in streams:
            subscription.put(message)
        return len(streams)

    def count(self, customer=None):
        if customer is not None:
            return len(self.subscribers.get(customer, ()))
        return sum(len(streams) for streams in self.subscribers.values())

    def close(self):
        """End every stream (the gateway is stopping: pages reconnect elsewhere)."""
        self.closed = True
        for streams in list(self.subscribers.values()):
            for subscription in list(streams):
                subscription.close()

    def _forget(self, subscription):
        streams = self.subscribers.get(subscription.customer)
        if streams and subscription in streams:
            streams.remove(subscription)
            if not streams:
                del self.subscribers[subscription.customer]

    # -- tickets ------------------------------------------------------------

    def issue_ticket(self, tokens, user, token_expires_at):
        """A ticket for ``user``, signed by ``tokens`` (``gateway.auth.Tokens``)."""
        now = int(time.time())
        claims = {"sub": user["username"], "role": user["role"], "iat": now, "exp": now + TICKET_TTL,
                  "iss": auth.ISSUER, "aud": TICKET_AUDIENCE, "jti": secrets.token_urlsafe(16),
                  "until": int(token_expires_at)}
        return {"ticket": tokens.sign(claims), "expires_in": TICKET_TTL}

    def redeem_ticket(self, tokens, ticket):
        """The customer a valid, unused ticket names; Unauthorized otherwise."""
        try:
            claims = tokens.decode(ticket, TICKET_AUDIENCE, ["exp", "iat", "jti", "sub", "until"])
        except (jwt.PyJWTError, ValueError, TypeError):
            raise Unauthorized("this ticket is not valid or has expired; ask for a new one") from None
        if claims.get("role") != "customer" or not isinstance(claims.get("sub"), str):
            raise Unauthorized("this ticket is not valid; ask for a new one")
        now = time.time()
        for jti, expiry in list(self.used_tickets.items()):
            if expiry < now:
                del self.used_tickets[jti]
        if claims["jti"] in self.used_tickets:
            raise Unauthorized("this ticket has been used; ask for a new one")
        self.used_tickets[claims["jti"]] = claims["exp"]
        return {"username": claims["sub"], "role": claims["role"], "until": claims["until"]}


class LivePages(DependencyProvider):
    """The live MyPage streams: the process's ``Hub``, given to every worker;
    closed when the service stops, and as soon as the gateway starts to drain
    (``gateway.server``): open pages reconnect to the gateway that takes over."""

    def setup(self):
        self.hub = Hub()

    def stop(self):
        self.hub.close()

    def kill(self):
        self.hub.close()

    def drain(self):
        self.hub.close()

    def get_dependency(self, worker_ctx):
        return self.hub


def change(event):
    """What a page is told of a ``mypage_changed`` event: no more than its row."""
    fields = ("reservation_id", "book_id", "status", "delivery_status", "occurred_at", "event_id")
    return {name: event.get(name) for name in fields}


def _sse(event, data):
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def stream(subscription, heartbeat=HEARTBEAT):
    """The body of one SSE response, as eventlet's WSGI server iterates it."""
    try:
        # Sent at once: the browser's ``open`` fires, and the page refetches
        # MyPage knowing that every later change will be pushed.
        yield f"retry: {RETRY_MS}\n".encode() + _sse("ready", {"customer": subscription.customer})
        while True:
            left = subscription.until - time.time()
            if left <= 0:
                yield _sse("expired", {"reason": "sign in again"})
                return
            message = subscription.get(timeout=min(heartbeat, left))
            if message is _CLOSED:
                return
            if message is None:
                yield b": keep-alive\n\n"
            else:
                yield _sse("mypage_changed", message)
    finally:
        subscription.close()


def stream_response(request, subscription, heartbeat=HEARTBEAT):
    """A streaming werkzeug response: the worker returns it at once."""
    # eventlet's WSGI server gathers 4 KiB before it writes; an event is
    # smaller than that and must go out now.
    request.environ["eventlet.minimum_write_chunk_size"] = 0
    response = Response(stream(subscription, heartbeat), status=200, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache, no-store"
    response.headers["X-Accel-Buffering"] = "no"
    response.headers["X-Content-Type-Options"] = "nosniff"
    # If the client is gone before the first byte, the generator never
    # starts and its ``finally`` never runs; this still unsubscribes.
    response.call_on_close(subscription.close)
    return response
