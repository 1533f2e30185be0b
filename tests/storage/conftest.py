"""Fixtures for the storage tests: throwaway PostgreSQL databases and Redis
key prefixes on the real servers (see servers.py); skipped when unreachable."""
import contextlib

import pytest

from servers import redis_prefix, require_postgres, require_redis, throwaway_databases


@pytest.fixture
def pg_database():
    """A function: pg_database("name") -> the URI of a throwaway database."""
    require_postgres()
    with contextlib.ExitStack() as stack:
        yield lambda name: stack.enter_context(throwaway_databases(name))[name]


@pytest.fixture
def redis_uri():
    require_redis()
    with redis_prefix() as (uri, _prefix):
        yield uri
