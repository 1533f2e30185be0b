"""``make events ID=<reservation id>``: the story of one reservation, from the log.

Reads the event log (``common.eventlog``, the stream ``events.log``) from its
first event (or from ``SINCE``: an ISO 8601 time, or a duration back from
now such as ``90m``, ``6h``, ``2D``) up to its tail as it was when the scan
began, and prints every event of that reservation, from every service, in
log order (publication order), one line each:

    time  producer  event_type  correlation_id  field=value ...

The fields are the event's own (the envelope's ids, type, time and version
left out). Exit status 1 when the log holds no event of that reservation.
"""
import argparse
import json
import re
import sys
from datetime import datetime, timedelta, timezone

from common import eventlog

ENVELOPE = ("event_id", "event_type", "occurred_at", "correlation_id", "schema_version", "reservation_id")
_DURATION = re.compile(r"([0-9]+)\s*(s|m|h|D|d)")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "D": "days", "d": "days"}


def since(text, now=None):
    """``SINCE``: an ISO 8601 time (UTC unless it says otherwise) or a duration back from now."""
    if not text:
        return "first"
    match = _DURATION.fullmatch(text.strip())
    if match:
        return (now or datetime.now(timezone.utc)) - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"SINCE={text!r} is neither an ISO 8601 time nor a duration like 90m, 6h, 2D") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def line(entry):
    """One event, one line: time, producer, type, correlation id, its fields."""
    event = entry.event
    fields = " ".join(f"{key}={_value(value)}" for key, value in event.items() if key not in ENVELOPE)
    return "  ".join([event.get("occurred_at") or "-", entry.producer, entry.event_type,
                      event.get("correlation_id") or "-", fields]).rstrip()


def _value(value):
    if isinstance(value, str) and value and not re.search(r"\s", value):
        return value
    return json.dumps(value)


def story(amqp_uri, config, reservation_id, start="first"):
    """(the reservation's entries in log order, how many entries were scanned)."""
    found, scanned = [], [0]

    def each(entry):
        scanned[0] += 1
        if isinstance(entry.event, dict) and entry.event.get("reservation_id") == reservation_id:
            found.append(entry)

    eventlog.scan(amqp_uri, config, each, start=start)
    return found, scanned[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description="Print every event of one reservation, from the event log.")
    parser.add_argument("reservation_id")
    parser.add_argument("--since", default="", help="ISO 8601 time, or a duration back from now (90m, 6h, 2D)")
    args = parser.parse_args(argv)
    from ops.run import Cluster  # the system's config, as make up runs it

    try:
        start = since(args.since)
    except ValueError as error:
        parser.error(str(error))
    config = Cluster().config
    found, scanned = story(config["AMQP_URI"], config, args.reservation_id, start)
    for entry in found:
        print(line(entry))
    window = f" since {start.isoformat()}" if start != "first" else ""
    print(f"{len(found)} event(s) of reservation {args.reservation_id} in {scanned} scanned{window}",
          file=sys.stderr)
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
