"""The event envelope and schemas (SPEC §4): producers build strictly with
``make``; consumers ``parse`` tolerantly (unknown fields are kept), and an
invalid event raises InvalidEvent."""
from datetime import datetime, timedelta

import pytest
from marshmallow import fields, validate

from common.config import SERVICES
from common.events import SCHEMA_VERSION, TYPES, InvalidEvent, UtcTimestamp, make, parse

ENVELOPE = {"event_id", "event_type", "occurred_at", "correlation_id", "schema_version"}


def sample_fields(event_type):
    """Valid values for every business field of ``event_type``'s schema."""
    values = {}
    for name, field in TYPES[event_type].schema().fields.items():
        if name in ENVELOPE:
            continue
        choices = [v.choices for v in field.validators if isinstance(v, validate.OneOf)]
        if choices:
            values[name] = list(choices[0])[0]
        elif isinstance(field, UtcTimestamp):
            values[name] = "2024-05-01T10:00:00.000000+00:00"
        else:
            values[name] = 3 if isinstance(field, fields.Integer) else f"{name}-value"
    return values


def reservation_fields(**overrides):
    return {"reservation_id": "r-1", "book_id": 7, "customer": "alice", **overrides}


# -- make ---------------------------------------------------------------------------------

@pytest.mark.parametrize("event_type", sorted(TYPES))
def test_every_declared_event_type_can_be_made_and_parsed_back(event_type):
    event = make(event_type, "corr-1", **sample_fields(event_type))

    assert parse(event_type, event) == event


def test_make_fills_in_the_envelope():
    event = make("copy_allocated", "corr-1", **reservation_fields())

    assert event == {**event, **reservation_fields(), "event_type": "copy_allocated",
                     "correlation_id": "corr-1", "schema_version": SCHEMA_VERSION}
    assert ENVELOPE <= set(event)
    occurred_at = datetime.fromisoformat(event["occurred_at"])
    assert occurred_at.utcoffset() == timedelta(0), "occurred_at is in UTC"


def test_every_event_gets_its_own_id():
    ids = {make("copy_allocated", "corr-1", **reservation_fields())["event_id"] for _ in range(50)}

    assert len(ids) == 50


def test_an_event_caused_by_nothing_has_an_empty_correlation_id():
    assert make("copy_allocated", None, **reservation_fields())["correlation_id"] == ""


def test_make_keeps_a_given_occurred_at():
    stamp = "2024-05-01T10:00:00.000000+00:00"

    assert make("copy_allocated", "c", occurred_at=stamp, **reservation_fields())["occurred_at"] == stamp


def test_make_refuses_an_event_missing_a_required_field():
    with pytest.raises(InvalidEvent) as invalid:
        make("waitlist_joined", "corr-1", **reservation_fields())  # no position

    assert invalid.value.event_type == "waitlist_joined"
    assert "position" in invalid.value.errors


def test_make_refuses_a_field_the_schema_does_not_know():
    with pytest.raises(InvalidEvent) as invalid:
        make("copy_allocated", "corr-1", colour="blue", **reservation_fields())

    assert "colour" in invalid.value.errors


@pytest.mark.parametrize("field, value", [
    ("book_id", "seven"), ("book_id", True), ("book_id", None), ("reservation_id", 12), ("customer", None),
])
def test_make_refuses_a_field_of_the_wrong_type(field, value):
    with pytest.raises(InvalidEvent) as invalid:
        make("copy_allocated", "corr-1", **reservation_fields(**{field: value}))

    assert field in invalid.value.errors


def test_make_refuses_an_event_type_nobody_declared():
    # an undeclared type is a producer bug and fails where it is made
    with pytest.raises(InvalidEvent) as invalid:
        make("book_burned", "corr-1", book_id=1)

    assert "event_type" in invalid.value.errors


@pytest.mark.parametrize("value", ["5", 5.0, 5.5, True, [5]])
def test_make_wants_integers_that_are_integers(value):
    # JSON has one number type; a producer that sends "5" or 5.0 has a bug
    with pytest.raises(InvalidEvent) as invalid:
        make("copy_allocated", "corr-1", **reservation_fields(book_id=value))

    assert "book_id" in invalid.value.errors


@pytest.mark.parametrize("stamp", [
    "2024-05-01T10:00:00+00:00", "2024-05-01T10:00:00.123456+00:00", "2024-05-01T10:00:00Z",
    "2024-05-01T10:00:00.5Z",
])
def test_occurred_at_is_an_iso_8601_date_time_in_utc(stamp):
    event = make("copy_allocated", "c", occurred_at=stamp, **reservation_fields())

    assert parse("copy_allocated", event)["occurred_at"] == stamp


