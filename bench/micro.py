"""Focused micro-benchmarks of one hot path each, CPU (``time.process_time``)
per operation through the real code; run them A/B, alternately, in two
trees (docs/performance.md).

    python -m bench.micro log [N]          # one event's log line, from a fresh green thread
    python -m bench.micro reply AMQP_URI [N]  # one RPC reply: Nameko's confirmed one vs ours
"""
import eventlet

eventlet.monkey_patch()

import logging  # noqa: E402
import logging.config  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

import yaml  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log_line(n=20000):
    """CPU per ``applied`` line, each logged from a new green thread as a
    Nameko worker does, through config.yml's LOGGING into /dev/null; the
    cost of spawning the green threads is measured alone and subtracted."""
    from common import correlation
    with open(os.path.join(ROOT, "config.yml")) as handle:
        config = yaml.safe_load(handle.read().replace("${LOG_LEVEL:INFO}", "INFO"))
    logging.config.dictConfig(config["LOGGING"])
    logging.getLogger().handlers[0].setStream(open(os.devnull, "w"))
    log = logging.getLogger("common.handlers")
    pool = eventlet.GreenPool(10)

    def worker(logs):
        correlation.bind(str(uuid.uuid4()))
        if logs:
            log.info("applied %s", "reservation_requested", extra={
                "event_id": "a8f5f167-f44f-4964-8f1e-2b7c0e5d9a10", "reservation_id": 12345})
        correlation.bind(None)

    def run(logs):
        started = time.process_time()
        for _ in range(n):
            pool.spawn(worker, logs)
        pool.waitall()
        return time.process_time() - started

    for _ in range(3):
        bare, logged = run(False), run(True)
        print(f"log line: {(logged - bare) / n * 1e6:.1f} µs CPU")


def reply(amqp_uri, n=2000):
    """CPU and wall time per RPC reply, published the way Nameko's
    ``Responder`` does (persistent, confirmed) and the way ours does."""
    from kombu import Connection, Exchange, Queue
    from nameko.amqp.publish import Publisher
    from common.rpc import ReplyPublisher
    name = f"bench-micro-reply-{uuid.uuid4().hex[:8]}"
    payload = {"result": {"reservation_id": 123, "status": "requested", "title_id": 4}, "error": None}
    with Connection(amqp_uri) as connection:
        queue = Queue(name, exchange=Exchange("", type="direct"), routing_key=name,
                      queue_arguments={"x-expires": 60000})(connection.channel())
        queue.declare()
        try:
            for _ in range(2):
                for label, publisher_cls in (("nameko (persistent, confirmed)", Publisher),
                                             ("ours (transient, unconfirmed)", ReplyPublisher)):
                    cpu, wall = time.process_time(), time.time()
                    for i in range(n):
                        publisher_cls(amqp_uri).publish(payload, serializer="json", exchange="",
                                                        routing_key=name, correlation_id=str(i))
                    print(f"reply, {label}: {(time.process_time() - cpu) / n * 1e6:.0f} µs CPU, "
                          f"{(time.time() - wall) / n * 1e6:.0f} µs wall")
        finally:
            queue.delete()


if __name__ == "__main__":
    if sys.argv[1:2] == ["log"]:
        log_line(*map(int, sys.argv[2:3]))
    elif sys.argv[1:2] == ["reply"] and len(sys.argv) > 2:
        reply(sys.argv[2], *map(int, sys.argv[3:4]))
    else:
        sys.exit(__doc__)
