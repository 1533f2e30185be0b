"""The broker restarted between the two steps of a cancel (issue #13): the
cancel is whole or absent all the same.

This restarts a broker, so it runs its system on a RabbitMQ node of its own
(tests/rabbit_node.py), never on the machine's shared one; the node is
stopped and removed at the end. A cancel is held at one step (a fault
point on ``hold``, common/faults.py), the broker goes down and comes back,
the cancel is let go; then, with no request from anyone:

- held after delivery has canceled and before reservation's own commit:
  both end canceled, the copy back in stock once, MyPage canceled/canceled;
- held after the intent and before delivery is asked: the request's
  deadline has passed by the time the broker is back, delivery is never
  asked, the intent is dropped, and nothing changed.
"""
import concurrent.futures
import os
import time

import pytest

import rabbit_node
from cancels import (
    RPC_TIMEOUT, cancel_in_background, canceled_everywhere, cancels_in_flight, confirmed_reservation,
    delivery_status, gated_system, stored_status, unchanged_everywhere,
)
from common import faults
from helpers import Library, eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    missing = rabbit_node.available()
    if missing:
        pytest.skip(missing)
    with rabbit_node.private_node(tmp_path_factory.mktemp("rabbit")) as started:
        yield started


@pytest.fixture(scope="module")
def system(tmp_path_factory, node):
    with gated_system(tmp_path_factory.mktemp("system"), amqp_uri=node.amqp_uri) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def library(system):
    return Library(system.gateway_url)


def held_at(system, node, point, customer, reservation_id, also=(), hold_for=0.0):
    """Cancel, hold the request at ``point`` (and anything at the points
    ``also``), restart the broker, let go (not before ``hold_for`` seconds
    after the cancel was sent): the customer's answer."""
    gates = [faults.arm(system.gates, name, "hold") for name in (point, *also)]
    with open(system.logfile("reservation")) as log:
        log.seek(0, 2)
        seen = []
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            sent = time.monotonic()
            answer = cancel_in_background(pool, customer, reservation_id)
            eventually(lambda: seen.append(log.read()) or f"fault point {point}: hold" in "".join(seen),
                       message=f"the cancel held at {point}")
            node.restart(down_for=1)
            time.sleep(max(0.0, sent + hold_for - time.monotonic()))
            for gate in gates:
                os.unlink(gate)
            return answer.result()


def test_broker_restarted_after_delivery_canceled_and_before_reservations_commit(system, library, node):
    customer, book, rid = confirmed_reservation(library)

    # delivery_canceled held too: the reservation is still confirmed when the broker goes.
    response = held_at(system, node, "reservation.cancel.after-delivery", customer, rid,
                       also=["reservation.delivery-canceled.before-apply"])

    assert response.status_code in (200, 503), response.text
    canceled_everywhere(system, library, customer, book, rid)


def test_broker_restarted_after_the_intent_and_before_delivery_is_asked(system, library, node):
    customer, book, rid = confirmed_reservation(library)

    # Held past the request's deadline, however fast the broker comes back.
    response = held_at(system, node, "reservation.cancel.before-delivery", customer, rid,
                       hold_for=RPC_TIMEOUT + 1)

    # The request's deadline passed during the outage: delivery is never asked.
    assert response.status_code == 503, response.text
    assert stored_status(system, book, rid) == "confirmed"
    unchanged_everywhere(system, library, customer, book, rid)
    assert delivery_status(system, rid) == "preparing"
    assert rid not in cancels_in_flight(system)
