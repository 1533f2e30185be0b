"""The queues' type (common/queues.py), the brokers' failover list and the
log lines that name it (ops/clustered.py, common/logs.py): plain Python."""
import json
import logging

import pytest
from kombu import Queue

from common import queues
from common.logs import JsonFormatter
from ops import clustered
from ops.brokers import Brokers


def test_one_broker_declares_what_it_always_did():
    for config in ({}, {"QUEUE_TYPE": "classic"}, {"QUEUE_TYPE": ""}):
        assert queues.durable(config) == {} and queues.handler(config) == {}
        reply = Queue("rpc.reply-x", routing_key="x", queue_arguments={"x-expires": 300000})
        assert queues.reply(reply, config) is reply


def test_a_cluster_declares_quorum_queues_and_exclusive_reply_queues():
    config = {"QUEUE_TYPE": "Quorum"}
    assert queues.durable(config) == {"x-queue-type": "quorum"}
    handler = queues.handler(config)
    assert handler["x-queue-type"] == "quorum" and handler["x-delivery-limit"] == queues.DELIVERY_LIMIT
    assert handler["x-dead-letter-strategy"] == "at-least-once"
    reply = queues.reply(Queue("rpc.reply-x", routing_key="x", queue_arguments={"x-expires": 300000}), config)
    assert (reply.name, reply.routing_key, reply.durable, reply.exclusive, reply.auto_delete) == \
        ("rpc.reply-x", "x", False, True, True)


def test_an_unknown_queue_type_is_refused():
    with pytest.raises(ValueError):
        queues.durable({"QUEUE_TYPE": "mirrored"})


def test_each_process_starts_with_another_node(tmp_path):
    brokers = Brokers(tmp_path, 3)
    assert [node.port for node in brokers.nodes] == [5701, 5702, 5703]
    assert [node.management_port for node in brokers.nodes] == [15701, 15702, 15703]
    assert [node.name for node in brokers.nodes] == [f"bookrental-{n}@localhost" for n in (1, 2, 3)]
    uris = brokers.amqp_uris
    assert clustered.rotated(uris, 0) == ";".join(uris)
    assert clustered.rotated(uris, 4).split(";") == [uris[1], uris[2], uris[0]]
    again = Brokers.described(tmp_path, brokers.describe())
    assert again.amqp_uris == uris and again.nodes[2].name == brokers.nodes[2].name


def test_no_broker_password_reaches_a_log_line():
    record = logging.LogRecord("nameko", logging.WARNING, "", 0, "Error connecting to broker at %s", (
        "pyamqp://guest:********@h:5701//;pyamqp://bob:s3cret@h:5702//;amqp://bob:x@h:5703//",), None)
    line = json.loads(JsonFormatter().format(record))
    assert "s3cret" not in line["msg"] and ":x@" not in line["msg"]
    assert "bob:********@h:5702" in line["msg"]


def test_a_database_per_service_on_the_server_named():
    uris = clustered.database_uris("bookrental_x_", host="db.example:6543", user="app", password="pw",
                                   create=False)
    assert set(uris) == set(clustered.DATABASES)
    assert uris["product"] == "postgresql+psycopg2://app:pw@db.example:6543/bookrental_x_product"
