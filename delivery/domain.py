"""The delivery of one reservation's book to the customer's home.

    preparing ─> shipped ─> delivered
    preparing, shipped ─> canceled

There is exactly one delivery per reservation. A cancel can overtake the
confirmation that would have created the delivery (the cancel is a direct
RPC, the confirmation an event still queued): then the delivery is born
canceled, and the confirmation that arrives later finds it and does nothing.

Each method returns the events the change causes, ``[(event_type, fields)]``
(``common.outbox.emit_all``).
"""
from common.errors import NotAllowed

from common.lifecycle import CANCELED, DELIVERED, PREPARING, SHIPPED


class Delivery:
    def __init__(self, id, reservation_id, book_id, customer, status, now, address=None):
        self.id = id
        self.reservation_id = reservation_id
        self.book_id = book_id
        self.customer = customer
        self.status = status
        self.created_at = now
        self.updated_at = now
        self.address = address  # where the book goes, as the reservation said; None when unknown

    @classmethod
    def prepare(cls, id, reservation_id, book_id, customer, now, address=None):
        delivery = cls(id, reservation_id, book_id, customer, PREPARING, now, address)
        return delivery, [("delivery_created", delivery.event_fields())]

    @classmethod
    def canceled_before_created(cls, id, reservation_id, book_id, customer, now):
        delivery = cls(id, reservation_id, book_id, customer, CANCELED, now)
        return delivery, [("delivery_canceled", delivery.event_fields())]

    def ship(self, now):
        return self._move(PREPARING, SHIPPED, now)

    def deliver(self, now):
        return self._move(SHIPPED, DELIVERED, now)

    def cancel(self, now):
        """Cancel with the reservation; twice is fine, once delivered is too late."""
        if self.status == CANCELED:
            return []
        if self.status == DELIVERED:
            raise NotAllowed("the book has already been delivered", status=self.status)
        return self._become(CANCELED, now)

    def _move(self, expected, status, now):
        if self.status != expected:
            raise NotAllowed(f"a {self.status} delivery cannot be {status}", status=self.status)
        return self._become(status, now)

    def _become(self, status, now):
        self.status = status
        self.updated_at = now
        return [(f"delivery_{status}", self.event_fields())]

    def event_fields(self):
        return {"delivery_id": self.id, "reservation_id": self.reservation_id, "book_id": self.book_id,
                "customer": self.customer, "status": self.status}

    def to_dict(self):
        return {"id": self.id, "reservation_id": self.reservation_id, "book_id": self.book_id,
                "customer": self.customer, "address": self.address, "status": self.status}
