"""How notices, the mails to send, loans, contacts and titles are stored, and
the repository the service goes through (``Notices``): the service never
holds a session. Each write transaction of ``NotificationStore`` carries one
(``tx.notices``), and ``store.notices()`` is a read through one (as
reservation.models); tests/unit/test_notification_notices.py puts an
in-memory fake in its place."""

from sqlalchemy import (
    Boolean, Column, Float, Integer, String, Table, Text, and_, bindparam, func, or_, select, update,
)

from common.store import Store, declare_base
from common.titles import Titles
from notification.domain import Customer, Loan, Notice

Base = declare_base()

notices = Table(
    "notices", Base.metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # newest first, and the list's cursor
    Column("id", String(36), nullable=False, unique=True),  # made from what it is about: once-only
    Column("customer", String(64), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("reservation_id", String(36), nullable=False),
    Column("book_id", Integer, nullable=False),
    Column("subject", String(400), nullable=False),
    Column("body", Text, nullable=False),
    Column("sent_at", String(40), nullable=False),
)
# The outbox of mails: one row per notice to mail, sent by the mail sweep
# (notification.mail), retried while the mail server is away.
mails = Table(
    "mails", Base.metadata,
    Column("notice_id", String(36), primary_key=True),
    Column("recipient", String(254), nullable=False),
    Column("subject", String(400), nullable=False),
    Column("body", Text, nullable=False),
    Column("sent_at", String(40), nullable=False),  # the notice's, for the Date header
    Column("status", String(16), nullable=False, index=True),  # pending, sent, refused
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("claimed_until", Float, nullable=True),  # a replica is sending it until then
    Column("mailed_at", Float, nullable=True),
    Column("error", String(1000), nullable=True),
)
loans = Table(
    "loans", Base.metadata,
    Column("reservation_id", String(36), primary_key=True),
    Column("customer", String(64), nullable=False),
    Column("book_id", Integer, nullable=False),
    Column("due_at", String(40), nullable=True),
    Column("remind_at", Float, nullable=True, index=True),
    Column("ended", Boolean, nullable=False, default=False),
)
customers = Table(
    "customers", Base.metadata,
    Column("username", String(64), primary_key=True),
    Column("email", String(254), nullable=True),
    Column("updated_at", String(40), nullable=True),
)
_titles = Titles(Base.metadata)
titles = _titles.table
Base.registry.map_imperatively(Notice, notices)
Base.registry.map_imperatively(Loan, loans)
Base.registry.map_imperatively(Customer, customers)

PENDING, SENT, REFUSED = "pending", "sent", "refused"

# The statements of the notice path, made once (docs/performance.md, fifth round).
_NOTICE_SEQ = select(notices.c.seq).where(notices.c.id == bindparam("notice_id"))
_EMAIL = select(customers.c.email).where(customers.c.username == bindparam("username"))
_NOTICE_COLUMNS = tuple(column.name for column in notices.columns if column.name != "seq")


def _due(now):
    return and_(mails.c.status == PENDING, mails.c.next_attempt_at <= now,
                or_(mails.c.claimed_until.is_(None), mails.c.claimed_until < now))


class Notices:
    """The notification service's port to its storage, over one session."""

    def __init__(self, session):
        self.session = session

    # -- contacts, loans, titles ------------------------------------------

    def customer(self, username):
        return self.session.get(Customer, username)

    def email_of(self, username):
        """The customer's email, or None (no email, or no contact known yet):
        one SQL-core select, no ORM object."""
        return self.session.scalar(_EMAIL, {"username": username})

    def add_customer(self, customer):
        self.session.add(customer)

    def loan(self, reservation_id):
        return self.session.get(Loan, reservation_id)

    def add_loan(self, loan):
        self.session.add(loan)

    def loans_to_remind(self, now, limit=100):
        return self.session.scalars(select(Loan).where(Loan.remind_at.is_not(None), Loan.remind_at <= now)
                                    .order_by(Loan.remind_at).limit(limit)).all()

    def title_of(self, book_id):
        return _titles.title_of(self.session, book_id)

    def save_title(self, book_id, title):
        """Once: a title never changes (common.titles)."""
        _titles.save(self.session, book_id, title)

    # -- notices ----------------------------------------------------------

    def has_notice(self, notice_id):
        return self.session.scalar(_NOTICE_SEQ, {"notice_id": notice_id}) is not None

    def add_notice(self, notice):
        """One SQL-core INSERT, no unit of work."""
        self.session.execute(notices.insert(), {name: getattr(notice, name) for name in _NOTICE_COLUMNS})

    def for_customer(self, username, before, limit):
        """The customer's notices, newest first, older than the cursor ``before`` (a seq)."""
        query = select(Notice).where(Notice.customer == username)
        if before is not None:
            query = query.where(Notice.seq < before)
        return self.session.scalars(query.order_by(Notice.seq.desc()).limit(limit)).all()

    # -- the outbox of mails --------------------------------------------

    def add_mail(self, notice, recipient, now):
        self.session.execute(mails.insert().values(
            notice_id=notice.id, recipient=recipient, subject=notice.subject, body=notice.body,
            sent_at=notice.sent_at, status=PENDING, attempts=0, next_attempt_at=now))

    def has_mail_due(self, now):
        return self.session.scalar(select(mails.c.notice_id).where(_due(now)).limit(1)) is not None

    def claim_mails(self, now, lease, limit):
        """Mails due now that no other replica is sending, claimed for ``lease`` seconds.

        Each claim is a conditional UPDATE of one row: on any database, of two
        replicas claiming the same mail, exactly one sees its row changed."""
        due = self.session.execute(
            select(mails).where(_due(now)).order_by(mails.c.next_attempt_at).limit(limit)).mappings().all()
        claimed = []
        for row in due:
            taken = self.session.execute(update(mails).where(mails.c.notice_id == row["notice_id"], _due(now))
                                         .values(claimed_until=now + lease))
            if taken.rowcount == 1:
                claimed.append(dict(row))
        return claimed

    def mail_sent(self, notice_id, now):
        self.session.execute(update(mails).where(mails.c.notice_id == notice_id).values(
            status=SENT, mailed_at=now, claimed_until=None, error=None, attempts=mails.c.attempts + 1))

    def mail_deferred(self, notice_id, next_attempt_at, error):
        self.session.execute(update(mails).where(mails.c.notice_id == notice_id).values(
            next_attempt_at=next_attempt_at, claimed_until=None, error=error[:1000], attempts=mails.c.attempts + 1))

    def mail_refused(self, notice_id, error):
        self.session.execute(update(mails).where(mails.c.notice_id == notice_id).values(
            status=REFUSED, claimed_until=None, error=error[:1000], attempts=mails.c.attempts + 1))

    def mail_backlog(self):
        """Mails waiting to be sent (a mail server away makes this grow)."""
        return self.session.scalar(select(func.count()).select_from(mails).where(mails.c.status == PENDING))


class NotificationStore(Store):
    """The service's ``Store``: its write transactions carry the repository
    (``tx.notices``); ``notices()`` reads through one (``common.store.Store.repository``)."""

    repository = ("notices", Notices)
