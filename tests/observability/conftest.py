"""One system for every observability test module (they only read it, or
put back what they change), instead of one per module."""
import pytest

from helpers import running_system


@pytest.fixture(scope="package")
def system(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("system")) as cluster:
        yield cluster
