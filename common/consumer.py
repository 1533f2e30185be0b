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

``BROKER_ERRORS`` is what "the broker went away" looks like from kombu and
py-amqp, named once for every module that has to tell it from a bug.
"""
import logging

import amqp.exceptions
from kombu.exceptions import OperationalError
from nameko.messaging import QueueConsumer

log = logging.getLogger(__name__)

BROKER_ERRORS = (OperationalError, amqp.exceptions.ConnectionError, OSError)


class SettlingQueueConsumer(QueueConsumer):
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
