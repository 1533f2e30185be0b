"""Accounts, addresses and notices (SPEC §5, §9), end to end on a system of
this module's own: real processes, the real broker, the development mail
catcher that ``make up`` starts (``ops/mailcatcher.py``) as the mail server.

The due-soon, overdue and library-cancel notices need the lending work
(issue #17-a: ``reservation_delivered.due_at``, ``loan_overdue``,
``reservation_canceled.canceled_by``); their tests skip, saying so, until
common/events.py declares those."""
import time
import uuid

import pytest

from common import events
from helpers import Client, Library, eventually, running_system
from ops.mailcatcher import caught

pytestmark = pytest.mark.e2e

LENDING = "loan_overdue" in events.TYPES and "due_at" in events.TYPES["reservation_delivered"].schema().fields
CANCELED_BY = "canceled_by" in events.TYPES["reservation_canceled"].schema().fields
needs_lending = pytest.mark.skipif(not LENDING, reason="needs the lending events of #17-a (due_at, loan_overdue)")


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """Short periods, so that reminders and overdue loans come in seconds;
    a mail server that comes back is tried again within a second."""
    with running_system(tmp_path_factory.mktemp("notices"), env={
            "SMTP_RETRY_MAX_SECONDS": "1", "LOAN_PERIOD_SECONDS": "8", "DUE_SOON_SECONDS": "5",
            "OVERDUE_CHECK_SECONDS": "1"}) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def library(system):
    return Library(system.gateway_url)


def sign_up(library, email=None, address=None):
    name = f"reader-{uuid.uuid4().hex[:8]}"
    body = {"username": name, "password": "a good long secret"}
    body.update({key: value for key, value in (("email", email), ("address", address)) if value is not None})
    library.anonymous.ok("POST", "/auth/register", 201, json=body)
    return name, Client.signed_in(library.url, name, "a good long secret")


def notices(customer):
    return customer.ok("GET", "/notifications")["items"]


def kinds(customer, reservation_id):
    return [n["kind"] for n in notices(customer) if n["reservation_id"] == reservation_id]


def mails(system, to=None):
    return [message for _, message in caught(system.mail_dir) if to is None or message["To"] == to]


def deliver(library, reservation_id):
    delivery = library.delivery_for(reservation_id)
    library.courier.ok("POST", f"/deliveries/{delivery['id']}/ship")
    library.courier.ok("POST", f"/deliveries/{delivery['id']}/deliver")
    library.wait_status(reservation_id, "delivered")
    return delivery


# -- accounts -----------------------------------------------------------------------------------

def test_an_account_shows_and_changes_its_email_and_address(library):
    assert library.alice.ok("GET", "/account") == {
        "username": "alice", "role": "customer", "email": "alice@example.org", "address": "12 Reading Lane, Booktown"}
    assert library.courier.ok("GET", "/account")["role"] == "courier"
    assert library.anonymous.get("/account").status_code == 401

    name, reader = sign_up(library, email="reader@example.org", address="1 First Street")
    assert reader.ok("GET", "/account") == {"username": name, "role": "customer", "email": "reader@example.org",
                                            "address": "1 First Street"}
    changed = reader.ok("PATCH", "/account", json={"address": "2 Second Street\nBooktown"})
    assert changed["address"] == "2 Second Street\nBooktown" and changed["email"] == "reader@example.org"
    assert reader.ok("PATCH", "/account", json={"email": None})["email"] is None
    assert reader.ok("GET", "/account")["email"] is None


@pytest.mark.parametrize("body, field", [
    ({"email": "not an email"}, "email"),
    ({"email": "a@b"}, "email"),
    ({"address": "x" * 301}, "address"),
    ({"address": "one\x00two"}, "address"),
    ({"role": "librarian"}, "role"),
])
def test_bad_contact_details_are_400_on_the_field(library, body, field):
    response = library.anonymous.post("/auth/register", json={
        "username": f"r-{uuid.uuid4().hex[:8]}", "password": "a good long secret", **body})
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]["details"]
    if field != "role":
        response = library.bob.request("PATCH", "/account", json=body)
        assert response.status_code == 400 and field in response.json()["error"]["details"]


