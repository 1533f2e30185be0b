"""docs/asyncapi.json and docs/events.md say what the schemas and contracts say.

Both are generated (``make docs``) and committed; these tests fail when the
committed files and the code disagree, and check that the AsyncAPI document
is valid AsyncAPI 2.6.0 whose payload schemas accept the real events."""
import json
import os

import jsonschema
import pytest
from marshmallow import RAISE

from common import asyncapi, events

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASYNCAPI_JSON = os.path.join(ROOT, "docs", "asyncapi.json")
EVENTS_MD = os.path.join(ROOT, "docs", "events.md")
ASYNCAPI_SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor", "asyncapi-2.6.0.schema.json")
STALE = "is stale: run `make docs` and commit it"


def committed():
    with open(ASYNCAPI_JSON) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def doc():
    return committed()


def resolve(doc, ref):
    assert ref.startswith("#/"), ref
    node = doc
    for part in ref[2:].split("/"):
        assert part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


# -- committed = generated ----------------------------------------------------------------------

def test_the_committed_asyncapi_document_is_what_the_schemas_generate(doc):
    generated = json.loads(asyncapi.render_json())

    assert doc == generated, f"docs/asyncapi.json {STALE}"


def test_the_committed_asyncapi_document_is_byte_for_byte_what_make_docs_writes():
    with open(ASYNCAPI_JSON) as handle:
        assert handle.read() == asyncapi.render_json(), f"docs/asyncapi.json {STALE}"


def test_the_committed_events_table_is_what_the_schemas_and_contracts_generate():
    with open(EVENTS_MD) as handle:
        assert handle.read() == asyncapi.render_markdown(), f"docs/events.md {STALE}"


def test_a_schema_change_makes_the_committed_document_stale(monkeypatch):
    # the staleness check above really looks at the fields
    monkeypatch.setattr(events.CopyReleased, "_declared_fields",
                        {**events.CopyReleased._declared_fields, "shelf": events.fields.String()})

    assert json.loads(asyncapi.render_json()) != committed()


# -- a valid AsyncAPI document ------------------------------------------------------------------

def test_the_document_is_valid_asyncapi_2_6(doc):
    with open(ASYNCAPI_SCHEMA) as handle:
        validator = jsonschema.Draft7Validator(json.load(handle))

    errors = [f"{'/'.join(map(str, error.absolute_path))}: {error.message[:200]}" for error in validator.iter_errors(doc)]

    assert doc["asyncapi"] == "2.6.0"
    assert not errors, "\n".join(errors)


def test_every_reference_resolves(doc):
    for ref in refs(doc):
        resolve(doc, ref)


def test_every_payload_is_a_valid_json_schema(doc):
    for name, schema in doc["components"]["schemas"].items():
        jsonschema.Draft7Validator.check_schema(schema)


def test_one_channel_and_one_message_per_event_type_on_the_exchanges_nameko_uses(doc):
    assert set(doc["components"]["messages"]) == set(events.TYPES)
    assert len(doc["channels"]) == len(events.TYPES)
    for spec in events.TYPES.values():
        channel = doc["channels"][f"{spec.producer}.events/{spec.name}"]
        binding = channel["bindings"]["amqp"]
        assert binding["is"] == "routingKey"
        assert binding["exchange"] == {"name": f"{spec.producer}.events", "type": "topic",
                                       "durable": True, "autoDelete": False}
        assert channel["x-producer"] == spec.producer
        message = resolve(doc, channel["subscribe"]["message"]["$ref"])
        assert message["name"] == spec.name
        assert message["x-producer"] == spec.producer
        assert message["x-correlation-keys"] == spec.correlation_keys
        payload = resolve(doc, message["payload"]["$ref"])
        assert payload["properties"]["event_type"]["const"] == spec.name
        assert set(events.Envelope().fields) <= set(payload["required"])


def test_consumers_and_their_queues_are_named_as_nameko_names_them(doc):
    for spec in events.TYPES.values():
        channel = doc["channels"][f"{spec.producer}.events/{spec.name}"]
        for consumer in channel["x-consumers"]:
            base = f"evt-{spec.producer}-{spec.name}--{consumer['service']}.{consumer['handler']}"
            if consumer["delivery"] == "service_pool":
                assert consumer["queue"] == base
                assert consumer["deadLetterQueue"] == base + ".dead"
            else:
                assert consumer["queue"].startswith(base + "-")
        message = resolve(doc, channel["subscribe"]["message"]["$ref"])
        assert message["x-consumers"] == sorted({c["service"] for c in channel["x-consumers"]})


def test_the_correlation_id_points_at_the_payload(doc):
    correlation = doc["components"]["correlationIds"]["correlation_id"]
    assert correlation["location"] == "$message.payload#/correlation_id"
    for message in doc["components"]["messages"].values():
        assert resolve(doc, message["correlationId"]["$ref"]) is correlation


@pytest.mark.parametrize("event_type", sorted(events.TYPES))
def test_each_example_is_a_valid_event_by_the_schema_and_by_the_document(doc, event_type):
    message = doc["components"]["messages"][event_type]
    payload_schema = resolve(doc, message["payload"]["$ref"])
    for example in message["examples"]:
        jsonschema.validate(example["payload"], payload_schema, format_checker=jsonschema.FormatChecker())
        assert events.TYPES[event_type].schema(unknown=RAISE).validate(example["payload"]) == {}


@pytest.mark.parametrize("event_type", sorted(events.TYPES))
def test_the_document_accepts_what_make_produces_and_refuses_a_mistyped_field(doc, event_type):
    message = doc["components"]["messages"][event_type]
    payload_schema = resolve(doc, message["payload"]["$ref"])
    event = asyncapi.example(events.TYPES[event_type])
    made = events.make(event_type, "corr-1", **{k: v for k, v in event.items()
                                                 if k not in ("event_id", "event_type", "correlation_id",
                                                              "schema_version")})
    jsonschema.validate(made, payload_schema, format_checker=jsonschema.FormatChecker())

    mistyped = {"book_id": "7"} if "book_id" in made else {"customer": 7}  # an account's event has no book
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**made, **mistyped}, payload_schema)
