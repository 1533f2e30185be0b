"""What the fault tests share: a burst of reservations running while
something breaks, a wait for the system to settle and pass the audit
(bench/audit.py), and direct access to the broker (crafted events, queues)."""
import concurrent.futures
import collections
import threading
import time
import urllib.parse
import uuid

import requests
from kombu import Connection, Queue
from nameko.amqp.publish import Publisher
from nameko.standalone.events import get_event_exchange
from sqlalchemy import create_engine, text

from bench.audit import audit
from common.relay import OutboxRelay
from helpers import MANAGEMENT, Client, eventually, rpc

RETRYABLE = (429, 502, 503, 504)


def new_customer(library):
    """A customer of their own, so their MyPage holds only this test's reservations."""
    username = f"c-{uuid.uuid4().hex[:10]}"
    library.anonymous.ok("POST", "/auth/register", 201, json={"username": username, "password": "secret-pass"})
    client = Client.signed_in(library.url, username, "secret-pass")
    client.username = username
    return client


class Burst:
    """``count`` reservations of one title, sent by ``threads`` clients at once.

    Each client behaves as the API asks of a careful client: it sends an
    Idempotency-Key and, on 503 (or no answer at all), retries with the same
    key a few times. Every attempt's outcome is counted."""

    def __init__(self, customer, book_id, count, threads=6, retries=4, pause=0.05):
        self.customer = customer
        self.book_id = book_id
        self.count = count
        self.retries = retries
        self.pause = pause
        self.accepted = []
        self.attempts = collections.Counter()  # status (or "no answer") -> attempts
        self.gave_up = 0
        self.slowest_refusal = 0.0  # seconds: the longest wait for an answer that was not 202
        self.done = 0
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(threads)
        self._futures = []

    def start(self):
        self._futures = [self._pool.submit(self._reserve) for _ in range(self.count)]
        return self

    def _reserve(self):
        key = str(uuid.uuid4())
        for attempt in range(self.retries + 1):
            sent = time.monotonic()
            try:
                response = self.customer.post("/reservations", json={"book_id": self.book_id},
                                              headers={"Idempotency-Key": key}, timeout=20)
                outcome = response.status_code
            except requests.RequestException:
                response, outcome = None, "no answer"
            with self._lock:
                self.attempts[outcome] += 1
                if outcome != 202:
                    self.slowest_refusal = max(self.slowest_refusal, round(time.monotonic() - sent, 2))
            if outcome == 202:
                with self._lock:
                    self.accepted.append(response.json()["id"])
                    self.done += 1
                time.sleep(self.pause)
                return
            if outcome not in RETRYABLE and outcome != "no answer":
                raise AssertionError(f"unexpected {outcome}: {response.text}")
            time.sleep(0.5 * (attempt + 1))
        with self._lock:
            self.gave_up += 1
            self.done += 1

    def wait_done(self, n, timeout=60):
        """Until ``n`` reservations have been answered one way or the other."""
        deadline = time.time() + timeout
        while self.done < n and time.time() < deadline:
            time.sleep(0.05)

    def join(self, timeout=120):
        for future in concurrent.futures.as_completed(self._futures, timeout=timeout):
            future.result()
        self._pool.shutdown()
        return self


def settle(system, library, book_ids, accepted=(), customers=None, timeout=60):
    """Wait until the audit finds nothing wrong; fail with what it still finds."""
    deadline = time.time() + timeout
    while True:
        problems = audit(system, library, book_ids, accepted, customers)
        if not problems:
            return
        if time.time() > deadline:
            raise AssertionError(f"{len(problems)} problems after {timeout}s:\n" + "\n".join(problems[:30]))
        time.sleep(0.5)


# -- the broker, directly ------------------------------------------------

def vhost_of(amqp_uri):
    return urllib.parse.unquote(urllib.parse.urlparse(amqp_uri).path.lstrip("/")) or "/"


def queues(amqp_uri):
    """{name: ready messages} of the vhost's queues (management API; its
    counts lag the broker by a few seconds)."""
    vhost = urllib.parse.quote(vhost_of(amqp_uri), safe="")
    answer = requests.get(f"{MANAGEMENT}/api/queues/{vhost}", timeout=10)
    answer.raise_for_status()
    return {q["name"]: q.get("messages", 0) for q in answer.json()}


def depth(amqp_uri, queue):
    """How many messages wait in ``queue`` right now (a passive declare: exact)."""
    with Connection(amqp_uri, connect_timeout=5) as connection:
        return connection.default_channel.queue_declare(queue, passive=True).message_count


def parked(amqp_uri):
    """{dead-letter queue: messages} of every non-empty ``.dead`` queue (the
    management API names them; each is counted exactly, by AMQP)."""
    counts = {name: depth(amqp_uri, name) for name in queues(amqp_uri) if name.endswith(".dead")}
    return {name: n for name, n in counts.items() if n}


def publish(amqp_uri, source_service, event, routing_key=None):
    """Publish ``event`` as ``source_service`` would: to ``<source>.events``,
    routed by its type, persistent, confirmed by the broker."""
    exchange = get_event_exchange(source_service, {})
    Publisher(amqp_uri, serializer="json", declare=[exchange]).publish(
        event, exchange=exchange, routing_key=routing_key or event["event_type"],
        extra_headers={"nameko.correlation_id": event.get("correlation_id", "")})


def handler_queue(source_service, event_type, service, method):
    """The name Nameko gives a SERVICE_POOL handler's queue."""
    return f"evt-{source_service}-{event_type}--{service}.{method}"


def health(amqp_uri, service, timeout=5):
    with rpc(amqp_uri, timeout) as services:
        return getattr(services, service).health()


def all_published(amqp_uri, service):
    """Wait until ``service`` has no event committed and unpublished. The relay
    writes its "sent" marks at most every ``OutboxRelay.mark_every`` seconds,
    so the backlog of a quiet service reads 0 within that, plus a health call."""
    eventually(lambda: health(amqp_uri, service)["outbox_backlog"] == 0, timeout=OutboxRelay.mark_every + 5,
               interval=0.1, message=f"{service}'s outbox backlog at 0")


def peek(amqp_uri, queue):
    """[(headers, payload)] of the messages in ``queue``, left where they are."""
    with Connection(amqp_uri, connect_timeout=5) as connection:
        channel = connection.channel()
        bound = Queue(queue, no_declare=True).bind(channel)
        seen = []
        while (message := bound.get(no_ack=False)) is not None:
            seen.append((dict(message.headers or {}), message.payload))
        channel.close()  # unacknowledged: back in the queue
    return seen


def unpublished(system, service):
    """The types of the events in ``service``'s outbox not yet published."""
    engine = create_engine(system._process_env()[f"{service.upper()}_DB_URI"])
    try:
        with engine.connect() as connection:
            return [row[0] for row in connection.execute(
                text("SELECT event_type FROM outbox WHERE published_at IS NULL ORDER BY seq"))]
    finally:
        engine.dispose()
