"""The reservation saga's edge cases, on real processes: cancels that race
the allocation or the delivery, repeated cancels, copies coming back to the
waitlist in order, and MyPage fed late, duplicated and reordered events."""
import time
import uuid

import pytest
from kombu import Connection, Queue

from chaos import depth, handler_queue, new_customer, publish, settle
from common import events
from helpers import eventually, rpc

pytestmark = pytest.mark.e2e

DELIVERY_CONFIRMED = handler_queue("reservation", "reservation_confirmed", "delivery", "on_reservation_confirmed")


def inventory(system, book_id):
    with rpc(system.amqp_uri) as services:
        return services.product.inventory(book_id)


def deliveries_of(library, reservation_id):
    return [d for d in library.all_deliveries() if d["reservation_id"] == reservation_id]


def drained(system, *queues):
    eventually(lambda: all(depth(system.amqp_uri, q) == 0 for q in queues), message=f"{queues} drained")


def test_cancel_before_the_copy_is_allocated(system, library):
    customer = new_customer(library)
    book = library.new_book(copies=1)
    system.stop("product")
    try:
        reservation = library.reserve(customer, book["id"])  # accepted: product will catch up
        canceled = customer.ok("POST", f"/reservations/{reservation['id']}/cancel")
        assert canceled["status"] == "canceled"
    finally:
        system.start("product")
    # product now gets requested and canceled, in whichever order its queues give them.
    drained(system, handler_queue("reservation", "reservation_requested", "product", "on_reservation_requested"),
            handler_queue("reservation", "reservation_canceled", "product", "on_reservation_canceled"))
    eventually(lambda: inventory(system, book["id"])["stock"] == 1)
    time.sleep(0.5)
    assert inventory(system, book["id"]) == {"book_id": book["id"], "stock": 1, "stocked": 1,
                                              "allocated": 0, "waiting": 0}
    assert library.status(reservation["id"]) == "canceled"
    assert deliveries_of(library, reservation["id"]) == []
    settle(system, library, [book["id"]], [reservation["id"]], {customer.username: customer})


def test_cancel_before_delivery_has_seen_the_confirmation(system, library):
    customer = new_customer(library)
    book = library.new_book(copies=1)
    system.stop("delivery")
    reservation = library.reserve(customer, book["id"])
    library.wait_status(reservation["id"], "confirmed")
    # The confirmation waits in delivery's queue. Take it into our hands
    # (unacknowledged: in flight), so delivery, once back, cannot see it yet.
    with Connection(system.amqp_uri) as connection:
        channel = connection.channel()
        held = Queue(DELIVERY_CONFIRMED, no_declare=True).bind(channel).get(no_ack=False)
        assert held is not None and held.payload["reservation_id"] == reservation["id"]
        system.start("delivery")

        canceled = customer.ok("POST", f"/reservations/{reservation['id']}/cancel")
        assert canceled["status"] == "canceled"
        [delivery] = deliveries_of(library, reservation["id"])
        assert delivery["status"] == "canceled"  # born canceled: the cancel got there first
        channel.close()  # the broker hands the confirmation to delivery, late

    drained(system, DELIVERY_CONFIRMED)
    time.sleep(0.5)
    assert deliveries_of(library, reservation["id"]) == [delivery]
    eventually(lambda: inventory(system, book["id"])["stock"] == 1)
    settle(system, library, [book["id"]], [reservation["id"]], {customer.username: customer})
    assert library.mypage(customer)[reservation["id"]]["delivery_status"] == "canceled"


