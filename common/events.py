"""The events the services exchange: one envelope, one schema per event type.

Every event is a flat JSON object: the envelope of SPEC §4 (``event_id``,
``event_type``, ``occurred_at``, ``correlation_id``, ``schema_version`` and the
business case's correlation keys ``reservation_id`` / ``book_id``) plus the
fields of its type. Producers build events with :func:`make`, validated
strictly (exact types, no field the schema does not know), so a producer bug
fails where it is made, before the outbox; consumers read them with
:func:`parse`, tolerant of fields they do not know, so producers can add
optional fields without breaking anyone.

Versions (the rule; docs/events.md says it for people):

- A compatible change keeps ``schema_version``: a new *optional* field, a new
  event type, a looser validation. Consumers never see an unknown field as an
  error.
- Anything else is breaking (a field removed, renamed, retyped, made
  required, or its meaning changed) and gets a new version: the new schema
  becomes the event type's ``schema``/``version`` and the old one moves to
  ``older`` with an ``upgrade`` that turns an old event into the new shape.
  ``parse`` accepts every version of ``supported`` and upgrades what it
  accepts, so handlers only ever see the newest shape. During the rolling
  deployment producers keep emitting the old version (``emitted``) until
  every consumer runs the new code; the old version is dropped once none is
  in flight any more.
- A version a consumer does not support is refused (``InvalidEvent``), so it
  lands on the dead-letter queue with the reason and can be replayed once the
  consumer is upgraded: an event is never half-understood.

Plain Python and marshmallow only: the domains may import this module.

It is long (near 400 lines) because it is the published language: one short
schema class per event type and the registry of them all, in the one file a
reader looks for (split by producer, the registry would have to import them all
back).

About 400 lines because it is the catalogue: one schema per event type
(SPEC §4), each a few lines, in one place so that producers, consumers and
the AsyncAPI document read the same definitions.
"""
import functools
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Optional

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from common.lifecycle import DELIVERY_STATUSES, RESERVATION_STATUSES

SCHEMA_VERSION = 1  # the version of an event type that has never had a breaking change

CORRELATION_KEYS = ("reservation_id", "book_id")


class InvalidEvent(Exception):
    """An event that does not match its schema; never retried, dead-lettered."""

    def __init__(self, event_type, errors):
        super().__init__(f"invalid {event_type} event: {errors}")
        self.event_type = event_type
        self.errors = errors


# -- fields ---------------------------------------------------------------------------------

_UTC_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|\+00:00)")


class UtcTimestamp(fields.String):
    """An ISO 8601 date and time in UTC, with its offset: ``2024-05-01T10:00:00.000000+00:00``
    (or ``...Z``). JSON schema ``date-time``."""

    default_error_messages = {"utc": "Not an ISO 8601 date-time in UTC (like 2024-05-01T10:00:00.000000+00:00)."}

    def __init__(self, **kwargs):
        kwargs.setdefault("metadata", {})
        kwargs["metadata"].setdefault("format", "date-time")
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if not _UTC_TIMESTAMP.fullmatch(value):
            raise self.make_error("utc")
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:  # 2024-02-30T25:00:00Z has the shape but is no time
            raise self.make_error("utc") from None
        return value


def _int(description, **kwargs):
    # strict: 5 is an integer, "5" and 5.0 are not (and neither is True)
    return fields.Integer(required=True, strict=True, metadata={"description": description}, **kwargs)


def _str(description, **kwargs):
    kwargs.setdefault("required", True)
    return fields.String(metadata={"description": description}, **kwargs)


# -- the envelope and the schemas -------------------------------------------------------------

class Envelope(Schema):
    """What every event carries (SPEC §4)."""

    event_id = _str("Unique id of this event; a consumer applies an event id once.",
                    validate=validate.Length(min=1, max=64))
    event_type = _str("The event type; also the AMQP routing key.")
    occurred_at = UtcTimestamp(required=True, metadata={"description": "When it happened, ISO 8601 in UTC."})
    correlation_id = _str("Id of the HTTP request or RPC call that caused it (empty if none).",
                          validate=validate.Length(max=128))
    schema_version = _int("Version of this event type's schema.", validate=validate.Range(min=1))


class BookEvent(Envelope):
    book_id = _int("The title (correlation key).")


class BookRegistered(BookEvent):
    """A librarian registered a title."""

    isbn = _str("ISBN of the title: its 13 digits (an ISBN-10 is converted).")
    title = _str("Title of the book.")
    author = _str("Author of the book.")
    stock = _int("Copies in stock now.", validate=validate.Range(min=0))


class BookRestocked(BookEvent):
    """A librarian stocked more copies of a title."""

    quantity = _int("Copies added.", validate=validate.Range(min=1))
    stock = _int("Copies in stock now, after serving the waiting queue.", validate=validate.Range(min=0))


class ReservationEvent(Envelope):
    """A step in one reservation's life; ``reservation_id`` is its correlation key."""

    reservation_id = _str("The reservation (correlation key).", validate=validate.Length(min=1, max=64))
    book_id = _int("The reserved title (correlation key).")
    customer = _str("Username of the customer who reserved.")


