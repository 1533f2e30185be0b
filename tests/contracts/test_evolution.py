"""How events evolve without breaking a running system (docs/events.md, "Changing an event").

- a new optional field is compatible: consumers that do not know it accept
  the event and keep it, unread;
- a breaking change gets a new schema_version: consumers accept the old and
  the new during the rolling deployment, and their handlers see only the new
  shape; a version a consumer does not support is refused, never guessed.

The consumers here are the real handlers (``@handles`` and the service's own
code) on a real SQLite database, without a broker."""
import json
import os
from contextlib import contextmanager

import jsonschema
import pytest
from marshmallow import RAISE
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from common import asyncapi, events
from common.events import EventType, InvalidEvent, OlderVersion, fields
from common.handlers import handles
from common.store import Transaction
from mypage import models as mypage_models
from mypage.service import MyPageService
from mypage.views import SqlViews

ASYNCAPI_SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor", "asyncapi-2.6.0.schema.json")


class SqliteStore:
    """What ``@handles`` needs of a service's store, on an in-memory database."""

    def __init__(self, base):
        self.base = base
        engine = create_engine("sqlite://")
        base.metadata.create_all(engine)
        self.Session = sessionmaker(bind=engine, expire_on_commit=False)
        self.emitted = []

    @contextmanager
    def transaction(self):
        session = self.Session()
        tx = Transaction(session, self.base)
        tx.views = SqlViews(session)  # MyPage's port, as mypage.views.SqlViewStore gives it
        try:
            yield tx
            tx.views.write_changed()
            session.commit()
        finally:
            session.close()
        self.emitted += [json.loads(pending.body) for pending in tx.emitted]

    @contextmanager
    def reading(self):
        with self.Session() as session:
            yield session


@pytest.fixture
def mypage():
    service = MyPageService()
    service.store = SqliteStore(mypage_models.Base)
    return service


def violations_of(event_type):
    return asyncapi.violations([c for c in asyncapi.all_consumers() if c.event == event_type])


def requested(reservation_id="r-1", **extra):
    return {**events.make("reservation_requested", "corr-1", reservation_id=reservation_id, book_id=7,
                          customer="alice"), **extra}


def page(service, customer="alice"):
    with service.store.reading() as session:
        return {view.reservation_id: view.to_dict(title)
                for view, title in mypage_models.for_customer(session, customer, 100)}


# -- a compatible change: fields a consumer does not know ---------------------------------------

def test_a_consumer_accepts_an_event_with_fields_it_does_not_know(mypage):
    event = requested(gift_wrap=True, requested_via={"channel": "web", "app": "3.2"})

    mypage.on_reservation_requested(event)

    assert page(mypage)["r-1"]["status"] == "requested"
    [changed] = mypage.store.emitted
    assert changed["event_type"] == "mypage_changed" and changed["status"] == "requested"


def test_parse_keeps_the_unknown_fields_for_whoever_reads_them_later():
    event = requested(gift_wrap=True)

    assert events.parse("reservation_requested", event)["gift_wrap"] is True


def test_adding_an_optional_field_keeps_every_contract_and_the_version(monkeypatch):
    with_pickup = type("ReservationConfirmed", (events.ReservationConfirmed,), {
        "pickup_point": fields.String(required=False, metadata={"description": "Where to collect it."})})
    monkeypatch.setitem(events.TYPES, "reservation_confirmed", EventType(
        "reservation_confirmed", "reservation", with_pickup, events.ReservationConfirmed.__doc__))

    assert violations_of("reservation_confirmed") == []  # nobody who reads the event is broken
    old_producer = events.make("reservation_confirmed", "c", reservation_id="r", book_id=1, customer="a")
    new_producer = events.make("reservation_confirmed", "c", reservation_id="r", book_id=1, customer="a",
                               pickup_point="front desk")
    assert old_producer["schema_version"] == new_producer["schema_version"] == 1
    assert events.parse("reservation_confirmed", old_producer) is old_producer
    assert events.parse("reservation_confirmed", new_producer) is new_producer


# -- a breaking change: version 2, the rolling deployment --------------------------------------------

class ReservationRequestedV2(events.ReservationEvent):
    """A customer reserved a title (v2: says through which channel; required)."""

    channel = fields.String(required=True, metadata={"description": "web, app or desk."})


def upgrade_v1(event):
    """Events written before v2 came through the web app, the only channel then."""
    return {**event, "channel": "web"}


def version_two(emitted):
    """reservation_requested as it is while v2 rolls out: ``emitted`` is what producers write."""
    return EventType("reservation_requested", "reservation", ReservationRequestedV2,
                     ReservationRequestedV2.__doc__, version=2,
                     older=(OlderVersion(1, events.ReservationRequested, upgrade_v1),), emitted=emitted)


@pytest.fixture
def rolling_out(monkeypatch):
    """Release 1: consumers accept v1 and v2, producers still write v1."""
    monkeypatch.setitem(events.TYPES, "reservation_requested", version_two(emitted=1))


