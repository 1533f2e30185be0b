"""The reservation service: Nameko adapters around ``reservation.domain``.

Inbound: RPC for the gateway (create, get, cancel, return) and handlers for
the events of ``product`` (allocation) and ``delivery`` (shipping).
Outbound: the store (with its outbox) and the synchronous cancel to
``delivery``, behind a timeout and a circuit breaker.
"""
import logging
import uuid

from sqlalchemy.exc import IntegrityError

from common.errors import NotAllowed, NotFound
from common.events import now_iso
from common.handlers import handles
from common.rpc import ServiceRpc, rpc
from common.service import ServiceBase
from common.store import Store
from reservation import models
from reservation.domain import Reservation

log = logging.getLogger(__name__)


class ReservationService(ServiceBase):
    name = "reservation"

    store = Store(models.Base)
    delivery = ServiceRpc("delivery", timeout_key="CANCEL_TIMEOUT", default=2.0, breaker=True)

    @rpc
    def create(self, book_id, customer, idempotency_key=None, address=None):
        with self.store.reading() as session:
            if idempotency_key:
                existing = models.find_by_idempotency_key(session, customer, idempotency_key)
                if existing is not None:
                    return self._replay(existing, book_id)
        try:
            with self.store.transaction() as tx:
                reservation, caused = Reservation.request(
                    str(uuid.uuid4()), book_id, customer, now_iso(), idempotency_key, address)
                tx.session.add(reservation)
                self._emit(tx, reservation, caused)
                created = reservation.to_dict()
        except IntegrityError:  # the same key, sent twice at the same moment
            with self.store.reading() as session:
                return self._replay(models.find_by_idempotency_key(session, customer, idempotency_key), book_id)
        log.info("reservation requested", extra={"reservation_id": created["id"], "book_id": book_id})
        return created

    @rpc
    def get(self, reservation_id, customer=None):
        with self.store.reading() as session:
            return self._owned(session, reservation_id, customer).to_dict()

    @rpc
    def cancel(self, reservation_id, customer=None):
        """Cancel, synchronously with the delivery, or not at all.

        The delivery is canceled first, by RPC: if ``delivery`` cannot be
        reached this raises ``Unavailable`` and nothing has changed. The state
        is read again inside the write, because an allocation can land in
        between; if it did, the delivery is canceled for it too."""
        delivery_canceled = False
        for _ in range(3):
            with self.store.reading() as session:
                reservation = self._owned(session, reservation_id, customer)
                reservation.check_cancel()
                if reservation.may_have_delivery and not delivery_canceled:
                    self.delivery.cancel(reservation_id, reservation.book_id, reservation.customer)
                    delivery_canceled = True
            with self.store.transaction() as tx:
                reservation = self._owned(tx.session, reservation_id, customer)
                if reservation.may_have_delivery and not delivery_canceled:
                    continue  # confirmed meanwhile: its delivery must go first
                self._emit(tx, reservation, reservation.cancel(now_iso()))
                result = reservation.to_dict()
            log.info("reservation canceled", extra={"reservation_id": reservation_id})
            return result
        raise NotAllowed("the reservation kept changing; try again")

    @rpc
    def return_book(self, reservation_id, customer=None):
        with self.store.transaction() as tx:
            reservation = self._owned(tx.session, reservation_id, customer)
            self._emit(tx, reservation, reservation.return_book(now_iso()))
            return reservation.to_dict()

    # -- what the other services tell us --------------------------------

    @handles("product", "copy_allocated")
    def on_copy_allocated(self, tx, event):
        self._apply(tx, event, Reservation.copy_allocated)

    @handles("product", "waitlist_joined")
    def on_waitlist_joined(self, tx, event):
        self._apply(tx, event, Reservation.waitlisted)

    @handles("product", "allocation_refused")
    def on_allocation_refused(self, tx, event):
        self._apply(tx, event, Reservation.allocation_refused)

    @handles("delivery", "delivery_shipped")
    def on_delivery_shipped(self, tx, event):
        self._apply(tx, event, Reservation.shipped)

    @handles("delivery", "delivery_delivered")
    def on_delivery_delivered(self, tx, event):
        self._apply(tx, event, Reservation.delivered)

    # -- helpers --------------------------------------------------------

    def _apply(self, tx, event, step):
        reservation = models.find(tx.session, event["reservation_id"])
        if reservation is None:
            log.warning("%s for an unknown reservation", event["event_type"],
                        extra={"reservation_id": event["reservation_id"]})
            return
        self._emit(tx, reservation, step(reservation, now_iso()))

    @staticmethod
    def _emit(tx, reservation, event_types):
        for event_type in event_types:
            tx.emit(event_type, **reservation.event_fields(event_type))

    @staticmethod
    def _owned(session, reservation_id, customer):
        reservation = models.find(session, reservation_id)
        # Someone else's reservation does not exist, as far as you can tell.
        if reservation is None or (customer is not None and reservation.customer != customer):
            raise NotFound("no such reservation", reservation_id=reservation_id)
        return reservation

    @staticmethod
    def _replay(existing, book_id):
        if existing.book_id != book_id:
            raise NotAllowed("this Idempotency-Key was used for another book")
        return existing.to_dict()
