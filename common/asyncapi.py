"""The event contracts, written down: docs/asyncapi.json and docs/events.md.

Both are generated from the one source of truth, the marshmallow schemas in
``common.events`` (what producers write), and the consumers' own declarations
in ``<service>/contracts.py`` (what each handler reads)::

    python -m common.asyncapi > docs/asyncapi.json        # AsyncAPI 2.6.0
    python -m common.asyncapi --markdown > docs/events.md  # the table for people
    python -m common.asyncapi --check                      # consumers vs producers

(``make docs`` writes both files.) tests/contracts fails when a committed file
differs from what this module generates, and when a producer's schema no
longer gives a consumer what its contract says it reads (:func:`violations`).

The contracts are plain data modules, loaded by name: a service never imports
another service's code, and neither does a service import this module.

It is longer than most modules here (about 500 lines) because it is the one
place where the schemas and contracts become every document and check; each
output is a few functions over the same walk of the event types, kept
together so the documents and the checker cannot disagree.

About 500 lines, one job: the event contracts. The consumers' declared
reads, the check that every read is produced (``violations``), and the two
documents written from them (apispec converts the schemas) share one model
(``Consumer``, ``Read``); split, each part would import the others.
"""
import argparse
import importlib
import json
import sys
from dataclasses import dataclass, field

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from common import events
from common.config import SERVICES

ASYNCAPI_VERSION = "2.6.0"
AMQP_BINDING_VERSION = "0.2.0"
DOCUMENT_VERSION = "1.0.0"
JSON_TYPES = ("string", "integer", "number", "boolean", "object", "array")
SERVICE_POOL, BROADCAST = "service_pool", "broadcast"
PERSISTENT = 2  # AMQP delivery mode of every event from an outbox (nameko's default)
TRANSIENT = 1  # and of the hints (EventType.persistent False)

# What the shared handler (common.handlers.handles) reads of every event it
# receives, whichever service it runs in: a contract of its own.
SHARED_READS = {"event_id": "string", "event_type": "string", "schema_version": "integer",
                "correlation_id": "string"}
SHARED_CONSUMER = "common.handlers"

EXAMPLE_ENVELOPE = {
    "event_id": "5f0c1c1e-8f2a-4f57-9a53-3f1e2a6b9c10",
    "occurred_at": "2024-05-01T10:00:00.000000+00:00",
    "correlation_id": "0b7e4a52-2d1c-4c7e-8f0e-6a0b1f1f3c21",
}
EXAMPLE_VALUES = {
    "reservation_id": "9d4b2f7e-3c1a-4e8b-b6f2-1a2b3c4d5e6f", "book_id": 7, "customer": "alice",
    "delivery_id": "2c8e6a4f-7b3d-4f1e-9a0c-5d6e7f8a9b0c", "isbn": "9780441172719", "title": "Dune",
    "author": "Frank Herbert", "stock": 2, "quantity": 1, "position": 1, "reason": "no such title",
    "email": "alice@example.org", "address": "12 Reading Lane, Booktown",
    "due_at": "2024-05-15T10:00:00.000000+00:00", "renewals": 1, "canceled_by": "customer",
}
EXAMPLE_STATUS = {"delivery_created": "preparing", "delivery_shipped": "shipped",
                  "delivery_delivered": "delivered", "delivery_canceled": "canceled"}


# -- the consumers' contracts ------------------------------------------------------------------

@dataclass(frozen=True)
class Read:
    """One field a consumer reads, and how it needs it."""

    name: str
    type: str
    required: bool = True
    nullable: bool = False

    def describe(self):
        extra = ("" if self.required else ", may be absent") + (", may be null" if self.nullable else "")
        return f"{self.type}{extra}"


@dataclass(frozen=True)
class Consumer:
    """One handler of one event type, as its service's contracts.py declares it."""

    service: str
    producer: str
    event: str
    handler: str
    delivery: str = SERVICE_POOL
    reads: tuple = field(default=())

    @property
    def name(self):
        return f"{self.service}.{self.handler}"

    @property
    def queue(self):
        base = f"evt-{self.producer}-{self.event}--{self.service}.{self.handler}"
        return base if self.delivery == SERVICE_POOL else f"{base}-<replica id>"

    @property
    def dead_letter_queue(self):
        return f"{self.queue}.dead" if self.delivery == SERVICE_POOL else None


class ContractError(Exception):
    """A contracts.py that cannot be read."""


