"""The parked events: ``make dlq`` lists them, ``make dlq REPLAY=1`` replays them.

An event handler that cannot apply an event (invalid, or still failing after
its retries, see ``common.handlers``) parks it on ``<handler queue>.dead``,
with the reason in the ``x-bookrental-error`` header. Nothing there is ever
retried by itself: an operator looks, fixes the cause, and replays.

- list: every non-empty ``.dead`` queue of the vhost, and each message in it
  (event type, event id, retries, reason). Messages are read and put back,
  not consumed.
- replay (``--replay``): each message is published back to the handler's own
  queue with a fresh retry budget, confirmed by the broker, and only then
  removed from the dead-letter queue: a crash in between replays it twice,
  which the idempotent handlers absorb, and never loses it.

The queues are found with the RabbitMQ management API (the vhost and
credentials of ``AMQP_URI``, port 15672, or ``RABBIT_MANAGEMENT``; after
``make up CLUSTER=n``, the console of a node that answers); the messages are
read and moved over AMQP.
"""
import argparse
import json
import os
import sys
import urllib.parse

import requests
from kombu import Connection, Exchange, Producer, Queue

from common.handlers import ERROR_HEADER, RETRIES_HEADER

SUFFIX = ".dead"
REPLAYED_HEADER = "x-bookrental-replayed"
LIMIT = 10_000  # messages per queue in one run; run again for more


def management_url(amqp_uri):
    if os.environ.get("RABBIT_MANAGEMENT"):
        return os.environ["RABBIT_MANAGEMENT"].rstrip("/")
    amqp_uri = amqp_uri.split(";")[0]  # a cluster's failover list: the first node's credentials
    parts = urllib.parse.urlparse(amqp_uri.replace("pyamqp://", "amqp://", 1))
    user = urllib.parse.unquote(parts.username or "guest")
    password = urllib.parse.unquote(parts.password or "guest")
    return f"http://{user}:{password}@{parts.hostname or '127.0.0.1'}:15672"


def vhost_of(amqp_uri):
    path = urllib.parse.urlparse(amqp_uri.split(";")[0]).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


def dead_queues(amqp_uri):
    """The names of the vhost's dead-letter queues, sorted. (The management
    API's message counts lag by seconds; ``read`` sees the queue as it is.)"""
    vhost = urllib.parse.quote(vhost_of(amqp_uri), safe="")
    answer = requests.get(f"{management_url(amqp_uri)}/api/queues/{vhost}", params={"columns": "name"}, timeout=10)
    answer.raise_for_status()
    return sorted(q["name"] for q in answer.json() if q["name"].endswith(SUFFIX))


def _answering_console(urls):
    """The first of a cluster's management consoles that answers (guest/guest, local nodes)."""
    for url in urls:
        try:
            requests.get(url, timeout=2)
            return url.replace("http://", "http://guest:guest@", 1)
        except requests.RequestException:
            continue
    return urls[0].replace("http://", "http://guest:guest@", 1) if urls else ""


def describe(message):
    """One line: what the event is and why it was parked."""
    headers = message.headers or {}
    try:
        payload = json.loads(message.body)
    except (TypeError, ValueError):
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    reason = headers.get(ERROR_HEADER)
    if reason is None and headers.get("x-death"):  # parked by RabbitMQ itself
        death = headers["x-death"][0]
        reason = f"rejected by the broker ({death.get('reason')})"
    return (f"{payload.get('event_type', '?')} {payload.get('event_id', '?')} "
            f"retries={headers.get(RETRIES_HEADER, 0)} reason: {reason or 'unknown'}")


def read(channel, queue, limit=LIMIT):
    """Up to ``limit`` messages of ``queue``, unacknowledged (so held, not taken)."""
    bound = Queue(queue, no_declare=True).bind(channel)
    messages = []
    while len(messages) < limit:
        message = bound.get(no_ack=False)
        if message is None:
            break
        messages.append(message)
    return messages


def replay(connection, queue, messages):
    """Publish each message back to its handler's queue, then take it off ``queue``."""
    target = queue[:-len(SUFFIX)]
    producer = Producer(connection.channel(), exchange=Exchange(""))
    for message in messages:
        headers = {k: v for k, v in (message.headers or {}).items()
                   if k not in (RETRIES_HEADER, ERROR_HEADER, "x-death", "x-first-death-exchange",
                                "x-first-death-queue", "x-first-death-reason")}
        headers[REPLAYED_HEADER] = int((message.headers or {}).get(REPLAYED_HEADER, 0)) + 1
        producer.publish(message.body, routing_key=target, headers=headers, delivery_mode=2,
                         content_type=message.content_type or "application/json",
                         content_encoding=message.content_encoding or "utf-8", retry=True)
        message.ack()
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ops.dlq", description=__doc__.splitlines()[0])
    parser.add_argument("--replay", action="store_true", help="move the parked messages back to their queues")
    parser.add_argument("--queue", help="only this dead-letter queue (its name, with or without .dead)")
    parser.add_argument("--amqp-uri", help="default: AMQP_URI from config.yml and the environment")
    args = parser.parse_args(argv)
    if args.amqp_uri:
        amqp_uri = args.amqp_uri
    else:
        from ops import clustered
        from ops.run import ROOT, load_config

        settings = clustered.load(os.environ.get("BOOKRENTAL_VAR") or os.path.join(ROOT, "var"))
        amqp_uri = settings["env"]["AMQP_URI"] if settings else load_config({})["AMQP_URI"]
        if settings and not os.environ.get("RABBIT_MANAGEMENT"):
            os.environ["RABBIT_MANAGEMENT"] = _answering_console(settings["management_urls"])
    wanted = None
    if args.queue:
        wanted = args.queue if args.queue.endswith(SUFFIX) else args.queue + SUFFIX

    total = 0
    # Publisher confirms: a replayed message leaves the dead-letter queue only
    # once the broker has taken it back.
    with Connection(amqp_uri, connect_timeout=5, transport_options={"confirm_publish": True}) as connection:
        for queue in dead_queues(amqp_uri):
            if wanted and queue != wanted:
                continue
            channel = connection.channel()
            messages = read(channel, queue)
            if not messages:
                channel.close()
                continue
            total += len(messages)
            print(f"{queue}: {len(messages)} parked")
            for number, message in enumerate(messages, 1):
                print(f"  {number}. {describe(message)}")
            if args.replay:
                target = replay(connection, queue, messages)
                print(f"  -> replayed {len(messages)} to {target}")
            channel.close()  # what was read and not replayed goes back, as it was
    if not total:
        print("no parked messages" + (f" on {wanted}" if wanted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
