"""Nameko RPC with a deadline, on both sides of the call.

A call to a stopped service does not hang: the caller gives up after its
timeout and raises ``Unavailable``, and the request itself expires in the
broker at the same moment (a per-message TTL), so a service that comes back
later never acts on a request whose caller has already been told "nothing
changed". A request that reached a busy service after its deadline is
dropped there for the same reason.
"""
import logging
import time

import eventlet
import eventlet.event
import pybreaker
from nameko.amqp.publish import Publisher
from nameko.constants import (AMQP_SSL_CONFIG_KEY, AMQP_URI_CONFIG_KEY, DEFAULT_SERIALIZER, LOGIN_METHOD_CONFIG_KEY,
                              NON_PERSISTENT, SERIALIZER_CONFIG_KEY)
from nameko.exceptions import RemoteError, UnknownService
from nameko.rpc import MethodProxy, ReplyListener, Responder, Rpc, RpcConsumer, RpcProxy, get_rpc_exchange

from common import errors, queues
from common.consumer import BROKER_ERRORS, ConnectionWatcher, SettlingQueueConsumer

log = logging.getLogger(__name__)

DEADLINE = "deadline"  # context-data key, sent as the `nameko.deadline` header


class ReplyPublisher(Publisher):
    """An RPC answer, published transient and without waiting for the
    broker's confirm (Nameko's ``Responder`` does both: a tenth of the
    reservation service's samples; docs/performance.md).

    What the caller can lose: an answer in flight when the broker dies.
    A caller waits ``RPC_TIMEOUT`` (5 s) for it; a persistent answer would
    still reach it only if the broker restarted, and the caller reconnected,
    within that time. A confirm would catch the broker dying between our
    write and its enqueueing of the answer, leaving the request
    unacknowledged, to be run again after the caller has given up. Either
    way the caller is told "unavailable", as today, and a retry is safe
    (``Idempotency-Key``, or the call is a read). A publish that fails
    outright still raises, and the request is left unacknowledged as before
    (``DeadlineRpc``)."""

    use_confirms = False
    delivery_mode = NON_PERSISTENT


class ReplyResponder(Responder):
    publisher_cls = ReplyPublisher


class TypedRpcConsumer(RpcConsumer):
    """Nameko's consumer of the service's RPC queue, declaring the queue as
    ``QUEUE_TYPE`` says (a quorum queue in a cluster; common/queues.py), and
    answering with a ``ReplyPublisher``."""

    queue_consumer = SettlingQueueConsumer()

    def setup(self):
        super().setup()
        self.queue.queue_arguments = {**(self.queue.queue_arguments or {}), **queues.durable(self.container.config)}

    def handle_result(self, message, result, exc_info):
        # Nameko's RpcConsumer.handle_result, with our responder.
        config = self.container.config
        responder = ReplyResponder(
            config[AMQP_URI_CONFIG_KEY], get_rpc_exchange(config),
            config.get(SERIALIZER_CONFIG_KEY, DEFAULT_SERIALIZER), message,
            ssl=config.get(AMQP_SSL_CONFIG_KEY), login_method=config.get(LOGIN_METHOD_CONFIG_KEY))
        result, exc_info = responder.send_response(result, exc_info)
        self.queue_consumer.ack_message(message)
        return result, exc_info


class ReplyQueueLost(Exception):
    """The queue a call's answer was to arrive on died with its connection."""


