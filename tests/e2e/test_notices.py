"""Accounts, addresses, loans and notices (SPEC §5, §8, §9), end to end on a
system of this module's own: real processes, the real broker, the
development mail catcher that ``make up`` starts (``ops/mailcatcher.py``) as
the mail server, and the lending rules as their defaults say, except for
short periods (through the environment, as an operator would set them), so
that a loan falls due in seconds."""
import concurrent.futures
import time
import uuid
from datetime import datetime

import pytest

from helpers import LENDING_LIMITS_ON, Client, Library, eventually, running_system
from ops.mailcatcher import caught

pytestmark = pytest.mark.e2e

LOAN_PERIOD = 8  # seconds


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """Short periods, so that reminders and overdue loans come in seconds;
    a mail server that comes back is tried again within a second. The
    lending limits are the defaults (each test signs up its own customers)."""
    with running_system(tmp_path_factory.mktemp("notices"), env={
            "SMTP_RETRY_MAX_SECONDS": "1", "LOAN_PERIOD_SECONDS": str(LOAN_PERIOD), "DUE_SOON_SECONDS": "5",
            "OVERDUE_CHECK_SECONDS": "1", **LENDING_LIMITS_ON}) as cluster:
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
    book, other = library.new_book(copies=3), library.new_book(copies=1)
    _, reader = sign_up(library, address="7 Seventh Avenue")
    _, homeless = sign_up(library)
    by_default = library.reserve(reader, book["id"])
    given = reader.ok("POST", "/reservations", 202, json={"book_id": other["id"], "address": "The office, 9 Work Rd"})
    nowhere = library.reserve(homeless, book["id"])
    assert by_default["address"] == "7 Seventh Avenue" and given["address"] == "The office, 9 Work Rd"

    assert library.delivery_for(by_default["id"])["address"] == "7 Seventh Avenue"
    delivery = library.delivery_for(given["id"])
    assert delivery["address"] == "The office, 9 Work Rd"
    assert library.courier.ok("GET", f"/deliveries/{delivery['id']}")["address"] == "The office, 9 Work Rd"
    assert library.delivery_for(nowhere["id"])["address"] is None


def test_a_changed_address_applies_only_to_later_reservations(library):
    book, other = library.new_book(copies=1), library.new_book(copies=1)
    _, reader = sign_up(library, address="Old House, 1 Past Lane")
    before = library.reserve(reader, book["id"])
    library.delivery_for(before["id"])
    reader.ok("PATCH", "/account", json={"address": "New House, 2 Future Road"})
    after = library.reserve(reader, other["id"])

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
    books = [library.new_book(copies=1) for _ in range(3)]  # one live reservation per title (SPEC §8)
    _, reader = sign_up(library, email="patient@example.org")
    system.stop("mailcatcher")
    try:
        reservations = [library.reserve(reader, book["id"]) for book in books]
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
    books = [library.new_book(copies=1) for _ in range(3)]
    _, reader = sign_up(library)
    ids = [library.reserve(reader, book["id"])["id"] for book in books]
    eventually(lambda: len(notices(reader)) == 3, timeout=30)
    page = reader.ok("GET", "/notifications", params={"limit": 2})
    rest = reader.ok("GET", "/notifications", params={"limit": 2, "cursor": page["next"]})
    assert len(page["items"]) == 2 and len(rest["items"]) == 1 and rest["next"] is None
    assert {n["reservation_id"] for n in page["items"] + rest["items"]} == set(ids)
    assert library.courier.get("/notifications").status_code == 403
    assert reader.get("/notifications", params={"cursor": "yesterday"}).status_code == 400


# -- notices of the loans ----------------------------------------------------------------------

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


# -- loans and the lending limits (SPEC §8) -----------------------------------------------------

def refused(response, words):
    assert response.status_code == 409, response.text
    assert words in response.json()["error"]["message"], response.text


def seconds_between(earlier, later):
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def test_a_loan_is_due_renews_falls_overdue_and_blocks_reserving_until_returned(library):
    kept, late, more = (library.new_book(copies=1) for _ in range(3))
    _, reader = sign_up(library)
    renewed_id = library.reserve(reader, kept["id"])["id"]
    late_id = library.reserve(reader, late["id"])["id"]
    refused(reader.post(f"/reservations/{late_id}/renew"), "only a delivered loan can be renewed")
    deliver(library, renewed_id)
    deliver(library, late_id)

    loan = reader.ok("GET", f"/reservations/{renewed_id}")
    assert loan["renewals"] == 0 and loan["overdue"] is False
    assert 0 < seconds_between(loan["updated_at"], loan["due_at"]) <= LOAN_PERIOD
    renewed = reader.ok("POST", f"/reservations/{renewed_id}/renew")
    assert seconds_between(loan["due_at"], renewed["due_at"]) == LOAN_PERIOD and renewed["renewals"] == 1
    assert library.bob.post(f"/reservations/{renewed_id}/renew").status_code == 404  # not bob's
    eventually(lambda: library.mypage(reader)[renewed_id]["due_at"] == renewed["due_at"])

    eventually(lambda: reader.ok("GET", f"/reservations/{late_id}")["overdue"], timeout=LOAN_PERIOD + 10)
    eventually(lambda: library.mypage(reader)[late_id]["overdue"] is True)
    assert reader.ok("GET", f"/reservations/{renewed_id}")["overdue"] is False
    refused(reader.post(f"/reservations/{late_id}/renew"), "overdue")
    refused(reader.post("/reservations", json={"book_id": more["id"]}), "overdue loan")

    returned = reader.ok("POST", f"/reservations/{late_id}/return")
    assert returned["status"] == "returned" and returned["overdue"] is False
    library.reserve(reader, more["id"])
    eventually(lambda: library.mypage(reader)[late_id]["overdue"] is False)


def test_no_renewal_while_another_customer_waits_for_the_title(library):
    book = library.new_book(copies=1)
    _, reader = sign_up(library)
    _, next_in_line = sign_up(library)
    loan = library.reserve(reader, book["id"])
    deliver(library, loan["id"])
    waiting = library.reserve(next_in_line, book["id"])
    library.wait_status(waiting["id"], "waitlisted")
    refused(reader.post(f"/reservations/{loan['id']}/renew"), "another customer is waiting")


def test_twenty_reservations_at_once_keep_the_limits(library):
    books = [library.new_book(copies=1) for _ in range(20)]
    _, reader = sign_up(library)
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda book: reader.post("/reservations", json={"book_id": book["id"]}), books))
        same = list(pool.map(lambda _: reader.post("/reservations", json={"book_id": books[0]["id"]}), range(20)))
    assert sorted(a.status_code for a in answers) == [202] * 5 + [409] * 15, [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 409:
            assert "the most allowed is 5" in answer.json()["error"]["message"]
    assert {a.status_code for a in same} == {409}  # at the limit, and a live reservation of that title

    _, other = sign_up(library)
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        same = list(pool.map(lambda _: other.post("/reservations", json={"book_id": books[0]["id"]}), range(20)))
    assert sorted(a.status_code for a in same) == [202] + [409] * 19
    assert all("of this title" in a.json()["error"]["message"] for a in same if a.status_code == 409)


def test_readiness_lists_notification_and_its_mail(library):
    checks = library.anonymous.ok("GET", "/health/ready")["checks"]
    assert checks["notification"]["status"] == "ok"
    assert checks["notification"]["mail"]["enabled"] is True
    assert checks["notification"]["mail"]["backlog"] >= 0
