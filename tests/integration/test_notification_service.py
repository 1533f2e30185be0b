"""The notification service alone, on the real broker and a real SMTP server:
each notice once whatever the redeliveries, mailed once, retried while the
mail server is down, and recorded only for a customer with no email.

Events are published as their producers publish them; the fields the
lending work adds (``due_at``, ``canceled_by``) ride along as extra fields,
as the agreed contract sends them (a consumer keeps fields its schema does
not know yet)."""
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from helpers import eventually, free_port
from notification.service import NotificationService
from ops.mailcatcher import caught
from ops.run import ROOT, _port_open
from support import event

class Catcher:
    """The development mail catcher (ops/mailcatcher.py) as a process of the test's."""

    def __init__(self, directory):
        self.port = free_port()
        self.directory = str(directory)
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ops.mailcatcher", "serve", "--port", str(self.port), "--dir", self.directory],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        eventually(lambda: _port_open(self.port), timeout=20, message="mail catcher listening")

    def stop(self):
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def mails(self, to=None):
        return [message for _, message in caught(self.directory) if to is None or message["To"] == to]


@pytest.fixture
def catcher(tmp_path):
    catcher = Catcher(tmp_path / "mail")
    catcher.start()
    yield catcher
    catcher.stop()


@pytest.fixture
def notification(start, catcher):
    return start(NotificationService, SMTP_HOST="127.0.0.1", SMTP_PORT=catcher.port,
                 SMTP_RETRY_MAX_SECONDS=1, DUE_SOON_SECONDS=2)


def later(seconds):
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def reservation(event_type, rid, customer="alice", **extra):
    return {**event(event_type, reservation_id=rid, book_id=7, customer=customer), **extra}


def contact(customer, email):
    return event("customer_updated", customer=customer, email=email, address=None)


def notices(rpc, customer):
    return rpc().notification.notices(customer)["items"]


def test_each_step_is_noticed_and_mailed_once_whatever_the_redeliveries(notification, catcher, publish, rpc, db):
    publish("gateway", contact("alice", "alice@example.org"))
    publish("product", event("book_registered", book_id=7, isbn="9780441172719", title="Dune", author="F. H.", stock=1))
    rid = str(uuid.uuid4())
    confirmed = reservation("reservation_confirmed", rid, address="12 Reading Lane")
    time.sleep(0.5)  # the contact and the title first, as they would be
    for _ in range(3):
        publish("reservation", confirmed)  # the same event, redelivered
    publish("reservation", reservation("reservation_confirmed", rid))  # another event for the same step
    publish("reservation", reservation("reservation_shipped", rid))
    publish("reservation", reservation("reservation_delivered", rid, due_at="2030-05-15T10:00:00.000000+00:00"))

    kinds = eventually(lambda: (found := [n["kind"] for n in notices(rpc, "alice")]) and len(found) >= 3 and found,
                       timeout=20)
    assert kinds == ["delivered", "shipped", "confirmed"]  # newest first
    mails = eventually(lambda: len(catcher.mails()) >= 3 and catcher.mails(), timeout=20)
    time.sleep(1.5)  # a second copy, had one been sent, would be here now
    mails = catcher.mails()
    assert sorted(m["Subject"] for m in mails) == sorted([
        "\u201cDune\u201d is set aside for you", "\u201cDune\u201d is on its way",
        "\u201cDune\u201d was delivered: due back 2030-05-15 10:00 UTC"])
    assert {m["To"] for m in mails} == {"alice@example.org"}
    assert len({m["Message-ID"] for m in mails}) == 3
    assert db("notification").count("mails", "status = 'sent'") == 3


def test_a_customer_with_no_email_gets_notices_recorded_not_mailed(notification, catcher, publish, rpc, db):
    rid = str(uuid.uuid4())
    publish("reservation", reservation("reservation_confirmed", rid, customer="carol"))
    publish("reservation", reservation("reservation_shipped", rid, customer="carol"))
    eventually(lambda: len(notices(rpc, "carol")) == 2, timeout=20)
    time.sleep(1.5)
    assert catcher.mails() == []
    assert db("notification").count("mails") == 0


def test_a_cancel_is_noticed_only_when_the_library_canceled(notification, publish, rpc):
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    publish("reservation", reservation("reservation_canceled", mine, customer="dave", canceled_by="customer"))
    publish("reservation", reservation("reservation_canceled", theirs, customer="dave", canceled_by="library"))
    found = eventually(lambda: notices(rpc, "dave"), timeout=20)
    time.sleep(1)
    assert [(n["kind"], n["reservation_id"]) for n in notices(rpc, "dave")] == [("canceled", theirs)]
    assert found


def test_the_due_soon_reminder_comes_once_before_the_due_date_and_not_after_a_return(
        notification, catcher, publish, rpc):
    publish("gateway", contact("erin", "erin@example.org"))
    kept, returned = str(uuid.uuid4()), str(uuid.uuid4())
    publish("reservation", reservation("reservation_delivered", kept, customer="erin", due_at=later(4)))
    publish("reservation", reservation("reservation_delivered", returned, customer="erin", due_at=later(4)))
    publish("reservation", reservation("reservation_returned", returned, customer="erin"))
    eventually(lambda: any(n["kind"] == "due_soon" for n in notices(rpc, "erin")), timeout=20)
    time.sleep(4)  # past the due date: no second reminder, none for the returned book
    reminders = [n for n in notices(rpc, "erin") if n["kind"] == "due_soon"]
    assert [n["reservation_id"] for n in reminders] == [kept]
    eventually(lambda: len([m for m in catcher.mails() if "due back" in m["Subject"]
                            and "was delivered" not in m["Subject"]]) == 1, timeout=20)


def test_a_mail_server_that_is_down_delays_the_mail_and_loses_none(notification, catcher, publish, rpc, db):
    publish("gateway", contact("frank", "frank@example.org"))
    time.sleep(0.5)
    catcher.stop()
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for rid in ids:
        publish("reservation", reservation("reservation_confirmed", rid, customer="frank"))
    eventually(lambda: len(notices(rpc, "frank")) == 3, timeout=20)
    eventually(lambda: db("notification").count("mails", "attempts >= 1 AND status = 'pending'") == 3, timeout=20)
    catcher.start()
    eventually(lambda: len(catcher.mails("frank@example.org")) == 3, timeout=30)
    time.sleep(2)
    assert len(catcher.mails("frank@example.org")) == 3
    assert db("notification").count("mails", "status = 'sent'") == 3


def test_notices_are_paged_newest_first(notification, publish, rpc):
    ids = [str(uuid.uuid4()) for _ in range(5)]
    for rid in ids:
        publish("reservation", reservation("reservation_confirmed", rid, customer="gina"))
        time.sleep(0.05)
    eventually(lambda: len(notices(rpc, "gina")) == 5, timeout=20)
    proxy = rpc()
    first = proxy.notification.notices("gina", limit=2)
    second = proxy.notification.notices("gina", before=first["next"], limit=2)
    third = proxy.notification.notices("gina", before=second["next"], limit=2)
    seen = [n["reservation_id"] for page in (first, second, third) for n in page["items"]]
    assert third["next"] is None
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    assert proxy.notification.notices("nobody") == {"items": [], "next": None}
