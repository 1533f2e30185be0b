"""Consumer-driven contracts: every consuming service declares, in its own
``contracts.py``, the events it handles and the fields it reads; the build
fails when a producer's schema stops giving a consumer what it reads, or when
a service's handlers and its contract disagree.

This test may import every service; the services never import each other
(tests/unit/test_imports.py)."""
import ast
import importlib
import os

import pytest
from nameko.events import BROADCAST, SERVICE_POOL, EventHandler
from nameko.standalone.events import get_event_exchange

from common import asyncapi, events
from common.handlers import ReliableEventHandler
from common.config import SERVICES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONSUMERS = asyncapi.all_consumers()


def service_class(name):
    module, cls = SERVICES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def event_handlers(name):
    """(method name, handler) for every Nameko event handler of a service class."""
    found = []
    cls = service_class(name)
    for attr in dir(cls):
        for entrypoint in getattr(getattr(cls, attr), "nameko_entrypoints", ()):
            if isinstance(entrypoint, EventHandler):
                found.append((attr, entrypoint))
    return found


# -- the producers' schemas satisfy every consumer ------------------------------------------------

@pytest.mark.parametrize("consumer", CONSUMERS, ids=lambda c: f"{c.producer}.{c.event}->{c.name}")
def test_the_producer_schema_gives_the_consumer_every_field_it_reads(consumer):
    problems = asyncapi.violations([consumer])

    assert not problems, "the producer breaks the consumer's contract:\n" + "\n".join(problems)


def test_no_contract_is_broken_anywhere():
    # the one-line summary of the above, as `python -m common.asyncapi --check` prints it
    assert asyncapi.violations() == []


def test_every_consumer_reads_something_and_names_its_fields_by_json_type():
    assert CONSUMERS
    for consumer in CONSUMERS:
        assert consumer.reads, consumer
        for read in consumer.reads:
            assert read.type in asyncapi.JSON_TYPES


# -- the checker itself: it catches each kind of break and names who and what --------------------

def contract(reads, event="reservation_confirmed", producer="reservation"):
    module = type("contracts", (), {"CONSUMES": [
        {"producer": producer, "event": event, "handler": "on_it", "reads": reads}]})
    return asyncapi.contracts_of("somebody", module)


@pytest.mark.parametrize("reads, expected", [
    ({"customer_id": "string"}, "has no such field"),
    ({"book_id": "string"}, "reads it as string but producer reservation (reservation_confirmed v1) sends integer"),
    ({"reservation_id": "integer"}, "sends string"),
])
def test_the_checker_names_producer_consumer_and_field(reads, expected):
    [problem] = asyncapi.violations(contract(reads))

    field = next(iter(reads))
    assert problem.startswith(f"reservation_confirmed: field {field!r}")
    assert "consumer somebody.on_it" in problem
    assert "producer reservation" in problem
    assert expected in problem


def test_the_checker_refuses_a_required_read_of_an_optional_field(monkeypatch):
    optional = type("Confirmed", (events.ReservationConfirmed,), {
        "pickup_point": events.fields.String(required=False)})
    monkeypatch.setitem(events.TYPES, "reservation_confirmed",
                        events.EventType("reservation_confirmed", "reservation", optional, "x"))

    [problem] = asyncapi.violations(contract({"pickup_point": "string"}))
    assert "needs it but producer reservation (reservation_confirmed v1) may leave it out" in problem
    assert asyncapi.violations(contract({"pickup_point": {"type": "string", "required": False}})) == []


def test_the_checker_refuses_a_consumer_that_does_not_expect_null():
    [problem] = asyncapi.violations(contract({"status": "string"}, event="mypage_changed", producer="mypage"))
    assert "does not accept null but producer mypage" in problem

    assert asyncapi.violations(contract({"status": {"type": "string", "nullable": True}},
                                        event="mypage_changed", producer="mypage")) == []


def test_the_checker_refuses_the_wrong_producer_and_an_unknown_event():
    [wrong] = asyncapi.violations(contract({"reservation_id": "string"}, producer="product"))
    assert "expects it from product, but reservation produces it" in wrong

    [unknown] = asyncapi.violations(contract({"reservation_id": "string"}, event="book_burned"))
    assert "no producer declares" in unknown


def test_a_malformed_contract_is_an_error_not_a_silent_pass():
    with pytest.raises(asyncapi.ContractError):
        contract({"book_id": "int"})
    with pytest.raises(asyncapi.ContractError):
        asyncapi.contracts_of("somebody", type("contracts", (), {"CONSUMES": [{"event": "x"}]}))


# -- each service's handlers are exactly its contract ---------------------------------------------

@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_service_handles_exactly_the_events_its_contract_declares(service):
    handled = set()
    for method, handler in event_handlers(service):
        delivery = {SERVICE_POOL: asyncapi.SERVICE_POOL, BROADCAST: asyncapi.BROADCAST}.get(handler.handler_type)
        handled.add((handler.source_service, handler.event_type, method, delivery))
    declared = {(c.producer, c.event, c.handler, c.delivery) for c in asyncapi.contracts_of(service)}

    assert handled - declared == set(), (
        f"{service} handles events its contract ({service}/contracts.py) does not declare")
    assert declared - handled == set(), f"{service}/contracts.py declares events {service} does not handle"


class _Untouchable:
    """A service whose store must not be used: the event is refused first."""

    @property
    def store(self):
        raise AssertionError("the handler touched the store before validating the event")


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_pooled_handler_validates_before_it_acts_and_dead_letters(service):
    # a handler shared by the replicas parses on receipt (an invalid event is
    # refused before anything is touched) and parks what it refuses on its
    # dead-letter queue (ReliableEventHandler; tests/integration show it)
    pooled = [(method, handler) for method, handler in event_handlers(service)
              if handler.handler_type == SERVICE_POOL]
    for method, handler in pooled:
        assert isinstance(handler, ReliableEventHandler), f"{service}.{method}"
        with pytest.raises(events.InvalidEvent):
            getattr(service_class(service), method)(_Untouchable(), {"event_type": handler.event_type})


def test_every_event_type_is_published_where_nameko_publishes_its_producer_s_events():
    # the exchange the documents and contracts name is the one a Nameko
    # service of that name publishes on, and every consumer subscribes to
    for spec in events.TYPES.values():
        assert spec.producer in SERVICES
        assert spec.exchange == get_event_exchange(spec.producer, {}).name


# -- a contract is data ---------------------------------------------------------------------------

def imported_modules(path):
    with open(path) as handle:
        tree = ast.parse(handle.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_contract_is_plain_data(service):
    # every service has one (a service that handles nothing says so: CONSUMES = [])
    path = os.path.join(ROOT, service, "contracts.py")
    assert list(imported_modules(path)) == [], f"{service}/contracts.py imports code"
