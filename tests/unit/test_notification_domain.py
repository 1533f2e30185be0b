"""The notices of SPEC §9, as plain Python: which event tells the customer
what, each notice once, and the due-soon reminder of a loan.

The lending events (``reservation_delivered.due_at``, ``loan_renewed``,
``loan_overdue``, ``reservation_canceled.canceled_by``) are built here as the
agreed contract between the lending and notices work describes them
(coord/lending-notices-contract.md), whether or not common/events.py has
declared them yet."""
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from common import events
from notification import domain
from notification.domain import Customer, Loan, notice_for

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)


def iso(moment):
    return moment.isoformat(timespec="microseconds")


def event(event_type, minutes=0, reservation_id="r-1", **fields):
    """An event as its producer sends it (the envelope and the reservation's keys)."""
    return {"event_id": str(uuid.uuid4()), "event_type": event_type, "occurred_at": iso(T0 + timedelta(minutes=minutes)),
            "correlation_id": "corr", "schema_version": 1, "reservation_id": reservation_id, "book_id": 7,
            "customer": "alice", **fields}


def test_each_step_the_customer_is_told_about_makes_its_kind_of_notice():
    due = iso(T0 + timedelta(days=14))
    kinds = {event_type: notice_for(event(event_type, due_at=due), "Dune").kind
             for event_type in ("reservation_confirmed", "reservation_shipped", "reservation_delivered", "loan_overdue")}
    assert kinds == {"reservation_confirmed": "confirmed", "reservation_shipped": "shipped",
                     "reservation_delivered": "delivered", "loan_overdue": "overdue"}


@pytest.mark.parametrize("event_type", ["reservation_requested", "reservation_waitlisted", "reservation_returned",
                                        "delivery_created", "book_registered", "loan_renewed"])
def test_other_events_tell_nothing(event_type):
    assert notice_for(event(event_type)) is None


def test_a_cancel_is_told_only_when_the_library_canceled():
    assert notice_for(event("reservation_canceled", canceled_by="library"), "Dune").kind == "canceled"
    assert notice_for(event("reservation_canceled", canceled_by="customer")) is None
    assert notice_for(event("reservation_canceled")) is None  # a producer that does not say: not the library


def test_the_same_step_is_the_same_notice_whatever_the_event_that_carries_it():
    first, again = event("reservation_confirmed"), event("reservation_confirmed", minutes=5)
    assert first["event_id"] != again["event_id"]
    assert notice_for(first).id == notice_for(again).id
    assert notice_for(first).id != notice_for(event("reservation_shipped")).id
    assert notice_for(first).id != notice_for(event("reservation_confirmed", reservation_id="r-2")).id


def test_a_notice_names_the_book_and_the_due_date():
    delivered = notice_for(event("reservation_delivered", due_at="2024-05-15T10:00:00.000000+00:00"), "Dune")
    assert delivered.subject == "\u201cDune\u201d was delivered: due back 2024-05-15 10:00 UTC"
    assert "2024-05-15 10:00 UTC" in delivered.body
    assert notice_for(event("reservation_delivered"), "Dune").subject == "\u201cDune\u201d was delivered"
    assert "book #7" in notice_for(event("reservation_shipped")).subject  # title not heard of yet
    assert delivered.to_dict() == {"id": delivered.id, "kind": "delivered", "reservation_id": "r-1",
                                   "subject": delivered.subject, "sent_at": iso(T0)}


def test_every_kind_has_words():
    for kind in domain.KINDS:
        subject, body = domain.text(kind, "Dune", "2024-05-15T10:00:00+00:00")
        assert "Dune" in subject and body


def test_notices_are_made_from_the_events_the_producers_really_send():
    made = events.make("reservation_confirmed", "corr", reservation_id="r-1", book_id=7, customer="alice",
                       address="12 Reading Lane")
    assert notice_for(made, "Dune").customer == "alice"


# -- where to mail ----------------------------------------------------------------------------

def test_a_customer_keeps_the_newest_email_whatever_the_order_they_arrive_in():
    customer = Customer("alice")
    newer = {"occurred_at": iso(T0 + timedelta(minutes=2)), "email": "new@example.org"}
    older = {"occurred_at": iso(T0), "email": "old@example.org"}
    assert customer.apply(newer)
    assert not customer.apply(older)
    assert customer.email == "new@example.org"
    assert customer.apply({"occurred_at": iso(T0 + timedelta(minutes=3)), "email": None})
    assert customer.email is None


# -- the due-soon reminder --------------------------------------------------------------------

DAY = 24 * 3600


def loan_due_in(days, due_soon=2 * DAY):
    loan = Loan("r-1", "alice", 7)
    assert loan.due(iso(T0 + timedelta(days=days)), due_soon)
    return loan


def test_the_reminder_comes_due_soon_seconds_before_the_due_date_and_once():
    loan = loan_due_in(14)
    assert loan.reminder((T0 + timedelta(days=11)).timestamp()) is None  # too early
    notice = loan.reminder((T0 + timedelta(days=12, minutes=1)).timestamp(), "Dune")
    assert notice.kind == "due_soon" and notice.customer == "alice"
    assert notice.subject == "\u201cDune\u201d is due back 2024-05-15 10:00 UTC"
    assert loan.reminder((T0 + timedelta(days=13)).timestamp()) is None  # said already


def test_no_reminder_once_the_book_is_due_the_overdue_notice_speaks_then():
    loan = loan_due_in(14)
    assert loan.reminder((T0 + timedelta(days=15)).timestamp()) is None
    assert loan.remind_at is None


def test_a_renewal_moves_the_reminder_to_the_new_due_date():
    loan = loan_due_in(14)
    first = loan.reminder((T0 + timedelta(days=12, hours=1)).timestamp())
    assert loan.due(iso(T0 + timedelta(days=28)), 2 * DAY)  # loan_renewed
    assert loan.reminder((T0 + timedelta(days=13)).timestamp()) is None
    second = loan.reminder((T0 + timedelta(days=26, hours=1)).timestamp())
    assert second is not None and second.id != first.id  # a reminder per due date


def test_a_late_event_never_moves_the_due_date_back():
    loan = loan_due_in(28)  # the renewal arrived first
    assert not loan.due(iso(T0 + timedelta(days=14)), 2 * DAY)  # then the delivery
    assert loan.due_at == iso(T0 + timedelta(days=28))


def test_a_returned_or_overdue_loan_is_never_reminded():
    loan = loan_due_in(14)
    loan.end()
    assert loan.reminder((T0 + timedelta(days=13)).timestamp()) is None
    assert not loan.due(iso(T0 + timedelta(days=30)), 2 * DAY)  # a late renewal does not revive it


def test_a_reminder_due_at_once_comes_at_once():
    loan = loan_due_in(1)  # a loan shorter than the reminder's lead
    assert loan.reminder(T0.timestamp()).kind == "due_soon"
