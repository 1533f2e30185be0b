"""On the whole system: customers reach only their own reservations (API1),
and hostile text in every field is refused (400) or kept verbatim as text,
never a 500 (API8, API10)."""
import urllib.parse
import uuid

import pytest

from helpers import eventually, isbn13

pytestmark = pytest.mark.e2e

HOSTILE = [
    "' OR '1'='1", "'; DROP TABLE books; --", '" OR 1=1 --', "1; SELECT * FROM accounts", "admin'--",
    "<script>alert(1)</script>", '<img src=x onerror="alert(1)">', "javascript:alert(1)", "{{7*7}}", "${7*7}",
    "${jndi:ldap://example.invalid/a}", "../../etc/passwd", "%00%27", "\\", "NULL", "null", "None", "[]",
    '{"$gt": ""}', "\u202etxt.exe", "zero\u200bwidth", "\U0001F4DA Ünïcödé ✓", "a\u0301", "\ufeffbom",
    "\U0001D573\U0001D58A", "line\u2028separator", "x" * 300,
]
HOSTILE_IDS = [text[:40] for text in HOSTILE]


# -- reaching others' objects (API1) ----------------------------------------

@pytest.fixture(scope="module")
def alices(people):
    book = people.new_book(copies=1)
    return people.reserve(people.alice, book["id"], headers={"Idempotency-Key": "alice-key-1"})


def test_a_reservation_belongs_to_the_tokens_customer(people, alices):
    assert alices["customer"] == "alice"
    assert people.alice.ok("GET", f"/reservations/{alices['id']}")["customer"] == "alice"


@pytest.mark.parametrize("method, action", [("GET", ""), ("POST", "/cancel"), ("POST", "/return"),
                                            ("POST", "/renew")])
def test_someone_elses_reservation_is_not_found_exactly_like_a_missing_one(people, alices, method, action):
    theirs = people.bob.request(method, f"/reservations/{alices['id']}{action}")
    missing = people.bob.request(method, f"/reservations/{uuid.uuid4()}{action}")
    assert theirs.status_code == missing.status_code == 404, theirs.text
    assert theirs.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"
    assert theirs.json()["error"]["message"] == missing.json()["error"]["message"]
    assert alices["id"] not in theirs.text
    assert people.status(alices["id"]) in ("requested", "confirmed")  # nothing changed


def test_staff_reach_reservations_only_as_their_role_allows(people, alices):
    assert people.librarian.ok("GET", f"/reservations/{alices['id']}")["id"] == alices["id"]
    assert people.librarian.post(f"/reservations/{alices['id']}/cancel").status_code == 403  # customers cancel
    assert people.librarian.post(f"/reservations/{alices['id']}/return").status_code == 409  # not delivered
    assert people.courier.get(f"/reservations/{alices['id']}").status_code == 403


def test_an_idempotency_key_is_the_customers_own(people, alices):
    bobs = people.reserve(people.bob, alices["book_id"], headers={"Idempotency-Key": "alice-key-1"})
    assert bobs["id"] != alices["id"] and bobs["customer"] == "bob"


def test_mypage_shows_only_the_tokens_customer(people, alices):
    assert alices["id"] not in people.mypage(people.bob)
    # A query cannot pick the customer: an unknown parameter is refused, like any list's.
    answer = people.alice.get("/mypage", params={"customer": "bob"})
    assert answer.status_code == 400 and "customer" in answer.json()["error"]["details"], answer.text
    assert people.alice.ok("GET", "/mypage")["customer"] == "alice"


# -- hostile text in every field ---------------------------------------------

@pytest.mark.parametrize("text", HOSTILE, ids=HOSTILE_IDS)
@pytest.mark.parametrize("field", ["isbn", "title", "author"])
def test_hostile_text_in_a_book_is_refused_or_kept_verbatim(people, field, text):
    body = {"isbn": isbn13(), "title": "A title", "author": "An author", "copies": 1, field: text}
    response = people.librarian.post("/books", json=body)
    assert response.status_code in (201, 400), (response.status_code, response.text)
    if response.status_code == 400:
        assert field in response.json()["error"]["details"]
        return
    book = response.json()
    assert book[field] == text
    assert people.anonymous.ok("GET", f"/books/{book['id']}")[field] == text
    assert response.headers["Content-Type"] == "application/json"  # never text/html


def test_a_hostile_title_reaches_mypage_as_text(people):
    title = "<script>alert(document.cookie)</script>' OR 1=1 --"
    book = people.new_book(copies=1, title=title)
    reservation = people.reserve(people.alice, book["id"])
    row = eventually(lambda: people.mypage(people.alice).get(reservation["id"]))
    assert row["title"] == title


@pytest.mark.parametrize("text", HOSTILE, ids=HOSTILE_IDS)
def test_hostile_text_in_accounts_is_refused_never_an_error(people, text):
    register = people.anonymous.post("/auth/register", json={"username": text, "password": "a long password"})
    # 409: a plain name such as "null" may be taken already, in another case ("NULL")
    assert register.status_code in (201, 400, 409), register.text
    if register.status_code == 400:
        assert "username" in register.json()["error"]["details"], register.text
    elif register.status_code == 201:  # a plain name such as "NULL" is a name
        assert register.json() == {"username": text, "role": "customer"}
    sign_in = people.anonymous.post("/auth/token", json={"username": text, "password": text})
    assert sign_in.status_code in (400, 401), sign_in.text
    sign_in = people.anonymous.post("/auth/token", json={"username": "alice", "password": text})
    assert sign_in.status_code in (400, 401), sign_in.text


@pytest.mark.parametrize("text", HOSTILE, ids=HOSTILE_IDS)
def test_hostile_text_in_ids_and_queries_is_404_or_400(people, text):
    quoted = urllib.parse.quote(text, safe="")
    for client, path in [(people.alice, f"/reservations/{quoted}"), (people.alice, f"/reservations/{quoted}/cancel"),
                         (people.courier, f"/deliveries/{quoted}"), (people.courier, f"/deliveries/{quoted}/ship"),
                         (people.anonymous, f"/books/{quoted}")]:
        method = "POST" if path.endswith(("/cancel", "/ship")) else "GET"
        response = client.request(method, path)
        assert response.status_code == 404, (path, response.status_code, response.text)
    for client, path, name in [(people.anonymous, "/books", "cursor"), (people.anonymous, "/books", "limit"),
                               (people.courier, "/deliveries", "status")]:
        response = client.get(path, params={name: text})
        assert response.status_code == 400 and name in response.json()["error"]["details"], response.text


@pytest.mark.parametrize("text", [t for t in HOSTILE if t.isprintable() and t.isascii() and len(t) <= 128][:12])
def test_hostile_idempotency_keys_are_kept_as_text(people, text):
    book = people.new_book(copies=0)
    first = people.reserve(people.bob, book["id"], headers={"Idempotency-Key": text})
    again = people.reserve(people.bob, book["id"], headers={"Idempotency-Key": text})
    assert first["id"] == again["id"]
