"""What a service does when the broker goes away under it: settling a
message never raises (the broker delivers it again), and a request that
meets a gateway being stopped is answered 503, never 500."""
import json

from nameko.exceptions import ContainerBeingKilled

from common.consumer import SettlingQueueConsumer
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
