"""GET /reservations/{id}/events, the gateway's part: what a bounded scan
of the event log (``EventLogReader``, stood in for here) becomes."""
import uuid
from datetime import datetime, timezone

import pytest
from nameko.testing.services import worker_factory

from common import eventlog, events
from common.errors import NotFound
from gateway.service import GatewayService

LIBRARIAN = {"username": "librarian", "role": "librarian"}


@pytest.fixture
def gateway():
    service = worker_factory(GatewayService)
    service.config = {"EVENT_TRACE_WINDOW": "30D"}
    return service


def query(**given):
    return {"limit": 100, "cursor": None, "since": None, **given}


def test_the_default_window_is_the_setting_back_from_now(gateway):
    gateway.event_log.story.return_value = eventlog.Story([], 10)
    reservation_id = str(uuid.uuid4())
    with pytest.raises(NotFound):  # a whole scan found nothing of it
        gateway.reservation_events(None, LIBRARIAN, reservation_id, query())
    (called_id, start), kwargs = gateway.event_log.story.call_args
    assert called_id == reservation_id and kwargs == {"limit": 100}
    assert abs((datetime.now(timezone.utc) - start).days - 30) <= 1


def test_a_page_stopped_by_its_bounds_says_where_to_go_on(gateway):
    gateway.event_log.story.return_value = eventlog.Story([], 20000, next=20000)
    answer = gateway.reservation_events(None, LIBRARIAN, str(uuid.uuid4()), query())
    assert answer == {"items": [], "next": "20000"}  # nothing yet, and more to read: not a 404


def test_a_cursor_goes_on_from_its_offset_and_an_empty_last_page_is_no_404(gateway):
    event = events.make("reservation_requested", "req-1", reservation_id="r1", book_id=7, customer="alice",
                        address=None)
    gateway.event_log.story.return_value = eventlog.Story([], 3)
    assert gateway.reservation_events(None, LIBRARIAN, str(uuid.uuid4()), query(cursor="42")) == \
        {"items": [], "next": None}
    assert gateway.event_log.story.call_args[0][1] == 42
    gateway.event_log.story.return_value = eventlog.Story(
        [eventlog.Entry(43, "reservation", "reservation_requested", event, {})], 1)
    answer = gateway.reservation_events(None, LIBRARIAN, str(uuid.uuid4()), query(cursor="43"))
    assert answer["items"][0]["fields"] == {"book_id": 7, "customer": "alice", "address": None}


def test_not_a_reservation_id_is_not_found_without_reading_the_log(gateway):
    with pytest.raises(NotFound):
        gateway.reservation_events(None, LIBRARIAN, "not-an-id", query())
    assert not gateway.event_log.story.called
