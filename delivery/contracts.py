"""delivery's consumer-driven contract: the events it handles and the fields it reads.

Pure data, no imports: tests/contracts checks it against every producer's schema
(and that delivery/service.py handles exactly these events), and the event docs
list delivery as a consumer from it. Format: see product/contracts.py.
"""
CONSUMES = [
    {"producer": "reservation", "event": "reservation_confirmed", "handler": "on_reservation_confirmed",
     "reads": {"reservation_id": "string", "book_id": "integer", "customer": "string",
               "address": {"type": "string", "required": False, "nullable": True}}},
    {"producer": "reservation", "event": "reservation_canceled", "handler": "on_reservation_canceled",
     "reads": {"reservation_id": "string"}},
]
