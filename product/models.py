"""How titles and allocations are stored."""
from sqlalchemy import Column, Index, Integer, String, Table, func, or_, select

from common import isbn as isbns

from common.store import declare_base
from product.domain import ALLOCATED, WAITING, Allocation, Title

Base = declare_base()

titles = Table(
    "titles", Base.metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("isbn", String(32), nullable=False),
    Column("title", String(300), nullable=False),
    Column("author", String(300), nullable=False),
    Column("stock", Integer, nullable=False),
    Column("stocked", Integer, nullable=False),
    # One title per ISBN: the index decides, so two librarians registering
    # the same book at the same moment get one title and one 409.
    Index("uq_titles_isbn", "isbn", unique=True),
)
allocations = Table(
    "allocations", Base.metadata,
    Column("reservation_id", String(36), primary_key=True),
    Column("book_id", Integer, nullable=False),
    Column("customer", String(64), nullable=False),
    Column("requested_at", String(40), nullable=False),
    Column("state", String(16), nullable=False),
    Index("waitlist_order", "book_id", "state", "requested_at"),
)
Base.registry.map_imperatively(Title, titles)
Base.registry.map_imperatively(Allocation, allocations)


def find_title(session, book_id, for_update=False):
    query = select(Title).where(Title.id == book_id)
    if for_update:  # PostgreSQL: replicas take turns on a title; SQLite: already serial
        query = query.with_for_update()
    return session.scalars(query).first()


def list_titles(session, after_id, limit, query=None):
    """The titles after ``after_id``, oldest first; with ``query``, only those
    whose title, author or ISBN contains it, ignoring case (see ``matching``)."""
    selected = select(Title).where(Title.id > after_id)
    if query:
        selected = selected.where(matching(query))
    return session.scalars(selected.order_by(Title.id).limit(limit)).all()


def matching(query):
    """Title or author contains ``query`` (any case; ``%`` and ``_`` are
    literal), or the stored 13 digits contain its digits, typed with hyphens
    or spaces or not (a full ISBN-10 is looked for as its ISBN-13)."""
    conditions = [Title.title.icontains(query, autoescape=True), Title.author.icontains(query, autoescape=True)]
    digits = isbns.searched_digits(query)
    if digits:
        conditions.append(Title.isbn.contains(digits, autoescape=True))
    return or_(*conditions)


def find_allocation(session, reservation_id):
    return session.get(Allocation, reservation_id)


def waitlist(session, book_id, limit):
    """The first ``limit`` waiting reservations of a title, oldest first."""
    return session.scalars(
        select(Allocation).where(Allocation.book_id == book_id, Allocation.state == WAITING)
        .order_by(Allocation.requested_at, Allocation.reservation_id).limit(limit)).all()


def waiting_count(session, book_id):
    return session.scalar(
        select(func.count()).select_from(Allocation)
        .where(Allocation.book_id == book_id, Allocation.state == WAITING))


def allocated_count(session, book_id):
    return session.scalar(
        select(func.count()).select_from(Allocation)
        .where(Allocation.book_id == book_id, Allocation.state == ALLOCATED))
