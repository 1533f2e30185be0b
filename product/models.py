"""How titles and allocations are stored: the domain classes mapped onto
tables, and the repository the service goes through (``Catalogue``): the
service never holds a session. Each write transaction of ``ProductStore``
carries one (``tx.catalogue``), and ``store.catalogue()`` is a read through
one; tests/unit/test_product_allocation.py puts an in-memory fake in its place."""

from sqlalchemy import Column, Index, Integer, String, Table, bindparam, func, or_, select

from common import isbn as isbns

from common.store import Store, declare_base
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

# The statements of the allocation path, made once (each event built and
# keyed them again: a fifth of product's samples at 25/s, docs/performance.md).
_TITLE = select(Title).where(Title.id == bindparam("book_id"))
_TITLE_FOR_UPDATE = _TITLE.with_for_update()
_ALLOCATION = select(Allocation).where(Allocation.reservation_id == bindparam("reservation_id"))
_ALLOCATED_BEFORE = select(allocations.c.state).where(allocations.c.reservation_id == bindparam("reservation_id"))
_COUNT_IN_STATE = (select(func.count()).select_from(allocations)
                   .where(allocations.c.book_id == bindparam("book_id"), allocations.c.state == bindparam("state")))
_ALLOCATION_COLUMNS = tuple(column.name for column in allocations.columns)


class Catalogue:
    """The product service's port to its storage, over one session."""

    def __init__(self, session):
        self.session = session

    def title(self, book_id, for_update=False):
        """The title, or None; ``for_update``: its row stays locked until the
        commit (PostgreSQL: replicas take turns on a title; SQLite: already serial)."""
        query = _TITLE_FOR_UPDATE if for_update else _TITLE
        return self.session.scalars(query, {"book_id": book_id}).first()

    def add_title(self, title):
        """Add ``title`` and give it its id (a flush: a second title with the
        same ISBN raises ``IntegrityError`` here, or at the commit)."""
        self.session.add(title)
        self.session.flush()

    def titles(self, after_id, limit, query=None):
        """The titles after ``after_id``, oldest first; with ``query``, only those
        whose title, author or ISBN contains it, ignoring case (see ``matching``)."""
        selected = select(Title).where(Title.id > after_id)
        if query:
            selected = selected.where(matching(query))
        return self.session.scalars(selected.order_by(Title.id).limit(limit)).all()

    def allocation(self, reservation_id):
        return self.session.scalars(_ALLOCATION, {"reservation_id": reservation_id}).first()

    def has_allocation(self, reservation_id):
        """Whether the reservation has an allocation already (one SQL-core
        select: no ORM object for the common answer, no)."""
        return self.session.execute(_ALLOCATED_BEFORE, {"reservation_id": reservation_id}).first() is not None

    def add_allocation(self, allocation):
        """Insert a new allocation, as it stands: one SQL-core INSERT, no unit
        of work (change its state before adding it)."""
        self.session.execute(allocations.insert(), {name: getattr(allocation, name) for name in _ALLOCATION_COLUMNS})

    def reread(self, allocation):
        """Read ``allocation`` again from the database (its title's lock now held)."""
        self.session.refresh(allocation)

    def waitlist(self, book_id, limit):
        """The first ``limit`` waiting reservations of a title, oldest first."""
        return self.session.scalars(
            select(Allocation).where(Allocation.book_id == book_id, Allocation.state == WAITING)
            .order_by(Allocation.requested_at, Allocation.reservation_id).limit(limit)).all()

    def waiting_count(self, book_id):
        return self.session.scalar(_COUNT_IN_STATE, {"book_id": book_id, "state": WAITING})

    def allocated_count(self, book_id):
        return self.session.scalar(_COUNT_IN_STATE, {"book_id": book_id, "state": ALLOCATED})


def matching(query):
    """Title or author contains ``query`` (any case; ``%`` and ``_`` are
    literal), or the stored 13 digits contain its digits, typed with hyphens
    or spaces or not (a full ISBN-10 is looked for as its ISBN-13)."""
    conditions = [Title.title.icontains(query, autoescape=True), Title.author.icontains(query, autoescape=True)]
    digits = isbns.searched_digits(query)
    if digits:
        conditions.append(Title.isbn.contains(digits, autoescape=True))
    return or_(*conditions)


class ProductStore(Store):
    """The service's ``Store``: its write transactions carry the repository
    (``tx.catalogue``); ``catalogue()`` reads through one (``common.store.Store.repository``)."""

    repository = ("catalogue", Catalogue)
