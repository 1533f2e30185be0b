"""What the end-to-end tests share: a system of real processes on a
throwaway vhost, and the stock invariant. How they drive it (the vhost, the
signed-in clients, ``eventually``...) is ``bench.harness``, shared with the
benchmark and the soak, which must not import the tests."""
import contextlib
import sys

from bench.harness import (  # noqa: F401 (the tests import them from here)
    BROKER, LENDING_LIMITS_OFF, MANAGEMENT, USER, Client, Library, eventually, free_port, isbn13, rpc,
    throwaway_vhost)
from reservation.domain import HOLDS_A_COPY

LENDING_LIMITS_ON = {"MAX_ACTIVE_RESERVATIONS": "5", "ALLOW_SAME_TITLE_TWICE": "false"}  # the defaults


@contextlib.contextmanager
def running_system(state_dir, env=None, amqp_uri=None, heal=True):
    """The five services as processes on a vhost, databases and port of their
    own, with ``env`` (database URIs, timeouts...) on top of the defaults.
    ``amqp_uri``: a broker of the test's own (tests/rabbit_node.py) instead
    of a throwaway vhost on the shared one. ``heal=False``: a process that
    dies stays dead until the test starts it (the supervisor leaves it)."""
    from ops.run import Cluster

    with (contextlib.nullcontext(amqp_uri) if amqp_uri else throwaway_vhost()) as amqp_uri:
        cluster = Cluster(state_dir=str(state_dir), python=sys.executable, heal=heal, env={
            "AMQP_URI": amqp_uri,
            "GATEWAY_ADDRESS": f"127.0.0.1:{free_port()}",
            "CANCEL_TIMEOUT": "2",
            "CIRCUIT_RESET_TIMEOUT": "3",
            # The tests not about the lending limits (SPEC §8) reserve as much as
            # they need; those about them pass the limits in ``env``.
            **LENDING_LIMITS_OFF,
            **(env or {}),
        })
        cluster.amqp_uri = amqp_uri
        try:
            cluster.up(timeout=180)  # every service starts at once: slow on a busy machine
            yield cluster
        finally:
            cluster.down()


def assert_invariant(amqp_uri, library, book_id, reservation_ids):
    """stock + copies held by live reservations = copies ever stocked."""
    with rpc(amqp_uri) as cluster:
        inventory = cluster.product.inventory(book_id)
    live = sum(1 for rid in reservation_ids if library.status(rid) in HOLDS_A_COPY)
    assert inventory["stock"] >= 0, inventory
    assert inventory["stock"] + live == inventory["stocked"], (inventory, live)
    assert inventory["allocated"] == live, (inventory, live)


def event_types(caused):
    """The event types of what a domain method returned, ``[(event_type, fields)]``."""
    return [event_type for event_type, _ in caused]