@pytest.mark.parametrize("stamp", [
    "2024-05-01T12:00:00+02:00",         # not UTC
    "2024-05-01T10:00:00-00:00",         # "offset unknown" in RFC 3339
    "2024-05-01T10:00:00.000000",        # no offset at all
    "2024-05-01 10:00:00+00:00",         # not the T form
    "2024-02-30T10:00:00+00:00",         # no such day
    "2024-05-01T25:00:00+00:00",         # no such hour
    "yesterday, around ten o'clock UTC",
    1714557600,
])
def test_occurred_at_refuses_anything_else(stamp):
    with pytest.raises(InvalidEvent) as invalid:
        make("copy_allocated", "c", occurred_at=stamp, **reservation_fields())
    assert "occurred_at" in invalid.value.errors

    event = make("copy_allocated", "c", **reservation_fields())
    event["occurred_at"] = stamp
    with pytest.raises(InvalidEvent) as invalid:
        parse("copy_allocated", event)
    assert "occurred_at" in invalid.value.errors


def test_make_writes_the_version_producers_emit_and_no_other():
    with pytest.raises(InvalidEvent) as invalid:
        make("copy_allocated", "c", schema_version=SCHEMA_VERSION + 1, **reservation_fields())

    assert "schema_version" in invalid.value.errors


def test_every_event_type_has_a_schema_of_its_own():
    schemas = [spec.schema for spec in TYPES.values()]

    assert len(set(schemas)) == len(schemas)


def test_a_mypage_change_may_have_no_status_yet():
    event = make("mypage_changed", "c", status=None, delivery_status=None, **reservation_fields())

    assert parse("mypage_changed", event)["status"] is None


# -- parse ----------------------------------------------------------------------------------

def test_parse_tolerates_and_keeps_fields_it_does_not_know():
    event = {**make("copy_allocated", "corr-1", **reservation_fields()), "added_in_v2": {"x": 1}}

    parsed = parse("copy_allocated", event)

    assert parsed["added_in_v2"] == {"x": 1}
    assert parsed == event


def test_parse_refuses_a_schema_version_it_does_not_support():
    # a new version is a breaking change by definition: a consumer that does
    # not know it must not guess (the event is dead-lettered, replayable once
    # the consumer is upgraded)
    event = {**make("copy_allocated", "corr-1", **reservation_fields()), "schema_version": SCHEMA_VERSION + 1}

    with pytest.raises(InvalidEvent) as invalid:
        parse("copy_allocated", event)

    assert "not supported" in str(invalid.value.errors["schema_version"])


def test_parse_refuses_an_unknown_event_type():
    with pytest.raises(InvalidEvent) as invalid:
        parse("book_burned", {"event_type": "book_burned"})

    assert invalid.value.event_type == "book_burned"


@pytest.mark.parametrize("payload", [None, "a string", ["a", "list"], 42])
def test_parse_refuses_a_payload_that_is_not_an_object(payload):
    with pytest.raises(InvalidEvent):
        parse("copy_allocated", payload)


@pytest.mark.parametrize("missing", sorted(ENVELOPE | {"reservation_id", "book_id", "customer"}))
def test_parse_refuses_an_event_missing_an_envelope_or_correlation_field(missing):
    event = make("copy_allocated", "corr-1", **reservation_fields())
    del event[missing]

    with pytest.raises(InvalidEvent):
        parse("copy_allocated", event)


@pytest.mark.parametrize("field, value", [
    ("event_id", ""),                   # empty
    ("event_id", "x" * 65),             # too long
    ("occurred_at", "2024-05-01"),      # too short to be a full timestamp
    ("correlation_id", "c" * 129),      # too long
    ("schema_version", 0),
    ("book_id", "seven"),
    ("position", "first"),
])
def test_parse_refuses_an_invalid_field(field, value):
    event = make("waitlist_joined", "corr-1", position=1, **reservation_fields())
    event[field] = value

    with pytest.raises(InvalidEvent) as invalid:
        parse("waitlist_joined", event)

    assert field in invalid.value.errors


def test_parse_refuses_an_event_whose_type_does_not_match_the_routing_key():
    event = make("reservation_confirmed", "corr-1", **reservation_fields())

    with pytest.raises(InvalidEvent) as invalid:
        parse("reservation_canceled", event)

    assert "event_type" in invalid.value.errors


def test_parse_does_not_change_the_event():
    event = make("book_restocked", "corr-1", book_id=7, quantity=2, stock=5)
    original = dict(event)

    assert parse("book_restocked", event) is event
    assert event == original


def test_an_invalid_event_says_what_is_wrong():
    error = InvalidEvent("copy_allocated", {"book_id": ["Missing data for required field."]})

    assert "copy_allocated" in str(error)
    assert "book_id" in str(error)


def test_every_event_type_belongs_to_a_known_producer_and_carries_its_correlation_keys():
    for name, spec in TYPES.items():
        assert spec.name == name
        assert spec.producer in SERVICES
        declared = set(spec.schema().fields)
        assert ENVELOPE <= declared
        if spec.producer == "gateway":  # an account's event: its business case is the customer
            assert "customer" in declared, name
            continue
        assert "book_id" in declared
        if not name.startswith("book_"):
            assert "reservation_id" in declared, name
