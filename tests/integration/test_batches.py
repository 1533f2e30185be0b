"""Events are applied in batches (common.handlers), on the real broker and a
real SQLite file, with mypage as the service under test.

Events that wait in a handler's queue (the service was down, or busy) come
in batches: one worker and one transaction for many. Each event keeps what
it had alone: its id recorded once, its own correlation id on what it
causes, its delivery acked after the commit; a poison event in a batch is
parked alone while the others are applied; a duplicate inside one batch is
applied once.
"""
import time

import pytest

from common.handlers import Batch
from mypage.service import MyPageService
from support import event, handler_queue

SERVICE = "mypage"
REQUESTED_QUEUE = handler_queue("reservation", "reservation_requested", "mypage", "on_reservation_requested")


@pytest.fixture
def batches():
    """The size of every batch a container's workers were given."""
    return []


@pytest.fixture
def restart(container_factory, config, batches):
    """Starts mypage, so that its queues exist, and stops it; what is
    published meanwhile waits in its queues. ``restart.again()`` starts it
    anew, recording the batches it applies."""

    class Restart:
        def __init__(self):
            first = container_factory(MyPageService, config)
            first.start()
            first.stop()

        def again(self):
            container = container_factory(MyPageService, config)
            spawn = container.spawn_worker

            def recording(entrypoint, args, kwargs, **options):
                if args and isinstance(args[0], Batch):
                    batches.append(len(args[0]))
                return spawn(entrypoint, args, kwargs, **options)

            container.spawn_worker = recording
            container.start()
            return container

    return Restart()


def requested(number, **overrides):
    fields = {"reservation_id": f"r-{number}", "book_id": 7, "customer": "alice", **overrides}
    return event("reservation_requested", f"corr-{number}", **fields)


def wait_until(check, timeout=10):
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_events_that_waited_are_applied_in_batches_each_with_its_own_correlation_id(
        restart, publish, batches, db, emitted):
    sent = [requested(number) for number in range(8)]
    for one in sent:
        publish("reservation", one)
    restart.again()
    mypage_db = db("mypage")

    wait_until(lambda: mypage_db.count("processed_events") == 8)
    assert max(batches) > 1, batches  # fewer workers than events
    assert sum(batches) == 8
    assert sorted(row["reservation_id"] for row in mypage_db.rows("SELECT reservation_id FROM reservation_views")) == sorted(
        one["reservation_id"] for one in sent)
    changes = emitted.wait_for("mypage_changed", count=8)
    assert {(c["reservation_id"], c["correlation_id"]) for c in changes} == {
        (one["reservation_id"], one["correlation_id"]) for one in sent}


def test_a_poison_event_in_a_batch_is_parked_alone(restart, publish, batches, db, dead_letters):
    good = [requested(number) for number in range(5)]
    poison = {**requested(99), "customer": None}  # fails the event's schema: InvalidEvent, parked at once
    for one in good[:2] + [poison] + good[2:]:
        publish("reservation", one)
    restart.again()
    mypage_db = db("mypage")

    [parked] = dead_letters(REQUESTED_QUEUE)
    assert parked.payload == poison
    assert parked.headers["x-bookrental-error"].startswith("InvalidEvent")
    wait_until(lambda: mypage_db.count("processed_events") == 5)
    assert max(batches) > 1, batches
    assert sorted(r["reservation_id"] for r in mypage_db.rows("SELECT reservation_id FROM reservation_views")) == sorted(
        one["reservation_id"] for one in good)


def test_a_duplicate_inside_one_batch_is_applied_once(restart, publish, batches, db, rpc):
    one = requested(1)
    for _ in range(3):
        publish("reservation", one)
    publish("reservation", requested(2))
    restart.again()
    mypage_db = db("mypage")

    wait_until(lambda: mypage_db.count("processed_events") == 2)
    time.sleep(0.3)  # and nothing more comes
    assert mypage_db.count("processed_events") == 2
    page = rpc().mypage.get("alice")["reservations"]
    assert sorted(row["reservation_id"] for row in page) == ["r-1", "r-2"]
    assert all(len(row["history"]) == 1 for row in page)
