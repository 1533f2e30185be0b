"""The whole story of SPEC §1, through the gateway, on real processes."""
import concurrent.futures
import time
import uuid

import pytest

from helpers import Client, assert_invariant, eventually, isbn13

pytestmark = pytest.mark.e2e


def test_stock_reserve_confirm_ship_deliver_return_cancel(system, library):
    book = library.new_book(copies=1, title="Dune")
    assert library.anonymous.ok("GET", f"/books/{book['id']}")["stock"] == 1

    first = library.reserve(library.alice, book["id"])
    assert first["status"] == "requested"
    library.wait_status(first["id"], "confirmed")
    second = library.reserve(library.bob, book["id"])
    library.wait_status(second["id"], "waitlisted")
    assert library.anonymous.ok("GET", f"/books/{book['id']}")["stock"] == 0

    delivery = library.delivery_for(first["id"])
    assert delivery["status"] == "preparing" and delivery["customer"] == "alice"
    library.courier.ok("POST", f"/deliveries/{delivery['id']}/ship")
    library.wait_status(first["id"], "shipped")
    library.courier.ok("POST", f"/deliveries/{delivery['id']}/deliver")
    library.wait_status(first["id"], "delivered")

    page = eventually(lambda: (row := library.mypage(library.alice).get(first["id"]))
                      and row["status"] == "delivered" and row["delivery_status"] == "delivered" and row)
    assert page["title"] == "Dune"
    assert [entry["status"] for entry in page["history"]] == ["requested", "confirmed", "shipped", "delivered"]

    returned = library.alice.ok("POST", f"/reservations/{first['id']}/return")
    assert returned["status"] == "returned"
    library.wait_status(second["id"], "confirmed")  # the returned copy goes to bob

    canceled = library.bob.ok("POST", f"/reservations/{second['id']}/cancel")
    assert canceled["status"] == "canceled"
    eventually(lambda: library.anonymous.ok("GET", f"/books/{book['id']}")["stock"] == 1)
    eventually(lambda: library.delivery_for(second["id"])["status"] == "canceled")
    eventually(lambda: library.mypage(library.bob)[second["id"]]["status"] == "canceled")
    assert_invariant(system.amqp_uri, library, book["id"], [first["id"], second["id"]])


def test_customers_see_only_their_own_reservations(library):
    book = library.new_book(copies=1)
    mine = library.reserve(library.alice, book["id"])
    assert library.bob.get(f"/reservations/{mine['id']}").status_code == 404
    assert library.bob.post(f"/reservations/{mine['id']}/cancel").status_code == 404
    assert library.librarian.get(f"/reservations/{mine['id']}").status_code == 200
    assert mine["id"] not in library.mypage(library.bob)


def test_reservation_is_accepted_while_delivery_is_down_and_delivered_after(system, library):
    book = library.new_book(copies=1)
    system.stop("delivery")
    try:
        reservation = library.reserve(library.alice, book["id"])
        library.wait_status(reservation["id"], "confirmed")
    finally:
        system.start("delivery")
    assert library.delivery_for(reservation["id"])["status"] == "preparing"


def test_cancel_answers_503_and_changes_nothing_while_delivery_is_down(system, library):
    book = library.new_book(copies=1)
    reservation = library.reserve(library.alice, book["id"])
    library.wait_status(reservation["id"], "confirmed")
    library.delivery_for(reservation["id"])
    system.stop("delivery")
    try:
        started = time.time()
        response = library.alice.post(f"/reservations/{reservation['id']}/cancel")
        elapsed = time.time() - started
        assert response.status_code == 503, response.text
        assert int(response.headers["Retry-After"]) > 0
        assert response.json()["error"]["code"] == "unavailable"
        assert elapsed < 8
        assert library.status(reservation["id"]) == "confirmed"
    finally:
        system.start("delivery")
    time.sleep(1)  # a stale cancel, had it survived in the queue, would land now
    assert library.status(reservation["id"]) == "confirmed"
    assert library.delivery_for(reservation["id"])["status"] == "preparing"
    assert library.anonymous.ok("GET", f"/books/{book['id']}")["stock"] == 0


