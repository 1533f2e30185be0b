"""A RabbitMQ node of a test's own, for the tests that must stop a broker.

The machine's RabbitMQ (127.0.0.1:5672) is shared by every test run on it;
a test that restarts a broker must never restart that one. ``RabbitNode``
starts another node beside it, from the same installation: its own node
name, AMQP and distribution ports (free ones), database, logs, config,
plugins (none: no management listener to collide with the shared one's)
and Erlang cookie (its own HOME), listening on 127.0.0.1 only. Nothing is
read from /etc/rabbitmq.

    with private_node(tmp_path) as node:
        node.amqp_uri            # pyamqp://guest:guest@127.0.0.1:<port>//
        node.restart(down_for=2) # stop_app, wait, start_app: the outage
    # stopped, and its directory removed

``rabbitmqctl`` runs against the node with its cookie. The node is
``ops.brokers.Node``, what ``make up CLUSTER=3`` runs three of
(``ops.brokers.Brokers``: a cluster, as tests/faults/test_cluster.py uses it).
"""

import contextlib
import shutil

from ops.brokers import Node as RabbitNode
from ops.brokers import available  # noqa: F401  (the tests' way to ask)


@contextlib.contextmanager
def private_node(base_dir, **kwargs):
    """A started ``RabbitNode``; stopped and its directory removed afterwards."""
    node = RabbitNode(base_dir, **kwargs)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        shutil.rmtree(node.base_dir, ignore_errors=True)
