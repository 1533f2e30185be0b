"""The contracts hold on the wire: a real run of the whole story, on real
processes, publishes only events their schemas (and the committed AsyncAPI
document) accept, on the exchanges and routing keys the document names; real
consumers take events with fields they do not know; and an invalid event is
parked on the handler's dead-letter queue with the reason, never retried."""
import json
import os
import time
import uuid

import jsonschema
import pytest
from kombu import Connection, Exchange, Producer, Queue, binding
from marshmallow import RAISE

from common import events
from common.handlers import ERROR_HEADER, RETRIES_HEADER
from helpers import eventually, running_system
from ops.run import SERVICES

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ALL_TYPES = set(events.TYPES)
LOAN_PERIOD = 6  # seconds: a real run renews a loan and sees one fall overdue


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """The five services (one system per module, as tests/conftest.py's),
    with a loan period of seconds so that ``loan_overdue`` comes in the run."""
    with running_system(tmp_path_factory.mktemp("system"), env={
            "LOAN_PERIOD_SECONDS": str(LOAN_PERIOD), "OVERDUE_CHECK_SECONDS": "1"}) as cluster:
        yield cluster


def committed():
    with open(os.path.join(ROOT, "docs", "asyncapi.json")) as handle:
        return json.load(handle)


def exchange(service):
    # as nameko declares it (nameko.standalone.events.get_event_exchange)
    return Exchange(f"{service}.events", type="topic", durable=True, auto_delete=False)


class Recorder:
    """An exclusive queue bound with ``#`` to every service's event exchange:
    a copy of every event published while it is open."""

    def __init__(self, amqp_uri):
        self.connection = Connection(amqp_uri)
        self.queue = Queue(f"contract-recorder-{uuid.uuid4().hex[:8]}", exclusive=True, auto_delete=True,
                           bindings=[binding(exchange(service), routing_key="#") for service in SERVICES])
        self.bound = self.queue(self.connection.channel())
        self.bound.declare()
        self.messages = []

    def drain(self):
        while (message := self.bound.get(no_ack=True)) is not None:
            self.messages.append(message)
        return self.messages

    def types(self):
        return {m.delivery_info["routing_key"] for m in self.drain()}

    def until_quiet(self, quiet=1.5, timeout=20):
        deadline, seen, since = time.time() + timeout, -1, time.time()
        while time.time() < deadline:
            if len(self.drain()) != seen:
                seen, since = len(self.messages), time.time()
            elif time.time() - since >= quiet:
                return self.messages
            time.sleep(0.1)
        return self.messages

    def close(self):
        self.connection.release()


def publish(amqp_uri, producer, payload):
    with Connection(amqp_uri) as connection:
        Producer(connection.channel()).publish(
            payload, exchange=exchange(producer), routing_key=payload["event_type"], serializer="json",
            headers={"nameko.correlation_id": payload.get("correlation_id", "")}, delivery_mode=2,
            declare=[exchange(producer)], retry=True)


def problems_with(message, doc):
    """Everything wrong with one published message, as sentences."""
    payload, info = message.payload, message.delivery_info
    event_type = payload.get("event_type") if isinstance(payload, dict) else None
    where = f"{info['exchange']}/{info['routing_key']} {payload.get('event_id') if event_type else payload!r}"
    spec = events.TYPES.get(event_type)
    if spec is None:
        return [f"{where}: no schema for event type {event_type!r}"]
    found = []
    if info["routing_key"] != event_type:
        found.append(f"{where}: routing key is not the event type {event_type}")
    if info["exchange"] != spec.exchange:
        found.append(f"{where}: published on {info['exchange']}, not its producer's {spec.exchange}")
    errors = spec.schema_of(spec.emitted_version)(unknown=RAISE).validate(payload)
    if errors:  # producers send exactly their schema, no more and no less
        found.append(f"{where}: refused by its schema: {errors}")
    schema = doc["components"]["schemas"][event_type]
    for error in jsonschema.Draft7Validator(schema).iter_errors(payload):
        found.append(f"{where}: refused by docs/asyncapi.json: {error.message}")
    try:
        events.parse(event_type, payload)
    except events.InvalidEvent as error:
        found.append(f"{where}: consumers would refuse it: {error}")
    if not payload.get("correlation_id"):
        found.append(f"{where}: no correlation_id (every event here is caused by a request)")
    if message.headers.get("nameko.correlation_id") != payload.get("correlation_id"):
        found.append(f"{where}: header nameko.correlation_id {message.headers.get('nameko.correlation_id')!r} "
                     f"is not the payload's {payload.get('correlation_id')!r}")
    if message.content_type != "application/json":
        found.append(f"{where}: content type {message.content_type}")
    if message.properties.get("delivery_mode") != (2 if spec.persistent else 1):
        found.append(f"{where}: not persistent" if spec.persistent else f"{where}: a hint sent persistent")
    return found


