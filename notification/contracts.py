"""notification's consumer-driven contract: the events it handles and the fields it reads.

Pure data, no imports: tests/contracts checks it against every producer's schema
(and that notification/service.py handles exactly these events), and the event
docs list notification as a consumer from it. Format: see product/contracts.py.
"""
_RESERVATION = {"reservation_id": "string", "customer": "string", "book_id": "integer",
                "event_type": "string", "occurred_at": "string"}

CONSUMES = [
    {"producer": "gateway", "event": "customer_updated", "handler": "on_customer_updated",
     "reads": {"customer": "string", "email": {"type": "string", "nullable": True}, "occurred_at": "string"}},
    {"producer": "product", "event": "book_registered", "handler": "on_book_registered",
     "reads": {"book_id": "integer", "title": "string"}},
    {"producer": "reservation", "event": "reservation_confirmed", "handler": "on_reservation_confirmed",
     "reads": _RESERVATION},
    {"producer": "reservation", "event": "reservation_shipped", "handler": "on_reservation_shipped",
     "reads": _RESERVATION},
    {"producer": "reservation", "event": "reservation_delivered", "handler": "on_reservation_delivered",
     "reads": {**_RESERVATION, "due_at": {"type": "string", "required": False, "nullable": True}}},
    {"producer": "reservation", "event": "reservation_returned", "handler": "on_reservation_returned",
     "reads": _RESERVATION},
    {"producer": "reservation", "event": "reservation_canceled", "handler": "on_reservation_canceled",
     "reads": {**_RESERVATION, "canceled_by": {"type": "string", "required": False, "nullable": True}}},
    {"producer": "reservation", "event": "loan_renewed", "handler": "on_loan_renewed",
     "reads": {**_RESERVATION, "due_at": "string"}},
    {"producer": "reservation", "event": "loan_overdue", "handler": "on_loan_overdue",
     "reads": {**_RESERVATION, "due_at": {"type": "string", "required": False, "nullable": True}}},
]
