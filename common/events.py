"""The events the services exchange: one envelope, one schema per event type.

Every event is a flat JSON object: the envelope of SPEC §4 (``event_id``,
``event_type``, ``occurred_at``, ``correlation_id``, ``schema_version`` and the
business case's correlation keys ``reservation_id`` / ``book_id``) plus the
fields of its type. Producers build events with :func:`make` (validated
strictly, so a bug fails where it is made); consumers read them with
:func:`parse` (tolerant of fields they do not know, so producers can add
optional fields without breaking anyone).

Plain Python and marshmallow only: the domains may import this module.
"""
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

SCHEMA_VERSION = 1


class InvalidEvent(Exception):
    """An event that does not match its schema; never retried, dead-lettered."""

    def __init__(self, event_type, errors):
        super().__init__(f"invalid {event_type} event: {errors}")
        self.event_type = event_type
        self.errors = errors


class Envelope(Schema):
    event_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    event_type = fields.String(required=True)
    occurred_at = fields.String(required=True, validate=validate.Length(min=20, max=40))
    correlation_id = fields.String(required=True, validate=validate.Length(max=128))
    schema_version = fields.Integer(required=True, validate=validate.Range(min=1))


class BookEvent(Envelope):
    book_id = fields.Integer(required=True)


class BookRegistered(BookEvent):
    isbn = fields.String(required=True)
    title = fields.String(required=True)
    author = fields.String(required=True)
    stock = fields.Integer(required=True)


class BookRestocked(BookEvent):
    quantity = fields.Integer(required=True)
    stock = fields.Integer(required=True)


class ReservationEvent(Envelope):
    """A step in one reservation's life; ``reservation_id`` is its correlation key."""

    reservation_id = fields.String(required=True)
    book_id = fields.Integer(required=True)
    customer = fields.String(required=True)


class WaitlistJoined(ReservationEvent):
    position = fields.Integer(required=True)


class AllocationRefused(ReservationEvent):
    reason = fields.String(required=True)


class CopyReleased(ReservationEvent):
    stock = fields.Integer(required=True)


class DeliveryEvent(ReservationEvent):
    delivery_id = fields.String(required=True)
    status = fields.String(required=True)


class ViewChanged(ReservationEvent):
    status = fields.String(required=True, allow_none=True)
    delivery_status = fields.String(required=True, allow_none=True)


@dataclass(frozen=True)
class EventType:
    name: str
    producer: str
    schema: type
    summary: str


_TYPES = [
    EventType("book_registered", "product", BookRegistered, "A librarian registered a title."),
    EventType("book_restocked", "product", BookRestocked, "A librarian stocked more copies of a title."),
    EventType("copy_allocated", "product", ReservationEvent, "A copy of the title was allocated to the reservation."),
    EventType("waitlist_joined", "product", WaitlistJoined, "No copy was free; the reservation waits in the title's queue."),
    EventType("allocation_refused", "product", AllocationRefused, "The reservation names a title the library does not have."),
    EventType("copy_released", "product", CopyReleased, "The reservation's copy went back to stock (cancel or return)."),
    EventType("reservation_requested", "reservation", ReservationEvent, "A customer reserved a title."),
    EventType("reservation_waitlisted", "reservation", ReservationEvent, "The reservation waits for a copy."),
    EventType("reservation_confirmed", "reservation", ReservationEvent, "A copy is allocated; a delivery is due."),
    EventType("reservation_shipped", "reservation", ReservationEvent, "The reservation's book is on its way."),
    EventType("reservation_delivered", "reservation", ReservationEvent, "The customer has the book."),
    EventType("reservation_returned", "reservation", ReservationEvent, "The customer brought the book back."),
    EventType("reservation_canceled", "reservation", ReservationEvent, "The reservation was canceled."),
    EventType("delivery_created", "delivery", DeliveryEvent, "A delivery is being prepared."),
    EventType("delivery_shipped", "delivery", DeliveryEvent, "The courier took the book."),
    EventType("delivery_delivered", "delivery", DeliveryEvent, "The courier handed the book over."),
    EventType("delivery_canceled", "delivery", DeliveryEvent, "The delivery was canceled with its reservation."),
    EventType("mypage_changed", "mypage", ViewChanged, "A customer's MyPage row changed (for live pages)."),
]
TYPES = {t.name: t for t in _TYPES}


def now_iso():
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def make(event_type, correlation_id, **fields_):
    """Build a complete, valid event of ``event_type``; raise on a producer bug."""
    spec = TYPES[event_type]
    event = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "occurred_at": now_iso(),
        "correlation_id": correlation_id or "",
        "schema_version": SCHEMA_VERSION,
        **fields_,
    }
    errors = spec.schema(unknown=RAISE).validate(event)
    if errors:
        raise InvalidEvent(event_type, errors)
    return event


def parse(event_type, payload):
    """Validate a received event; unknown fields are kept but not checked."""
    spec = TYPES.get(event_type)
    if spec is None or not isinstance(payload, dict):
        raise InvalidEvent(event_type, {"event_type": ["unknown event type"]})
    try:
        spec.schema(unknown=EXCLUDE).load(payload)
    except ValidationError as error:
        raise InvalidEvent(event_type, error.messages) from None
    if payload.get("event_type") != event_type:
        raise InvalidEvent(event_type, {"event_type": ["does not match the routing key"]})
    return payload
