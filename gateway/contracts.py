"""gateway's consumer-driven contract: the events it handles and the fields it reads.

Pure data, no imports: tests/contracts checks it against every producer's schema
(and that gateway/service.py handles exactly these events), and the event docs
list gateway as a consumer from it. Format: see product/contracts.py.

The gateway hears ``mypage_changed`` on every replica (a broadcast handler, one
auto-delete queue per replica) and pushes it to the customer's open pages
(gateway/live.py).
"""
CONSUMES = [
    {"producer": "mypage", "event": "mypage_changed", "handler": "on_mypage_changed", "delivery": "broadcast",
     "reads": {"customer": "string", "reservation_id": "string", "book_id": "integer",
               "status": {"type": "string", "nullable": True},
               "delivery_status": {"type": "string", "nullable": True},
               "occurred_at": "string", "event_id": "string"}},
]