def _read(service, index, name, spec):
    where = f"{service}/contracts.py CONSUMES[{index}] reads {name!r}"
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict) or spec.get("type") not in JSON_TYPES:
        raise ContractError(f"{where}: the type must be one of {', '.join(JSON_TYPES)}")
    unknown = set(spec) - {"type", "required", "nullable"}
    if unknown:
        raise ContractError(f"{where}: unknown keys {sorted(unknown)}")
    return Read(name, spec["type"], bool(spec.get("required", True)), bool(spec.get("nullable", False)))


def contracts_of(service, module=None):
    """The consumers a service declares in ``<service>/contracts.py`` (none if it has no such file)."""
    if module is None:
        try:
            module = importlib.import_module(f"{service}.contracts")
        except ModuleNotFoundError as error:
            if error.name in (f"{service}.contracts", service):
                return []
            raise
    consumers = []
    for index, entry in enumerate(getattr(module, "CONSUMES", None) or []):
        missing = {"producer", "event", "handler", "reads"} - set(entry)
        if missing:
            raise ContractError(f"{service}/contracts.py CONSUMES[{index}]: missing {sorted(missing)}")
        delivery = entry.get("delivery", SERVICE_POOL)
        if delivery not in (SERVICE_POOL, BROADCAST):
            raise ContractError(f"{service}/contracts.py CONSUMES[{index}]: delivery is {SERVICE_POOL} or {BROADCAST}")
        reads = tuple(_read(service, index, name, spec) for name, spec in entry["reads"].items())
        consumers.append(Consumer(service, entry["producer"], entry["event"], entry["handler"], delivery, reads))
    return consumers


def all_consumers(services=SERVICES):
    return [consumer for service in services for consumer in contracts_of(service)]


def consumers_of(event_type, consumers):
    return [consumer for consumer in consumers if consumer.event == event_type]


# -- the producers' schemas, as JSON schema ----------------------------------------------------

def _converter():
    plugin = MarshmallowPlugin()
    APISpec("Book Rental events", DOCUMENT_VERSION, "3.1.0", plugins=[plugin])
    return plugin.converter


def json_schema(spec, version=None):
    """The JSON schema of one version (the newest by default) of an event type."""
    version = version or spec.version
    schema = _converter().schema2jsonschema(spec.schema_of(version))
    # Producers write exactly these fields, but consumers must ignore the
    # ones they do not know (a new optional field is a compatible change),
    # so the document does not forbid them.
    schema.pop("additionalProperties", None)
    properties = schema["properties"]
    properties["event_type"] = {**properties["event_type"], "const": spec.name}
    properties["schema_version"] = {**properties["schema_version"], "const": version}
    schema["required"] = sorted(schema.get("required", []))
    return {"title": spec.schema_of(version).__name__, "description": spec.summary.strip(), **schema}


def _field_type(prop):
    kinds = prop.get("type")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
    nullable = "null" in kinds
    kinds = [kind for kind in kinds if kind != "null"]
    return (kinds[0] if len(kinds) == 1 else "|".join(kinds) or "any"), nullable


def example(spec, version=None):
    """A valid example of ``spec`` (its newest version by default; deterministic, for the docs)."""
    version = version or spec.version
    payload = {**EXAMPLE_ENVELOPE, "event_type": spec.name, "schema_version": version}
    for name, prop in json_schema(spec, version)["properties"].items():
        if name in payload:
            continue
        if name in EXAMPLE_VALUES:
            payload[name] = EXAMPLE_VALUES[name]
        elif name == "status" and spec.name in EXAMPLE_STATUS:
            payload[name] = EXAMPLE_STATUS[spec.name]
        elif name == "status":
            payload[name] = "confirmed"
        elif name == "delivery_status":
            payload[name] = "preparing"
        else:
            payload[name] = 1 if _field_type(prop)[0] == "integer" else f"{name}-value"
    return payload


# -- consumers against producers ---------------------------------------------------------------

