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
