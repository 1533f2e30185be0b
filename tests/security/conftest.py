"""Fixtures of the security tests (see security_support.py).

Most of these tests need only the gateway: authentication, roles, rate
limits and input checks all answer before any backend is called. The ones
that reach objects (someone else's reservation, a stored title) or fuzz the
whole API use the full system.
"""
import pytest

from helpers import Library
from security_support import BACKENDS, LOOSE_LIMITS, running


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """The gateway alone, development profile, limits off."""
    with running(tmp_path_factory, **LOOSE_LIMITS) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def full_system(tmp_path_factory):
    """All six services, limits off."""
    with running(tmp_path_factory, BACKENDS, **LOOSE_LIMITS) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def people(full_system):
    """librarian, alice, bob, courier and anonymous, signed in to ``full_system``."""
    return Library(full_system.gateway_url)