def violations(consumers=None, types=None):
    """Every way a producer's schema fails a consumer's contract, as sentences
    naming the event, the producer, the consumer and the field. Empty is good."""
    consumers = all_consumers() if consumers is None else consumers
    types = events.TYPES if types is None else types
    found = []
    for consumer in consumers:
        who = f"consumer {consumer.name}"
        spec = types.get(consumer.event)
        if spec is None:
            found.append(f"{consumer.event}: {who} handles an event type no producer declares")
            continue
        if spec.producer != consumer.producer:
            found.append(f"{consumer.event}: {who} expects it from {consumer.producer}, "
                         f"but {spec.producer} produces it")
        found += _field_violations(spec, who, consumer.reads)
    shared = tuple(_read(SHARED_CONSUMER, 0, name, kind) for name, kind in SHARED_READS.items())
    for spec in types.values():
        if consumers_of(spec.name, consumers):
            found += _field_violations(spec, f"consumer {SHARED_CONSUMER} (every handler)", shared)
    return found


def _field_violations(spec, who, reads):
    schema = json_schema(spec)
    producer = f"producer {spec.producer} ({spec.name} v{spec.version})"
    found = []
    for read in reads:
        prop = schema["properties"].get(read.name)
        where = f"{spec.name}: field {read.name!r}"
        if prop is None:
            found.append(f"{where}: {who} reads it ({read.describe()}) but {producer} has no such field")
            continue
        kind, nullable = _field_type(prop)
        if kind != read.type:
            found.append(f"{where}: {who} reads it as {read.type} but {producer} sends {kind}")
        if read.required and read.name not in schema["required"]:
            found.append(f"{where}: {who} needs it but {producer} may leave it out (it is optional)")
        if nullable and not read.nullable:
            found.append(f"{where}: {who} does not accept null but {producer} may send null")
    return found


# -- AsyncAPI ----------------------------------------------------------------------------------

def channel_name(spec):
    return f"{spec.exchange}/{spec.name}"


def _message_name(spec, version):
    return spec.name if version == spec.version else f"{spec.name}.v{version}"


def _consumer_entry(consumer):
    entry = {"service": consumer.service, "handler": consumer.handler, "delivery": consumer.delivery,
             "queue": consumer.queue}
    if consumer.dead_letter_queue:
        entry["deadLetterQueue"] = consumer.dead_letter_queue
    entry["reads"] = [read.name for read in consumer.reads]
    return entry


def _consumer_sentence(consumers):
    if not consumers:
        return "No service consumes it yet."
    return "Consumed by " + "; ".join(
        f"{c.name} ({'one queue per replica' if c.delivery == BROADCAST else 'queue ' + c.queue})"
        for c in consumers) + "."


def document(consumers=None, types=None):
    """The AsyncAPI 2.6.0 document of every event, as a dict."""
    consumers = all_consumers() if consumers is None else consumers
    types = events.TYPES if types is None else types
    channels, messages, schemas = {}, {}, {}
    for spec in types.values():
        mine = consumers_of(spec.name, consumers)
        versions = sorted(spec.supported, reverse=True)
        refs = []
        for version in versions:
            name = _message_name(spec, version)
            schemas[name] = json_schema(spec, version)
            messages[name] = _message(spec, version, mine)
            refs.append({"$ref": f"#/components/messages/{name}"})
        channels[channel_name(spec)] = {
            "description": (f"{spec.producer} publishes `{spec.name}` on the topic exchange `{spec.exchange}` "
                            f"with routing key `{spec.name}`. {_consumer_sentence(mine)}"),
            "bindings": {"amqp": {
                "is": "routingKey",
                "exchange": {"name": spec.exchange, "type": "topic", "durable": True, "autoDelete": False},
                "bindingVersion": AMQP_BINDING_VERSION,
            }},
            "subscribe": {
                "operationId": f"{spec.producer}_publishes_{spec.name}",
                "summary": spec.summary.strip(),
                "description": (f"Published by {spec.producer} from its transactional outbox: at least "
                                f"once, after the change that caused it is committed." if spec.persistent else
                                f"Published by {spec.producer} after the change that caused it is committed, "
                                f"as a non-persistent hint kept in no outbox: at most once (lost if the "
                                f"producer or the broker stops first)."),
                "tags": [{"name": spec.producer}],
                "bindings": {"amqp": {"deliveryMode": PERSISTENT if spec.persistent else TRANSIENT,
                                      "bindingVersion": AMQP_BINDING_VERSION}},
                "message": refs[0] if len(refs) == 1 else {"oneOf": refs},
            },
            "x-producer": spec.producer,
            "x-consumers": [_consumer_entry(consumer) for consumer in mine],
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:bookrental:events",
        "info": {
            "title": "Book Rental events",
            "version": DOCUMENT_VERSION,
            "description": (
                "The events the Book Rental services exchange over RabbitMQ (Nameko events). "
                "Each service publishes its events on its own topic exchange `<service>.events` with the "
                "event type as routing key; each consuming handler has a durable queue of its own, "
                "`evt-<producer>-<event_type>--<consumer>.<handler>`, shared by the consumer's replicas, "
                "with a dead-letter queue `<queue>.dead` where an invalid event is parked with the reason. "
                "Every event is a flat JSON object: the envelope (event_id, event_type, occurred_at, "
                "correlation_id, schema_version, and the correlation keys reservation_id / book_id) plus "
                "the fields of its type. Consumers ignore fields they do not know. "
                "Generated by `python -m common.asyncapi` from common/events.py and <service>/contracts.py; "
                "the rules for changing an event are in docs/events.md."),
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "url": "{host}:{port}",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "The broker of AMQP_URI (config.yml); every exchange and queue lives in its vhost.",
                "variables": {"host": {"default": "127.0.0.1"}, "port": {"default": "5672"}},
            },
        },
        "channels": channels,
        "components": {
            "messages": messages,
            "schemas": schemas,
            "correlationIds": {
                "correlation_id": {
                    "description": ("The id of the HTTP request or RPC call that caused the event; "
                                    "every event it causes, in any service, carries it."),
                    "location": "$message.payload#/correlation_id",
                },
            },
        },
        "tags": [{"name": service, "description": f"Published by {service}"}
                 for service in sorted({spec.producer for spec in types.values()})],
    }