class TypedReplyListener(ConnectionWatcher, ReplyListener):
    """Nameko's listener for the answers to this service's calls. In a
    cluster its queue is exclusive (transient, deleted with its connection)
    rather than Nameko's durable one, which lives on one node: when that node
    goes, the listener declares its queue again on the node it moves to
    (a durable queue's name stays taken by a node that is down).

    An answer sent to an exclusive queue that died is dropped by the broker
    (nothing is bound to its routing key any more): the calls waiting on it
    would wait their whole deadline for nothing. So when the connection is
    lost they fail at once (``ReplyQueueLost``, which the proxy turns into
    ``Unavailable``: 503, safe to retry), and a call made before the queue
    is declared again waits for it (within its own deadline) before it
    sends its request, so that its answer has somewhere to go. On one broker
    the queue is durable and outlives a dropped connection: an answer
    waits there for the listener to come back, and nothing changes."""

    queue_consumer = SettlingQueueConsumer()
    _redeclared = None  # an Event while the reply queue is gone

    def setup(self):
        super().setup()
        self.queue = queues.reply(self.queue, self.container.config)

    def connection_lost(self, error):
        if not self.queue.exclusive:
            return
        if self._redeclared is None:
            self._redeclared = eventlet.event.Event()
        pending, self._reply_events = self._reply_events, {}
        if pending:
            log.warning("%d call(s) failed: their reply queue died with its connection (%s: %s)",
                        len(pending), type(error).__name__, error)
        for reply_event in pending.values():
            reply_event.send_exception(ReplyQueueLost(
                f"the connection to the broker was lost ({type(error).__name__})"))

    def consuming(self):
        redeclared, self._redeclared = self._redeclared, None
        if redeclared is not None:
            redeclared.send()

    def get_reply_event(self, correlation_id):
        if self._redeclared is not None:
            self._redeclared.wait()  # the caller's deadline (eventlet.Timeout) bounds it
        return super().get_reply_event(correlation_id)


class DeadlineRpc(Rpc):
    """The ``@rpc`` entrypoint, refusing requests whose caller has given up."""

    rpc_consumer = TypedRpcConsumer()

    def handle_message(self, body, message):
        deadline = message.headers.get(f"nameko.{DEADLINE}")
        if deadline and time.time() > float(deadline):
            log.warning("dropped %s call: its caller gave up", self.method_name,
                        extra={"correlation_id": message.headers.get("nameko.correlation_id") or ""})
            self.rpc_consumer.queue_consumer.ack_message(message)
            return
        super().handle_message(body, message)

    def handle_result(self, message, worker_ctx, result, exc_info):
        try:
            return super().handle_result(message, worker_ctx, result, exc_info)
        except BROKER_ERRORS as error:
            # The broker went away before the answer could be sent. Raising
            # here would kill the whole service; instead the caller times out
            # ("unavailable"), and the request, never acknowledged, comes
            # back once we reconnect, unless its deadline has passed by then.
            log.warning("could not answer %s: %s", self.method_name, error)
            return result, exc_info


def rpc(method):
    """``@rpc``: the business errors travel to the caller without a stack
    trace in this service's log."""
    return DeadlineRpc.decorator(expected_exceptions=errors.EXPECTED)(method)


_ERRORS = {cls.__name__: cls for cls in errors.EXPECTED}


def _not_a_failure(error):
    """What the breaker does not count: answers (business errors), and an
    answer lost with our own connection to the broker (ReplyQueueLost)."""
    return not isinstance(error, errors.Unavailable) or error.details.get("reply") == "lost"


class _LogStateChanges(pybreaker.CircuitBreakerListener):
    def state_change(self, breaker, old_state, new_state):
        log.warning("circuit to %s is %s (was %s)", breaker.name, new_state.name, old_state.name,
                    extra={"circuit": breaker.name, "state": new_state.name})


class ServiceRpc(RpcProxy):
    """An RPC proxy to ``target_service`` whose calls time out.

    The timeout is the config key ``timeout_key`` (seconds). With
    ``breaker=True`` the calls go through a circuit breaker (pybreaker): after
    ``CIRCUIT_FAIL_MAX`` calls in a row that found the service unavailable it
    opens and fails at once, for ``CIRCUIT_RESET_TIMEOUT`` seconds, then lets
    one call through to see whether the service is back. Business errors
    (not found, not allowed) are answers, not failures: they do not count;
    nor does a call whose reply queue was lost with our connection."""

    rpc_reply_listener = TypedReplyListener()

    def __init__(self, target_service, timeout_key="RPC_TIMEOUT", default=5.0, breaker=False):
        super().__init__(target_service)
        self.timeout_key = timeout_key
        self.default = default
        self.with_breaker = breaker
        self.breaker = None

    def setup(self):
        super().setup()
        config = self.container.config
        self.timeout = float(config.get(self.timeout_key) or self.default)
        if self.with_breaker:
            self.breaker = pybreaker.CircuitBreaker(
                fail_max=int(config.get("CIRCUIT_FAIL_MAX") or 3),
                reset_timeout=float(config.get("CIRCUIT_RESET_TIMEOUT") or 10),
                exclude=[_not_a_failure],
                listeners=[_LogStateChanges()],
                name=self.target_service)

    def get_dependency(self, worker_ctx):
        return _TimedServiceProxy(worker_ctx, self.target_service, self.rpc_reply_listener, self.timeout,
                                  self.breaker)