@pytest.fixture
def rolled_out(monkeypatch):
    """Release 2: producers write v2; consumers still accept v1 left in the queues."""
    monkeypatch.setitem(events.TYPES, "reservation_requested", version_two(emitted=None))


V1_EVENT = {"event_id": "e-v1", "event_type": "reservation_requested", "occurred_at": "2024-05-01T10:00:00+00:00",
            "correlation_id": "c", "schema_version": 1, "reservation_id": "r-v1", "book_id": 7, "customer": "alice"}
V2_EVENT = {**V1_EVENT, "event_id": "e-v2", "schema_version": 2, "reservation_id": "r-v2", "channel": "app"}


def test_during_the_rollout_producers_keep_writing_the_old_version(rolling_out):
    event = events.make("reservation_requested", "c", reservation_id="r", book_id=1, customer="a")

    assert event["schema_version"] == 1 and "channel" not in event
    with pytest.raises(InvalidEvent):  # and only the old version
        events.make("reservation_requested", "c", reservation_id="r", book_id=1, customer="a", channel="app")


def test_after_the_rollout_producers_write_the_new_version(rolled_out):
    event = events.make("reservation_requested", "c", reservation_id="r", book_id=1, customer="a", channel="app")

    assert event["schema_version"] == 2
    with pytest.raises(InvalidEvent):  # a v2 event without the new required field is a producer bug
        events.make("reservation_requested", "c", reservation_id="r", book_id=1, customer="a")


@pytest.mark.parametrize("release", ["rolling_out", "rolled_out"])
def test_a_consumer_accepts_the_previous_and_the_new_version(release, request, mypage):
    request.getfixturevalue(release)

    mypage.on_reservation_requested(dict(V1_EVENT))
    mypage.on_reservation_requested(dict(V2_EVENT))

    rows = page(mypage)
    assert rows["r-v1"]["status"] == rows["r-v2"]["status"] == "requested"


def test_handlers_see_only_the_newest_shape(rolled_out):
    seen = []

    class Consumer:
        store = SqliteStore(mypage_models.Base)

        @handles("reservation", "reservation_requested")
        def on_requested(self, tx, event):
            seen.append(event)

    Consumer().on_requested(dict(V1_EVENT))
    Consumer().on_requested(dict(V2_EVENT))

    assert [(e["schema_version"], e["channel"]) for e in seen] == [(2, "web"), (2, "app")]
    for event in seen:  # an upgraded event is a valid event of the newest version
        assert ReservationRequestedV2().validate(event) == {}


def test_a_version_the_consumer_does_not_support_is_refused_with_the_reason(rolled_out):
    with pytest.raises(InvalidEvent) as invalid:
        events.parse("reservation_requested", {**V2_EVENT, "schema_version": 3})

    assert "version 3 is not supported here (supported: [1, 2])" in str(invalid.value)


def test_each_version_is_validated_by_its_own_schema(rolled_out):
    with pytest.raises(InvalidEvent) as invalid:  # a v2 event must have the v2 field
        events.parse("reservation_requested", {k: v for k, v in V2_EVENT.items() if k != "channel"})
    assert "channel" in invalid.value.errors

    with pytest.raises(InvalidEvent):  # and a v1 event the v1 fields
        events.parse("reservation_requested", {k: v for k, v in V1_EVENT.items() if k != "customer"})


def test_the_contracts_are_checked_against_what_handlers_see(rolled_out):
    # mypage and product read the same fields in v2, so nobody is broken
    assert violations_of("reservation_requested") == []


def test_the_document_describes_both_versions_while_both_are_on_the_wire(rolling_out):
    doc = asyncapi.document()
    channel = doc["channels"]["reservation.events/reservation_requested"]

    assert channel["subscribe"]["message"] == {"oneOf": [
        {"$ref": "#/components/messages/reservation_requested"},
        {"$ref": "#/components/messages/reservation_requested.v1"}]}
    newest = doc["components"]["messages"]["reservation_requested"]
    assert (newest["x-schema-version"], newest["x-emitted-version"], newest["x-supported-versions"]) == (2, 1, [1, 2])
    assert "channel" in doc["components"]["schemas"]["reservation_requested"]["required"]
    assert "channel" not in doc["components"]["schemas"]["reservation_requested.v1"]["properties"]
    with open(ASYNCAPI_SCHEMA) as handle:
        assert list(jsonschema.Draft7Validator(json.load(handle)).iter_errors(doc)) == []


# -- the real registry ---------------------------------------------------------------------------------

@pytest.mark.parametrize("event_type", sorted(events.TYPES))
def test_every_supported_version_reaches_handlers_as_a_valid_newest_event(event_type):
    spec = events.TYPES[event_type]
    assert spec.version in spec.supported and spec.emitted_version in spec.supported
    for version in sorted(spec.supported):
        example = asyncapi.example(spec, version)
        parsed = events.parse(event_type, example)
        assert spec.schema(unknown=RAISE).validate(
            {k: v for k, v in parsed.items() if k in spec.schema().fields}) == {}
        assert parsed["schema_version"] == spec.version
