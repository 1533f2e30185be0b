"""kill -9 of any backend service in the middle of a burst loses nothing and
does nothing twice; nor does a crash between a commit and its publish, nor
a request that the broker delivers again because a crash cut off its answer."""
import concurrent.futures
import time

import pytest

from bench.audit import stored_reservations
from chaos import Burst, all_published, new_customer, parked, settle, unpublished
from helpers import eventually, rpc
from ops.run import BACKENDS

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("victim", BACKENDS)
def test_kill_9_in_the_middle_of_a_burst(system, library, victim):
    customer = new_customer(library)
    book = library.new_book(copies=8)
    burst = Burst(customer, book["id"], count=30).start()
    burst.wait_done(6)
    system.kill(victim)  # SIGKILL: no clean shutdown, work in hand is cut off
    time.sleep(3)  # long enough for some gateway calls to give up (503)
    system.start(victim)
    burst.join()

    # A careful client (Idempotency-Key, retry on 503) got every one accepted.
    assert burst.gave_up == 0, burst.attempts
    assert len(set(burst.accepted)) == 30
    settle(system, library, [book["id"]], burst.accepted, {customer.username: customer})
    assert parked(system.amqp_uri) == {}
    all_published(system.amqp_uri, victim)


def test_a_crash_between_commit_and_publish_loses_nothing(system, library):
    book = library.new_book(copies=1)
    customer = new_customer(library)
    # product, armed to die right after committing a transaction that emits
    # events, before it publishes them (common/storeport.py, BOOKRENTAL_FAULT).
    system.stop("product")
    system.env["BOOKRENTAL_FAULT"] = "crash-before-publish"
    try:
        system.start("product", restart=False)  # its crash stays a crash: the supervisor does not heal it
    finally:
        del system.env["BOOKRENTAL_FAULT"]
    with open(system.logfile("product")) as log:
        relayed_before = log.read().count("outbox relay published")

    reservation = library.reserve(customer, book["id"])
    eventually(lambda: not system.pids("product"), message="product died after its commit")
    # The allocation is committed, and so is the fact that product applied
    # reservation_requested; copy_allocated is in the outbox, unpublished.
    assert unpublished(system, "product") == ["copy_allocated"]
    assert library.status(reservation["id"]) == "requested"

    system.start("product")
    # reservation_requested comes again (never acknowledged) and is
    # recognised as applied; only the relay can publish copy_allocated now.
    library.wait_status(reservation["id"], "confirmed")
    assert unpublished(system, "product") == []
    with open(system.logfile("product")) as log:
        assert log.read().count("outbox relay published") > relayed_before
    settle(system, library, [book["id"]], [reservation["id"]], {customer.username: customer})


def test_a_request_redelivered_after_a_crash_creates_one_reservation(system, library):
    # reservation dies right after committing a new reservation, before it
    # answers; the request, never acknowledged, is delivered again when it
    # is back. The client sent no Idempotency-Key: that second delivery must
    # still not create a second reservation.
    customer = new_customer(library)
    book = library.new_book(copies=2)
    system.stop("reservation")
    system.env["BOOKRENTAL_FAULT"] = "crash-before-publish"
    try:
        system.start("reservation", restart=False)
    finally:
        del system.env["BOOKRENTAL_FAULT"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(customer.post, "/reservations", json={"book_id": book["id"]})
        eventually(lambda: not system.pids("reservation"), message="reservation died after its commit")
        system.start("reservation")  # within the gateway's deadline
        response = answer.result()
    stored = stored_reservations(system, [book["id"]])
    assert len(stored) == 1, stored
    if response.status_code == 202:  # the redelivery answered in time
        assert response.json()["id"] in stored
    else:  # or it did not, and the client may retry with a key
        assert response.status_code == 503
    settle(system, library, [book["id"]], [], {customer.username: customer})


def test_a_restock_redelivered_after_a_crash_stocks_once(system, library):
    book = library.new_book(copies=1)
    system.stop("product")
    system.env["BOOKRENTAL_FAULT"] = "crash-before-publish"
    try:
        system.start("product", restart=False)  # its crash stays a crash: the supervisor does not heal it
    finally:
        del system.env["BOOKRENTAL_FAULT"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(library.librarian.post, f"/books/{book['id']}/stock", json={"quantity": 2})
        eventually(lambda: not system.pids("product"), message="product died after its commit")
        system.start("product")
        assert answer.result().status_code in (200, 503)
    with rpc(system.amqp_uri) as services:
        assert services.product.inventory(book["id"])["stocked"] == 3
