"""One system for every observability test module (they only read it, or
put back what they change), instead of one per module."""
import sys

import pytest

from helpers import free_port, throwaway_vhost
from ops.run import Cluster


@pytest.fixture(scope="package")
def system(tmp_path_factory):
    with throwaway_vhost() as amqp_uri:
        port = free_port()
        cluster = Cluster(state_dir=str(tmp_path_factory.mktemp("system")), python=sys.executable, env={
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
