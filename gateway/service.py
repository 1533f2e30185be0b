"""The gateway: the single HTTP entry point of Book Rental.

Each route authenticates and validates (in ``gateway.http``), then makes one
or two RPC calls and returns what the service answered. It owns nothing but
the accounts (who may sign in, their role, their email and address) and
their sessions (``gateway.sessions``); every business decision is made by
the service that owns it.

The service class declares every dependency; its routes are here (books,
reservations, deliveries, notices, health) and in three mixins, one a
cohesive group: ``gateway.routes_auth`` (sign-in, sessions, accounts),
``gateway.routes_mypage`` (MyPage and its live stream) and
``gateway.routes_web`` (the API documents and the web app). Nameko finds the
entrypoints of the base classes too.

A little over 250 lines: the service class holds every dependency and the
health routes (the manifests read them from here); the other routes live in
mixins (``gateway.routes_*``).
"""
import logging
import uuid

import eventlet
from kombu import Connection
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.dependency_providers import Config

from common import eventlog
from common.config import BACKENDS
from common.correlation import Correlation
from common.errors import BadRequest, NotFound, Unavailable
from common.metrics import Metrics
from common.rpc import ServiceRpc
from gateway import models, schemas
from gateway.authority import Tokens
from gateway.cache import GatewayCaches
from gateway.http import api
from gateway.live import LivePages
from gateway.routes_auth import AuthRoutes
from gateway.routes_mypage import MyPageRoutes
from gateway.routes_web import WebRoutes
from gateway.store import AccountStore

log = logging.getLogger(__name__)


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


class GatewayService(AuthRoutes, MyPageRoutes, WebRoutes):
    name = "gateway"

    correlation_id = Correlation()
    metrics = Metrics(serve=False)  # served at GET /metrics on the HTTP port (gateway.server)
    config = Config()
    # Through its repository (models.Accounts): tx.accounts in a write, store.accounts() to read.
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

    # -- helpers --------------------------------------------------------

    def _default_address(self, user):
        """The account's address at this moment (the gateway's own data: no RPC)."""
        return self.store.address_of(user["username"])

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
