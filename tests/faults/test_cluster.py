"""SPEC §12: the system on three RabbitMQ nodes loses nothing when a node goes.

What ``make up CLUSTER=3`` runs (ops/clustered.py), on nodes, databases and
a state directory of the test's own (node names and ports of its own, so it
never meets a user's ``make up CLUSTER=3``; no management plugin: lighter):
three nodes clustered, every service on PostgreSQL, quorum queues, each
service given every node. Reservations keep coming while each node in turn
is stopped (``broker-stop``) and started again (``broker-start``); then:

- every reservation accepted (202) is confirmed, with one delivery each,
  MyPage agrees, and the invariant of SPEC §3 holds (bench/audit.py);
- no message waits on a dead-letter queue;
- (and before that) every durable queue is a quorum queue, the event log a
  stream, each replicated on the three nodes;
- requests refused meanwhile were refused with 503 only (safe to retry with
  the same Idempotency-Key, which the clients here do).

Marked ``cluster``: ``make test-cluster`` runs it (about 3 minutes), not
``make test``. It needs PostgreSQL (``BOOKRENTAL_TEST_PG``) and RabbitMQ's
files; it is skipped without them.
"""
import os
import threading
import time
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.audit import audit
from chaos import Burst, new_customer
from helpers import Library, running_system
from ops import brokers as broker_nodes
from ops import clustered

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]


class Steady(Burst):
    """Reservations sent by ``threads`` clients, one after the other, until ``join``."""

    def __init__(self, customer, book_id, threads=2, pause=1.0):
        super().__init__(customer, book_id, count=0, threads=threads, retries=10, pause=pause)
        self.threads = threads
        self._stopping = threading.Event()

    def start(self):
        self._futures = [self._pool.submit(self._loop) for _ in range(self.threads)]
        return self

    def _loop(self):
        while not self._stopping.is_set():
            self._reserve()

    def join(self, timeout=120):
        self._stopping.set()
        return super().join(timeout)


PG_ADMIN = os.environ.get("BOOKRENTAL_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """The clustered system (the name the faults' conftest stops quickly)."""
    missing = broker_nodes.available()
    if missing:
        pytest.skip(missing)
    url = make_url(PG_ADMIN)
    database = {"host": f"{url.host or '127.0.0.1'}:{url.port or 5432}", "user": url.username,
                "password": url.password}
    try:
        clustered.database_uris("", create=False, **database)
        engine = create_engine(PG_ADMIN, connect_args={"connect_timeout": 2})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as error:
        pytest.skip(f"no PostgreSQL at {url.render_as_string(hide_password=True)}: {error}")
    state_dir = tmp_path_factory.mktemp("cluster")
    run = uuid.uuid4().hex[:8]
    nodes = broker_nodes.Brokers(state_dir, 3, name=f"bookrental-test-{run}", ports=None, management=False)
    prefix = f"bookrental_t{run}_"
    try:
        settings = clustered.prepare(str(state_dir), brokers=nodes, database_prefix=prefix, **database)
        with running_system(state_dir, amqp_uri=settings["env"]["AMQP_URI"],
                            env={"RATE_LIMIT_ENABLED": "false"}) as system:
            system.brokers = nodes
            yield system
    finally:
        nodes.down()
        _drop_databases(prefix)


def _drop_databases(prefix):
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            for service in clustered.DATABASES:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{prefix}{service}" WITH (FORCE)'))
    finally:
        admin.dispose()


def parked(nodes):
    """{dead-letter queue: messages} of the non-empty ones, as a running node lists them."""
    node = next(node for node in nodes.nodes if node.running())
    listed = node.rabbitmqctl("list_queues", "name", "messages", "--no-table-headers", "--quiet").stdout
    counts = {}
    for line in listed.splitlines():
        name, _, messages = line.rpartition("\t")
        if name.endswith(".dead") and messages.strip() not in ("", "0"):
            counts[name] = messages.strip()
    return counts


def queue_types(nodes):
    """{queue: (type, durable, members)} as node 1 lists them."""
    node = nodes.nodes[0]
    listed = node.rabbitmqctl("list_queues", "name", "type", "durable", "members", "--no-table-headers",
                              "--quiet").stdout
    return {line.split("\t")[0]: tuple(line.split("\t")[1:]) for line in listed.splitlines() if line.strip()}


def test_the_durable_queues_are_quorum_queues(system):
    types = queue_types(system.brokers)
    durable = {name: kind for name, (kind, durable, _) in types.items() if durable == "true"}
    assert not [name for name in durable if name.startswith("rpc.reply-")], types
    assert "rpc-reservation" in durable and any(name.endswith(".dead") for name in durable), types
    assert {name for name, kind in durable.items() if kind != "quorum" and kind != "stream"} == set(), types
    # RPC reply queues stay classic and exclusive: they belong to one connection.
    assert all(kind == "classic" for name, (kind, _, _) in types.items() if name.startswith("rpc.reply-")), types
    # Replicated on the three nodes: the queues, and the event log (SPEC §10), a stream.
    for name in ("rpc-reservation", "events.log"):
        assert types[name][2].count("@localhost") == 3, (name, types.get(name))
    assert types["events.log"][0] == "stream"


def test_losing_each_node_in_turn_mid_burst_loses_nothing(system):
    nodes = system.brokers
    library = Library(system.gateway_url)
    customer = new_customer(library)
    book = library.new_book(copies=500)
    burst = Steady(customer, book["id"]).start()
    outages = []
    try:
        for n in (1, 2, 3):
            burst.wait_done(burst.done + 2, timeout=60)
            began = time.time()
            nodes.stop(n)
            time.sleep(3)  # requests keep coming with the node away
            nodes.start(n)
            outages.append(round(time.time() - began, 1))
    finally:
        burst.join(timeout=180)  # fails on any answer but 202, 503, 429 and 504

    accepted = set(burst.accepted)
    assert len(accepted) >= 10, burst.attempts
    assert burst.gave_up == 0, burst.attempts
    deadline = time.time() + 120
    while True:
        problems = audit(system, library, [book["id"]], accepted, {customer.username: customer})
        if not problems or time.time() > deadline:
            break
        time.sleep(1)
    assert problems == [], "\n".join(problems[:30])
    assert all(library.status(rid) == "confirmed" for rid in accepted)
    assert parked(nodes) == {}
    print("cluster: node outages (s):", outages, "attempts:", dict(burst.attempts), "accepted:", len(accepted),
          "slowest refusal (s):", burst.slowest_refusal)