def test_couriers_work_while_reservation_is_down(system, library):
    book = library.new_book(copies=1)
    reservation = library.reserve(library.alice, book["id"])
    delivery = library.delivery_for(reservation["id"])
    system.stop("reservation")
    try:
        library.courier.ok("POST", f"/deliveries/{delivery['id']}/ship")
        library.courier.ok("POST", f"/deliveries/{delivery['id']}/deliver")
        assert library.courier.ok("GET", f"/deliveries/{delivery['id']}")["status"] == "delivered"
    finally:
        system.start("reservation")
    library.wait_status(reservation["id"], "delivered")


def test_mypage_catches_up_after_being_down(system, library):
    book = library.new_book(copies=1)
    system.stop("mypage")
    try:
        reservation = library.reserve(library.alice, book["id"])
        library.wait_status(reservation["id"], "confirmed")
        assert library.alice.get("/mypage").status_code == 503
    finally:
        system.start("mypage")
    row = eventually(lambda: library.mypage(library.alice).get(reservation["id"]))
    eventually(lambda: library.mypage(library.alice)[reservation["id"]]["delivery_status"] == "preparing")
    assert row["book_id"] == book["id"]


def test_three_delivery_replicas_create_exactly_one_delivery_each(system, library):
    book = library.new_book(copies=30)
    system.start("delivery", replicas=3)
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            reservations = list(pool.map(lambda _: library.reserve(library.alice, book["id"]), range(30)))
        ids = {r["id"] for r in reservations}
        eventually(lambda: {d["reservation_id"] for d in library.all_deliveries()} >= ids, timeout=30)
        time.sleep(1)  # let any duplicate show itself
        deliveries = [d for d in library.all_deliveries() if d["reservation_id"] in ids]
        assert len(deliveries) == 30
    finally:
        system.start("delivery", replicas=1)


def test_forty_customers_for_five_copies(system, library):
    book = library.new_book(copies=5)
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        reservations = list(pool.map(lambda _: library.reserve(library.bob, book["id"]), range(40)))
    ids = [r["id"] for r in reservations]

    def settled():
        statuses = [library.status(rid) for rid in ids]
        return statuses if "requested" not in statuses else None

    statuses = eventually(settled, timeout=30)
    assert statuses.count("confirmed") == 5
    assert statuses.count("waitlisted") == 35
    assert library.anonymous.ok("GET", f"/books/{book['id']}")["stock"] == 0
    assert_invariant(system.amqp_uri, library, book["id"], ids)


def test_a_waitlist_shows_each_customer_their_place_in_line_as_it_moves(system, library):
    """Three customers on a one-copy title: the first gets it, the others wait
    at 1 and 2 (MyPage's queue_position). Someone ahead cancels, the copy
    comes back: the line moves up, and MyPage follows, from events only."""
    carol_name = f"carol{uuid.uuid4().hex[:6]}"
    library.anonymous.ok("POST", "/auth/register", 201, json={"username": carol_name, "password": "secret-pass"})
    carol = Client.signed_in(library.url, carol_name, "secret-pass")
    book = library.new_book(copies=1, title="The Dispossessed")
    first = library.reserve(library.alice, book["id"])
    library.wait_status(first["id"], "confirmed")
    second = library.reserve(library.bob, book["id"])
    library.wait_status(second["id"], "waitlisted")
    third = library.reserve(carol, book["id"])
    library.wait_status(third["id"], "waitlisted")

    def position(customer, reservation_id):
        return library.mypage(customer).get(reservation_id, {}).get("queue_position", "not yet")

    eventually(lambda: (position(library.alice, first["id"]), position(library.bob, second["id"]),
                        position(carol, third["id"])) == (None, 1, 2), message="positions 1 and 2")
    library.bob.ok("POST", f"/reservations/{second['id']}/cancel")  # someone ahead cancels
    eventually(lambda: position(carol, third["id"]) == 1, message="carol moves up")
    library.alice.ok("POST", f"/reservations/{first['id']}/cancel")  # the copy comes back: carol gets it
    library.wait_status(third["id"], "confirmed")
    eventually(lambda: library.mypage(carol).get(third["id"], {}).get("status") == "confirmed")
    assert library.mypage(carol)[third["id"]]["queue_position"] is None
    carol.ok("POST", f"/reservations/{third['id']}/cancel")