def test_every_event_of_a_real_run_matches_its_schema_and_the_document(system, library):
    doc = committed()
    recorder = Recorder(system.amqp_uri)  # bound before anything happens
    try:
        book = library.new_book(copies=1, title="Contracts")
        first = library.reserve(library.alice, book["id"])
        library.wait_status(first["id"], "confirmed")
        second = library.reserve(library.bob, book["id"])
        library.wait_status(second["id"], "waitlisted")
        delivery = library.delivery_for(first["id"])
        library.courier.ok("POST", f"/deliveries/{delivery['id']}/ship")
        library.courier.ok("POST", f"/deliveries/{delivery['id']}/deliver")
        library.wait_status(first["id"], "delivered")
        library.alice.ok("POST", f"/reservations/{first['id']}/return")
        library.wait_status(second["id"], "confirmed")
        library.bob.ok("POST", f"/reservations/{second['id']}/cancel")
        library.librarian.ok("POST", f"/books/{book['id']}/stock", json={"quantity": 1})
        library.bob.ok("PATCH", "/account", json={"address": f"{uuid.uuid4().hex[:6]} Contract Street"})
        # the loans: one renewed, one left to fall overdue (then returned, so bob may reserve again)
        loans = [library.reserve(library.bob, library.new_book(copies=1)["id"])["id"] for _ in range(2)]
        for loan in loans:
            library.wait_status(loan, "confirmed")
            handed = library.delivery_for(loan)
            library.courier.ok("POST", f"/deliveries/{handed['id']}/ship")
            library.courier.ok("POST", f"/deliveries/{handed['id']}/deliver")
            library.wait_status(loan, "delivered")
            if loan == loans[0]:
                library.bob.ok("POST", f"/reservations/{loan}/renew")  # at once, well before it is due
        eventually(lambda: library.bob.ok("GET", f"/reservations/{loans[1]}")["overdue"], timeout=LOAN_PERIOD + 15)
        for loan in loans:
            library.bob.ok("POST", f"/reservations/{loan}/return")
        # allocation_refused: only for a title product does not know, which the
        # gateway lets through only while product is down
        system.stop("product")
        try:
            orphan = library.reserve(library.alice, 10 ** 9)
        finally:
            system.start("product")
        library.wait_status(orphan["id"], "canceled", timeout=30)
        eventually(lambda: library.mypage(library.bob)[second["id"]]["status"] == "canceled")
        eventually(lambda: ALL_TYPES <= recorder.types(), timeout=20, message="every event type published")
        messages = recorder.until_quiet()
    finally:
        recorder.close()

    problems = [problem for message in messages for problem in problems_with(message, doc)]
    assert not problems, f"{len(problems)} problems in {len(messages)} events:\n" + "\n".join(problems)
    assert {m.payload["event_type"] for m in messages} == ALL_TYPES, "a real run publishes every event type"
    ours = [m.payload for m in messages if m.payload.get("reservation_id") in (first["id"], second["id"])]
    assert {"reservation_requested", "copy_allocated", "waitlist_joined", "delivery_delivered",
            "copy_released", "delivery_canceled", "mypage_changed"} <= {e["event_type"] for e in ours}


