"""What a service does when the broker goes away under it: settling a
message never raises (the broker delivers it again), and a request that
meets a gateway being stopped is answered 503, never 500; a call whose
answer's queue died with its connection fails at once, 503."""
import contextlib
import json

import eventlet
import pybreaker
import pytest
from kombu import Queue
from nameko.exceptions import ContainerBeingKilled
from nameko.messaging import QueueConsumer
from nameko.rpc import MethodProxy

from common.consumer import ConnectionWatcher, SettlingQueueConsumer
from common.errors import Unavailable
from common.rpc import ReplyQueueLost, TypedReplyListener, _not_a_failure, _TimedServiceProxy
from gateway.errors import response_for


class _Channel:
    connection = object()  # alive, as far as the channel knows


class _Message:
    channel = _Channel()

    def __init__(self, error):
        self.error = error

    def ack(self):
        raise self.error

    def requeue(self):
        raise self.error


def test_a_broken_socket_while_settling_is_not_an_error():
    consumer = SettlingQueueConsumer()
    for error in (BrokenPipeError(32, "Broken pipe"), ConnectionResetError(104, "reset")):
        consumer.ack_message(_Message(error))
        consumer.requeue_message(_Message(error))


def test_a_bug_while_settling_still_raises():
    consumer = SettlingQueueConsumer()
    try:
        consumer.ack_message(_Message(ValueError("a bug")))
    except ValueError:
        return
    raise AssertionError("a bug was swallowed")


def test_a_gateway_being_stopped_answers_503_with_retry_after():
    response = response_for(ContainerBeingKilled())
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert json.loads(response.get_data())["error"]["code"] == "unavailable"


# -- an answer's queue lost with its connection (a cluster's node gone) --

def _listener(exclusive):
    listener = TypedReplyListener()
    listener.queue = Queue("rpc.reply-gateway-x", routing_key="x", durable=not exclusive, exclusive=exclusive,
                           auto_delete=exclusive)
    return listener


def test_calls_waiting_on_an_exclusive_reply_queue_fail_at_once_when_it_is_lost():
    listener = _listener(exclusive=True)
    waiting = [eventlet.spawn(listener.get_reply_event(cid).wait) for cid in ("a", "b")]
    eventlet.sleep(0)

    listener.connection_lost(ConnectionResetError(104, "reset"))

    for call in waiting:
        with pytest.raises(ReplyQueueLost):
            call.wait()
    assert listener._reply_events == {}


def test_a_call_made_while_the_reply_queue_is_gone_waits_for_it_to_be_declared_again():
    listener = _listener(exclusive=True)
    listener.connection_lost(ConnectionResetError(104, "reset"))
    registered = eventlet.spawn(listener.get_reply_event, "c")
    eventlet.sleep(0.05)
    assert not registered.dead and "c" not in listener._reply_events

    listener.consuming()

    registered.wait()
    assert "c" in listener._reply_events


def test_a_durable_reply_queue_outlives_its_connection_and_its_calls_keep_waiting():
    listener = _listener(exclusive=False)  # one broker: Nameko's durable queue, the answer waits there
    event = listener.get_reply_event("a")
    listener.connection_lost(ConnectionResetError(104, "reset"))
    assert listener._reply_events == {"a": event} and not event.ready()
    listener.get_reply_event("b")  # does not wait


def test_the_queue_consumer_tells_its_watchers_when_its_connection_is_lost_and_back(monkeypatch):
    seen = []

    class Watcher(ConnectionWatcher):
        def connection_lost(self, error):
            seen.append(("lost", type(error).__name__))

        def consuming(self):
            seen.append(("consuming",))

    @contextlib.contextmanager
    def consumer_context(self, **kwargs):
        self.on_consume_ready(None, None, [])
        yield None, None, []

    monkeypatch.setattr(QueueConsumer, "consumer_context", consumer_context)
    monkeypatch.setattr(QueueConsumer, "on_consume_ready", lambda self, *args, **kwargs: None)
    consumer = SettlingQueueConsumer()
    consumer._providers = {Watcher(), object()}
    with pytest.raises(ConnectionResetError):
        with consumer.consumer_context():
            raise ConnectionResetError(104, "reset")
    assert seen == [("consuming",), ("lost", "ConnectionResetError")]


class _Worker:
    def __init__(self):
        self.context_data = {}


class _LostListener:
    routing_key = "x"

    def get_reply_event(self, correlation_id):
        raise ReplyQueueLost("the connection to the broker was lost (ConnectionResetError)")


def test_a_lost_answer_is_unavailable_and_the_breaker_does_not_count_it(monkeypatch):
    monkeypatch.setattr(MethodProxy, "__init__", lambda self, worker_ctx, service, method, listener, **options:
                        setattr(self, "reply_listener", listener))
    monkeypatch.setattr(MethodProxy, "call_async",
                        lambda self, *args, **kwargs: self.reply_listener.get_reply_event("a"))
    breaker = pybreaker.CircuitBreaker(fail_max=1, exclude=[_not_a_failure])
    proxy = _TimedServiceProxy(_Worker(), "delivery", _LostListener(), 5.0, breaker)
    for _ in range(3):
        with pytest.raises(Unavailable) as raised:
            proxy.cancel("r1")
        assert raised.value.details == {"service": "delivery", "reply": "lost"}
    assert breaker.current_state == "closed"
    assert response_for(raised.value).status_code == 503
    assert response_for(raised.value).headers["Retry-After"]
