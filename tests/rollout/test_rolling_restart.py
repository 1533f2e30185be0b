"""Rolling restarts under load (``make rollout SERVICE=name``, ``Cluster.rollout``).

A background client reserves and reads MyPage through the gateway at a
steady rate while each service is replaced, one after another, by a new
process. Not one request may fail, and every reservation accepted on the
way must settle, with MyPage, the deliveries and the stock agreeing
(``bench.audit``): nothing the old processes held was lost in the handover.
"""
import threading
import time
import uuid

import pytest
import requests

from bench.audit import audit
from helpers import Client
from ops.run import BACKENDS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RATE = 10  # requests per second: a reservation, then a MyPage read, in turn
CUSTOMERS = ("alice", "bob")


class SteadyLoad:
    """A thread that POSTs a reservation and GETs MyPage in turn, ``RATE``
    times a second, as alternating customers, and remembers every answer
    that was not the expected one (and every request that got no answer)."""

    def __init__(self, base_url, book_id):
        self.book_id = book_id
        self.clients = {name: Client.signed_in(base_url, name) for name in CUSTOMERS}
        self.accepted = []  # reservation ids answered 202
        self.failures = []  # (seconds since start, what, status or error)
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-load", daemon=True)
        self._started = time.monotonic()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)

    def wait_for(self, count, timeout=60):
        """Until ``count`` more requests have been answered."""
        target = self.requests + count
        deadline = time.monotonic() + timeout
        while self.requests < target:
            assert time.monotonic() < deadline, f"the load made {self.requests} requests, not {target}"
            time.sleep(0.05)

    def _run(self):
        tick = time.monotonic()
        turn = 0
        while not self._stop.is_set():
            name = CUSTOMERS[(turn // 2) % len(CUSTOMERS)]
            if turn % 2 == 0:
                self._call(name, "POST /reservations", 202, "POST", "/reservations",
                           json={"book_id": self.book_id}, headers={"Idempotency-Key": uuid.uuid4().hex})
            else:
                self._call(name, "GET /mypage", 200, "GET", "/mypage")
            turn += 1
            tick += 1 / RATE
            self._stop.wait(max(0.0, tick - time.monotonic()))

    def _call(self, name, what, expected, method, path, **kwargs):
        at = round(time.monotonic() - self._started, 2)
        try:
            response = self.clients[name].request(method, path, timeout=20, **kwargs)
        except requests.RequestException as error:
            self.failures.append((at, what, repr(error)))
        else:
            if response.status_code != expected:
                self.failures.append((at, what, response.status_code, response.text[:200]))
            elif method == "POST":
                self.accepted.append(response.json()["id"])
        self.requests += 1


def settled(system, library, book_id, accepted, timeout=90):
    """Wait until the audit of ``book_id`` finds nothing wrong; its problems otherwise."""
    customers = {name: Client.signed_in(library.url, name) for name in CUSTOMERS}
    deadline = time.monotonic() + timeout
    while True:
        problems = audit(system, library, [book_id], accepted, customers)
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(1)


def replaced(system, service):
    before = set(system.pids(service).values())
    system.rollout(service)
    after = set(system.pids(service).values())
    assert after and not before & after, f"{service}: {before} -> {after}"
    assert len(after) == len(before)


def test_every_backend_rolls_under_load_without_a_failed_request_or_a_lost_event(system, library):
    book = library.new_book(copies=10_000)
    with SteadyLoad(library.url, book["id"]) as load:
        load.wait_for(10)
        for service in BACKENDS:
            replaced(system, service)
            load.wait_for(6)  # the new process has served a while before the next rollout
    assert load.failures == [], load.failures
    assert len(load.accepted) >= 20, "the load was not steady"
    assert settled(system, library, book["id"], load.accepted) == []


def test_the_gateway_rolls_under_load_without_a_failed_request(system, library):
    """One port: the new gateway listens beside the old one (SO_REUSEPORT),
    the old one closes its socket and finishes what it holds."""
    book = library.new_book(copies=10_000)
    with SteadyLoad(library.url, book["id"]) as load:
        load.wait_for(10)
        for _ in range(2):
            replaced(system, "gateway")
            load.wait_for(10)
    assert load.failures == [], load.failures
    assert settled(system, library, book["id"], load.accepted) == []


def test_a_replica_set_rolls_one_replica_at_a_time(system):
    system.start("delivery", replicas=2)
    try:
        replaced(system, "delivery")
        assert system.consumers("delivery") == 2
        assert sorted(system.pids("delivery")) == [1, 2]
    finally:
        system.start("delivery", replicas=1)
