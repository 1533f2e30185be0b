"""reservation's consumer-driven contract: the events it handles and the fields it reads.

Pure data, no imports: tests/contracts checks it against every producer's schema
(and that reservation/service.py handles exactly these events), and the event
docs list reservation as a consumer from it. Format: see product/contracts.py.
"""
_READS = {"reservation_id": "string", "event_type": "string"}

CONSUMES = [
    {"producer": "product", "event": "copy_allocated", "handler": "on_copy_allocated", "reads": _READS},
    {"producer": "product", "event": "waitlist_joined", "handler": "on_waitlist_joined", "reads": _READS},
    {"producer": "product", "event": "allocation_refused", "handler": "on_allocation_refused", "reads": _READS},
    {"producer": "delivery", "event": "delivery_shipped", "handler": "on_delivery_shipped", "reads": _READS},
    {"producer": "delivery", "event": "delivery_delivered", "handler": "on_delivery_delivered", "reads": _READS},
    {"producer": "delivery", "event": "delivery_canceled", "handler": "on_delivery_canceled", "reads": _READS},
]
