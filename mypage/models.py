"""How MyPage's views are stored (SQL: SQLite by default, PostgreSQL)."""
from sqlalchemy import JSON, Boolean, Column, Index, Integer, String, Table, and_, false, func, or_, select

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
Base.registry.map_imperatively(ReservationView, views)


def find(session, reservation_id):
    return session.get(ReservationView, reservation_id)


def for_customer(session, customer, limit, before=None):
    """The customer's reservations, newest first (``page_key``), with titles:
    at most ``limit``, and only those after ``before`` (a page_key) when given."""
    created_at = func.coalesce(ReservationView.created_at, "")
    query = (select(ReservationView, titles.c.title)
             .outerjoin(titles, titles.c.book_id == ReservationView.book_id)
             .where(ReservationView.customer == customer))
    if before is not None:
        at, reservation_id = before
        query = query.where(or_(created_at < at, and_(created_at == at, ReservationView.reservation_id < reservation_id)))
    return session.execute(query.order_by(created_at.desc(), ReservationView.reservation_id.desc())
                           .limit(limit)).all()


def _line(view):
    return and_(ReservationView.book_id == view.book_id, ReservationView.status == WAITLISTED)


def waiting_ahead(session, view):
    """How many waitlisted views of ``view``'s title are before it in line."""
    created_at, reservation_id = view.line_key
    return session.scalar(select(func.count()).select_from(ReservationView).where(
        _line(view), or_(ReservationView.created_at < created_at,
                         and_(ReservationView.created_at == created_at,
                              ReservationView.reservation_id < reservation_id))))


def waiting_behind(session, view, limit):
    """The first ``limit`` waitlisted views of ``view``'s title after it in line."""
    created_at, reservation_id = view.line_key
    return session.scalars(select(ReservationView).where(
        _line(view), or_(ReservationView.created_at > created_at,
                         and_(ReservationView.created_at == created_at,
                              ReservationView.reservation_id > reservation_id)))
        .order_by(ReservationView.created_at, ReservationView.reservation_id).limit(limit)).all()