# product: what happened to a reservation's copy

class CopyAllocated(ReservationEvent):
    """A copy of the title was allocated to the reservation."""


class WaitlistJoined(ReservationEvent):
    """No copy was free; the reservation waits in the title's queue."""

    position = _int("Place in the title's queue, 1 for the next served.", validate=validate.Range(min=1))


class AllocationRefused(ReservationEvent):
    """The reservation names a title the library does not have."""

    reason = _str("Why no copy can ever be allocated.")


class CopyReleased(ReservationEvent):
    """The reservation's copy went back to stock (cancel or return)."""

    stock = _int("Copies in stock now, after serving the waiting queue.", validate=validate.Range(min=0))


# reservation: the reservation's lifecycle

def _address():
    # Optional in the schema (added compatibly), always sent by the producer.
    return _str("Where the book goes (at most 300 characters), as given with the reservation or, by "
                "default, the customer's account address at that moment; null when none.",
                required=False, allow_none=True, validate=validate.Length(max=300))


class ReservationRequested(ReservationEvent):
    """A customer reserved a title."""

    address = _address()


class ReservationWaitlisted(ReservationEvent):
    """The reservation waits for a copy."""


class ReservationConfirmed(ReservationEvent):
    """A copy is allocated; a delivery is due."""

    address = _address()


class ReservationShipped(ReservationEvent):
    """The reservation's book is on its way."""


def _due_at(**kwargs):
    return UtcTimestamp(metadata={"description": "When the loan is due back, ISO 8601 in UTC (SPEC §8)."},
                        **kwargs)


class ReservationDelivered(ReservationEvent):
    """The customer has the book: a loan, due back at ``due_at``."""

    # Optional in the schema (added compatibly), always sent by the producer.
    due_at = _due_at(required=False, allow_none=True)


class ReservationReturned(ReservationEvent):
    """The customer brought the book back."""


class ReservationCanceled(ReservationEvent):
    """The reservation was canceled."""

    # Optional in the schema (added compatibly), always sent by the producer.
    canceled_by = _str("Who canceled it: customer (asked for it) or library (could not serve it).",
                       required=False, allow_none=True, validate=validate.OneOf(["customer", "library"]))


class LoanRenewed(ReservationEvent):
    """The customer renewed a loan: it is due back later."""

    due_at = _due_at(required=True)
    renewals = _int("Times this loan has been renewed, this one included.", validate=validate.Range(min=1))


class LoanOverdue(ReservationEvent):
    """A loan was not returned by its due moment (published once per loan)."""

    due_at = _due_at(required=True)


# delivery: the delivery's lifecycle

class DeliveryEvent(ReservationEvent):
    delivery_id = _str("The delivery.", validate=validate.Length(min=1, max=64))
    status = _str(f"The delivery's status now: {', '.join(DELIVERY_STATUSES)}.")


class DeliveryCreated(DeliveryEvent):
    """A delivery is being prepared."""


class DeliveryShipped(DeliveryEvent):
    """The courier took the book."""


class DeliveryDelivered(DeliveryEvent):
    """The courier handed the book over."""


class DeliveryCanceled(DeliveryEvent):
    """The delivery was canceled with its reservation."""


# mypage: its read model changed

class MyPageChanged(ReservationEvent):
    """A customer's MyPage row changed (for live pages)."""

    status = _str(f"The reservation's status as MyPage shows it ({', '.join(RESERVATION_STATUSES)}); "
                  "null before any.", allow_none=True)
    delivery_status = _str(f"The delivery's status as MyPage shows it ({', '.join(DELIVERY_STATUSES)}); "
                           "null before any.", allow_none=True)



# gateway: the accounts it owns

class CustomerUpdated(Envelope):
    """An account was created, or its email or address changed (the whole contact, as it is now)."""

    customer = _str("Username of the account.")
    email = _str("Where the customer's notices are mailed; null when none.", allow_none=True,
                 validate=validate.Length(max=254))
    address = _str("Where the customer's books go by default (at most 300 characters); null when none.",
                   allow_none=True, validate=validate.Length(max=300))


# -- the registry -----------------------------------------------------------------------------

@dataclass(frozen=True)
class OlderVersion:
    """A version of an event type still accepted from producers not yet upgraded."""

    version: int
    schema: type
    upgrade: Callable[[dict], dict]  # an event of this version -> the next version's shape


@dataclass(frozen=True)
class EventType:
    name: str
    producer: str
    schema: type  # the newest version: the shape every handler sees
    summary: str
    version: int = SCHEMA_VERSION
    older: tuple = ()  # OlderVersion, oldest first: still accepted, upgraded on receipt
    emitted: Optional[int] = None  # the version producers write; the newest unless set
    # False: a hint, published after the commit as a non-persistent message and
    # kept in no outbox (at most once); True: from the outbox, at least once.
    persistent: bool = True

    @property
    def exchange(self):
        return f"{self.producer}.events"

    @property
    def emitted_version(self):
        return self.emitted or self.version

    @property
    def supported(self):
        return frozenset([self.version, *(old.version for old in self.older)])

    @property
    def correlation_keys(self):
        declared = self.schema().fields
        return [key for key in CORRELATION_KEYS if key in declared]

    def schema_of(self, version):
        if version == self.version:
            return self.schema
        return next(old.schema for old in self.older if old.version == version)