def _message(spec, version, consumers):
    message = {
        "name": spec.name,
        "title": spec.name.replace("_", " ").capitalize(),
        "summary": spec.summary.strip(),
        "contentType": "application/json",
        "headers": {
            "type": "object",
            "properties": {"nameko.correlation_id": {
                "type": "string", "description": "The payload's correlation_id, as Nameko propagates it."}},
        },
        "correlationId": {"$ref": "#/components/correlationIds/correlation_id"},
        "payload": {"$ref": f"#/components/schemas/{_message_name(spec, version)}"},
        "tags": [{"name": spec.producer}],
        "x-producer": spec.producer,
        "x-consumers": sorted({consumer.service for consumer in consumers}),
        "x-correlation-keys": spec.correlation_keys,
        "x-schema-version": version,
        "x-emitted-version": spec.emitted_version,
        "x-supported-versions": sorted(spec.supported),
    }
    if version == spec.version:
        message["examples"] = [{"name": "example", "payload": example(spec)}]
    return message


def render_json(doc=None):
    return json.dumps(document() if doc is None else doc, indent=2, ensure_ascii=False) + "\n"


# -- docs/events.md ----------------------------------------------------------------------------

RULES = """\
## Changing an event

The schemas in `common/events.py` are the contract producers keep; each consumer's
`<service>/contracts.py` says what it reads of which event. `make docs` regenerates
this page and `docs/asyncapi.json`; the tests in `tests/contracts/` fail the build when
either is stale, when a producer's schema no longer gives a consumer what it reads
(naming producer, consumer and field), when a service's handlers and its contract
disagree, or when a real run publishes an event its schema refuses.

1. **Compatible: keep `schema_version`.** Add an *optional* field
   (`required=False`), add an event type, or loosen a validation. Consumers ignore
   fields they do not know (`events.parse` keeps them, unread), so producers and
   consumers can be deployed in any order.
2. **Breaking: a new `schema_version`.** Removing, renaming or retyping a field,
   making a field required, tightening a validation or changing what a field means.
   The new schema becomes the type's `schema`/`version`; the old one moves to
   `older` with an `upgrade` that turns an old event into the new shape. `parse`
   accepts every supported version and hands handlers the newest shape only.
3. **Roll out consumers first.** Release 1: the new version is supported but
   producers still write the old one (`emitted=<old>`); deploy every consumer.
   Release 2: drop `emitted` so producers write the new version. Release 3, once no
   old event is left in a queue, a dead-letter queue or an outbox: drop the old
   version from `older`.
4. **A consumer refuses a version it does not support**, like any invalid event: it
   is parked on the handler's dead-letter queue with the reason, never retried and
   never half-understood; replay it (`make dlq`) once the consumer is upgraded.
5. **A consumer reads only what it declares.** Reading a new field of an event
   means adding it to the service's `contracts.py` in the same change; reading a
   field the producer may leave out means declaring it `"required": False` (and
   using `event.get`).
"""


