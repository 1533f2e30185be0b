"""Health probe for a backend service: ``python -m common.probe SERVICE``.

Backend services speak only AMQP, so an orchestrator cannot ``GET`` their
health. This calls the service's ``health`` RPC (``common.service``), which
answers only while the service is consuming from the broker *and* its
database answers, and turns the outcome into an exit status:

- 0: prints the service's answer as one line of JSON;
- 1: prints why not, on one line (broker unreachable, no replica answered
  in time, the service's database is down, bad config...).

The config is read exactly as ``nameko run --config`` reads it: Nameko's own
YAML loader with its ``${NAME:default}`` environment-variable constructor.

The request carries a deadline (``common.rpc``) and expires in the broker
when the probe gives up, so a service that comes back later never works
through a pile of stale probes. The whole run is also bounded by a hard
alarm, so a broker that accepts TCP but never speaks cannot hang the probe.

Used by docker-compose healthchecks and Kubernetes exec probes.
"""
import argparse
import json
import logging
import math
import signal
import sys
import time
import uuid
import warnings

from common.config import load_config

EXIT_OK = 0
EXIT_FAIL = 1


class _Deadline(Exception):
    pass


def _temporary_reply_listener():
    from nameko.standalone.rpc import SingleThreadedReplyListener

    class TemporaryReplyListener(SingleThreadedReplyListener):
        """Nameko's standalone reply listener, whose reply queue is an
        exclusive classic queue: it goes when the probe disconnects, instead
        of lingering for Nameko's 5-minute reply-queue expiry, and it is never
        made a (replicated, costly) quorum queue by a vhost whose default
        queue type is quorum. A probe runs every few seconds per replica."""

        def setup(self):
            register = self.queue_consumer.register_provider

            def register_temporary(provider):
                queue = provider.queue
                queue.exclusive = True
                queue.auto_delete = True
                queue.queue_arguments = {**(queue.queue_arguments or {}), "x-queue-type": "classic"}
                register(provider)

            self.queue_consumer.register_provider = register_temporary
            super().setup()

    return TemporaryReplyListener


def check(service, config, timeout):
    """Calls ``service.health()``; returns its answer or raises."""
    from nameko.rpc import ServiceProxy
    from nameko.standalone.rpc import ClusterRpcProxy

    context = {
        "correlation_id": f"probe-{uuid.uuid4()}",
        "deadline": time.time() + timeout,  # see common.rpc.DEADLINE
    }
    cluster = ClusterRpcProxy(config, context_data=context, timeout=timeout,
                              reply_listener_cls=_temporary_reply_listener())
    cluster.start()
    try:
        # ClusterRpcProxy does not pass publish options on; this service proxy
        # shares its worker context and reply queue, and lets the request
        # expire in the broker when we stop waiting for it.
        proxy = ServiceProxy(cluster._worker_ctx, service, cluster._reply_listener,
                             expiration=max(1, math.ceil(timeout)))
        return proxy.health()
    finally:
        cluster.stop()


def describe(error):
    """One line a person can read in ``docker ps`` or ``kubectl describe``."""
    name = type(error).__name__
    text = " ".join(str(error).split())
    if name == "RpcTimeout":
        text = f"no answer within {text}s (service down, busy or not consuming)"
    elif name == "UnknownService":
        text = f"{text} (nothing is consuming its RPC queue)"
    elif name == "RemoteError":
        text = f"the service answered with an error: {text}"
    return f"{name}: {text}" if text else name


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m common.probe",
        description="Exit 0 if SERVICE answers its health RPC (broker and database up), else 1.")
    parser.add_argument("service", help="the Nameko service name, e.g. product")
    parser.add_argument("--config", default="config.yml", help="Nameko config file (default: config.yml)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer (default: 3)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    # The outcome is the one line printed below; the AMQP libraries' own
    # warnings (on stderr, through logging's last resort) would only garble it.
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")  # e.g. eventlet's deprecation notice

    def give_up(_signum, _frame):
        raise _Deadline(f"gave up after {hard_limit}s (broker unreachable or not answering)")

    # Connecting to the broker has its own retries and socket timeouts; this
    # bounds the whole run whatever they are.
    hard_limit = math.ceil(args.timeout) + 2
    signal.signal(signal.SIGALRM, give_up)
    signal.alarm(hard_limit)
    try:
        config = load_config(path=args.config)
        result = check(args.service, config, args.timeout)
    except _Deadline as error:
        print(f"{args.service}: unhealthy: {error}", flush=True)
        return EXIT_FAIL
    except Exception as error:  # any failure at all means "not healthy"
        print(f"{args.service}: unhealthy: {describe(error)}", flush=True)
        return EXIT_FAIL
    finally:
        signal.alarm(0)
    print(json.dumps(result, sort_keys=True, default=str), flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