def test_the_gateway_serves_the_committed_asyncapi_document(library):
    response = library.anonymous.get("/asyncapi.json")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == committed()


def test_real_consumers_accept_an_event_with_fields_they_do_not_know(system, library):
    book = library.new_book(copies=1)
    reservation_id = str(uuid.uuid4())
    event = events.make("reservation_requested", "contract-test", reservation_id=reservation_id,
                        book_id=book["id"], customer="alice")
    event.update(gift_wrap=True, requested_via={"channel": "kiosk", "version": 3})  # from a newer producer

    publish(system.amqp_uri, "reservation", event)

    # product allocated the copy, mypage shows the reservation
    eventually(lambda: library.anonymous.ok("GET", f"/books/{book['id']}")["stock"] == 0,
               message="product allocated a copy")
    eventually(lambda: library.mypage(library.alice).get(reservation_id, {}).get("status") == "requested",
               message="mypage shows the reservation")


def dead_letters(amqp_uri, queue_name, event_id, timeout=20):
    """The parked copy of ``event_id`` on ``queue_name`` (taken off the queue)."""
    with Connection(amqp_uri) as connection:
        queue = Queue(queue_name, exchange=Exchange("bookrental.dead-letters", type="direct", durable=True),
                      routing_key=queue_name[:-len(".dead")], durable=True)(connection.channel())

        def find():
            while (message := queue.get()) is not None:
                message.ack()
                if isinstance(message.payload, dict) and message.payload.get("event_id") == event_id:
                    return message
            return None

        return eventually(find, timeout, interval=0.2, message=f"{event_id} on {queue_name}")


@pytest.mark.parametrize("spoil, reason", [
    ({"book_id": "5"}, "book_id"),
    ({"occurred_at": "2024-05-01T12:00:00+02:00"}, "occurred_at"),
    ({"schema_version": 99}, "version 99 is not supported"),
])
def test_an_invalid_event_is_dead_lettered_with_the_reason_and_never_retried(system, library, spoil, reason):
    event = {**events.make("reservation_requested", "contract-test", reservation_id=str(uuid.uuid4()),
                           book_id=1, customer="alice"), **spoil}

    publish(system.amqp_uri, "reservation", event)

    for handler in ("product.on_reservation_requested", "mypage.on_reservation_requested"):
        parked = dead_letters(system.amqp_uri, f"evt-reservation-reservation_requested--{handler}.dead",
                              event["event_id"])
        assert parked.payload == json.loads(json.dumps(event))
        assert parked.headers[RETRIES_HEADER] == 0, "an invalid event is not retried"
        assert "InvalidEvent" in parked.headers[ERROR_HEADER] and reason in parked.headers[ERROR_HEADER]
    assert event["reservation_id"] not in library.mypage(library.alice)


def test_the_check_of_a_recorded_event_catches_what_a_producer_can_get_wrong():
    from types import SimpleNamespace

    good = events.make("copy_allocated", "corr-1", reservation_id="r-1", book_id=7, customer="alice")

    def message(payload, exchange_name="product.events", routing_key="copy_allocated", **overrides):
        return SimpleNamespace(**{
            "payload": payload, "delivery_info": {"exchange": exchange_name, "routing_key": routing_key},
            "headers": {"nameko.correlation_id": payload.get("correlation_id")},
            "content_type": "application/json", "properties": {"delivery_mode": 2}, **overrides})

    doc = committed()
    assert problems_with(message(good), doc) == []
    for bad, expected in [
        (message({**good, "book_id": "7"}), "refused by its schema"),
        (message({**good, "shelf": "B2"}), "refused by its schema"),  # producers send exactly their schema
        (message(good, exchange_name="reservation.events"), "not its producer's product.events"),
        (message(good, routing_key="copy_released"), "routing key is not the event type"),
        (message({**good, "correlation_id": ""}), "no correlation_id"),
        (message(good, headers={}), "header nameko.correlation_id"),
        (message(good, properties={"delivery_mode": 1}), "not persistent"),
    ]:
        assert any(expected in problem for problem in problems_with(bad, doc)), (expected, problems_with(bad, doc))
