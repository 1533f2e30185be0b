"""Focused micro-benchmarks of one hot path each, CPU (``time.process_time``)
per operation through the real code; run them A/B, alternately, in two
trees (docs/performance.md).

    python -m bench.micro log [N]          # one event's log line, from a fresh green thread
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


if __name__ == "__main__":
    if sys.argv[1:2] == ["log"]:
        log_line(*map(int, sys.argv[2:3]))
    else:
        sys.exit(__doc__)