# -- addresses end to end ------------------------------------------------------------------------

def test_the_courier_sees_where_each_delivery_goes(library):
    book = library.new_book(copies=3)
    _, reader = sign_up(library, address="7 Seventh Avenue")
    _, homeless = sign_up(library)
    by_default = library.reserve(reader, book["id"])
    given = reader.ok("POST", "/reservations", 202, json={"book_id": book["id"], "address": "The office, 9 Work Rd"})
    nowhere = library.reserve(homeless, book["id"])
    assert by_default["address"] == "7 Seventh Avenue" and given["address"] == "The office, 9 Work Rd"

    assert library.delivery_for(by_default["id"])["address"] == "7 Seventh Avenue"
    delivery = library.delivery_for(given["id"])
    assert delivery["address"] == "The office, 9 Work Rd"
    assert library.courier.ok("GET", f"/deliveries/{delivery['id']}")["address"] == "The office, 9 Work Rd"
    assert library.delivery_for(nowhere["id"])["address"] is None


def test_a_changed_address_applies_only_to_later_reservations(library):
    book = library.new_book(copies=2)
    _, reader = sign_up(library, address="Old House, 1 Past Lane")
    before = library.reserve(reader, book["id"])
    library.delivery_for(before["id"])
    reader.ok("PATCH", "/account", json={"address": "New House, 2 Future Road"})
    after = library.reserve(reader, book["id"])

    assert library.delivery_for(after["id"])["address"] == "New House, 2 Future Road"
    assert library.delivery_for(before["id"])["address"] == "Old House, 1 Past Lane"  # already on its way


# -- notices ----------------------------------------------------------------------------------

def test_each_step_is_noticed_once_and_mailed_once(system, library):
    book = library.new_book(copies=1, title="The Left Hand of Darkness")
    _, first = sign_up(library, email="first@example.org")
    _, second = sign_up(library, email="second@example.org")
    mine = library.reserve(first, book["id"])
    library.wait_status(mine["id"], "confirmed")
    waiting = library.reserve(second, book["id"])
    library.wait_status(waiting["id"], "waitlisted")
    deliver(library, mine["id"])
    first.ok("POST", f"/reservations/{mine['id']}/return")
    library.wait_status(waiting["id"], "confirmed")  # the waitlisted one got its copy

    eventually(lambda: kinds(first, mine["id"])[:3] == ["delivered", "shipped", "confirmed"], timeout=30)
    eventually(lambda: kinds(second, waiting["id"]) == ["confirmed"], timeout=30)
    expected = {"first@example.org": 3, "second@example.org": 1}
    eventually(lambda: all(len(mails(system, to)) >= n for to, n in expected.items()), timeout=30)
    time.sleep(2)  # any second copy would be here by now
    for to, n in expected.items():
        got = mails(system, to)
        assert len(got) == n and len({m["Message-ID"] for m in got}) == n, [m["Subject"] for m in got]
    subjects = [m["Subject"] for m in mails(system, "first@example.org")]
    assert "\u201cThe Left Hand of Darkness\u201d is on its way" in subjects
    assert [n["kind"] for n in notices(first)].count("confirmed") == 1
    notice = notices(first)[0]
    assert set(notice) == {"id", "kind", "reservation_id", "subject", "sent_at"}


def test_a_customer_with_no_email_gets_notices_recorded_not_mailed(system, library):
    book = library.new_book(copies=1)
    _, reader = sign_up(library)
    before = len(mails(system))
    reservation = library.reserve(reader, book["id"])
    deliver(library, reservation["id"])
    eventually(lambda: kinds(reader, reservation["id"])[:3] == ["delivered", "shipped", "confirmed"], timeout=30)
    time.sleep(2)
    assert len(mails(system)) == before
    assert library.alice.ok("GET", "/notifications")["items"] is not None  # others unaffected


