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
import sys

from common import eventlog
from ops import cli
from common.eventlog import line, since  # noqa: F401 (what make events is made of, kept where it was)


def story(amqp_uri, config, reservation_id, start="first"):
    """(the reservation's entries in log order, how many entries were scanned)."""
    found = eventlog.story(amqp_uri, config, reservation_id, start)
    return found.entries, found.scanned


def main(argv=None):
    parser = argparse.ArgumentParser(description="Print every event of one reservation, from the event log.")
    parser.add_argument("reservation_id")
    parser.add_argument("--since", default="", help="ISO 8601 time, or a duration back from now (90m, 6h, 2D)")
    args = parser.parse_args(argv)
    cli.quiet_when_reader_leaves()
    from ops.run import Cluster  # the system's config, as make up runs it

    try:
        start = since(args.since)
    except ValueError as error:
        parser.error(f"SINCE: {error}")
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
