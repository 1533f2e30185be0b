"""Real PostgreSQL and Redis servers for the storage tests, when reachable.

PostgreSQL at ``BOOKRENTAL_TEST_PG`` (default ``postgresql+psycopg2://postgres@127.0.0.1:5432/postgres``,
a superuser, to create and drop throwaway databases) and Redis at
``BOOKRENTAL_TEST_REDIS`` (default ``redis://127.0.0.1:6379/0``). A test that
needs one that does not answer is skipped, not failed. Nothing is shared with
anyone else on the servers: every database is created for the test and
dropped after it, every Redis key carries a prefix of its own and only those
keys are deleted (never FLUSHDB/FLUSHALL).
"""
import contextlib
import functools
import os
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from helpers import running_system  # noqa: F401  (re-exported: the storage tests' systems are the e2e ones)

PG_ADMIN = os.environ.get("BOOKRENTAL_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("BOOKRENTAL_TEST_REDIS", "redis://127.0.0.1:6379/0")


@functools.lru_cache(maxsize=None)
def postgres_available():
    try:
        engine = create_engine(PG_ADMIN, connect_args={"connect_timeout": 2})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


@functools.lru_cache(maxsize=None)
def redis_available():
    try:
        import redis

        client = redis.Redis.from_url(REDIS, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


def require_postgres():
    if not postgres_available():
        pytest.skip(f"no PostgreSQL at {make_url(PG_ADMIN).render_as_string(hide_password=True)}")


def require_redis():
    if not redis_available():
        pytest.skip(f"no Redis at {REDIS}")


@contextlib.contextmanager
def throwaway_databases(*names):
    """{name: URI} of fresh PostgreSQL databases, dropped afterwards."""
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    run = uuid.uuid4().hex[:8]
    created = {}
    try:
        with admin.connect() as connection:
            for name in names:
                database = f"bookrental_{name}_{run}"
                connection.execute(text(f'CREATE DATABASE "{database}"'))
                created[name] = make_url(PG_ADMIN).set(database=database).render_as_string(hide_password=False)
        yield created
    finally:
        with admin.connect() as connection:
            for uri in created.values():
                connection.execute(text(f'DROP DATABASE IF EXISTS "{make_url(uri).database}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def redis_prefix():
    """A Redis URI with a key prefix of its own; its keys are deleted after."""
    import redis

    prefix = f"bookrental-test-{uuid.uuid4().hex[:8]}"
    separator = "&" if "?" in REDIS else "?"
    try:
        yield f"{REDIS}{separator}prefix={prefix}", prefix
    finally:
        client = redis.Redis.from_url(REDIS)
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
        client.close()
