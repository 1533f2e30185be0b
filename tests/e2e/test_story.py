"""The whole story of SPEC §1, through the gateway, on real processes."""
import concurrent.futures
import time

import pytest

from helpers import assert_invariant, eventually

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
