"""The event log's plain parts: its declaration's arguments, the replay's
routing of events to a service's own handlers, and make events' lines."""
from datetime import datetime, timezone

import pytest

from common import eventlog, events
from ops import events as story
from ops import replay


def test_the_stream_keeps_thirty_days_by_default_and_both_limits_are_settings():
    assert eventlog.arguments({}) == {"x-queue-type": "stream", "x-max-age": "30D", "x-max-length-bytes": 10 ** 10}
    assert eventlog.arguments({"EVENT_LOG_MAX_AGE": "7D", "EVENT_LOG_MAX_BYTES": "1000"})["x-max-age"] == "7D"
    assert eventlog.arguments({"EVENT_LOG_MAX_BYTES": "1000"})["x-max-length-bytes"] == 1000


def test_the_log_is_bound_to_every_producer():
    assert eventlog.producers() == sorted({spec.producer for spec in events.TYPES.values()})


def test_replay_routes_each_event_to_the_service_s_own_handler():
    from mypage.service import MyPageService
    from notification.service import NotificationService

    routes = replay.routes(MyPageService)
    assert routes[("reservation", "reservation_requested")] == "on_reservation_requested"
    assert routes[("delivery", "delivery_canceled")] == "on_delivery_canceled"
    assert ("mypage", "mypage_changed") not in routes
    assert replay.routes(NotificationService)[("gateway", "customer_updated")] == "on_customer_updated"
    assert "evt-product-book_registered--mypage.on_book_registered" in replay.handler_queues("mypage", MyPageService)


@pytest.mark.parametrize("service", ["product", "reservation", "delivery", "gateway", "nothing"])
def test_only_read_models_are_replayed(service):
    with pytest.raises(replay.Refused, match="not a read model"):
        replay.load_service(service)


def test_sql_stores_are_rebuilt_beside_the_old_one_which_is_kept():
    target = replay.target_for("sqlite:////tmp/x/mypage.db")
    assert (target.fresh_uri, target.backup) == ("sqlite:////tmp/x/mypage.db.replay", "/tmp/x/mypage.db.before-replay")
    target = replay.target_for("postgresql+psycopg2://u:p@db:5432/mypage")
    assert target.fresh_uri == "postgresql+psycopg2://u:p@db:5432/mypage_replay"
    assert target.backup == "mypage_before_replay"
    with pytest.raises(replay.Refused, match="SQLite and PostgreSQL"):
        replay.target_for("redis://127.0.0.1:6379/0")


def test_an_event_that_no_longer_validates_is_counted_and_skipped(tmp_path):
    config = {"AMQP_URI": "memory://", "DB_URIS": {"mypage:Base": "sqlite://"}}
    rebuild = replay.Rebuild("mypage", config, f"sqlite:///{tmp_path / 'mypage.db'}")
    good = events.make("book_registered", "c1", book_id=1, isbn="9780000000000", title="Dune", author="F. H.", stock=1)
    bad = {**good, "event_id": "x", "book_id": "one"}
    rebuild.apply(eventlog.Entry(0, "product", "book_registered", good, {}))
    rebuild.apply(eventlog.Entry(1, "product", "book_registered", bad, {}))
    rebuild.apply(eventlog.Entry(2, "product", "book_registered", good, {}))  # again: applied once
    rebuild.apply(eventlog.Entry(3, "mypage", "mypage_changed", {}, {}))
    summary = rebuild.summary
    assert (summary.scanned, summary.applied, summary.invalid, summary.skipped) == (4, 2, 1, 1)
    assert summary.invalid_offsets == [1]
    rebuild.close()


def test_a_line_per_event_time_producer_type_correlation_and_fields():
    event = events.make("reservation_requested", "req-1", reservation_id="r1", book_id=7, customer="alice",
                        address="1 Main St")
    line = story.line(eventlog.Entry(5, "reservation", "reservation_requested", event, {}))
    assert line == f"{event['occurred_at']}  reservation  reservation_requested  req-1  " \
                   f'book_id=7 customer=alice address="1 Main St"'


def test_since_is_a_time_or_a_duration_back():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert story.since("") == "first"
    assert story.since("90m", now) == datetime(2024, 5, 1, 10, 30, tzinfo=timezone.utc)
    assert story.since("2D", now) == datetime(2024, 4, 29, 12, 0, tzinfo=timezone.utc)
    assert story.since("2024-05-01T10:00:00") == datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        story.since("yesterday")


def test_make_replay_of_a_service_that_is_no_read_model_says_why_and_changes_nothing(capsys):
    assert replay.main(["product"]) == 2
    assert "product is not a read model" in capsys.readouterr().err


def test_the_trace_describes_an_event_by_its_envelope_and_its_own_fields():
    event = events.make("reservation_requested", "req-1", reservation_id="r1", book_id=7, customer="alice",
                        address=None)
    entry = eventlog.Entry(5, "reservation", "reservation_requested", event, {})
    assert eventlog.describe(entry) == {
        "occurred_at": event["occurred_at"], "producer": "reservation", "event_type": "reservation_requested",
        "correlation_id": "req-1", "event_id": event["event_id"],
        "fields": {"book_id": 7, "customer": "alice", "address": None}}
    assert eventlog.of_reservation(entry, "r1") and not eventlog.of_reservation(entry, "r2")
    assert not eventlog.of_reservation(eventlog.Entry(6, "x", "y", ValueError("not JSON"), {}), "r1")


def test_a_window_never_starts_before_what_a_broker_timestamp_can_say():
    assert eventlog.since("0001-01-01") == eventlog.EPOCH
    assert eventlog.since("0001-01-01T00:00:00+01:00") == eventlog.EPOCH
    assert eventlog.since("999999999D") == eventlog.EPOCH  # longer ago than any log
    assert eventlog.since("9999-12-31T23:59:59-01:00") == eventlog.FUTURE
    assert eventlog.since("2024-05-01t10:00:00z") == datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
    for nonsense in ("9" * 30 + "m", "2024-13-01", "yesterday"):
        with pytest.raises(ValueError):
            eventlog.since(nonsense)
