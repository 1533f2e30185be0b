"""The type of the services' durable queues: ``QUEUE_TYPE`` (config.yml).

- ``classic`` (the default, one broker): queues are declared as they always
  were, with no type argument. A queue's type cannot change once declared
  (the broker answers PRECONDITION_FAILED), so the queues a system already
  has on the machine's broker keep working; and on one node a quorum queue
  only costs more (a Raft log written for nobody to replicate).
- ``quorum`` (``make up CLUSTER=3``, Kubernetes): every durable queue a
  service declares (its RPC queue, each event handler's queue and its
  dead-letter queue) is a quorum queue, said explicitly with
  ``x-queue-type`` rather than left to a node default (RabbitMQ 3.10 has
  none): replicated on three nodes, it survives the loss of any one.

RPC reply queues stay classic: they belong to one process. In a cluster they
are exclusive (deleted with their connection) rather than Nameko's durable
ones, so that a process that moves to another node can declare its reply
queue there again (``reply``). The event log (``events.log``) is a stream,
replicated on every node of a cluster by itself.
"""
from kombu import Queue

QUEUE_TYPE_KEY = "QUEUE_TYPE"
QUORUM = "quorum"

# A quorum queue counts how often each message was delivered and not settled
# (its consumer's connection dropped: a process killed, or a node lost while
# it handled the event). Past this many the message is dead-lettered (parked
# on the handler's .dead queue, as our own retries do after MAX_RETRIES
# failures) instead of coming back forever: a poison message that kills its
# consumer cannot loop. Generous, because a failover also redelivers what was
# in flight; handlers are idempotent, so a redelivery costs nothing.
DELIVERY_LIMIT = 20


def queue_type(config):
    value = str((config or {}).get(QUEUE_TYPE_KEY) or "classic").strip().lower()
    if value not in ("classic", QUORUM):
        raise ValueError(f"{QUEUE_TYPE_KEY} must be classic or quorum, not {value!r}")
    return value


def durable(config):
    """The arguments of a durable queue a service declares (RPC, dead-letter)."""
    return {"x-queue-type": QUORUM} if queue_type(config) == QUORUM else {}


def handler(config):
    """The arguments of an event handler's queue, beside its dead-letter ones:
    a quorum queue with a delivery limit, whose dead-lettering is confirmed
    (at-least-once: a message is never dropped on its way to the .dead queue)."""
    if queue_type(config) != QUORUM:
        return {}
    return {"x-queue-type": QUORUM, "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def reply(queue, config):
    """A service's RPC reply queue, as Nameko made it (one broker) or exclusive (a cluster)."""
    if queue_type(config) != QUORUM:
        return queue
    return Queue(queue.name, exchange=queue.exchange, routing_key=queue.routing_key, durable=False,
                 exclusive=True, auto_delete=True)