def test_a_mail_server_that_is_down_delays_the_mails_and_loses_none(system, library):
    book = library.new_book(copies=3)
    _, reader = sign_up(library, email="patient@example.org")
    system.stop("mailcatcher")
    try:
        reservations = [library.reserve(reader, book["id"]) for _ in range(3)]
        eventually(lambda: len([n for n in notices(reader) if n["kind"] == "confirmed"]) == 3, timeout=30)
        time.sleep(2)  # the mails are tried, and deferred
        assert mails(system, "patient@example.org") == []
    finally:
        system.start("mailcatcher")
    eventually(lambda: len(mails(system, "patient@example.org")) >= 3, timeout=60)
    time.sleep(3)
    got = mails(system, "patient@example.org")
    assert len(got) == 3 and len({m["Message-ID"] for m in got}) == 3
    assert {r["id"] for r in reservations} == {n["reservation_id"] for n in notices(reader)}


def test_notices_are_paged_newest_first(library):
    book = library.new_book(copies=3)
    _, reader = sign_up(library)
    ids = [library.reserve(reader, book["id"])["id"] for _ in range(3)]
    eventually(lambda: len(notices(reader)) == 3, timeout=30)
    page = reader.ok("GET", "/notifications", params={"limit": 2})
    rest = reader.ok("GET", "/notifications", params={"limit": 2, "cursor": page["next"]})
    assert len(page["items"]) == 2 and len(rest["items"]) == 1 and rest["next"] is None
    assert {n["reservation_id"] for n in page["items"] + rest["items"]} == set(ids)
    assert library.courier.get("/notifications").status_code == 403
    assert reader.get("/notifications", params={"cursor": "yesterday"}).status_code == 400


# -- with the lending work (#17-a) ------------------------------------------------------------

@needs_lending
def test_a_loan_is_reminded_before_it_is_due_then_told_it_is_overdue_each_once(system, library):
    book = library.new_book(copies=1)
    _, reader = sign_up(library, email="borrower@example.org")
    reservation = library.reserve(reader, book["id"])
    deliver(library, reservation["id"])
    eventually(lambda: {"due_soon", "overdue"} <= set(kinds(reader, reservation["id"])), timeout=60)
    time.sleep(3)
    told = kinds(reader, reservation["id"])
    assert sorted(told) == sorted(["confirmed", "shipped", "delivered", "due_soon", "overdue"]), told
    eventually(lambda: len(mails(system, "borrower@example.org")) == 5, timeout=30)


@pytest.mark.skipif(not CANCELED_BY, reason="needs reservation_canceled.canceled_by of #17-a")
def test_a_reservation_the_library_cancels_is_noticed_one_the_customer_cancels_is_not(system, library):
    _, reader = sign_up(library)
    book = library.new_book(copies=1)
    mine = library.reserve(reader, book["id"])
    library.wait_status(mine["id"], "confirmed")
    reader.ok("POST", f"/reservations/{mine['id']}/cancel")
    system.stop("product")  # the gateway cannot check the title: the library refuses it later
    try:
        refused = library.reserve(reader, 2_000_000_000)
    finally:
        system.start("product")
    library.wait_status(refused["id"], "canceled", timeout=30)
    eventually(lambda: kinds(reader, refused["id"]) == ["canceled"], timeout=30)
    assert "canceled" not in kinds(reader, mine["id"])


def test_readiness_lists_notification_and_its_mail(library):
    checks = library.anonymous.ok("GET", "/health/ready")["checks"]
    assert checks["notification"]["status"] == "ok"
    assert checks["notification"]["mail"]["enabled"] is True
    assert checks["notification"]["mail"]["backlog"] >= 0
