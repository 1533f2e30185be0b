import concurrent.futures

import pytest

from ops.run import SERVICES


@pytest.fixture(scope="module", autouse=True)
def quick_teardown(system):
    """Stop the module's five services at once, not one after the other:
    each takes seconds to stop gracefully, and these tests start many systems."""
    yield
    with concurrent.futures.ThreadPoolExecutor(len(SERVICES)) as pool:
        list(pool.map(system.stop, SERVICES))
