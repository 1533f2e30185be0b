"""The event log on the real broker (common/eventlog.py): declared by a
service at start, every published event in it, envelope and headers, read
by offset and by time, and a read that ends while events keep coming."""
import threading
import time
from datetime import datetime, timedelta, timezone

from kombu import Connection
from nameko.standalone.events import event_dispatcher

from common import eventlog, events
from mypage.service import MyPageService


def _publish(config, count, customer="alice"):
    dispatch = event_dispatcher(config)
    made = []
    for n in range(count):
        event = events.make("reservation_requested", f"corr-{n}", reservation_id=f"r{n}", book_id=1,
                            customer=customer, address=None)
        dispatch("reservation", "reservation_requested", event)
        made.append(event)
    return made


def test_a_starting_service_declares_the_log_and_every_event_is_in_it(start, config):
    start(MyPageService)
    made = _publish(config, 3)
    time.sleep(1)  # and what MyPage emitted on handling them (mypage_changed)
    entries = eventlog.read(config["AMQP_URI"], config)
    requested = [entry for entry in entries if entry.producer == "reservation"]
    assert [entry.event for entry in requested] == made  # in publication order, envelope and all
    assert [entry.offset for entry in entries] == list(range(len(entries)))
    assert {entry.event_type for entry in entries} == {"reservation_requested", "mypage_changed"}
    assert eventlog.first_offset(config["AMQP_URI"], config) == 0
    later = eventlog.read(config["AMQP_URI"], config, start=requested[1].offset, until=requested[2].offset)
    assert [e.event for e in later if e.producer == "reservation"] == made[1:]


def test_declaring_again_is_harmless_and_other_arguments_keep_the_log_as_it_is(config):
    with Connection(config["AMQP_URI"]) as connection:
        assert eventlog.declare(connection, config)["x-max-age"] == "30D"
        assert eventlog.declare(connection, config) is not None
        assert eventlog.declare(connection, {**config, "EVENT_LOG_MAX_AGE": "7D"}) is None  # kept, logged
    _publish(config, 1)  # still bound after the refused declaration
    assert len(eventlog.read(config["AMQP_URI"], config)) == 1


def test_a_read_ends_at_the_tail_of_when_it_began_while_events_keep_coming(config):
    with Connection(config["AMQP_URI"]) as connection:
        eventlog.declare(connection, config)
    _publish(config, 20)
    stop = threading.Event()

    def keep_publishing():
        while not stop.is_set():
            _publish(config, 1, customer="bob")
            time.sleep(0.01)

    publisher = threading.Thread(target=keep_publishing)
    publisher.start()
    try:
        began = time.monotonic()
        entries = eventlog.read(config["AMQP_URI"], config)
        assert time.monotonic() - began < 10
    finally:
        stop.set()
        publisher.join()
    assert len(entries) >= 20 and [e.offset for e in entries] == list(range(len(entries)))


def test_a_read_from_a_time_skips_what_came_before(config):
    with Connection(config["AMQP_URI"]) as connection:
        eventlog.declare(connection, config)
    _publish(config, 2, customer="old")
    time.sleep(1.5)
    since = datetime.now(timezone.utc) - timedelta(milliseconds=200)
    _publish(config, 2, customer="new")
    customers = [entry.event["customer"] for entry in eventlog.read(config["AMQP_URI"], config, start=since)]
    assert customers[-2:] == ["new", "new"] and len(customers) <= 4


def test_a_story_is_read_a_bounded_page_at_a_time(config):
    """What the librarians' trace reads (EventLogReader): one reservation's
    events, stopped after ``limit`` found or ``max_scanned`` read; ``next``
    goes on from there, and the pages together are the whole story."""
    with Connection(config["AMQP_URI"]) as connection:
        eventlog.declare(connection, config)
    dispatch = event_dispatcher(config)
    for n in range(12):
        reservation_id = "mine" if n % 3 == 0 else f"other-{n}"
        dispatch("reservation", "reservation_requested", events.make(
            "reservation_requested", f"corr-{n}", reservation_id=reservation_id, book_id=n + 1, customer="alice",
            address=None))
    whole = eventlog.story(config["AMQP_URI"], config, "mine")
    assert [e.event["book_id"] for e in whole.entries] == [1, 4, 7, 10] and whole.next is None
    assert whole.scanned == 12

    found, start, pages = [], "first", 0
    while start is not None:
        page = eventlog.story(config["AMQP_URI"], config, "mine", start, limit=3, max_scanned=5)
        assert len(page.entries) <= 3 and page.scanned <= 5
        found += page.entries
        start, pages = page.next, pages + 1
    assert [e.offset for e in found] == [e.offset for e in whole.entries] and pages >= 3


def test_the_trace_reader_says_unavailable_when_the_broker_cannot_be_reached(config):
    from eventlet.semaphore import Semaphore

    from common.errors import Unavailable

    reader = eventlog._Reader({**config, "AMQP_URI": "amqp://guest:guest@127.0.0.1:1//"}, Semaphore(1), 1.0, 200)
    began = time.monotonic()
    try:
        reader.story("mine")
        raise AssertionError("read a broker that is not there")
    except Unavailable as error:
        assert "broker" in error.message
    assert time.monotonic() - began < 10
    assert reader.readers.acquire(blocking=False)  # given back
