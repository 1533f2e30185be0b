"""The gateway: the single HTTP entry point of Book Rental.

Each route authenticates and validates (in ``gateway.http``), then makes one
or two RPC calls and returns what the service answered. It owns nothing but
the accounts (who may sign in, their role, their email and address) and
their sessions (``gateway.sessions``); every business decision is made by
the service that owns it. Account changes are announced as
``customer_updated`` through the gateway's own outbox, so ``notification``
learns where to mail without ever asking the gateway.
"""
import json
import logging
import mimetypes
import os
import random
import time
import uuid

import eventlet
from kombu import Connection
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.dependency_providers import Config
from sqlalchemy.exc import IntegrityError
from werkzeug.security import safe_join
from werkzeug.wrappers import Response

from common import eventlog
from common.config import BACKENDS
from common.correlation import Correlation
from common.errors import BadRequest, NotAllowed, NotFound, Unavailable
from common.metrics import Metrics
from common.rpc import ServiceRpc
from gateway import auth, models, openapi, schemas, sessions
from gateway.authority import Tokens
from gateway.domain import Account
from gateway.cache import GatewayCaches
from gateway.store import AccountStore
from gateway.inline import inline_event_handler
from gateway.live import EVENT_SCHEMA, LivePages, change, stream_response
from gateway.errors import OAuthError, Unauthorized, json_response
from gateway.http import api

log = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
WEB_ROOT = os.path.join(HERE, "web")
ASYNCAPI = os.path.join(os.path.dirname(HERE), "docs", "asyncapi.json")
PRUNE_CHANCE = 0.01  # of a sign-in deleting the refresh tokens that expired a day ago
JSON_OBJECT = {"type": "object"}  # a JSON document of its own standard (OpenAPI, AsyncAPI)
TEXT = {"type": "string"}  # a file of the web app
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


def _owner(user):
    """Customers act on their own reservations; librarians on any."""
    return user["username"] if user["role"] == "customer" else None


def _reservation_id(value):
    if not schemas.is_uuid(value):
        raise NotFound("no such reservation", reservation_id=value[:64])
    return value


def _delivery_id(value):
    if not schemas.is_uuid(value):
        raise NotFound("no such delivery", delivery_id=value[:64])
    return value


def _page(result):
    return {"items": result["items"], "next": None if result["next"] is None else str(result["next"])}


