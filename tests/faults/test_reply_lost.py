"""A call in flight when its caller's connection to the broker is lost fails
at once, 503, instead of waiting out its deadline (issue #20 item 2).

In a cluster (``QUEUE_TYPE=quorum``) a process's RPC reply queue is
exclusive: it dies with the connection, so an answer sent after that is
dropped by the broker and nothing would ever answer the call. Losing the
node a process is connected to is, from the process's side, its connection
closed by the broker; this module does exactly that, on a throwaway vhost of
the machine's broker (no node is stopped): the management API closes the
connection that owns a service's reply queue while a call of that service
is held by a fault point (common/faults.py) in the service it called.

- the gateway's connection closed while reservation holds a cancel: the
  customer hears 503 + Retry-After well within the gateway's RPC_TIMEOUT;
- reservation's connection closed while delivery holds its cancel: its call
  to delivery fails well within CANCEL_TIMEOUT, and the customer hears 503
  at once; the cancel is finished by delivery_canceled, the request
  redelivered to reservation, or the cancel's recovery (issue #13).

Either way the request is safe to retry: a second cancel answers 200.
"""
import concurrent.futures
import os
import time
from urllib.parse import quote

import pytest
import requests

from cancels import cancel_in_background, canceled_everywhere, confirmed_reservation, gated_system
from common import faults
from helpers import MANAGEMENT, Library, eventually

pytestmark = pytest.mark.e2e

FAST = 1.0  # seconds; the deadlines: 5 s (the gateway's RPC_TIMEOUT), 4 s (CANCEL_TIMEOUT, here)


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    with gated_system(tmp_path_factory.mktemp("system"), {
        "QUEUE_TYPE": "quorum",
        "CANCEL_TIMEOUT": "4",  # so that waiting out the deadline would show (the gateway gives up at 5)
    }) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def library(system):
    return Library(system.gateway_url)


def reply_connections(system, service):
    """The connections that own ``service``'s reply queues (known to the
    management API once the broker has emitted its statistics)."""
    vhost = quote(system.amqp_uri.rsplit("/", 1)[1], safe="")
    names = [queue["name"] for queue in requests.get(f"{MANAGEMENT}/api/queues/{vhost}", timeout=10).json()
             if queue["name"].startswith(f"rpc.reply-{service}-")]
    details = [requests.get(f"{MANAGEMENT}/api/queues/{vhost}/{quote(name, safe='')}", timeout=10).json()
               for name in names]
    return [queue["owner_pid_details"]["name"] for queue in details if queue.get("owner_pid_details")]


def close_connections(names):
    """Close connections from the broker's side (what a process sees when its node goes away)."""
    for name in names:
        requests.delete(f"{MANAGEMENT}/api/connections/{quote(name, safe='')}",
                        headers={"X-Reason": "test: the node went away"}, timeout=10).raise_for_status()


def held_and_cut(system, point, holder, caller, customer, reservation_id, also=()):
    """Cancel, hold it at ``point`` (in ``holder``; and anything at the points
    ``also``), close ``caller``'s connection: the answer, and the seconds
    from the close to the answer."""
    gates = [faults.arm(system.gates, name, "hold") for name in (point, *also)]
    try:
        with open(system.logfile(holder)) as log, concurrent.futures.ThreadPoolExecutor(1) as pool:
            log.seek(0, 2)
            seen = []
            answer = cancel_in_background(pool, customer, reservation_id)
            eventually(lambda: seen.append(log.read()) or f"fault point {point}: hold" in "".join(seen),
                       message=f"the cancel held at {point}")
            owners = eventually(lambda: reply_connections(system, caller), message=f"{caller}'s reply queue")
            cut = time.monotonic()
            close_connections(owners)
            response = answer.result()
            return response, time.monotonic() - cut
    finally:
        for gate in gates:
            os.unlink(gate)


def assert_fast(response, elapsed, statuses=(503,)):
    print(f"answered {response.status_code} {elapsed:.3f}s after the connection was closed")
    assert response.status_code in statuses, response.text
    if response.status_code == 503:
        assert int(response.headers["Retry-After"]) > 0
    assert elapsed < FAST, f"the answer took {elapsed:.2f}s after the connection was closed"


def test_the_gateways_connection_lost_while_reservation_holds_a_cancel(system, library):
    customer, book, rid = confirmed_reservation(library)

    response, elapsed = held_and_cut(system, "reservation.cancel.before-delivery", "reservation", "gateway",
                                     customer, rid)

    assert_fast(response, elapsed)
    # Let go within the request's deadline, reservation finishes the cancel;
    # the gateway, on its new connection, answers the retry.
    canceled_everywhere(system, library, customer, book, rid)
    assert customer.post(f"/reservations/{rid}/cancel", timeout=30).status_code == 200


def test_reservations_connection_lost_while_delivery_holds_its_cancel(system, library):
    customer, book, rid = confirmed_reservation(library)

    # delivery_canceled held too: reservation would otherwise apply it at
    # once, and the cancel request, redelivered to reservation when its
    # connection comes back, would find the reservation canceled and answer
    # 200 at once whether or not the first call failed fast.
    response, elapsed = held_and_cut(system, "delivery.cancel.before-reply", "delivery", "reservation",
                                     customer, rid, also=["reservation.delivery-canceled.before-apply"])

    assert_fast(response, elapsed)
    canceled_everywhere(system, library, customer, book, rid)
    assert customer.post(f"/reservations/{rid}/cancel", timeout=30).status_code == 200