def circuits(holders):
    """{target service: {"state", "failures"}} of the circuit breakers among
    ``holders``: a container's dependency providers (the metrics) or a
    worker's injected proxies (``health``), which share their provider's
    breaker. An open circuit is visible before anyone trips on it."""
    return {holder.target_service: {"state": holder.breaker.current_state, "failures": holder.breaker.fail_counter}
            for holder in holders
            if isinstance(holder, (ServiceRpc, _TimedServiceProxy)) and holder.breaker is not None}


class _TimedServiceProxy:
    def __init__(self, worker_ctx, service_name, reply_listener, timeout, breaker, deadline=None):
        self._worker_ctx = worker_ctx
        self._service_name = service_name
        self._reply_listener = reply_listener
        self.timeout = timeout
        self.breaker = breaker
        self.deadline = deadline

    @property
    def target_service(self):
        return self._service_name

    def with_timeout(self, seconds):
        """The same proxy, giving up sooner (for checks that must stay quick)."""
        return _TimedServiceProxy(self._worker_ctx, self._service_name, self._reply_listener, seconds, None)

    def until(self, deadline):
        """The same proxy (breaker included), whose calls give up, and
        expire in the broker and in the callee, by ``deadline`` (Unix time)
        at the latest: what a caller that wrote the deadline down needs."""
        return _TimedServiceProxy(self._worker_ctx, self._service_name, self._reply_listener, self.timeout,
                                  self.breaker, deadline)

    def __getattr__(self, method_name):
        def call(*args, **kwargs):
            if self.breaker is None:
                return self._call(method_name, args, kwargs)
            try:
                # Not breaker.call(): it holds the breaker's lock for the whole
                # RPC, so concurrent calls would wait for each other. Green
                # threads only switch at I/O, so the state's bookkeeping needs
                # no lock; the half-open trial still takes it, as it should.
                return self.breaker.state.call(self._call, method_name, args, kwargs)
            except pybreaker.CircuitBreakerError:
                raise errors.Unavailable(f"{self._service_name} is failing; not trying for now",
                                         service=self._service_name, circuit="open") from None

        return call

    def _call(self, method_name, args, kwargs):
        context = self._worker_ctx.context_data
        inherited = context.get(DEADLINE)
        # Never outlive our own caller: once it has answered "unavailable,
        # nothing changed", nothing done on its behalf may change anything.
        deadline = time.time() + self.timeout
        if inherited is not None:
            deadline = min(deadline, float(inherited))
        if self.deadline is not None:
            deadline = min(deadline, self.deadline)
        timeout = deadline - time.time()
        if timeout <= 0:
            raise errors.Unavailable("the caller has already given up", service=self._service_name)
        context[DEADLINE] = deadline
        try:
            proxy = MethodProxy(
                self._worker_ctx, self._service_name, method_name, self._reply_listener,
                expiration=timeout)
            with eventlet.Timeout(timeout):
                return proxy.call_async(*args, **kwargs).result()
        except eventlet.Timeout:
            raise errors.Unavailable(
                f"{self._service_name} did not answer within {timeout:.2g}s",
                service=self._service_name) from None
        except ReplyQueueLost as error:
            # Not the service failing (the breaker does not count it): our
            # connection is, and another node takes over at once.
            raise errors.Unavailable(f"no answer from {self._service_name}: {error}", service=self._service_name,
                                     reply="lost") from None
        except UnknownService:
            raise errors.Unavailable(f"{self._service_name} is not running", service=self._service_name) from None
        except BROKER_ERRORS as error:
            # The request could not be sent (the broker is down or restarting):
            # the caller hears "unavailable, nothing changed", not a crash.
            raise errors.Unavailable(f"the message broker cannot be reached ({type(error).__name__})",
                                     service=self._service_name) from None
        except RemoteError as error:
            known = _ERRORS.get(error.exc_type)
            if known is None:
                raise
            raise known(str(error.value)) from None
        finally:
            if inherited is None:
                context.pop(DEADLINE, None)
            else:
                context[DEADLINE] = inherited