def test_cancel_twice_changes_nothing_the_second_time(system, library):
    customer = new_customer(library)
    book = library.new_book(copies=1)
    reservation = library.reserve(customer, book["id"])
    library.wait_status(reservation["id"], "confirmed")
    library.delivery_for(reservation["id"])

    first = customer.ok("POST", f"/reservations/{reservation['id']}/cancel")
    settle(system, library, [book["id"]], [reservation["id"]], {customer.username: customer})
    before = (inventory(system, book["id"]), deliveries_of(library, reservation["id"]))

    second = customer.ok("POST", f"/reservations/{reservation['id']}/cancel")
    assert second == first  # 200, the same canceled reservation, not touched again
    time.sleep(1)
    assert (inventory(system, book["id"]), deliveries_of(library, reservation["id"])) == before
    history = library.mypage(customer)[reservation["id"]]["history"]
    assert [entry["status"] for entry in history].count("canceled") == 1
    settle(system, library, [book["id"]], [reservation["id"]], {customer.username: customer})


def test_a_return_promotes_the_first_waitlisted_reservation(system, library):
    customers = [new_customer(library) for _ in range(3)]
    book = library.new_book(copies=1)
    first, second, third = (library.reserve(c, book["id"]) for c in customers)
    library.wait_status(first["id"], "confirmed")
    library.wait_status(second["id"], "waitlisted")
    library.wait_status(third["id"], "waitlisted")
    delivery = library.delivery_for(first["id"])
    library.courier.ok("POST", f"/deliveries/{delivery['id']}/ship")
    library.courier.ok("POST", f"/deliveries/{delivery['id']}/deliver")
    library.wait_status(first["id"], "delivered")

    customers[0].ok("POST", f"/reservations/{first['id']}/return")
    library.wait_status(second["id"], "confirmed")
    time.sleep(0.5)
    assert library.status(third["id"]) == "waitlisted"
    ids = [first["id"], second["id"], third["id"]]
    settle(system, library, [book["id"]], ids, {c.username: c for c in customers})


def test_a_restock_promotes_several_waitlisted_in_the_order_they_reserved(system, library):
    customer = new_customer(library)
    book = library.new_book(copies=0)
    queue = []
    for _ in range(5):
        queue.append(library.reserve(customer, book["id"])["id"])
        library.wait_status(queue[-1], "waitlisted")
    library.librarian.ok("POST", f"/books/{book['id']}/stock", json={"quantity": 3})
    for rid in queue[:3]:
        library.wait_status(rid, "confirmed")
    time.sleep(0.5)
    assert [library.status(rid) for rid in queue[3:]] == ["waitlisted", "waitlisted"]
    settle(system, library, [book["id"]], queue, {customer.username: customer})


def test_mypage_takes_late_duplicated_and_reordered_events_in_its_stride(system, library):
    customer = new_customer(library)
    book = library.new_book(copies=1, title="Out of Order")
    case = {"reservation_id": str(uuid.uuid4()), "book_id": book["id"], "customer": customer.username}
    made = [events.make("reservation_requested", "test", **case)]
    made.append(events.make("reservation_confirmed", "test", **case))
    made.append(events.make("delivery_created", "test", delivery_id=str(uuid.uuid4()), status="preparing", **case))
    made.append(events.make("reservation_shipped", "test", **case))
    requested, confirmed, created, shipped = made

    # Shipped first, the confirmation twice, the request last of all.
    publish(system.amqp_uri, "reservation", shipped)
    publish(system.amqp_uri, "reservation", confirmed)
    publish(system.amqp_uri, "reservation", confirmed)
    publish(system.amqp_uri, "delivery", created)
    publish(system.amqp_uri, "reservation", requested)
    # and a stale confirmation under a new id, from a producer that retried
    publish(system.amqp_uri, "reservation", {**confirmed, "event_id": str(uuid.uuid4())})

    def view():
        row = library.mypage(customer).get(case["reservation_id"])
        return row if row and len(row["history"]) == 3 else None

    row = eventually(view)
    time.sleep(1)  # anything still in flight lands now
    row = library.mypage(customer)[case["reservation_id"]]
    assert row["status"] == "shipped"
    assert row["delivery_status"] == "preparing"
    assert row["title"] == "Out of Order"
    assert [entry["status"] for entry in row["history"]] == ["requested", "confirmed", "shipped"]
    assert [entry["at"] for entry in row["history"]] == [e["occurred_at"] for e in (requested, confirmed, shipped)]
