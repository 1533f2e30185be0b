"""The mypage service: a read model built only from events.

Inbound: a handler for every reservation and delivery event, and for new
titles; RPC for the gateway to read a customer's page. It never calls
another service: while one is down, MyPage shows what it last heard, and
catches up on everything it missed when it comes back (its queues are
durable). Each change is announced as ``mypage_changed`` for live pages and
the gateway's page cache: a non-persistent hint published after the commit,
kept in no outbox (``persistent=False`` in ``common.events``; docs/performance.md).

Its views are kept in SQL or in Redis, as ``MYPAGE_DB_URI`` says; the code
below is the same for both (see ``mypage.views``).
"""
import logging

from common.handlers import handles
from common.rpc import rpc
from common.service import ServiceBase
from mypage import models, views
from mypage.domain import ReservationView, line_moved, page

log = logging.getLogger(__name__)

PAGE_SIZE = 100  # rows of a page unless asked otherwise (SPEC §5)
MAX_RESERVATIONS = 500  # a page is bounded, like every list in the API
MAX_ANNOUNCED = 500  # views told of a move in their line per event (the rest see it within the page cache's TTL)


def _view_handler(source, event_type):
    def handler(self, tx, event):
        self._apply(tx, event)

    handler.__name__ = f"on_{event_type}"
    return handles(source, event_type)(handler)


class MyPageService(ServiceBase):
    name = "mypage"

    store = views.ViewStore(models.Base)

    @rpc
    def get(self, customer, limit=PAGE_SIZE, before=None):
        """A page of the customer's reservations, newest first; ``next`` is
        what to pass as ``before`` for the following page (None on the last)."""
        limit = max(1, min(int(limit), MAX_RESERVATIONS))
        before = (str(before[0]), str(before[1])) if before else None
        with self.store.views() as port:
            rows, following = page(port.for_customer(customer, limit + 1, before), limit)
            return {"customer": customer, "next": list(following) if following else None, "reservations": [
                view.to_dict(title, port.waiting_ahead(view) if view.waiting else None) for view, title in rows]}

    @handles("product", "book_registered")
    def on_book_registered(self, tx, event):
        tx.views.save_title(event["book_id"], event["title"])

    on_reservation_requested = _view_handler("reservation", "reservation_requested")
    on_reservation_waitlisted = _view_handler("reservation", "reservation_waitlisted")
    on_reservation_confirmed = _view_handler("reservation", "reservation_confirmed")
    on_reservation_shipped = _view_handler("reservation", "reservation_shipped")
    on_reservation_delivered = _view_handler("reservation", "reservation_delivered")
    on_reservation_returned = _view_handler("reservation", "reservation_returned")
    on_reservation_canceled = _view_handler("reservation", "reservation_canceled")
    on_delivery_created = _view_handler("delivery", "delivery_created")
    on_delivery_shipped = _view_handler("delivery", "delivery_shipped")
    on_delivery_delivered = _view_handler("delivery", "delivery_delivered")
    on_delivery_canceled = _view_handler("delivery", "delivery_canceled")
    on_loan_renewed = _view_handler("reservation", "loan_renewed")
    on_loan_overdue = _view_handler("reservation", "loan_overdue")

    def _apply(self, tx, event):
        port = tx.views
        view = port.get(event["reservation_id"])
        if view is None:
            view = port.add(ReservationView(event["reservation_id"], event["customer"], event["book_id"]))
        was_waiting = view.waiting
        if view.apply(event):
            self._announce(tx, view)
            if line_moved(was_waiting, view):
                # The queue_position of everyone behind it changed: their pages are told too.
                for behind in port.waiting_behind(view, MAX_ANNOUNCED):
                    self._announce(tx, behind)

    @staticmethod
    def _announce(tx, view):
        tx.emit("mypage_changed", reservation_id=view.reservation_id, book_id=view.book_id,
                customer=view.customer, status=view.status, delivery_status=view.delivery_status)
