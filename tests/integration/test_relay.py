"""The outbox relay and its publisher, against the real broker (the test vhost):
a batch is published and confirmed at once; what workers hand over while a
batch is in flight goes out in the next one, marked sent only after its
confirm; a broker that refuses leaves the events unmarked for the sweep."""
import json
import uuid

import eventlet
from kombu import Connection, Exchange, Queue

from common import events
from common.publisher import ConfirmedPublisher, Message
from common.relay import OutboxRelay

EXCHANGE = "relaytest.events"


def listen(amqp_uri, routing_key="#"):
    connection = Connection(amqp_uri)
    channel = connection.channel()
    exchange = Exchange(EXCHANGE, type="topic", durable=True)
    exchange(channel).declare()
    queue = Queue(f"relaytest-{uuid.uuid4().hex[:8]}", exchange=exchange, routing_key=routing_key,
                  exclusive=True, auto_delete=True)(channel)
    queue.declare()
    return connection, queue


def drain(queue, count, timeout=5):
    got = []
    with eventlet.Timeout(timeout):
        while len(got) < count:
            message = queue.get(no_ack=True, accept=["json"])
            if message is None:
                eventlet.sleep(0.01)
                continue
            got.append(message)
    return got


def event(n):
    return events.make("book_restocked", f"corr-{n}", book_id=n, quantity=1, stock=n)


def test_a_batch_is_published_confirmed_in_order_with_the_envelope_of_a_nameko_event(rabbit_config):
    amqp_uri = rabbit_config["AMQP_URI"]
    connection, queue = listen(amqp_uri)
    publisher = ConfirmedPublisher(amqp_uri)
    try:
        sent = [event(n) for n in range(20)]
        publisher.publish_batch([Message(EXCHANGE, e["event_type"], json.dumps(e), e["correlation_id"])
                                 for e in sent])
        got = drain(queue, 20)
        assert [m.payload["event_id"] for m in got] == [e["event_id"] for e in sent]
        first = got[0]
        assert first.content_type == "application/json"
        assert first.properties["delivery_mode"] == 2
        assert first.headers["nameko.correlation_id"] == "corr-0"
        assert first.delivery_info["routing_key"] == "book_restocked"
        publisher.publish_batch([Message(EXCHANGE, "hint", "{}", persistent=False)])  # the same channel goes on
        [hint] = drain(queue, 1)
        assert hint.properties["delivery_mode"] == 1
    finally:
        publisher.close()
        connection.close()


class Recorder:
    """The storage side of a relay: what it marks, and what a sweep finds."""

    def __init__(self, publisher):
        self.publisher = publisher
        self.marked = []
        self.left = []

    def mark_published(self, keys):
        self.marked.extend(keys)

    def unpublished(self, cutoff, limit):
        return [p for p in self.left if p.key not in self.marked][:limit]

    def prune(self):
        pass


class CountingPublisher(ConfirmedPublisher):
    def __init__(self, amqp_uri):
        super().__init__(amqp_uri)
        self.batches = []

    def publish_batch(self, messages):
        self.batches.append(len(messages))
        eventlet.sleep(0.05)  # a slow confirm: what is handed over meanwhile waits for the next batch
        super().publish_batch(messages)


def test_what_is_handed_over_meanwhile_goes_out_in_one_batch_and_is_marked_after_its_confirm(rabbit_config):
    from common.outbox import Pending

    amqp_uri = rabbit_config["AMQP_URI"]
    connection, queue = listen(amqp_uri)
    store = Recorder(CountingPublisher(amqp_uri))
    relay = OutboxRelay(store, EXCHANGE, "relaytest")
    relay.start(eventlet.spawn)
    try:
        pending = [Pending.of(event(n)) for n in range(12)]
        relay.hand_over(pending[:1])
        eventlet.sleep(0.01)  # the first batch is in flight
        for one in pending[1:]:
            relay.hand_over([one])
        assert store.marked == []  # nothing marked before its confirm
        drain(queue, 12)
        relay.stop(timeout=5)  # writes the marks it holds
        assert store.publisher.batches == [1, 11]
        assert sorted(store.marked) == sorted(p.key for p in pending)
        store.left = pending
        assert relay.sweep(older_than=0) == 0  # all marked: nothing sent twice
    finally:
        relay.stop(timeout=1)
        store.publisher.close()
        connection.close()


def test_a_broker_that_cannot_be_reached_leaves_the_events_for_the_sweep(rabbit_config):
    from common.outbox import Pending

    store = Recorder(ConfirmedPublisher("amqp://guest:guest@127.0.0.1:1//"))  # nothing listens there
    relay = OutboxRelay(store, EXCHANGE, "relaytest")
    pending = [Pending.of(event(1))]
    relay.hand_over(pending)  # not started: published now, and it fails
    assert store.marked == []
    store.left = pending
    amqp_uri = rabbit_config["AMQP_URI"]
    connection, queue = listen(amqp_uri)
    store.publisher = ConfirmedPublisher(amqp_uri)  # the broker is back
    try:
        assert relay.sweep(older_than=0) == 1
        assert store.marked == [pending[0].key]
        [message] = drain(queue, 1)
        assert message.payload["event_id"] == pending[0].key
    finally:
        store.publisher.close()
        connection.close()
