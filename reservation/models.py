"""How reservations are stored: the domain classes mapped onto tables, and
the repository the service goes through (``Reservations``): the service never
holds a session. Each write transaction of ``ReservationStore`` carries one
(``tx.reservations``), and ``store.reservations()`` is a read through one;
tests/unit/test_reservation_cancel.py puts an in-memory fake in its place."""
import functools

from sqlalchemy import (
    Boolean, Column, Float, Index, Integer, String, Table, UniqueConstraint, false, select, text,
)

from common.store import Store, declare_base, for_update
from reservation.domain import DELIVERED, LIVE, WAITLISTED, CancelIntent, Holdings, Reservation

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
    # The loan (SPEC §8; reservation.domain): null / 0 / false until delivered.
    Column("due_at", String(40), nullable=True),
    Column("renewals", Integer, nullable=False, default=0, server_default="0"),
    Column("overdue", Boolean, nullable=False, default=False, server_default=false()),
    Column("canceled_by", String(16), nullable=True),
    UniqueConstraint("customer", "idempotency_key", name="one_reservation_per_idempotency_key"),
    # The overdue check's scan: delivered loans, by due moment; a customer's
    # live reservations and overdue loans, for the lending limits.
    Index("ix_reservations_status_due_at", "status", "due_at"),
    Index("ix_reservations_customer_status", "customer", "status"),
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


class Reservations:
    """The reservation service's port to its storage, over one session."""

    def __init__(self, session):
        self.session = session

    def get(self, reservation_id):
        """The reservation; in a write transaction its row stays locked until the
        commit (PostgreSQL: replicas changing one reservation take turns)."""
        return self.session.get(Reservation, reservation_id, with_for_update=for_update(self.session) or None)

    def add(self, reservation):
        """Insert a new reservation: one SQL-core INSERT, no unit of work (the
        ORM's flush of one new object was a tenth of this service's samples at
        25/s, docs/performance.md). It raises ``IntegrityError`` at once when
        the customer has used its idempotency key before."""
        self.session.execute(reservations.insert(), {name: getattr(reservation, name) for name in _COLUMNS})

    def by_idempotency_key(self, customer, key):
        return self.session.scalars(
            select(Reservation).where(Reservation.customer == customer, Reservation.idempotency_key == key)
        ).first()

    def holdings(self, customer, book_id, now, rules):
        """The customer's ``Holdings`` as the lending rules in force need them:
        one statement of at most three indexed subqueries, none the rules do
        not ask for (plain SQL, made once per set of rules: three ORM queries
        were an eighth of this service's samples, docs/performance.md)."""
        overdue, count, title = self.session.execute(
            _holdings_query(rules.counts_live, rules.checks_title),
            {"customer": customer, "book_id": book_id, "now": now, "delivered": DELIVERED, "yes": True}).one()
        return Holdings(overdue, count or 0, title is not None)

    def serialize_customer(self, customer):
        """Make this transaction the only one creating a reservation for
        ``customer`` until it ends, so that the lending limits are checked and
        the reservation written as one step even when one customer sends many
        requests at once. SQLite has one writer at a time (BEGIN IMMEDIATE,
        common.store) already; on PostgreSQL a transaction-scoped advisory lock
        on the customer's name does it (held until commit or rollback), whatever
        the other writers of the service do meanwhile."""
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                                 {"key": f"reservation-customer:{customer}"})

    def someone_waits(self, book_id, customer):
        """Does another customer wait for ``book_id``? Reservation knows it from
        its own reservations: one is ``waitlisted`` from product's
        ``waitlist_joined`` until a copy is allocated to it (``copy_allocated``)
        or it is canceled, which is exactly "waiting for the title"."""
        return self.session.scalar(
            select(Reservation.id).where(Reservation.book_id == book_id, Reservation.status == WAITLISTED,
                                         Reservation.customer != customer).limit(1)) is not None

    def loans_due(self, now, limit):
        """The ids of the delivered loans due by ``now`` and not yet marked overdue."""
        return self.session.scalars(
            select(Reservation.id).where(Reservation.status == DELIVERED, Reservation.overdue == false(),
                                         Reservation.due_at <= now).order_by(Reservation.due_at).limit(limit)).all()

    def mark_overdue(self, reservation_id, now):
        """Mark one loan overdue if it still is due and not marked: True for the
        one transaction that does it (a conditional UPDATE: of several replicas
        checking at the same moment, only one sees its row change)."""
        changed = self.session.execute(
            reservations.update()
            .where(reservations.c.id == reservation_id, reservations.c.status == DELIVERED,
                   reservations.c.overdue == false(), reservations.c.due_at <= now)
            .values(overdue=True, updated_at=now))
        return changed.rowcount == 1

    # -- the cancels in flight ------------------------------------------

    def record_cancel_intent(self, intent):
        """Add ``intent``, or renew the one already in flight for that reservation."""
        current = self.session.get(CancelIntent, intent.reservation_id)
        if current is None:
            self.session.add(intent)
            return intent
        current.renew(intent)
        return current

    def cancel_intent(self, reservation_id):
        return self.session.get(CancelIntent, reservation_id)

    def forget_cancel_intent(self, reservation_id):
        """Delete the reservation's intent; the one deleted, or None."""
        intent = self.session.get(CancelIntent, reservation_id)
        if intent is not None:
            self.session.delete(intent)
        return intent

    def expired_cancel_intents(self, now, limit):
        """The intents whose requests have all given up (oldest deadline first)."""
        return self.session.scalars(
            select(CancelIntent).where(CancelIntent.expires_at < now).order_by(CancelIntent.expires_at).limit(limit)
        ).all()


_COLUMNS = tuple(column.name for column in reservations.columns)
_LIVE = ", ".join(f"'{status}'" for status in sorted(LIVE))  # constants of the domain, not input


@functools.lru_cache(maxsize=None)
def _holdings_query(counts_live, checks_title):
    # What Holdings.of answers, in one round trip: an overdue loan (delivered,
    # marked overdue or due by now), the live count, a live one of the title.
    return text(
        "SELECT (SELECT id FROM reservations WHERE customer = :customer AND status = :delivered"
        " AND (overdue = :yes OR due_at <= :now) LIMIT 1),"
        + (f" (SELECT count(*) FROM reservations WHERE customer = :customer AND status IN ({_LIVE}))," if counts_live
           else " 0,")
        + (f" (SELECT 1 FROM reservations WHERE customer = :customer AND status IN ({_LIVE}) AND book_id = :book_id"
           " LIMIT 1)" if checks_title else " NULL"))


class ReservationStore(Store):
    """The service's ``Store``: its write transactions carry the repository
    (``tx.reservations``); ``reservations()`` reads through one (``common.store.Store.repository``)."""

    repository = ("reservations", Reservations)
