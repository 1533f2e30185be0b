"""The life of a reservation, in one place.

    requested ─┬─> confirmed ─> shipped ─> delivered ─> returned
               └─> waitlisted ─┘
    requested, waitlisted, confirmed, shipped ─> canceled

A reservation learns what happened to it from other services' events
(a copy allocated, the delivery shipped...). Events can arrive late, twice
or out of order, so every such step only ever moves a reservation forward:
an event that would move it back, or touch a finished one, changes nothing.
The customer's own actions (cancel, return) are refused with ``NotAllowed``
when the state does not allow them.

Each method returns the event types the change causes; the service writes
them to the outbox in the same transaction as the change.

The cancel of a reservation that may have a delivery spans two services
(SPEC §1.5); ``CancelIntent`` below is how it stays whole or absent after
any crash (docs/reliability.md, "The synchronous cancel").
"""
from common.errors import NotAllowed

REQUESTED = "requested"
WAITLISTED = "waitlisted"
CONFIRMED = "confirmed"
SHIPPED = "shipped"
DELIVERED = "delivered"
RETURNED = "returned"
CANCELED = "canceled"

PROGRESS = [REQUESTED, WAITLISTED, CONFIRMED, SHIPPED, DELIVERED, RETURNED]
HOLDS_A_COPY = {CONFIRMED, SHIPPED, DELIVERED}
CANCELABLE = {REQUESTED, WAITLISTED, CONFIRMED, SHIPPED}
FINISHED = {RETURNED, CANCELED}
# The events that say where the book goes (delivery reads it from the confirmation).
ADDRESSED = {"reservation_requested", "reservation_confirmed"}


class Reservation:
    def __init__(self, id, book_id, customer, now, idempotency_key=None, address=None):
        self.id = id
        self.book_id = book_id
        self.customer = customer
        self.status = REQUESTED
        self.created_at = now
        self.updated_at = now
        self.idempotency_key = idempotency_key
        # Where the book goes, fixed when reserved: a later change of the
        # customer's account address is for later reservations.
        self.address = address

    @classmethod
    def request(cls, id, book_id, customer, now, idempotency_key=None, address=None):
        reservation = cls(id, book_id, customer, now, idempotency_key, address)
        return reservation, ["reservation_requested"]

    # -- what other services tell us ------------------------------------

    def copy_allocated(self, now):
        return self._advance(CONFIRMED, now)

    def waitlisted(self, now):
        return self._advance(WAITLISTED, now)

    def shipped(self, now):
        return self._advance(SHIPPED, now)

    def delivered(self, now):
        return self._advance(DELIVERED, now)

    def delivery_canceled(self, now):
        """delivery has canceled this reservation's delivery. That only
        happens because a cancel was asked for, and it cannot be undone:
        the reservation is canceled too, however far the request that asked
        got (it may have died, or been told 503)."""
        if self.status in CANCELABLE:
            return self._become(CANCELED, now)
        return []

    def allocation_refused(self, now):
        """The title does not exist: the reservation can never be served."""
        if self.status in FINISHED or self.status in HOLDS_A_COPY:
            return []
        return self._become(CANCELED, now)

    # -- what the customer asks -----------------------------------------

    @property
    def may_have_delivery(self):
        """A delivery exists, or is on its way to existing, once confirmed."""
        return self.status in (CONFIRMED, SHIPPED)

    def check_cancel(self):
        if self.status != CANCELED and self.status not in CANCELABLE:
            raise NotAllowed(f"a {self.status} reservation cannot be canceled", status=self.status)

    def cancel(self, now):
        """Cancel; canceling twice is not an error, and changes nothing."""
        self.check_cancel()
        if self.status == CANCELED:
            return []
        return self._become(CANCELED, now)

    def intend_cancel(self, correlation_id, expires_at):
        """The first step of a cancel that needs delivery's: check that it
        is allowed and say so, before delivery is asked (``CancelIntent``)."""
        self.check_cancel()
        return CancelIntent(self.id, correlation_id, expires_at)

    def return_book(self, now):
        if self.status != DELIVERED:
            raise NotAllowed(f"only a delivered reservation can be returned, this one is {self.status}",
                             status=self.status)
        return self._become(RETURNED, now)

    # -- mechanics ------------------------------------------------------

    def _advance(self, status, now):
        if self.status in FINISHED or PROGRESS.index(status) <= PROGRESS.index(self.status):
            return []
        return self._become(status, now)

    def _become(self, status, now):
        self.status = status
        self.updated_at = now
        return [f"reservation_{status}"]

    def event_fields(self, event_type=None):
        fields = {"reservation_id": self.id, "book_id": self.book_id, "customer": self.customer}
        if event_type in ADDRESSED:
            fields["address"] = self.address
        return fields

    def to_dict(self):
        return {
            "id": self.id,
            "book_id": self.book_id,
            "customer": self.customer,
            "status": self.status,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "address": self.address,
        }


# -- the synchronous cancel, whole or absent ---------------------------------

COMPLETE = "complete"  # delivery canceled: cancel the reservation
DROP = "drop"  # delivery did not cancel and no longer can for this request: nothing changed
WAIT = "wait"  # a request of this cancel may still be acting: ask again later

# How long after a request's deadline a delivery commit that began before it
# may still land. Past that, delivery refuses to act for the request
# (common.rpc: the deadline travels with it and is checked before commit).
COMMIT_GRACE = 2.0


class CancelIntent:
    """A cancel in flight: delivery has been (or is about to be) asked to
    cancel the reservation's delivery, and its answer is not known here yet.

    Written in its own transaction before delivery is asked, deleted in the
    transaction that cancels the reservation. So if the process dies in
    between, or delivery's answer is lost, the intent is still there and the
    recovery settles it from the delivery's status: canceled means the
    reservation is canceled too; anything else, once no request of this
    cancel can act any more (``expires_at``, its deadline, plus
    ``COMMIT_GRACE``), means nothing changed, and the intent is dropped.
    ``expires_at`` and ``now`` are Unix times (seconds)."""

    def __init__(self, reservation_id, correlation_id, expires_at):
        self.reservation_id = reservation_id
        self.correlation_id = correlation_id  # the request's: the event that completes it carries it
        self.expires_at = expires_at

    def renew(self, other):
        """Another request cancels the same reservation: it is in flight until the later deadline."""
        self.correlation_id = other.correlation_id
        self.expires_at = max(self.expires_at, other.expires_at)

    def expired(self, now):
        """No request of this cancel is waiting for delivery's answer any more."""
        return now > self.expires_at

    def outcome(self, delivery_status, now):
        """What the recovery does, given the delivery's status (None: there
        is no delivery): ``COMPLETE``, ``DROP`` or ``WAIT``."""
        if delivery_status == CANCELED:
            return COMPLETE
        if now > self.expires_at + COMMIT_GRACE:
            return DROP
        return WAIT
