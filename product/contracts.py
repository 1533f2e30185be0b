"""product's consumer-driven contract: the events it handles and the fields it reads.

Pure data, no imports: tests/contracts checks it against every producer's schema
(and that product/service.py handles exactly these events), and docs/asyncapi.json
and docs/events.md list product as a consumer from it. Change it with the handlers.

Each entry: the producing service, the event type, the handler method, and
``reads``: field -> JSON schema type ("string", "integer", ...), or a dict
{"type": ..., "required": False, "nullable": True} for a field the handler can
do without or accepts as null. The envelope fields the shared handler reads
(event_id, event_type, schema_version) are checked for every event anyway.
"""
CONSUMES = [
    {"producer": "reservation", "event": "reservation_requested", "handler": "on_reservation_requested",
     "reads": {"reservation_id": "string", "book_id": "integer", "customer": "string", "occurred_at": "string"}},
    {"producer": "reservation", "event": "reservation_canceled", "handler": "on_reservation_canceled",
     "reads": {"reservation_id": "string", "book_id": "integer", "customer": "string", "occurred_at": "string"}},
    {"producer": "reservation", "event": "reservation_returned", "handler": "on_reservation_returned",
     "reads": {"reservation_id": "string"}},
]
