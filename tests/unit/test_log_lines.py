"""The JSON log line (common/logs.py): what every line carries, made
cheaply (docs/performance.md), and the same as before it was."""
import json
import logging
import sys
from datetime import datetime, timezone

import eventlet

from common import correlation
from common.logs import JsonFormatter


def record(msg="applied %s", args=("reservation_requested",), level=logging.INFO, exc_info=None, **extra):
    line = logging.LogRecord("common.handlers", level, "", 0, msg, args, exc_info)
    line.__dict__.update(extra)
    return line


def test_a_line_carries_time_level_message_service_correlation_id_and_extras():
    formatter = JsonFormatter()
    correlation.bind("c-1")
    try:
        line = json.loads(formatter.format(record(event_id="e-1", reservation_id=7)))
    finally:
        correlation.bind(None)
    assert line["level"] == "info" and line["logger"] == "common.handlers"
    assert line["msg"] == "applied reservation_requested"
    assert line["correlation_id"] == "c-1"
    assert line["event_id"] == "e-1" and line["reservation_id"] == 7
    assert "threadName" not in line and "lineno" not in line


def test_the_time_is_utc_iso_to_the_millisecond():
    formatter = JsonFormatter()
    for created in (1700000000.0, 1700000000.999, 1700000001.0005, 1765065600.123):
        line = record()
        line.created = created
        expected = datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds")
        assert json.loads(formatter.format(line))["at"] == expected


def test_each_green_thread_logs_its_own_correlation_id_and_service():
    formatter = JsonFormatter()
    lines = {}

    def worker(n):
        correlation.bind(f"id-{n}")
        correlation._current.service = f"service-{n}"
        eventlet.sleep(0)  # the others run in between
        lines[n] = json.loads(formatter.format(record()))
        correlation.bind(None)
        correlation._current.service = None

    pool = eventlet.GreenPool()
    for n in range(4):
        pool.spawn(worker, n)
    pool.waitall()
    assert {n: (line["correlation_id"], line["service"]) for n, line in lines.items()} == {
        n: (f"id-{n}", f"service-{n}") for n in range(4)}


def test_an_error_line_carries_its_last_line_and_its_trace():
    try:
        raise ValueError("broken")
    except ValueError:
        line = json.loads(JsonFormatter().format(record("boom", (), logging.ERROR, sys.exc_info())))
    assert line["error"] == "ValueError: broken"
    assert line["trace"].startswith("Traceback") and line["trace"].endswith("ValueError: broken")
