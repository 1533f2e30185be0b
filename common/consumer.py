"""The queue consumer every entrypoint of a service shares: Nameko's, except
that settling a message (ack, requeue) never raises a broker error.

Nameko's ``QueueConsumer.ack_message`` only skips the ack when the connection
is known to be gone, and swallows ``amqp``'s ``ConnectionError``; a socket
that broke a moment before (the broker restarting: ``BrokenPipeError``,
``ConnectionResetError``) raises from the consumer's green thread, and an
entrypoint's thread that exits with an error kills the whole container: the
gateway answered the requests in flight with 500 (``ContainerBeingKilled``)
and went down with them (``tests/faults/test_broker_restart.py``). There is
nothing to do about such a message: the broker takes back every unacked
message of a connection that dies and delivers it again once we reconnect,
which the entrypoints are built for (idempotent handlers, RPC deadlines).

It also tells the extensions registered with it (``ConnectionWatcher``)
when its connection is lost and when it consumes again: the RPC reply
listener (common/rpc.py) fails at once the calls whose answers cannot arrive
any more. Kombu's ``ConsumerMixin`` has no hook for the loss itself
(``on_connection_error`` is only called for failed attempts to connect, and
a failover to another node may need none): it is the consuming context
exiting with an error, after which kombu closes the connection and connects
again.

``BROKER_ERRORS`` is what "the broker went away" looks like from kombu and
py-amqp, named once for every module that has to tell it from a bug.
"""
import logging
from contextlib import contextmanager

import amqp.exceptions
from kombu.exceptions import OperationalError
from nameko.messaging import QueueConsumer

log = logging.getLogger(__name__)

BROKER_ERRORS = (OperationalError, amqp.exceptions.ConnectionError, OSError)


class ConnectionWatcher:
    """An extension registered with a ``SettlingQueueConsumer`` that wants to
    know about its connection (both run in the consumer's green thread)."""

    def connection_lost(self, error):
        """The connection is gone, and with it every exclusive queue it declared."""

    def consuming(self):
        """(Re)connected: the queues are declared again and consumed."""


class SettlingQueueConsumer(QueueConsumer):
    @contextmanager
    def consumer_context(self, **kwargs):
        try:
            with super().consumer_context(**kwargs) as context:
                yield context
        except Exception as error:
            # ConsumerMixin.run logs it, closes the connection and connects again.
            for provider in self._watchers():
                provider.connection_lost(error)
            raise

    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        super().on_consume_ready(connection, channel, consumers, **kwargs)
        for provider in self._watchers():
            provider.consuming()

    def _watchers(self):
        return [provider for provider in list(self._providers) if isinstance(provider, ConnectionWatcher)]

    def ack_message(self, message):
        self._settle(super().ack_message, message)

    def requeue_message(self, message):
        self._settle(super().requeue_message, message)

    @staticmethod
    def _settle(settle, message):
        try:
            settle(message)
        except BROKER_ERRORS as error:
            log.warning("left a message unsettled, the broker is away (it comes again): %s: %s",
                        type(error).__name__, error)
