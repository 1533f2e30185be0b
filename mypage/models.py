"""How MyPage's views are stored (SQL: SQLite by default, PostgreSQL)."""
from sqlalchemy import JSON, Boolean, Column, Index, Integer, String, Table, and_, bindparam, false, func, or_, select

from common.store import declare_base
from common.titles import Titles
from mypage.domain import WAITLISTED, ReservationView

Base = declare_base()

views = Table(
    "reservation_views", Base.metadata,
    Column("reservation_id", String(36), primary_key=True),
    Column("customer", String(64), nullable=False, index=True),
    Column("book_id", Integer, nullable=False),
    Column("status", String(16)),
    Column("delivery_status", String(16)),
    Column("created_at", String(40)),
    Column("updated_at", String(40)),
    Column("history", JSON, nullable=False),
    Column("due_at", String(40)),  # the loan's (SPEC §8); null until delivered
    Column("overdue", Boolean, nullable=False, default=False, server_default=false()),
    # A title's line: its waitlisted views in the order they are served (mypage.domain).
    Index("ix_reservation_views_line", "book_id", "status", "created_at", "reservation_id"),
)
_titles = Titles(Base.metadata)
titles = _titles.table
title_of = _titles.title_of
save_title = _titles.save
FIELDS = tuple(column.name for column in views.columns)  # a view's attributes, one per column

# No ORM: a view is read and written with one SQL statement each (SQL core),
# and written only if it changed (docs/performance.md: the ORM's get and
# flush were half of MyPage's CPU).


def _view(row):
    view = ReservationView(row.reservation_id, row.customer, row.book_id)
    for name in FIELDS[3:]:
        setattr(view, name, getattr(row, name))
    view.history = [dict(step) for step in row.history or ()]
    view.overdue = bool(view.overdue)
    return view


def values(view):
    """What ``view`` is, as the columns of its row."""
    return {name: getattr(view, name) for name in FIELDS}


# Made once: a statement object keeps its cache key, so SQLAlchemy finds the
# compiled form without building and hashing the query again on each event
# (a quarter of MyPage's samples at 25/s were in ``find``; docs/performance.md).
_FIND = select(views).where(views.c.reservation_id == bindparam("reservation_id"))
_FIND_FOR_UPDATE = _FIND.with_for_update()


def find(session, reservation_id, for_update=False):
    """(view, its row's values as read), or None."""
    row = session.connection().execute(_FIND_FOR_UPDATE if for_update else _FIND,
                                       {"reservation_id": reservation_id}).first()
    return None if row is None else (_view(row), {name: getattr(row, name) for name in FIELDS})


def save(session, found):
    """Writes the views of ``found`` ([(view, values as read, or None when
    new)]) that changed: an UPDATE each, one INSERT for the new ones."""
    connection = session.connection()
    new = []
    for view, as_read in found:
        now = values(view)
        if as_read is None:
            new.append(now)
        elif now != as_read:
            connection.execute(views.update().where(views.c.reservation_id == view.reservation_id).values(
                {name: value for name, value in now.items() if value != as_read[name]}))
    if new:
        connection.execute(views.insert(), new)


def for_customer(session, customer, limit, before=None):
    """The customer's reservations, newest first (``page_key``), with titles:
    at most ``limit``, and only those after ``before`` (a page_key) when given."""
    created_at = func.coalesce(views.c.created_at, "")
    query = (select(views, titles.c.title)
             .outerjoin(titles, titles.c.book_id == views.c.book_id)
             .where(views.c.customer == customer))
    if before is not None:
        at, reservation_id = before
        query = query.where(or_(created_at < at, and_(created_at == at, views.c.reservation_id < reservation_id)))
    rows = session.execute(query.order_by(created_at.desc(), views.c.reservation_id.desc()).limit(limit)).all()
    return [(_view(row), row.title) for row in rows]


def _line(view):
    return and_(views.c.book_id == view.book_id, views.c.status == WAITLISTED)


def waiting_ahead(session, view):
    """How many waitlisted views of ``view``'s title are before it in line."""
    created_at, reservation_id = view.line_key
    return session.scalar(select(func.count()).select_from(views).where(
        _line(view), or_(views.c.created_at < created_at,
                         and_(views.c.created_at == created_at, views.c.reservation_id < reservation_id))))


def waiting_behind(session, view, limit):
    """The first ``limit`` waitlisted views of ``view``'s title after it in line."""
    created_at, reservation_id = view.line_key
    rows = session.execute(select(views).where(
        _line(view), or_(views.c.created_at > created_at,
                         and_(views.c.created_at == created_at, views.c.reservation_id > reservation_id)))
        .order_by(views.c.created_at, views.c.reservation_id).limit(limit)).all()
    return [_view(row) for row in rows]
