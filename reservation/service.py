"""The reservation service: Nameko adapters around ``reservation.domain``.

Inbound: RPC for the gateway (create, get, cancel, return, renew), handlers
for the events of ``product`` (allocation) and ``delivery`` (shipping, a
canceled delivery), a timer that settles the cancels left in flight and one
that finds the loans fallen overdue.
Outbound: the store (with its outbox) and the synchronous cancel to
``delivery``, behind a timeout and a circuit breaker.
"""
import collections
import contextlib
import logging
import time
import uuid

from nameko.dependency_providers import Config
from sqlalchemy.exc import IntegrityError

from common import correlation, faults
from common.errors import NotAllowed, NotFound, Unavailable
from common.events import now_iso
from common.handlers import handles
from common.outbox import emit_all
from common.rpc import ServiceRpc, rpc
from common.service import ServiceBase
from common.timers import every
from reservation import models
from reservation.domain import CANCELED, COMPLETE, DROP, WAIT, LendingRules, Reservation

log = logging.getLogger(__name__)

RECOVERY_BATCH = 500  # intents settled per recovery round
OVERDUE_BATCH = 500  # loans marked overdue per transaction of the overdue check


class ReservationService(ServiceBase):
    name = "reservation"

    store = models.ReservationStore(models.Base)
    delivery = ServiceRpc("delivery", timeout_key="CANCEL_TIMEOUT", default=2.0, breaker=True)
    config = Config()

    @property
    def rules(self):
        return LendingRules.from_config(self.config)

    @rpc
    def create(self, book_id, customer, idempotency_key=None, address=None):
        """Reserve, if the lending rules (SPEC §8) allow it; ``NotAllowed``
        (409) says which one does not. The rules are checked and the
        reservation written in one transaction that holds the customer's
        turn (``Reservations.serialize_customer``), so twenty requests of one
        customer at once cannot all pass a check made before any is written.
        A replay of an idempotent request answers what it answered first. Its
        key (every request has one: the gateway makes one when the client
        sent none) is not looked up on the way in: the unique key of
        (customer, idempotency key) refuses the second insert, and the
        replay is answered from the first. Only a request the rules refuse
        looks its key up, so that a replay is never refused by the very
        reservation it made (a lookup per request was a tenth of this
        service's CPU at 25/s, docs/performance.md)."""
        rules = self.rules
        try:
            with self.store.transaction() as tx:
                tx.reservations.serialize_customer(customer)
                now = now_iso()
                try:
                    rules.check_reserve(tx.reservations.holdings(customer, book_id, now, rules))
                except NotAllowed as refused:
                    existing = idempotency_key and tx.reservations.by_idempotency_key(customer, idempotency_key)
                    if existing:  # a replay: the first one's answer
                        return self._replay(existing, book_id)
                    log.info("reservation refused: %s", refused.message,
                             extra={"book_id": book_id, "rule": refused.details.get("rule")})
                    raise
                reservation, caused = Reservation.request(
                    str(uuid.uuid4()), book_id, customer, now, idempotency_key, address)
                tx.reservations.add(reservation)  # IntegrityError: the key was used before
                emit_all(tx, caused)
                created = reservation.to_dict()
        except IntegrityError:  # a replay, or the same key sent twice at the same moment
            with self.store.reservations() as reservations:
                return self._replay(reservations.by_idempotency_key(customer, idempotency_key), book_id)
        log.info("reservation requested", extra={"reservation_id": created["id"], "book_id": book_id})
        return created

    @rpc
    def get(self, reservation_id, customer=None):
        with self.store.reservations() as reservations:
            return self._owned(reservations, reservation_id, customer).to_dict()

    @rpc
    def cancel(self, reservation_id, customer=None):
        """Cancel, synchronously with the delivery, or not at all.

        A reservation that may have a delivery (confirmed, shipped) is
        canceled in three steps (docs/reliability.md, "The synchronous
        cancel"): record a ``CancelIntent``; cancel the delivery by RPC;
        cancel the reservation and delete the intent, in one transaction.
        If delivery cannot be reached this raises ``Unavailable`` (503) and
        the reservation is unchanged; the intent stays until the recovery
        learns what delivery did. If this process dies after delivery's
        cancel, ``delivery_canceled`` (or the recovery) finishes it.

        Whether delivery must be asked is decided inside the first write,
        so an allocation cannot land between that decision and the cancel
        of a reservation that was not confirmed yet."""
        with self.store.transaction() as tx:
            reservation = self._owned(tx.reservations, reservation_id, customer)
            ask_delivery = reservation.may_have_delivery
            if ask_delivery:
                expires_at = time.time() + self.delivery.timeout
                tx.reservations.record_cancel_intent(reservation.intend_cancel(correlation.current(), expires_at))
            else:
                caused = self._cancel(tx, reservation)
        if ask_delivery:
            try:
                self._cancel_delivery(reservation, expires_at)
            except Unavailable:
                # delivery's answer is lost, but delivery_canceled (committed
                # before it answers) may have canceled the reservation meanwhile.
                with self.store.reservations() as reservations:
                    now = self._owned(reservations, reservation_id, customer).to_dict()
                if now["status"] != CANCELED:
                    raise
                log.info("reservation canceled: delivery's answer lost, its delivery_canceled arrived",
                         extra={"reservation_id": reservation_id})
                return now
            with self.store.transaction() as tx:
                reservation = self._owned(tx.reservations, reservation_id, customer)
                caused = self._cancel(tx, reservation)
        if caused:
            log.info("reservation canceled", extra={"reservation_id": reservation_id, "completed_by": "request"})
        else:
            log.info("reservation already canceled", extra={"reservation_id": reservation_id})
        return reservation.to_dict()

    def _cancel(self, tx, reservation):
        caused = reservation.cancel(now_iso())
        emit_all(tx, caused)
        tx.reservations.forget_cancel_intent(reservation.id)
        return caused

    def _cancel_delivery(self, reservation, expires_at):
        log.info("cancel intent recorded", extra={"reservation_id": reservation.id})
        faults.point("reservation.cancel.before-delivery")
        try:
            # Never past the deadline written in the intent: after it (and
            # COMMIT_GRACE), the recovery may conclude delivery did nothing.
            self.delivery.until(expires_at).cancel(reservation.id, reservation.book_id, reservation.customer)
        except NotAllowed:  # delivered meanwhile: delivery changed nothing, nor do we
            self._forget_intent(reservation.id)
            raise
        except Unavailable as error:
            # delivery may or may not have canceled: the intent stays, and the
            # recovery settles it once this request's deadline has passed.
            log.warning("cancel left to recovery: no answer from delivery (%s)", error.message,
                        extra={"reservation_id": reservation.id})
            raise
        faults.point("reservation.cancel.after-delivery")

    def _forget_intent(self, reservation_id):
        try:
            with self.store.transaction() as tx:
                tx.reservations.forget_cancel_intent(reservation_id)
        except Unavailable:
            pass  # our caller gave up first; the recovery drops it

    @rpc
    def return_book(self, reservation_id, customer=None):
        with self.store.transaction() as tx:
            reservation = self._owned(tx.reservations, reservation_id, customer)
            emit_all(tx, reservation.return_book(now_iso()))
            return reservation.to_dict()

    @rpc
    def renew(self, reservation_id, customer=None):
        """Renew a loan: ``due_at`` one loan period later; ``NotAllowed``
        (409) says why not (SPEC §8)."""
        with self.store.transaction() as tx:
            reservation = self._owned(tx.reservations, reservation_id, customer)
            waits = tx.reservations.someone_waits(reservation.book_id, reservation.customer)
            emit_all(tx, reservation.renew(now_iso(), self.rules, waits))
            renewed = reservation.to_dict()
        log.info("loan renewed", extra={"reservation_id": reservation_id, "due_at": renewed["due_at"],
                                        "renewals": renewed["renewals"]})
        return renewed

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
        # The loan runs from the moment the courier handed the book over.
        loan_period = self.rules.loan_period
        self._apply(tx, event, lambda reservation, now: reservation.delivered(
            now, loan_period, delivered_at=event["occurred_at"]))

    @handles("delivery", "delivery_canceled")
    def on_delivery_canceled(self, tx, event):
        """A canceled delivery always ends in a canceled reservation: this
        finishes a cancel whose request died, or gave up waiting, after
        delivery had canceled (and is a no-op after a cancel that finished)."""
        faults.point("reservation.delivery-canceled.before-apply")
        reservation = tx.reservations.get(event["reservation_id"])
        if reservation is None:
            log.warning("delivery_canceled for an unknown reservation",
                        extra={"reservation_id": event["reservation_id"]})
            return
        caused = reservation.delivery_canceled(now_iso())
        emit_all(tx, caused)
        intent = tx.reservations.forget_cancel_intent(reservation.id)
        if caused:
            # in flight: the request is still waiting and would have done it too.
            log.info("cancel completed on delivery_canceled", extra={
                "reservation_id": reservation.id, "completed_by": "delivery_canceled",
                "in_flight": intent is not None and not intent.expired(time.time())})

    # -- the cancels left in flight ---------------------------------------

    @every("CANCEL_RECOVERY_INTERVAL", 5.0)
    def recover_cancels(self):
        """Settle every cancel whose requests have all given up or died
        (at start, then every ``CANCEL_RECOVERY_INTERVAL`` seconds): ask
        delivery for the deliveries' status; complete the cancel of those
        canceled, drop the intents of the others once delivery can no longer
        act on them (``CancelIntent.outcome``). Delivery is asked outside the
        circuit breaker: this is a read, and must not use up the trial call
        a customer's cancel needs."""
        with self.store.reservations() as reservations:
            due = [intent.reservation_id
                   for intent in reservations.expired_cancel_intents(time.time(), RECOVERY_BATCH)]
        if not due:
            return
        try:
            statuses = self.delivery.with_timeout(self.delivery.timeout).statuses(due)
        except Exception as error:  # delivery down, or not upgraded yet: next time
            log.warning("cancel recovery postponed: %s", error, extra={"pending": len(due)})
            return
        settled = collections.Counter()
        with self.store.transaction() as tx:
            for reservation_id in due:
                settled[self._settle(tx, reservation_id, statuses.get(reservation_id))] += 1
        log.info("cancel recovery: %d completed, %d dropped, %d still in flight",
                 settled[COMPLETE], settled[DROP], settled[WAIT],
                 extra={"completed": settled[COMPLETE], "dropped": settled[DROP], "waiting": settled[WAIT]})

    def _settle(self, tx, reservation_id, delivery_status):
        reservation = tx.reservations.get(reservation_id)  # locked first, as the cancel does
        intent = tx.reservations.cancel_intent(reservation_id)
        if intent is None:
            return None  # finished meanwhile
        outcome = intent.outcome(delivery_status, time.time())
        if outcome == WAIT:  # a new request renewed it meanwhile
            return outcome
        tx.reservations.forget_cancel_intent(reservation_id)
        if outcome == DROP:
            log.info("cancel intent dropped: delivery did not cancel", extra={
                "reservation_id": reservation_id, "delivery_status": delivery_status})
            return outcome
        with _correlation(intent.correlation_id):  # the event and the log line carry the customer's request id
            caused = reservation.delivery_canceled(now_iso())
            emit_all(tx, caused)
            if caused:
                log.info("cancel completed by recovery", extra={
                    "reservation_id": reservation_id, "completed_by": "recovery"})
        return outcome

    # -- loans fallen overdue ---------------------------------------------

    @every("OVERDUE_CHECK_SECONDS", 60.0)
    def check_overdue(self):
        """Mark the loans not returned by their due moment overdue, and
        publish ``loan_overdue`` once for each (at start, then every
        ``OVERDUE_CHECK_SECONDS``).

        Every replica runs this timer. Each loan is marked by a conditional
        UPDATE (``... WHERE overdue = false``, ``Reservations.mark_overdue``) in the
        transaction that writes its event to the outbox: when two replicas
        check at the same moment, only the one whose UPDATE changed the row
        emits, and the outbox publishes what was committed, so the event is
        neither lost nor published twice. A return (``overdue`` false again,
        status ``returned``) takes the loan out of the check."""
        now = now_iso()
        with self.store.reservations() as reservations:
            due = reservations.loans_due(now, OVERDUE_BATCH)
        if not due:
            return
        marked = 0
        with self.store.transaction() as tx:
            for reservation_id in due:
                if not tx.reservations.mark_overdue(reservation_id, now):
                    continue  # returned meanwhile, or another replica was first
                reservation = tx.reservations.get(reservation_id)
                tx.emit("loan_overdue", **reservation.event_fields("loan_overdue"))
                marked += 1
                log.info("loan overdue", extra={"reservation_id": reservation_id, "due_at": reservation.due_at})
        log.info("overdue check: %d loans fell overdue", marked, extra={"marked": marked})

    # -- helpers --------------------------------------------------------

    def _apply(self, tx, event, step):
        reservation = tx.reservations.get(event["reservation_id"])
        if reservation is None:
            log.warning("%s for an unknown reservation", event["event_type"],
                        extra={"reservation_id": event["reservation_id"]})
            return
        emit_all(tx, step(reservation, now_iso()))

    @staticmethod
    def _owned(reservations, reservation_id, customer):
        reservation = reservations.get(reservation_id)
        # Someone else's reservation does not exist, as far as you can tell.
        if reservation is None or (customer is not None and reservation.customer != customer):
            raise NotFound("no such reservation", reservation_id=reservation_id)
        return reservation

    @staticmethod
    def _replay(existing, book_id):
        if existing.book_id != book_id:
            raise NotAllowed("this Idempotency-Key was used for another book")
        return existing.to_dict()


@contextlib.contextmanager
def _correlation(value):
    """Log and emit under ``value`` as the correlation id, then go back."""
    saved = correlation.current()
    correlation.bind(value)
    try:
        yield
    finally:
        correlation.bind(saved)
