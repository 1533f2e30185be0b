"""Notices: what a customer is told about their reservations, and when.

Plain Python, no Nameko, no SQL. The service turns each event into at most
one notice (``notice_for``); a loan's due-soon reminder comes from a timer
(``Loan.reminder``). Every notice has an id made from what it is about (the
reservation, its kind and, for a reminder, the due date it reminds of), so a
redelivered or duplicated event, or two replicas' timers, find the notice
already there and record nothing twice.

Events arrive late, twice or out of order (one queue per event type), so a
customer's contact keeps the newest announcement (by ``occurred_at``), and
a loan only moves forward: its due date only ever gets later, and once it
has ended (returned, or overdue: the overdue notice speaks then) no reminder
is due any more.
"""
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from common.lifecycle import CANCELED, CONFIRMED, DELIVERED, DUE_SOON, OVERDUE, SHIPPED
from common.lifecycle import NOTICE_KINDS as KINDS  # noqa: F401 (every kind of notice)

# The event that causes each kind of notice (due_soon comes from the timer).
EVENT_KINDS = {
    "reservation_confirmed": CONFIRMED,  # also a waitlisted reservation that got its copy
    "reservation_shipped": SHIPPED,
    "reservation_delivered": DELIVERED,
    "loan_overdue": OVERDUE,
    "reservation_canceled": CANCELED,  # only when the library canceled it
}
LIBRARY = "library"  # reservation_canceled.canceled_by when the customer did not ask for it

_IDS = uuid.UUID("3f6c1f0e-6b53-4d2a-9a59-5b3f2a1c9e47")  # the namespace of notice ids


@dataclass
class Notice:
    id: str
    customer: str
    kind: str
    reservation_id: str
    book_id: int
    subject: str
    body: str
    sent_at: str  # ISO 8601, UTC: when what it tells happened (or, for a reminder, when it was made)

    def to_dict(self):
        return {"id": self.id, "kind": self.kind, "reservation_id": self.reservation_id,
                "subject": self.subject, "sent_at": self.sent_at}


def notice_id(reservation_id, kind, due_at=None):
    """The same notice always has the same id: what makes it once-only."""
    return str(uuid.uuid5(_IDS, ":".join([reservation_id, kind] + ([due_at] if due_at else []))))


def notice_for(event, title=None):
    """The notice an event causes, or None (a customer's own cancel, any other event)."""
    kind = EVENT_KINDS.get(event.get("event_type"))
    if kind is None or (kind == CANCELED and event.get("canceled_by") != LIBRARY):
        return None
    subject, body = text(kind, title or f"book #{event['book_id']}", event.get("due_at"))
    return Notice(notice_id(event["reservation_id"], kind), event["customer"], kind, event["reservation_id"],
                  event["book_id"], subject, body, event["occurred_at"])


def text(kind, title, due_at=None):
    """(subject, body) of a notice: plain words, with the due date where it matters."""
    book = f"\u201c{title}\u201d"
    due = readable(due_at) if due_at else None
    if kind == CONFIRMED:
        return (f"{book} is set aside for you",
                f"A copy of {book} is set aside for you and will be shipped soon.")
    if kind == SHIPPED:
        return f"{book} is on its way", f"The courier has {book} and is on the way to you."
    if kind == DELIVERED:
        return ((f"{book} was delivered: due back {due}",
                 f"{book} was delivered. Please return it by {due}; you may renew it unless someone is waiting.")
                if due else (f"{book} was delivered", f"{book} was delivered. Enjoy your book."))
    if kind == DUE_SOON:
        return f"{book} is due back {due}", f"Please return {book} by {due}, or renew it if nobody is waiting."
    if kind == OVERDUE:
        return ((f"{book} is overdue", f"{book} was due back {due}. Please return it: until you do, "
                 "you cannot reserve another book.") if due else
                (f"{book} is overdue", f"{book} is overdue. Please return it."))
    if kind == CANCELED:
        return (f"Your reservation of {book} was canceled",
                f"The library canceled your reservation of {book}. We are sorry; nothing is owed.")
    raise ValueError(f"no such kind of notice: {kind}")


def parse_time(iso):
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def readable(iso):
    """``2024-05-15T10:00:00.123456+00:00`` -> ``2024-05-15 10:00 UTC``."""
    try:
        return parse_time(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (ValueError, AttributeError):
        return str(iso)


class Customer:
    """Where a customer's notices are mailed, as the gateway last announced it."""

    def __init__(self, username, email=None, updated_at=None):
        self.username = username
        self.email = email
        self.updated_at = updated_at

    def apply(self, event):
        """Take a ``customer_updated`` unless a newer one is already here; True if taken."""
        if self.updated_at is not None and event["occurred_at"] < self.updated_at:
            return False
        self.email = event.get("email")
        self.updated_at = event["occurred_at"]
        return True


class Loan:
    """A delivered reservation, as far as its reminder is concerned."""

    def __init__(self, reservation_id, customer, book_id):
        self.reservation_id = reservation_id
        self.customer = customer
        self.book_id = book_id
        self.due_at = None  # ISO 8601
        self.remind_at = None  # seconds since the epoch while a reminder is to come; else None
        self.ended = False

    def due(self, due_at, due_soon_seconds):
        """Delivered or renewed: a reminder ``due_soon_seconds`` before ``due_at``. A due
        date older than the one known (a late event) changes nothing."""
        if self.ended or not due_at or (self.due_at is not None and parse_time(due_at) <= parse_time(self.due_at)):
            return False
        self.due_at = due_at
        self.remind_at = (parse_time(due_at) - timedelta(seconds=due_soon_seconds)).timestamp()
        return True

    def end(self):
        """Returned, canceled or overdue: no reminder any more."""
        self.ended = True
        self.remind_at = None

    def reminder(self, now, title=None):
        """The due-soon notice if its moment has come (``now``, seconds since the
        epoch), once per due date; None before, and None once the book is due
        (the overdue notice tells then)."""
        if self.ended or self.remind_at is None or now < self.remind_at:
            return None
        self.remind_at = None
        if now >= parse_time(self.due_at).timestamp():
            return None
        subject, body = text(DUE_SOON, title or f"book #{self.book_id}", self.due_at)
        sent_at = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="microseconds")
        return Notice(notice_id(self.reservation_id, DUE_SOON, self.due_at), self.customer, DUE_SOON,
                      self.reservation_id, self.book_id, subject, body, sent_at)
