"""make replay's switch on both SQL stores: the rebuilt store takes the old
one's place (kept beside it), the mail outbox is carried over, and history
the old store applied but the log lacks is counted (ops/replay.py)."""
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from common import eventlog, events
from ops import replay
from servers import PG_ADMIN, require_postgres


def _entries():
    book = events.make("book_registered", "c", book_id=1, isbn="9780000000000", title="Dune", author="F", stock=1)
    confirmed = events.make("reservation_confirmed", "c", reservation_id="r1", book_id=1, customer="alice")
    return [eventlog.Entry(0, "product", "book_registered", book, {}),
            eventlog.Entry(1, "reservation", "reservation_confirmed", confirmed, {})]


def _count(uri, table):
    engine = create_engine(uri)
    try:
        with engine.connect() as connection:
            return connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar()
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_uri(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'notification.db'}"
        return
    require_postgres()
    name = f"bookrental_replay_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            for database in (name, f"{name}_replay", f"{name}_before_replay"):
                connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


def test_the_rebuilt_store_takes_the_old_one_s_place(store_uri):
    config = {"AMQP_URI": "memory://", "DB_URIS": {}}
    entries = _entries()
    old = replay.Rebuild("notification", config, store_uri)  # the store as the service left it
    for entry in entries:
        old.apply(entry)
    with old.store.engine.begin() as connection:
        connection.execute(text("INSERT INTO mails (notice_id, recipient, subject, body, sent_at, status, attempts, "
                                "next_attempt_at) VALUES ('n1', 'a@example.org', 's', 'b', 't', 'sent', 1, 0)"))
    old.close()

    target = replay.target_for(store_uri)
    target.prepare()
    rebuilt = replay.Rebuild("notification", config, target.fresh_uri)
    rebuilt.apply(entries[0])
    rebuilt.close()
    base = rebuilt.store.base
    assert replay.missing_history(target, base) == 1  # the log lacks what the old store applied
    rebuilt.apply(entries[1])
    rebuilt.close()
    assert replay.missing_history(target, base) == 0
    assert _count(target.fresh_uri, "notices") == 1 and _count(target.fresh_uri, "mails") == 0
    assert replay.carry_over(target, base, ["mails"]) == 1

    target.switch()
    assert _count(store_uri, "mails") == 1 and _count(store_uri, "notices") == 1
    assert _count(store_uri, "processed_events") == 2
    assert replay.target_for(store_uri).exists()
