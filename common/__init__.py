"""What every Book Rental service needs, written once.

- ``config``: config.yml as the services read it, and the list of services;
- ``lifecycle``: a reservation's statuses and a delivery's, named once;
- ``events``: the event envelope and one schema per event type;
- ``errors``: the business errors every layer agrees on;
- ``correlation``: the id that follows a request through HTTP, RPC and events;
- ``store``: storage with a transactional outbox and a processed-event log;
- ``handlers``: the event-handler entrypoint (shared queue, idempotent, validated);
- ``rpc``: RPC with a deadline, so a stopped service means a timeout, not a hang;
- ``logs``: one JSON line per log event, carrying the correlation id.

Everything here except ``lifecycle``, ``events`` and ``errors`` is Nameko
plumbing; the services' ``domain.py`` modules import only those plain-Python
modules. Nothing here imports a service, ``ops``, ``bench`` or the tests
(``tests/unit/test_imports.py``).
"""