def test_the_catalogue_checks_isbns_refuses_a_second_title_and_searches(library):
    word = f"Ekumen{uuid.uuid4().hex[:6]}"
    isbn = isbn13()
    bad = library.librarian.post("/books", json={"isbn": isbn[:-1] + str((int(isbn[-1]) + 1) % 10),
                                                 "title": word, "author": "U. K. Le Guin", "copies": 1})
    assert bad.status_code == 400 and list(bad.json()["error"]["details"]) == ["isbn"], bad.text
    typed = f"{isbn[:3]}-{isbn[3]}-{isbn[4:8]}-{isbn[8:12]}-{isbn[12]}"
    book = library.librarian.ok("POST", "/books", 201, json={
        "isbn": typed, "title": f"The {word} Cycle", "author": "Ursula K. Le Guin", "copies": 1})
    assert book["isbn"] == isbn
    again = library.librarian.post("/books", json={"isbn": isbn, "title": "Again", "author": "X", "copies": 1})
    assert again.status_code == 409, again.text
    other = library.librarian.ok("POST", "/books", 201, json={
        "isbn": isbn13(), "title": f"Tales of the {word.upper()}", "author": "Someone Else", "copies": 0})

    def found(q, **params):
        return library.anonymous.ok("GET", "/books", params={"q": q, **params})

    assert [b["id"] for b in found(word.lower())["items"]] == [book["id"], other["id"]]
    assert [b["id"] for b in found(typed)["items"]] == [book["id"]]  # the ISBN, typed with hyphens
    assert [b["id"] for b in found(isbn[3:10])["items"]] == [book["id"]]  # some of its digits
    page = found(word, limit=1)
    assert [b["id"] for b in page["items"]] == [book["id"]] and page["next"]
    assert [b["id"] for b in found(word, limit=1, cursor=page["next"])["items"]] == [other["id"]]
    assert library.anonymous.get("/books", params={"q": "x" * 201}).status_code == 400


def test_mypage_pages_cover_every_reservation_once_newest_first(library):
    """SPEC §5: GET /mypage?limit=&cursor=. A customer with more reservations
    than a page: the pages hold them all, newest first, none twice, and the
    last one says so (next null). A bad limit or cursor is a 400."""
    name = f"dan{uuid.uuid4().hex[:6]}"
    library.anonymous.ok("POST", "/auth/register", 201, json={"username": name, "password": "secret-pass"})
    dan = Client.signed_in(library.url, name, "secret-pass")
    ids = []
    for _ in range(7):  # canceled at once: the lending limits count live reservations only
        reservation = library.reserve(dan, library.new_book(copies=1)["id"])
        dan.ok("POST", f"/reservations/{reservation['id']}/cancel")
        ids.append(reservation["id"])
    eventually(lambda: len(dan.ok("GET", "/mypage", params={"limit": 10})["reservations"]) == 7,
               message="all seven on MyPage")

    seen, cursor, sizes = [], None, []
    while True:
        page = dan.ok("GET", "/mypage", params={"limit": 3, **({"cursor": cursor} if cursor else {})})
        assert page["customer"] == name
        sizes.append(len(page["reservations"]))
        seen += [row["reservation_id"] for row in page["reservations"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert sizes == [3, 3, 1]
    assert seen == ids[::-1]  # newest first, each once
    assert dan.ok("GET", "/mypage")["next"] is None  # 7 < the default 100

    for params, field in [({"limit": 501}, "limit"), ({"limit": 0}, "limit"), ({"cursor": "not-one"}, "cursor")]:
        answer = dan.get("/mypage", params=params)
        assert answer.status_code == 400 and field in answer.json()["error"]["details"], answer.text
