"""What a SIGTERM (Nameko's ``container.stop()``) lets a process finish.

Nameko stops the entrypoints, waits for the workers in hand and only then
stops the dependencies; these tests pin down the parts Book Rental adds:

- the outbox relay finishes the sweep it is in (publishes and marks what it
  took) before the store closes (``common.store.Store.stop``);
- a worker stopped mid-publish finishes: its caller gets the answer and the
  event is out;
- the gateway answers the request in hand (``Connection: close``), and takes
  no new connection (``gateway.server.JsonWebServer.drain``).

They run the containers in this process, on the nameko test vhost.
"""
import json
import socket
import threading
import time
import uuid

import eventlet
import pytest
import requests
from kombu import Connection, Queue
from nameko.standalone.events import get_event_exchange
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.utils import get_extension
from sqlalchemy import create_engine, text

from common.store import Store
from gateway.http import Api
from helpers import eventually, free_port, isbn13
from product.service import ProductService


@pytest.fixture
def config(rabbit_config, tmp_path):
    return {**rabbit_config, "serializer": "json", "max_workers": 10,
            "DB_URIS": {"product:Base": f"sqlite:///{tmp_path}/product.db"}}


def slow_publisher(store, seconds):
    """Make every publish of ``store`` take ``seconds``; returns the list of
    event types published, and an event set when the first one starts."""
    published, started = [], threading.Event()
    publish = store.publisher.publish_batch

    def slow(messages):
        for message in messages:  # one at a time, slowly
            started.set()
            eventlet.sleep(seconds)
            publish([message])
            published.append(message.routing_key)

    store.publisher.publish_batch = slow
    return published, started


def unpublished(config):
    engine = create_engine(config["DB_URIS"]["product:Base"])
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL")).scalar()
    finally:
        engine.dispose()


def test_the_outbox_relay_finishes_its_sweep_before_the_store_closes(container_factory, config):
    container = container_factory(ProductService, config)
    container.start()
    store = get_extension(container, Store)
    Outbox = store.base.OutboxEvent
    published, started = slow_publisher(store, 0.3)
    # What a crash between commit and publish leaves: committed, never sent.
    with store.Session() as session, session.begin():
        for _ in range(4):
            event_id = str(uuid.uuid4())
            session.add(Outbox(event_id=event_id, event_type="stock_changed", created_at=time.time() - 60,
                               payload=json.dumps({"event_id": event_id, "event_type": "stock_changed",
                                                   "correlation_id": "left-over"})))
    assert started.wait(10), "the relay did not sweep"

    container.stop()  # while the relay is publishing the first of four

    assert published == ["stock_changed"] * 4
    assert unpublished(config) == 0


def test_a_worker_stopped_mid_publish_answers_and_its_event_is_out(container_factory, config):
    container = container_factory(ProductService, config)
    container.start()
    store = get_extension(container, Store)
    with Connection(config["AMQP_URI"]) as connection:
        channel = connection.channel()
        exchange = get_event_exchange("product", config)
        exchange(channel).declare()
        queue = Queue(f"test-{uuid.uuid4().hex[:8]}", exchange=exchange, routing_key="book_registered",
                      exclusive=True, auto_delete=True)(channel)
        queue.declare()
        published, started = slow_publisher(store, 0.5)
        with ClusterRpcProxy(config, timeout=10) as cluster:
            reply = cluster.product.register_book.call_async(isbn13(), "Stopping", "A. Author", 1)
            assert started.wait(10)
            stopping = eventlet.spawn(container.stop)
            book = reply.result()
            stopping.wait()
        assert book["title"] == "Stopping"
        assert published == ["book_registered"]
        message = eventually(lambda: queue.get(no_ack=True, accept=["json"]), timeout=5)
        assert message.payload["book_id"] == book["id"]
    assert unpublished(config) == 0


class SlowService:
    """A gateway-like service whose one route takes a while."""

    name = "slow"

    @Api.decorator("GET", "/slow", limit="none")
    def slow(self, request):
        eventlet.sleep(1.0)
        return {"done": True}


def test_the_gateway_answers_the_request_in_hand_and_takes_no_new_one(container_factory, rabbit_config):
    port = free_port()
    container = container_factory(SlowService, {**rabbit_config, "WEB_SERVER_ADDRESS": f"127.0.0.1:{port}"})
    container.start()
    url = f"http://127.0.0.1:{port}"
    idle = requests.Session()
    eventually(lambda: idle.get(url + "/nothing-here", timeout=2).status_code == 404)  # a keep-alive connection

    answers = []
    in_hand = eventlet.spawn(lambda: answers.append(requests.get(url + "/slow", timeout=10)))
    eventlet.sleep(0.3)
    started = time.monotonic()
    stopping = eventlet.spawn(container.stop)
    eventlet.sleep(0.2)
    with pytest.raises(requests.ConnectionError):  # the listening socket is closed at once
        requests.get(url + "/slow", timeout=2)

    in_hand.wait()
    stopping.wait()
    assert answers[0].status_code == 200 and answers[0].json() == {"done": True}
    assert answers[0].headers["Connection"] == "close"
    assert time.monotonic() - started < 5, "the idle connection held the stop up"
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
