"""Publishing events to the broker in batches, with one confirm round trip per batch.

A ``ConfirmedPublisher`` keeps one AMQP connection and one channel in
confirm mode per process. ``publish_batch`` sends every message of a batch,
then waits once for the broker's acks of all of them: under load a batch is
many messages for one wait; at low load it is one message, as before. It
returns only when every message is confirmed (``persistent`` ones written by
the broker), and raises otherwise, so whoever marks outbox rows sent marks
nothing the broker has not taken.

Messages are sent as Nameko's ``EventDispatcher`` sends them (JSON, the
event type as routing key, ``nameko.correlation_id`` header), to the
producer's topic exchange ``<service>.events``, declared once per connection.
"""
import logging
import threading

import amqp
from kombu import Connection

from common.consumer import BROKER_ERRORS

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT = 10.0  # seconds to wait for a batch's acks before giving the connection up
CONNECT_TIMEOUT = 5.0


class NotConfirmed(Exception):
    """The broker refused (nacked) a message of the batch, or never confirmed it."""


class Message:
    """One event to publish: ``body`` is its JSON text, as stored in the outbox."""

    __slots__ = ("exchange", "routing_key", "body", "correlation_id", "persistent")

    def __init__(self, exchange, routing_key, body, correlation_id="", persistent=True):
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.correlation_id = correlation_id
        self.persistent = persistent


class ConfirmedPublisher:
    """One connection and confirm-mode channel; ``publish_batch`` is safe to
    call from several (green) threads: batches take turns on the channel."""

    def __init__(self, amqp_uri):
        self.amqp_uri = amqp_uri
        self._turn = threading.Lock()  # green under `nameko run` (eventlet monkey-patches it)
        self._connection = None
        self._channel = None
        self._declared = set()
        self._sent = 0  # delivery tags given on this channel
        self._unconfirmed = set()  # tags sent and not acked yet
        self._nacked = False

    def publish_batch(self, messages):
        """Publish ``messages`` and wait for the broker to confirm every one.
        A broken connection is replaced and the batch tried once more on the
        new one; then the error is raised (nothing is confirmed)."""
        if not messages:
            return
        with self._turn:
            try:
                self._publish(messages)
            except (NotConfirmed, *BROKER_ERRORS) as error:
                self._reset()
                log.info("publish retried on a new connection: %s", error)
                try:
                    self._publish(messages)
                except BaseException:
                    self._reset()
                    raise
            except BaseException:
                self._reset()
                raise

    def close(self):
        with self._turn:
            self._reset()

    # -- the channel --------------------------------------------------------

    def _publish(self, messages):
        channel = self._ready()
        for message in messages:
            if message.exchange not in self._declared:
                channel.exchange_declare(message.exchange, "topic", durable=True, auto_delete=False)
                self._declared.add(message.exchange)
            channel.basic_publish(amqp.Message(
                message.body, content_type="application/json", content_encoding="utf-8",
                delivery_mode=2 if message.persistent else 1,
                application_headers={"nameko.correlation_id": message.correlation_id or ""}),
                exchange=message.exchange, routing_key=message.routing_key)
            self._sent += 1
            self._unconfirmed.add(self._sent)
        while self._unconfirmed and not self._nacked:
            self._connection.drain_events(timeout=CONFIRM_TIMEOUT)
        if self._nacked:
            raise NotConfirmed("the broker refused a message")

    def _ready(self):
        if self._channel is not None:
            return self._channel
        connection = Connection(self.amqp_uri, heartbeat=0, connect_timeout=CONNECT_TIMEOUT)
        # AMQP_URI may list a cluster's nodes ("a;b;c"): each retry tries the next.
        connection.ensure_connection(max_retries=len(self.amqp_uri.split(";")), interval_start=0.1,
                                     interval_step=0.5, interval_max=1)
        channel = connection.channel()
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        self._connection, self._channel = connection, channel
        self._sent = 0
        self._unconfirmed = set()
        self._nacked = False
        self._declared = set()
        return channel

    def _on_ack(self, delivery_tag, multiple):
        if multiple:  # this tag and every one before it
            self._unconfirmed = {tag for tag in self._unconfirmed if tag > delivery_tag}
        else:
            self._unconfirmed.discard(delivery_tag)

    def _on_nack(self, delivery_tag, multiple):
        self._nacked = True

    def _reset(self):
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            try:
                connection.release()
            except Exception:  # already broken: nothing left to close
                pass
