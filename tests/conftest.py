import os
import sys

import pytest

from helpers import Library, free_port, throwaway_vhost
from ops.run import Cluster


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """Five services as real processes, on a vhost and databases of their own."""
    with throwaway_vhost() as amqp_uri:
        state = tmp_path_factory.mktemp("system")
        port = free_port()
        cluster = Cluster(state_dir=str(state), python=sys.executable, env={
            "AMQP_URI": amqp_uri,
            "GATEWAY_ADDRESS": f"127.0.0.1:{port}",
            "CANCEL_TIMEOUT": "2",
            "CIRCUIT_RESET_TIMEOUT": "3",
        })
        cluster.amqp_uri = amqp_uri
        try:
            cluster.up(timeout=60)
            yield cluster
        finally:
            cluster.down()


@pytest.fixture(scope="module")
def library(system):
    return Library(system.gateway_url)
