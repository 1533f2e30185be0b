import pytest

from helpers import Library, running_system


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """Five services as real processes, on a vhost and databases of their own."""
    with running_system(tmp_path_factory.mktemp("system")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def library(system):
    return Library(system.gateway_url)
