"""Which notices are recorded and mailed, over an in-memory repository.

As cosmicpython tests its handlers (and tests/unit/test_reservation_cancel.py
the cancel): the real service methods (``worker_factory``) over a fake store
whose transactions carry an in-memory ``Notices`` (notification.models), no
database at all; the mailer is a fake that is enabled or not."""
import contextlib
import types

import pytest
from nameko.testing.services import worker_factory

from common import correlation, events
from notification.domain import Customer
from notification.service import NotificationService


class InMemoryNotices:
    """What ``notification.models.Notices`` does for a notice, in dicts."""

    def __init__(self):
        self.customers, self.loans, self.titles, self.notices, self.mails = {}, {}, {}, {}, {}

    def customer(self, username):
        return self.customers.get(username)

    def add_customer(self, customer):
        self.customers[customer.username] = customer

    def email_of(self, username):
        customer = self.customers.get(username)
        return customer.email if customer is not None else None

    def loan(self, reservation_id):
        return self.loans.get(reservation_id)

    def add_loan(self, loan):
        self.loans[loan.reservation_id] = loan

    def title_of(self, book_id):
        return self.titles.get(book_id)

    def save_title(self, book_id, title):
        self.titles.setdefault(book_id, title)

    def has_notice(self, notice_id):
        return notice_id in self.notices

    def add_notice(self, notice):
        self.notices[notice.id] = notice

    def add_mail(self, notice, recipient, now):
        self.mails[notice.id] = recipient


class InMemoryStore:
    """The NotificationStore's service-facing shape: ``transaction()`` ->
    ``tx.notices``, ``tx.first_time``; ``notices()``."""

    def __init__(self):
        self.repository = InMemoryNotices()
        self.applied = set()

    @contextlib.contextmanager
    def transaction(self):
        tx = types.SimpleNamespace(notices=self.repository)
        tx.first_time = lambda event, handler: self._first_time((event["event_id"], handler))
        yield tx

    def _first_time(self, key):
        if key in self.applied:
            return False
        self.applied.add(key)
        return True

    @contextlib.contextmanager
    def notices(self):
        yield self.repository


class FakeMailer:
    def __init__(self, enabled):
        self.enabled = enabled


@pytest.fixture
def store():
    store = InMemoryStore()
    store.repository.save_title(7, "Dune")
    return store


def service_over(store, mailing):
    return worker_factory(NotificationService, store=store, mailer=FakeMailer(mailing),
                          config={"DUE_SOON_SECONDS": "3600"})


def confirmed():
    return events.make("reservation_confirmed", "corr", reservation_id="r-1", book_id=7, customer="alice")


@pytest.fixture(autouse=True)
def no_correlation():
    yield
    correlation.bind(None)


def test_a_confirmed_reservation_is_noticed_once_naming_the_book_and_mailed_to_the_customer(store):
    store.repository.add_customer(Customer("alice", email="alice@example.org"))
    service = service_over(store, mailing=True)

    service.on_reservation_confirmed(confirmed())
    service.on_reservation_confirmed(confirmed())  # the same step again (another event id): nothing more

    [notice] = store.repository.notices.values()
    assert (notice.customer, notice.kind, notice.reservation_id) == ("alice", "confirmed", "r-1")
    assert "Dune" in notice.subject
    assert store.repository.mails == {notice.id: "alice@example.org"}


@pytest.mark.parametrize("email, mailing", [(None, True), ("alice@example.org", False)])
def test_a_notice_is_only_recorded_without_an_email_or_a_mail_server(store, email, mailing):
    store.repository.add_customer(Customer("alice", email=email))

    service_over(store, mailing).on_reservation_confirmed(confirmed())

    assert len(store.repository.notices) == 1
    assert store.repository.mails == {}
