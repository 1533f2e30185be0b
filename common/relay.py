"""The outbox relay: publishes what committed transactions wrote to the
outbox, in batches, off the workers' path, and marks it sent once the broker
has confirmed it.

- A worker hands its committed events over (``hand_over``) and goes on; it
  does not wait for the broker. One green thread per process publishes
  everything handed over since its last batch (``ConfirmedPublisher``: one
  confirm round trip per batch) and marks what was confirmed sent, in one
  write at most every ``mark_every`` seconds.
  At low load a batch is one event, published at once; under load, batches
  grow by themselves and the cost per event falls.
- Nothing is marked before its confirm, and nothing is lost: a process that
  dies with events handed over but not confirmed leaves them unmarked in the
  outbox, and the sweep (every ``interval`` seconds in every replica, and at
  once when a replica starts) publishes whatever is older than ``grace``
  and not in this process's hands.
- A graceful stop publishes everything handed over before it returns.

The storage side (which rows are unsent, how they are marked, pruning) is
the store's: ``store.unpublished(cutoff, limit)``, ``store.mark_published(keys)``,
``store.prune()``.
"""
import logging
import time

import eventlet
from eventlet.event import Event

from common.metrics import OUTBOX_FAILURES, OUTBOX_PUBLISHED
from common.publisher import Message

log = logging.getLogger(__name__)


class OutboxRelay:
    interval = 1.0  # seconds between sweeps for events left unpublished
    grace = 2.0  # an event this old, and not handed over here, was left behind
    batch = 500  # most events in one sweep
    prune_every = 3600  # sweeps between two prunes of old outbox rows and applied-event ids
    # seconds: the most often the relay writes "sent" marks for what it published.
    # Well under ``grace``; a crash in between leaves at most this much to be sent
    # twice (applied once). 0.1 cost a write transaction per 2-3 events at 25/s.
    mark_every = 0.5

    def __init__(self, store, exchange, service_name):
        self.store = store  # its publisher (common.publisher.ConfirmedPublisher) sends
        self.exchange = exchange
        self.service_name = service_name
        self._queue = []  # Pending handed over and not taken by a batch yet
        self._in_hand = set()  # their keys, and those of the batch being published
        self._wake = Event()
        self._running = False
        self.stopping = False
        self._stopped = []  # Events, set when each thread has finished

    # -- the workers' side ---------------------------------------------------

    def hand_over(self, pending):
        """Publish ``pending`` (committed events) soon; returns at once. Before
        ``start`` (a store used outside a container) it publishes them now."""
        if not self._running:
            self.publish(pending)
            return
        self._queue.extend(pending)
        self._in_hand.update(p.key for p in pending if p.durable)
        if not self._wake.ready():
            self._wake.send()

    # -- publishing ----------------------------------------------------------

    def publish(self, pending, mark=True):
        """Publish ``pending`` and wait for the broker's confirms; then mark
        them sent (``mark``), or return the keys to mark to the caller.
        Returns how many were published, or the keys; failures are logged,
        not raised (the sweep tries again)."""
        if not pending:
            return 0 if mark else []
        try:
            self.store.publisher.publish_batch([
                Message(self.exchange, p.event_type, p.body, p.correlation_id, p.durable) for p in pending])
        except Exception as error:  # the broker is away; the sweep retries
            log.warning("outbox publish deferred: %s", error, extra={"pending": len(pending)})
            OUTBOX_FAILURES.labels(self.service_name).inc()
            return 0 if mark else []
        OUTBOX_PUBLISHED.labels(self.service_name).inc(len(pending))
        durable = [p.key for p in pending if p.durable]
        if not mark:
            return durable
        self._mark(durable)
        return len(pending)

    def _mark(self, keys):
        try:
            if keys:
                self.store.mark_published(keys)
        except Exception as error:  # published, not marked: the sweep sends them again (harmless)
            log.warning("outbox marks deferred: %s", error, extra={"pending": len(keys)})

    def _publish_forever(self):
        """Publish what is handed over, batch after batch. The marks of what
        was confirmed are written at most every ``mark_every`` seconds (and
        before stopping): one write for several batches at a low rate. A
        crash in between leaves them to the sweep, which sends them again
        (consumers apply an event once)."""
        unmarked, marked_at = [], time.monotonic() - self.mark_every  # the first batch is marked at once
        try:
            while not (self.stopping and not self._queue):
                if not self._queue:
                    due = marked_at + self.mark_every - time.monotonic()
                    if unmarked and due <= 0:
                        unmarked, marked_at = self._marked(unmarked), time.monotonic()
                        continue
                    self._wake.wait(due if unmarked else None)
                    if self._wake.ready():
                        self._wake = Event()
                    continue
                batch, self._queue = self._queue, []
                confirmed = self.publish(batch, mark=False)
                unmarked.extend(confirmed)
                confirmed = set(confirmed)
                # Not confirmed: no longer ours; the sweep sends it after `grace`.
                self._in_hand.difference_update(p.key for p in batch if p.key not in confirmed)
        finally:
            self._marked(unmarked)
            self._stopped[0].send()

    def _marked(self, keys):
        self._mark(keys)
        self._in_hand.difference_update(keys)
        return []

    # -- the sweep -----------------------------------------------------------

    def sweep(self, older_than=None):
        """Publish what was committed more than ``older_than`` seconds ago
        (``grace`` by default) and is neither sent nor in this process's hands."""
        cutoff = time.time() - (self.grace if older_than is None else older_than)
        pending = [p for p in self.store.unpublished(cutoff, self.batch) if p.key not in self._in_hand]
        if not pending:
            return 0
        published = self.publish(pending)
        log.info("outbox relay published %d left-over events", published)
        return published

    def _sweep_forever(self):
        sweeps = 0
        try:
            while not self.stopping:
                try:
                    # At start, publish at once what a crashed predecessor left.
                    self.sweep(older_than=0 if sweeps == 0 else None)
                    if sweeps % self.prune_every == 1:
                        self.store.prune()
                except Exception:
                    log.exception("outbox relay sweep failed")
                sweeps += 1
                # Sleep in short steps, so that a stop does not wait a whole interval.
                until = time.monotonic() + self.interval
                while not self.stopping and time.monotonic() < until:
                    eventlet.sleep(min(0.1, self.interval))
        finally:
            self._stopped[1].send()

    # -- lifecycle -----------------------------------------------------------

    def start(self, spawn):
        self._stopped = [Event(), Event()]
        self._running = True
        spawn(self._publish_forever)
        spawn(self._sweep_forever)

    def stop(self, timeout):
        """Publish what was handed over and finish the sweep in progress
        (at most ``timeout`` seconds)."""
        self.stopping = True
        if not self._wake.ready():
            self._wake.send()
        with eventlet.Timeout(timeout, False):
            for stopped in self._stopped:
                stopped.wait()
        self._running = False