def _field_cell(spec):
    schema = json_schema(spec)
    envelope = set(events.Envelope().fields)
    cells = []
    for name, prop in schema["properties"].items():
        if name in envelope:
            continue
        kind, nullable = _field_type(prop)
        marks = ("" if name in schema["required"] else ", optional") + (", nullable" if nullable else "")
        cells.append(f"`{name}` {kind}{marks}")
    return "<br>".join(cells)


def render_markdown(consumers=None, types=None):
    consumers = all_consumers() if consumers is None else consumers
    types = events.TYPES if types is None else types
    lines = [
        "# Events",
        "",
        "<!-- Generated by `python -m common.asyncapi --markdown` (`make docs`) from common/events.py",
        "     and <service>/contracts.py; tests/contracts fails when it is stale. Do not edit by hand. -->",
        "",
        "Every event is a flat JSON object published by its producer on the topic exchange",
        "`<producer>.events` with the event type as routing key. Each consumer handler has a",
        "durable queue `evt-<producer>-<event_type>--<consumer>.<handler>` (shared by the",
        "consumer's replicas, so an event is handled once per service) and a dead-letter queue",
        "`<queue>.dead` where an invalid event is parked with the reason. The full description,",
        "with JSON schemas, is `docs/asyncapi.json` (served at `GET /asyncapi.json`).",
        "",
        "**Envelope** (every event): `event_id` string (unique), `event_type` string (= routing key),",
        "`occurred_at` string (ISO 8601 date-time in UTC), `correlation_id` string (the HTTP request",
        "or RPC call that caused it; AMQP header `nameko.correlation_id` too), `schema_version` integer,",
        "plus the correlation key of the business case: `reservation_id`, and `book_id` where it applies.",
        "",
        "| event type | producer | consumers (handler) | fields besides the envelope | correlation key | version |",
        "|---|---|---|---|---|---|",
    ]
    for spec in types.values():
        mine = consumers_of(spec.name, consumers)
        who = "<br>".join(f"{c.service} (`{c.handler}`{', broadcast' if c.delivery == BROADCAST else ''})"
                          for c in mine) or "none"
        keys = ", ".join(f"`{key}`" for key in spec.correlation_keys)
        version = str(spec.version)
        if spec.supported != {spec.version}:
            version += f" (accepts {', '.join(map(str, sorted(spec.supported)))}; writes {spec.emitted_version})"
        lines.append(f"| `{spec.name}` | {spec.producer} | {who} | {_field_cell(spec)} | {keys} | {version} |")
    lines += ["", "## What each consumer reads", "",
              "From each service's `contracts.py`; `tests/contracts` checks every field against the",
              "producer's schema (exists, same type, always sent unless declared optional, never null",
              "unless declared nullable).", "",
              "| consumer | event type | fields read |", "|---|---|---|"]
    for consumer in sorted(consumers, key=lambda c: (c.service, list(types).index(c.event) if c.event in types else 0)):
        reads = ", ".join(f"`{read.name}`" + ("" if read.required and not read.nullable else f" ({read.describe()})")
                          for read in consumer.reads)
        lines.append(f"| {consumer.service} | `{consumer.event}` | {reads} |")
    lines += ["", RULES]
    return "\n".join(lines)


def event_table(markdown=None):
    """The table of event types alone, as the README shows it."""
    text = markdown or render_markdown()
    start = text.index("| event type |")
    return text[start:text.index("\n\n", start)]


def update_readme(path):
    """Put the generated table between the README's events markers."""
    text = open(path).read()
    begin = text.index("-->\n", text.index("<!-- events:begin")) + 4
    end = text.index("\n<!-- events:end -->")
    with open(path, "w") as handle:
        handle.write(text[:begin] + event_table() + text[end:])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m common.asyncapi", description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print docs/events.md instead of the AsyncAPI JSON")
    parser.add_argument("--check", action="store_true", help="check every consumer's contract; exit 1 on a violation")
    parser.add_argument("--readme", metavar="PATH", help="rewrite the table of events in the README at PATH")
    args = parser.parse_args(argv)
    if args.readme:
        update_readme(args.readme)
        return 0
    if args.check:
        found = violations()
        for line in found:
            print(line)
        print(f"{len(found)} contract violation(s)" if found else "every consumer's contract holds")
        return 1 if found else 0
    sys.stdout.write(render_markdown() if args.markdown else render_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
