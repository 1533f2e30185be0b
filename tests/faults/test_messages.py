"""Duplicates have one effect; poison messages are parked, with their reason,
after a bounded number of retries, and ``make dlq`` shows and replays them."""
import os
import subprocess
import time
import uuid

import pytest
from nameko.amqp.publish import Publisher

from chaos import depth, handler_queue, new_customer, peek, publish
from common import events
from common.handlers import ERROR_HEADER, MAX_RETRIES, RETRIES_HEADER, dead_letter_exchange
from helpers import eventually, rpc
from ops.run import ROOT

pytestmark = pytest.mark.e2e

PRODUCT_REQUESTED = handler_queue("reservation", "reservation_requested", "product", "on_reservation_requested")
MYPAGE_CANCELED = handler_queue("reservation", "reservation_canceled", "mypage", "on_reservation_canceled")


def requested(book_id, customer="nobody"):
    return events.make("reservation_requested", f"test-{uuid.uuid4()}", reservation_id=str(uuid.uuid4()),
                       book_id=book_id, customer=customer)


def inventory(system, book_id):
    with rpc(system.amqp_uri) as services:
        return services.product.inventory(book_id)


def drained(system, *queues):
    eventually(lambda: all(depth(system.amqp_uri, q) == 0 for q in queues), message=f"{queues} drained")


def test_the_same_event_twice_allocates_one_copy_and_creates_one_delivery(system, library):
    book = library.new_book(copies=3)
    event = requested(book["id"])
    publish(system.amqp_uri, "reservation", event)
    publish(system.amqp_uri, "reservation", event)  # a redelivery: same event id
    # and the same fact again under a new event id (a producer that retried)
    publish(system.amqp_uri, "reservation", {**event, "event_id": str(uuid.uuid4())})
    eventually(lambda: inventory(system, book["id"])["allocated"] == 1)
    drained(system, PRODUCT_REQUESTED)
    time.sleep(0.5)
    assert inventory(system, book["id"])["stock"] == 2

    confirmed = events.make("reservation_confirmed", "test", reservation_id=event["reservation_id"],
                            book_id=book["id"], customer="nobody")
    for _ in range(3):
        publish(system.amqp_uri, "reservation", confirmed)
    library.delivery_for(event["reservation_id"])
    drained(system, handler_queue("reservation", "reservation_confirmed", "delivery", "on_reservation_confirmed"))
    time.sleep(0.5)
    assert [d["reservation_id"] for d in library.all_deliveries()].count(event["reservation_id"]) == 1


def test_an_invalid_event_is_parked_with_its_reason_at_once(system, library):
    event = requested(1)
    del event["book_id"]
    publish(system.amqp_uri, "reservation", event)
    dead = eventually(lambda: peek(system.amqp_uri, PRODUCT_REQUESTED + ".dead"), message="parked")
    time.sleep(1)  # it does not come back to the handler: still one, not retried
    dead = peek(system.amqp_uri, PRODUCT_REQUESTED + ".dead")
    assert len(dead) == 1
    headers, payload = dead[0]
    assert payload["event_id"] == event["event_id"]
    assert "invalid reservation_requested event" in headers[ERROR_HEADER] and "book_id" in headers[ERROR_HEADER]
    assert headers[RETRIES_HEADER] == 0
    assert depth(system.amqp_uri, PRODUCT_REQUESTED) == 0


def test_a_handler_that_keeps_failing_is_retried_then_parked(system, library):
    # Valid by its schema, but no database takes a book id this large: the
    # handler raises every time, as a bug or a missing migration would.
    event = requested(2 ** 70)
    publish(system.amqp_uri, "reservation", event)
    queue = PRODUCT_REQUESTED

    def parked_here():
        return [(h, p) for h, p in peek(system.amqp_uri, queue + ".dead") if p["event_id"] == event["event_id"]]

    headers, _ = eventually(parked_here, timeout=40, interval=0.5, message="parked after retries")[0]
    assert headers[RETRIES_HEADER] == MAX_RETRIES
    assert "Overflow" in headers[ERROR_HEADER] or "too large" in headers[ERROR_HEADER]
    time.sleep(1)
    assert len(parked_here()) == 1 and depth(system.amqp_uri, queue) == 0


def make_dlq(system, *args):
    env = {**os.environ, "AMQP_URI": system.amqp_uri, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(["make", "-s", "dlq", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_dlq_lists_the_parked_events_and_replays_them(system, library):
    # An event parked while something was wrong (here: put there directly),
    # for a customer's MyPage.
    customer = new_customer(library)
    book = library.new_book(copies=1)
    event = events.make("reservation_canceled", "test", reservation_id=str(uuid.uuid4()), book_id=book["id"],
                        customer=customer.username)
    Publisher(system.amqp_uri, serializer="json", declare=[dead_letter_exchange()]).publish(
        event, exchange=dead_letter_exchange(), routing_key=MYPAGE_CANCELED,
        headers={ERROR_HEADER: "OperationalError: database is locked", RETRIES_HEADER: MAX_RETRIES})

    listing = make_dlq(system)
    assert f"{MYPAGE_CANCELED}.dead: 1 parked" in listing
    assert f"reservation_canceled {event['event_id']} retries={MAX_RETRIES} " \
           f"reason: OperationalError: database is locked" in listing
    assert len(peek(system.amqp_uri, MYPAGE_CANCELED + ".dead")) == 1  # listing takes nothing away
    assert event["reservation_id"] not in library.mypage(customer)

    replayed = make_dlq(system, "REPLAY=1", f"QUEUE={MYPAGE_CANCELED}")
    assert f"replayed 1 to {MYPAGE_CANCELED}" in replayed
    row = eventually(lambda: library.mypage(customer).get(event["reservation_id"]))
    assert row["status"] == "canceled"
    assert peek(system.amqp_uri, MYPAGE_CANCELED + ".dead") == []
    assert f"{MYPAGE_CANCELED}.dead" not in make_dlq(system)
