"""How deliveries are stored: the domain class mapped onto its table, and
the repository the service goes through (``Deliveries``): the service never
holds a session. Each write transaction of ``DeliveryStore`` carries one
(``tx.deliveries``), and ``store.deliveries()`` is a read through one;
tests/unit/test_delivery_repository.py puts an in-memory fake in its place."""

from sqlalchemy import Column, Integer, String, Table, bindparam, select

from common.store import Store, declare_base, for_update
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

# The statements of the event path, made once (building and keying them for
# each event was a fifth of delivery's samples at 25/s, docs/performance.md).
_FOR_RESERVATION = select(Delivery).where(Delivery.reservation_id == bindparam("reservation_id"))
_FOR_RESERVATION_LOCKED = _FOR_RESERVATION.with_for_update()
_COLUMNS = tuple(column.name for column in deliveries.columns if column.name != "seq")



class Deliveries:
    """The delivery service's port to its storage, over one session."""

    def __init__(self, session):
        self.session = session

    def add(self, delivery):
        """Insert a new delivery, as it stands: one SQL-core INSERT, no unit of
        work (it raises ``IntegrityError`` at once when the reservation has one)."""
        self.session.execute(deliveries.insert(), {name: getattr(delivery, name) for name in _COLUMNS})

    def get(self, delivery_id):
        return self.session.scalars(self._locked(select(Delivery).where(Delivery.id == delivery_id))).first()

    def for_reservation(self, reservation_id):
        query = _FOR_RESERVATION_LOCKED if for_update(self.session) else _FOR_RESERVATION
        return self.session.scalars(query, {"reservation_id": reservation_id}).first()

    def _locked(self, query):
        """In a write transaction the delivery's row stays locked until the commit
        (PostgreSQL: replicas changing one delivery take turns)."""
        return query.with_for_update() if for_update(self.session) else query

    def statuses(self, reservation_ids):
        """{reservation id: its delivery's status} of those that have one."""
        rows = self.session.execute(select(Delivery.reservation_id, Delivery.status)
                                    .where(Delivery.reservation_id.in_(reservation_ids))).all()
        return dict(rows)

    def page(self, status, after_seq, limit):
        query = select(Delivery).where(Delivery.seq > after_seq)
        if status:
            query = query.where(Delivery.status == status)
        return self.session.scalars(query.order_by(Delivery.seq).limit(limit)).all()


class DeliveryStore(Store):
    """The service's ``Store``: its write transactions carry the repository
    (``tx.deliveries``); ``deliveries()`` reads through one (``common.store.Store.repository``)."""

    repository = ("deliveries", Deliveries)
