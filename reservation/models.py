"""How reservations are stored: the domain class mapped onto a table."""
from sqlalchemy import Column, Float, Integer, String, Table, UniqueConstraint, select

from common.store import declare_base
from reservation.domain import CancelIntent, Reservation

Base = declare_base()

reservations = Table(
    "reservations", Base.metadata,
    Column("id", String(36), primary_key=True),
    Column("book_id", Integer, nullable=False, index=True),
    Column("customer", String(64), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
    Column("idempotency_key", String(128), nullable=True),
    Column("address", String(300), nullable=True),  # where the book goes; null when none was known
    UniqueConstraint("customer", "idempotency_key", name="one_reservation_per_idempotency_key"),
)
Base.registry.map_imperatively(Reservation, reservations)

# The cancels in flight (reservation.domain.CancelIntent): a row from the
# moment delivery is asked to cancel until the reservation is canceled, or
# the recovery finds delivery did not.
cancel_intents = Table(
    "cancel_intents", Base.metadata,
    Column("reservation_id", String(36), primary_key=True),
    Column("correlation_id", String(128), nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)
Base.registry.map_imperatively(CancelIntent, cancel_intents)


def find(session, reservation_id):
    return session.get(Reservation, reservation_id)


def find_by_idempotency_key(session, customer, key):
    return session.scalars(
        select(Reservation).where(Reservation.customer == customer, Reservation.idempotency_key == key)
    ).first()


def record_cancel_intent(session, intent):
    """Add ``intent``, or renew the one already in flight for that reservation."""
    current = session.get(CancelIntent, intent.reservation_id)
    if current is None:
        session.add(intent)
        return intent
    current.renew(intent)
    return current


def find_cancel_intent(session, reservation_id):
    return session.get(CancelIntent, reservation_id)


def forget_cancel_intent(session, reservation_id):
    """Delete the reservation's intent; the one deleted, or None."""
    intent = session.get(CancelIntent, reservation_id)
    if intent is not None:
        session.delete(intent)
    return intent


def expired_cancel_intents(session, now, limit):
    """The intents whose requests have all given up (oldest deadline first)."""
    return session.scalars(
        select(CancelIntent).where(CancelIntent.expires_at < now).order_by(CancelIntent.expires_at).limit(limit)
    ).all()