class GatewayService:
    name = "gateway"

    correlation_id = Correlation()
    metrics = Metrics(serve=False)  # served at GET /metrics on the HTTP port (gateway.server)
    config = Config()
    store = AccountStore(models.Base)
    product = ServiceRpc("product")
    reservation = ServiceRpc("reservation")
    delivery = ServiceRpc("delivery")
    mypage = ServiceRpc("mypage")
    notification = ServiceRpc("notification")
    live_pages = LivePages()
    caches = GatewayCaches()
    authority = Tokens()
    event_log = eventlog.EventLogReader()

    # -- accounts and sessions ------------------------------------------

    @api("POST", "/auth/token", body=schemas.Credentials, form=schemas.GRANTS, tag="auth", limit="login",
         response=schemas.Token, errors=(401, 503))
    def issue_token(self, request, body, form, user):
        """Sign in, or refresh a session. The answer: an access token (a JWT
        signed with RS256, good for `expires_in` seconds) and a refresh token
        (good once, for a new pair before the access token expires). JSON
        `{"username", "password"}` answers errors in this API's form; a
        form-encoded body is an OAuth 2 token request (RFC 6749 §4.3 and
        §6: `grant_type=password` with `username` and `password`, or
        `grant_type=refresh_token` with `refresh_token`) answered in RFC 6749
        §5.2's form. A refresh token used twice ends its session."""
        if form is None:
            return self._sign_in(body["username"], body["password"], None,
                                 Unauthorized("wrong username or password"))
        if form["grant_type"] == "password":
            return self._sign_in(form["username"], form["password"], form["client_id"],
                                 OAuthError("invalid_grant", "wrong username or password"))
        return self._refresh(form["refresh_token"], form["client_id"], user)

    @api("POST", "/auth/logout", roles=set(auth.ROLES), status=204, tag="auth", errors=(503,))
    def logout(self, request, user):
        """Sign out: this access token and its session's refresh token are
        refused from now on, by every gateway replica within a second."""
        deny_list = self.authority.deny_list
        deny_list.deny([(user["jti"], user["exp"])])  # first: if that fails (503), nothing changed
        if user["session"] is not None:
            with self.store.transaction() as tx:
                others = sessions.revoke(tx.session, user["session"], time.time())
            deny_list.deny([entry for entry in others if entry[0] != user["jti"]])
        log.info("signed out", extra={"username": user["username"]})
        return Response(status=204, headers={"Cache-Control": "no-store"})

    @api("GET", "/.well-known/jwks.json", tag="auth", response=schemas.KeySet, errors=(503,))
    def jwks(self, request):
        """The public keys that sign access tokens (a JWK Set, RFC 7517):
        verify a token with the key of its `kid`, algorithm RS256."""
        response = json_response(self.authority.tokens.source.current().jwks())
        response.headers["Cache-Control"] = "public, max-age=60"
        return response

    def _sign_in(self, username, password, client_id, failure):
        with self.store.reading() as db:
            account = models.find(db, username)
            if not auth.verify(account, password):
                raise failure
            username, role = account.username, account.role
        session_id = sessions.new_session_id()
        token, claims = self.authority.tokens.issue(username, role, session_id)
        now = time.time()
        with self.store.transaction() as tx:
            refresh = sessions.issue(tx.session, session_id, username, client_id, (claims["jti"], claims["exp"]),
                                     now, self._refresh_ttl())
            if random.random() < PRUNE_CHANCE:  # now and then: forget tokens long expired
                sessions.prune(tx.session, now)
        return _token_answer(token, claims, refresh)

    def _refresh(self, refresh_token, client_id, user):
        now = time.time()
        failure = None
        with self.store.transaction() as tx:
            try:
                session_id, username, client_id = sessions.use(
                    tx.session, refresh_token, now, client_id, user["username"] if user else None)
                account = models.find(tx.session, username)
                if account is None:
                    raise sessions.InvalidGrant("the account no longer exists",
                                                revoked=sessions.revoke(tx.session, session_id, now))
                token, claims = self.authority.tokens.issue(account.username, account.role, session_id)
                refresh = sessions.issue(tx.session, session_id, account.username, client_id,
                                         (claims["jti"], claims["exp"]), now, self._refresh_ttl())
            except sessions.InvalidGrant as error:
                failure = error  # the transaction commits what the failure revoked
        if failure is not None:
            if failure.revoked:
                log.warning("session revoked: %s", failure.message)
                try:
                    self.authority.deny_list.deny(failure.revoked)
                except Exception:
                    log.exception("the revoked session's access tokens could not be denied")
            raise OAuthError("invalid_grant", failure.message)
        return _token_answer(token, claims, refresh)

    def _refresh_ttl(self):
        return int(self.config.get("REFRESH_TOKEN_TTL") or sessions.DEFAULT_TTL)

    @api("POST", "/auth/register", body=schemas.Registration, status=201, tag="auth", limit="signup",
         response=schemas.Account, errors=(409, 503))
    def register(self, request, body):
        """Sign up as a customer."""
        try:
            with self.store.transaction() as tx:
                taken = models.name_taken(tx.session, body["username"])
                account = Account.sign_up(body["username"], body["password"], taken,
                                          body.get("email"), body.get("address"))
                tx.session.add(account)
                tx.emit("customer_updated", **account.contact())
        except IntegrityError:  # signed up twice at the same moment
            raise NotAllowed("this username is taken", username=body["username"]) from None
        log.info("account created", extra={"username": account.username})
        return account.to_dict()

    @api("GET", "/account", roles={"customer", "librarian", "courier"}, tag="auth",
         response=schemas.Profile, errors=(404, 503))
    def get_account(self, request, user):
        """Your account: username, role, email (where notices go) and address (where books go)."""
        with self.store.reading() as session:
            return self._account(session, user).profile()

    @api("PATCH", "/account", roles={"customer", "librarian", "courier"}, body=schemas.ContactChange, tag="auth",
         response=schemas.Profile, errors=(404, 503))
    def change_account(self, request, user, body):
        """Change your email or address (what the body names; null clears it). A new
        address is where later reservations go; books already on their way keep theirs."""
        with self.store.transaction() as tx:
            account = self._account(tx.session, user)
            if account.change_contact(body):
                tx.emit("customer_updated", **account.contact())
            return account.profile()

    # -- books ----------------------------------------------------------

    @api("POST", "/books", roles={"librarian"}, body=schemas.NewBook, status=201, tag="books",
         response=schemas.Book, errors=(409, 503))
    def register_book(self, request, user, body):
        """Register a title with its first copies in stock; ``isbn`` (ISBN-10 or
        -13) is kept as its 13 digits, and a second title with it is 409."""
        return self.product.register_book(body["isbn"], body["title"], body["author"], body["copies"])

    @api("POST", "/books/<int(max=2147483647):book_id>/stock", roles={"librarian"}, body=schemas.Restock, tag="books",
         response=schemas.Book, errors=(404, 503))
    def add_stock(self, request, user, book_id, body):
        """Stock more copies of a title; waiting reservations are served first."""
        return self.product.add_stock(book_id, body["quantity"], request_id=f"request:{uuid.uuid4()}")

    @api("GET", "/books", query=schemas.BookQuery, tag="books", response=schemas.page_of(schemas.Book), errors=(503,))
    def list_books(self, request, query):
        """The catalogue, oldest title first; with ``q``, only the titles whose
        title, author or ISBN contains it, ignoring case."""
        search = (query["q"] or "").strip() or None
        return _page(self.product.list_books(after_id=int(query["cursor"] or 0), limit=query["limit"],
                                             query=search))

    @api("GET", "/books/<int(max=2147483647):book_id>", tag="books", response=schemas.Book, errors=(404, 503))
    def get_book(self, request, book_id):
        """One title and its stock."""
        return self.product.get_book(book_id)

    # -- reservations ---------------------------------------------------

    @api("POST", "/reservations", roles={"customer"}, body=schemas.NewReservation, status=202, tag="reservations",
         response=schemas.Reservation, errors=(404, 409, 503), headers=[schemas.IDEMPOTENCY_KEY])
    def reserve(self, request, user, body):
        """Reserve a title. Accepted at once (202); a copy is allocated, or the
        reservation waitlisted, as the events flow. Honours ``Idempotency-Key``.
        The book goes to ``address``, by default the account's address now.
        409, saying which, when a lending rule refuses it (SPEC §8): an overdue
        loan, ``MAX_ACTIVE_RESERVATIONS`` live reservations, or a live
        reservation of the same title."""
        key = request.headers.get("Idempotency-Key")
        if key is not None and not (0 < len(key) <= 128 and key.isprintable()):
            raise BadRequest("Idempotency-Key must be 1 to 128 printable characters",
                             **{"Idempotency-Key": ["invalid"]})
        if body["book_id"] not in self.caches.books:  # titles are never deleted (gateway.cache)
            try:
                self.product.with_timeout(1.0).get_book(body["book_id"])
                self.caches.books.add(body["book_id"])
            except Unavailable:
                pass  # product is down: accept; it allocates (or refuses) when it is back
        # No key of the client's: one for this request all the same. If the
        # service dies after its commit but before it answers, the broker
        # delivers the request again; the key makes that a replay, not a
        # second reservation.
        address = body.get("address") or self._default_address(user)
        return self.reservation.create(body["book_id"], user["username"], key or f"request:{uuid.uuid4()}",
                                       address=address)

    @api("GET", "/reservations/<reservation_id>", roles={"customer", "librarian"}, tag="reservations",
         response=schemas.Reservation, errors=(404, 503))
    def get_reservation(self, request, user, reservation_id):
        """One reservation (customers: only their own)."""
        return self.reservation.get(_reservation_id(reservation_id), _owner(user))

    @api("POST", "/reservations/<reservation_id>/cancel", roles={"customer"}, tag="reservations",
         response=schemas.Reservation, errors=(404, 409, 503))
    def cancel_reservation(self, request, user, reservation_id):
        """Cancel, with its delivery, synchronously; 409 once delivered, 503
        (nothing changed) if the delivery service cannot be reached."""
        return self.reservation.cancel(_reservation_id(reservation_id), user["username"])

    @api("POST", "/reservations/<reservation_id>/renew", roles={"customer"}, tag="reservations",
         response=schemas.Reservation, errors=(404, 409, 503))
    def renew_reservation(self, request, user, reservation_id):
        """Renew a loan: ``due_at`` one loan period later. 409, saying why, when
        it is not delivered, is overdue, was renewed ``MAX_RENEWALS`` times, or
        another customer waits for the title (SPEC §8)."""
        return self.reservation.renew(_reservation_id(reservation_id), user["username"])

    @api("POST", "/reservations/<reservation_id>/return", roles={"customer", "librarian"}, tag="reservations",
         response=schemas.Reservation, errors=(404, 409, 503))
    def return_book(self, request, user, reservation_id):
        """Bring a delivered book back; its copy goes to the next in line."""
        return self.reservation.return_book(_reservation_id(reservation_id), _owner(user))

    @api("GET", "/reservations/<reservation_id>/events", roles={"librarian"}, query=schemas.EventLogPage,
         tag="reservations", response=schemas.EventLogStory, errors=(404, 503))
    def reservation_events(self, request, user, reservation_id, query):
        """One reservation's story from the event log (SPEC §10): its events,
        from every service, in log order. The scan of the log is bounded: from
        `since` (by default the last 30 days), at most a few thousand events
        and seconds a page; `next` goes on from where it stopped. 404 when
        the log holds nothing of it; 503 when the broker cannot be reached."""
        reservation_id = _reservation_id(reservation_id)
        if query["cursor"] is not None:
            start = int(query["cursor"])
        else:
            start = query["since"] or eventlog.since(str(self.config.get("EVENT_TRACE_WINDOW") or "30D"))
        found = self.event_log.story(reservation_id, start, limit=query["limit"])
        if not found.entries and found.next is None and query["cursor"] is None:
            raise NotFound("the event log holds no event of this reservation", reservation_id=reservation_id)
        log.info("reservation traced", extra={"reservation_id": reservation_id, "events": len(found.entries),
                                              "scanned": found.scanned})
        return {"items": [eventlog.describe(entry) for entry in found.entries],
                "next": None if found.next is None else str(found.next)}

    # -- deliveries -----------------------------------------------------

    @api("GET", "/deliveries", roles={"courier", "librarian"}, query=schemas.DeliveryPage, tag="deliveries",
         response=schemas.page_of(schemas.Delivery), errors=(503,))
    def list_deliveries(self, request, user, query):
        """Deliveries, oldest first, filtered by ``status`` when given."""
        return _page(self.delivery.list(query["status"], int(query["cursor"] or 0), query["limit"]))

    @api("GET", "/deliveries/<delivery_id>", roles={"courier", "librarian"}, tag="deliveries",
         response=schemas.Delivery, errors=(404, 503))
    def get_delivery(self, request, user, delivery_id):
        """One delivery."""
        return self.delivery.get(_delivery_id(delivery_id))

    @api("POST", "/deliveries/<delivery_id>/ship", roles={"courier"}, tag="deliveries",
         response=schemas.Delivery, errors=(404, 409, 503))
    def ship(self, request, user, delivery_id):
        """The courier takes the book: preparing → shipped."""
        return self.delivery.ship(_delivery_id(delivery_id))

    @api("POST", "/deliveries/<delivery_id>/deliver", roles={"courier"}, tag="deliveries",
         response=schemas.Delivery, errors=(404, 409, 503))
    def deliver(self, request, user, delivery_id):
        """The courier hands the book over: shipped → delivered."""
        return self.delivery.deliver(_delivery_id(delivery_id))

    # -- notices --------------------------------------------------------

    @api("GET", "/notifications", roles={"customer"}, query=schemas.Page, tag="notifications",
         response=schemas.NoticePage, errors=(503,))
    def notifications(self, request, user, query):
        """The notices sent to you, newest first: confirmed, shipped, delivered (with
        the due date), due soon, overdue, canceled by the library."""
        cursor = int(query["cursor"]) if query["cursor"] else None
        return _page(self.notification.notices(user["username"], before=cursor, limit=query["limit"]))

    # -- mypage ---------------------------------------------------------

    @api("GET", "/mypage", roles={"customer"}, query=schemas.MyPageQuery, tag="mypage",
         response=schemas.MyPage, errors=(503,))
    def my_page(self, request, user, query):
        """The signed-in customer's reservations, newest first, a page at a
        time, from the read model."""
        pages, customer = self.caches.pages, user["username"]

        def fetch():
            answer = self.mypage.get(customer, query["limit"], query["cursor"])
            return {**answer, "next": schemas.keyset_cursor(answer.get("next"))}

        if not pages.enabled:
            return fetch()
        if "no-cache" in request.headers.get("Cache-Control", ""):
            pages.invalidate(customer)
        body = pages.page(customer, lambda: json.dumps(fetch()).encode(), part=(query["limit"], query["cursor"]))
        response = json_response(None)
        response.set_data(body)
        return response

    # -- live mypage (Server-Sent Events; see gateway/live.py) ---------

    @api("POST", "/mypage/events/ticket", roles={"customer"}, tag="mypage", response=schemas.EventTicket, errors=(503,))
    def mypage_events_ticket(self, request, user):
        """A ticket to open the live MyPage stream: valid for 30 seconds, once.
        EventSource cannot send a bearer token, and a token must not go into a
        URL; a ticket may."""
        return self.live_pages.issue_ticket(self.authority.tokens, user, user["exp"])

    @api("GET", "/mypage/events", query=schemas.EventStreamQuery, tag="mypage",
         response=EVENT_SCHEMA, media_type="text/event-stream", errors=(401,))
    def mypage_events(self, request, query):
        """Live MyPage, as Server-Sent Events (text/event-stream): `ready` once
        connected, then `mypage_changed` {reservation_id, book_id, status,
        delivery_status} for each change of the ticket's customer; a comment
        every 15 seconds. Refetch GET /mypage on `ready` and on each change."""
        user = self.live_pages.redeem_ticket(self.authority.tokens, query["ticket"])
        return stream_response(request, self.live_pages.subscribe(user["username"], user["until"]))

    @inline_event_handler("mypage", "mypage_changed", uses=("caches", "live_pages"))  # no worker: gateway.inline
    def on_mypage_changed(self, event):
        """Every replica hears every change and pushes it to its own streams."""
        if isinstance(event, dict) and isinstance(event.get("customer"), str):
            self.caches.pages.invalidate(event["customer"])  # first: the pages refetch at once
            self.live_pages.publish(event["customer"], change(event))

    # -- operations -----------------------------------------------------

    @api("GET", "/health/live", tag="health", limit="none", response=schemas.Health)
    def live(self, request):
        """200 while the process is serving."""
        return {"status": "ok", "checks": {}}

    @api("GET", "/health/ready", tag="health", limit="none", response=schemas.Health, errors=(503,))
    def ready(self, request):
        """200 when the broker and the database are reachable, else 503. The
        backends' own health is reported, and does not make this fail: a
        service that is down delays its work, it does not stop the gateway.
        Nor does Redis (the shared rate limits and sign-outs), when there is one."""
        checks = {"broker": self._check(self._ping_broker), "database": self._check(self.store.ping)}
        if self.authority.redis is not None:
            checks["redis"] = self._check(self.authority.redis.ping)
        pool = eventlet.GreenPool()
        for name, result in zip(BACKENDS, pool.imap(self._backend_health, BACKENDS)):
            checks[name] = result
        ok = checks["broker"]["status"] == "ok" and checks["database"]["status"] == "ok"
        return (200 if ok else 503), {"status": "ok" if ok else "unavailable", "checks": checks}

    @api("GET", "/openapi.json", tag="docs", response=JSON_OBJECT)
    def openapi_document(self, request):
        """This API, described in OpenAPI 3."""
        return openapi.document()

    @api("GET", "/asyncapi.json", tag="docs", response=JSON_OBJECT, errors=(404,))
    def asyncapi_document(self, request):
        """The events between the services, described in AsyncAPI."""
        return _file_response(ASYNCAPI, "application/json")

    @api("GET", "/", tag="web", response=TEXT, media_type="text/html")
    def web_app(self, request):
        """The web app for customers, librarians and couriers."""
        return _file_response(os.path.join(WEB_ROOT, "index.html"), "text/html")

    @api("GET", "/static/<path:path>", tag="web", response=TEXT, media_type="*/*", errors=(404,))
    def static(self, request, path):
        """The web app's assets."""
        full = safe_join(os.path.join(WEB_ROOT, "static"), path)
        if full is None or not os.path.isfile(full):
            raise NotFound("no such file")
        return _file_response(full, mimetypes.guess_type(full)[0] or "application/octet-stream")

    # -- helpers --------------------------------------------------------

    @staticmethod
    def _account(session, user):
        account = models.find(session, user["username"])
        if account is None:  # a valid token for an account since removed
            raise NotFound("no such account", username=user["username"])
        return account

    def _default_address(self, user):
        """The account's address at this moment (the gateway's own data: no RPC)."""
        with self.store.reading() as session:
            account = models.find(session, user["username"])
            return account.address if account is not None else None

    def _ping_broker(self):
        with Connection(self.config[AMQP_URI_CONFIG_KEY], connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1)

    @staticmethod
    def _check(probe):
        try:
            probe()
            return {"status": "ok"}
        except Exception as error:
            return {"status": "unavailable", "error": f"{type(error).__name__}: {error}"[:200]}

    def _backend_health(self, name):
        try:
            return getattr(self, name).with_timeout(1.0).health()
        except Exception as error:
            return {"status": "unavailable", "error": str(error)[:200]}


def _token_answer(token, claims, refresh_token):
    """RFC 6749 §5.1's answer (the JSON sign-in's too): never cached."""
    return json_response({"access_token": token, "token_type": "bearer", "expires_in": claims["exp"] - claims["iat"],
                          "refresh_token": refresh_token}, headers={"Pragma": "no-cache"})


def _file_response(path, mimetype):
    try:
        with open(path, "rb") as handle:
            content = handle.read()
    except FileNotFoundError:
        raise NotFound("no such file") from None
    response = Response(content, mimetype=mimetype)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-cache"
    return response


