"""Shared fixtures for the per-service integration tests.

Each test runs one (or a few) real service containers, in this process, on
a throwaway vhost of the real broker (nameko's ``rabbit_config``) and real
SQLite files under ``tmp_path``. The test talks to them only the way the
other services do: RPC through ``ClusterRpcProxy``, events published to
``<source>.events``, and it watches what they emit by binding its own queue
to ``<service>.events``. It reads the databases directly to check rows.
"""
import time

import pytest
from kombu import Connection, Exchange, Queue
from nameko.standalone.events import event_dispatcher, get_event_exchange
from nameko.standalone.rpc import ClusterRpcProxy

from common.config import BACKENDS
from common.handlers import DEAD_LETTER_EXCHANGE
from support import CANCEL_TIMEOUT, CIRCUIT_FAIL_MAX, CIRCUIT_RESET_TIMEOUT, Database, EventLog


@pytest.fixture
def config(rabbit_config, tmp_path):
    """The services' config: the test vhost, one SQLite file per service."""
    return {
        **rabbit_config,
        "serializer": "json",
        "max_workers": 10,
        "DB_URIS": {f"{name}:Base": f"sqlite:///{tmp_path}/{name}.db" for name in BACKENDS},
        "RPC_TIMEOUT": 5,
        "CANCEL_TIMEOUT": CANCEL_TIMEOUT,
        "CIRCUIT_FAIL_MAX": CIRCUIT_FAIL_MAX,
        "CIRCUIT_RESET_TIMEOUT": CIRCUIT_RESET_TIMEOUT,
    }


@pytest.fixture
def start(container_factory, config):
    """``start(ServiceClass)`` runs the service on the test vhost, consuming."""

    def run(service_cls, **overrides):
        container = container_factory(service_cls, {**config, **overrides})
        container.start()
        return container

    return run


@pytest.fixture
def rpc(config):
    """``rpc(correlation_id=...)`` is a started ``ClusterRpcProxy`` whose
    calls carry that correlation id (and any other context data given)."""
    proxies = []

    def make(correlation_id=None, timeout=10, **context):
        if correlation_id is not None:
            context["correlation_id"] = correlation_id
        proxy = ClusterRpcProxy(config, context_data=context, timeout=timeout)
        proxies.append(proxy)
        return proxy.start()

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def amqp(config):
    with Connection(config["AMQP_URI"]) as connection:
        yield connection


@pytest.fixture
def publish(config):
    """``publish(source, event)`` sends a real event as ``source`` does:
    to ``<source>.events`` with the routing key ``event["event_type"]``.
    ``routing_key=`` overrides it (to send an event that lies about its type)."""
    dispatch = event_dispatcher(config)

    def send(source, event, routing_key=None):
        routing_key = routing_key or event["event_type"]
        dispatch(source, routing_key, event)
        return event

    return send


@pytest.fixture
def event_log(config, amqp):
    """``event_log("product")`` starts recording what ``product`` publishes."""
    logs = []

    def make(service_name):
        log = EventLog(amqp, get_event_exchange(service_name, config))
        logs.append(log)
        return log

    yield make
    for log in logs:
        log.close()


@pytest.fixture
def emitted(event_log, request):
    """What the module's service (its ``SERVICE``) emits."""
    return event_log(request.module.SERVICE)


@pytest.fixture
def dead_letters(amqp):
    """``dead_letters(queue_name)``: the messages parked on ``<queue>.dead``
    (waiting up to ``timeout`` for at least ``count``)."""

    def read(queue_name, count=1, timeout=5):
        channel = amqp.channel()
        try:
            queue = Queue(f"{queue_name}.dead", exchange=Exchange(DEAD_LETTER_EXCHANGE, type="direct", durable=True),
                          routing_key=queue_name, durable=True)(channel)
            queue.declare()
            found = []
            deadline = time.time() + timeout
            while len(found) < count and time.time() < deadline:
                message = queue.get(no_ack=True, accept=["json"])
                if message is None:
                    time.sleep(0.05)
                    continue
                found.append(message)
            return found
        finally:
            channel.close()

    return read


@pytest.fixture
def db(config):
    """``db("product")``: that service's database file."""
    opened = []

    def open_(service_name):
        database = Database(config["DB_URIS"][f"{service_name}:Base"])
        opened.append(database)
        return database

    yield open_
    for database in opened:
        database.engine.dispose()


