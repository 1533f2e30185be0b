"""mypage's consumer-driven contract: the events it handles and the fields it reads.

Pure data, no imports: tests/contracts checks it against every producer's schema
(and that mypage/service.py handles exactly these events), and the event docs
list mypage as a consumer from it. Format: see product/contracts.py.
"""
# What a reservation view is built from (mypage.domain.ReservationView.apply).
_VIEW = {"reservation_id": "string", "customer": "string", "book_id": "integer",
         "event_type": "string", "occurred_at": "string"}

CONSUMES = [
    {"producer": "product", "event": "book_registered", "handler": "on_book_registered",
     "reads": {"book_id": "integer", "title": "string"}},
] + [
    {"producer": "reservation", "event": f"reservation_{step}", "handler": f"on_reservation_{step}",
     "reads": {**_VIEW, "due_at": {"type": "string", "required": False, "nullable": True}}
     if step == "delivered" else _VIEW}
    for step in ("requested", "waitlisted", "confirmed", "shipped", "delivered", "returned", "canceled")
] + [
    {"producer": "delivery", "event": f"delivery_{step}", "handler": f"on_delivery_{step}", "reads": _VIEW}
    for step in ("created", "shipped", "delivered", "canceled")
] + [
    # The loan (SPEC §8): due_at from delivered and renewed, overdue from loan_overdue.
    {"producer": "reservation", "event": event, "handler": f"on_{event}",
     "reads": {**_VIEW, "due_at": "string"}}
    for event in ("loan_renewed", "loan_overdue")
]
