"""How deliveries are stored."""
from sqlalchemy import Column, Integer, String, Table, select

from common.store import declare_base, for_update
from delivery.domain import Delivery

Base = declare_base()

deliveries = Table(
    "deliveries", Base.metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # list order and cursor
    Column("id", String(36), nullable=False, unique=True),
    # One delivery per reservation, however many replicas race to create it.
    Column("reservation_id", String(36), nullable=False, unique=True),
    Column("book_id", Integer, nullable=False),
    Column("customer", String(64), nullable=False),
    Column("address", String(300), nullable=True),  # where the book goes; null when the customer gave none
    Column("status", String(16), nullable=False, index=True),
    Column("created_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
)
Base.registry.map_imperatively(Delivery, deliveries)


def find(session, delivery_id):
    return session.scalars(_locked(session, select(Delivery).where(Delivery.id == delivery_id))).first()


def find_for_reservation(session, reservation_id):
    return session.scalars(_locked(session, select(Delivery).where(Delivery.reservation_id == reservation_id))).first()


def _locked(session, query):
    """In a write transaction the delivery's row stays locked until the commit
    (PostgreSQL: replicas changing one delivery take turns)."""
    return query.with_for_update() if for_update(session) else query


def statuses(session, reservation_ids):
    """{reservation id: its delivery's status} of those that have one."""
    rows = session.execute(select(Delivery.reservation_id, Delivery.status)
                           .where(Delivery.reservation_id.in_(reservation_ids))).all()
    return dict(rows)


def page(session, status, after_seq, limit):
    query = select(Delivery).where(Delivery.seq > after_seq)
    if status:
        query = query.where(Delivery.status == status)
    return session.scalars(query.order_by(Delivery.seq).limit(limit)).all()
