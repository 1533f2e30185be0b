"""How reservations are stored: the domain class mapped onto a table."""
from sqlalchemy import Column, Integer, String, Table, UniqueConstraint, select

from common.store import declare_base
from reservation.domain import Reservation

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


def find(session, reservation_id):
    return session.get(Reservation, reservation_id)


def find_by_idempotency_key(session, customer, key):
    return session.scalars(
        select(Reservation).where(Reservation.customer == customer, Reservation.idempotency_key == key)
    ).first()