_TYPES = [
    EventType("book_registered", "product", BookRegistered, BookRegistered.__doc__),
    EventType("book_restocked", "product", BookRestocked, BookRestocked.__doc__),
    EventType("copy_allocated", "product", CopyAllocated, CopyAllocated.__doc__),
    EventType("waitlist_joined", "product", WaitlistJoined, WaitlistJoined.__doc__),
    EventType("allocation_refused", "product", AllocationRefused, AllocationRefused.__doc__),
    EventType("copy_released", "product", CopyReleased, CopyReleased.__doc__),
    EventType("reservation_requested", "reservation", ReservationRequested, ReservationRequested.__doc__),
    EventType("reservation_waitlisted", "reservation", ReservationWaitlisted, ReservationWaitlisted.__doc__),
    EventType("reservation_confirmed", "reservation", ReservationConfirmed, ReservationConfirmed.__doc__),
    EventType("reservation_shipped", "reservation", ReservationShipped, ReservationShipped.__doc__),
    EventType("reservation_delivered", "reservation", ReservationDelivered, ReservationDelivered.__doc__),
    EventType("reservation_returned", "reservation", ReservationReturned, ReservationReturned.__doc__),
    EventType("reservation_canceled", "reservation", ReservationCanceled, ReservationCanceled.__doc__),
    EventType("loan_renewed", "reservation", LoanRenewed, LoanRenewed.__doc__),
    EventType("loan_overdue", "reservation", LoanOverdue, LoanOverdue.__doc__),
    EventType("delivery_created", "delivery", DeliveryCreated, DeliveryCreated.__doc__),
    EventType("delivery_shipped", "delivery", DeliveryShipped, DeliveryShipped.__doc__),
    EventType("delivery_delivered", "delivery", DeliveryDelivered, DeliveryDelivered.__doc__),
    EventType("delivery_canceled", "delivery", DeliveryCanceled, DeliveryCanceled.__doc__),
    EventType("mypage_changed", "mypage", MyPageChanged, MyPageChanged.__doc__, persistent=False),
    EventType("customer_updated", "gateway", CustomerUpdated, CustomerUpdated.__doc__),
]
TYPES = {t.name: t for t in _TYPES}


def now_iso():
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@functools.lru_cache(maxsize=None)
def _instance(schema, unknown):
    """One instance per schema and mode, made once: building a marshmallow
    schema costs more than validating an event with it (docs/performance.md).
    Validation keeps no state in the instance, and never yields to another
    green thread, so workers can share it."""
    return schema(unknown=unknown)


def _spec(event_type):
    spec = TYPES.get(event_type) if isinstance(event_type, str) else None
    if spec is None:
        raise InvalidEvent(event_type, {"event_type": [f"unknown event type {event_type!r}"]})
    return spec


def make(event_type, correlation_id, **fields_):
    """Build a complete, valid event of ``event_type``; raise InvalidEvent on a
    producer bug (an unknown type, a missing, unknown or mistyped field)."""
    spec = _spec(event_type)
    event = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "occurred_at": now_iso(),
        "correlation_id": correlation_id or "",
        "schema_version": spec.emitted_version,
        **fields_,
    }
    errors = _instance(spec.schema_of(spec.emitted_version), RAISE).validate(event)
    if event["event_type"] != event_type:
        errors.setdefault("event_type", []).append(f"must be {event_type!r}")
    if event["schema_version"] != spec.emitted_version:
        errors.setdefault("schema_version", []).append(f"producers write version {spec.emitted_version}")
    if errors:
        raise InvalidEvent(event_type, errors)
    return event


def parse(event_type, payload):
    """Validate a received event against the schema of its version.

    Unknown fields are kept but not checked. An event of an older supported
    version is returned upgraded to the newest shape (a new dict); one of
    the newest version is returned as it came."""
    spec = _spec(event_type)
    if not isinstance(payload, dict):
        raise InvalidEvent(event_type, {"_schema": ["an event is a JSON object"]})
    version = payload.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version not in spec.supported:
        raise InvalidEvent(event_type, {"schema_version": [
            f"version {version} is not supported here (supported: {sorted(spec.supported)})"]})
    schema = spec.schema_of(version) if version in spec.supported else spec.schema
    try:
        _instance(schema, EXCLUDE).load(payload)
    except ValidationError as error:
        raise InvalidEvent(event_type, error.messages) from None
    if payload.get("event_type") != event_type:
        raise InvalidEvent(event_type, {"event_type": ["does not match the routing key"]})
    for old in spec.older:
        if old.version >= version:
            payload = old.upgrade(dict(payload))
    if version != spec.version:
        payload = {**payload, "schema_version": spec.version}
    return payload
