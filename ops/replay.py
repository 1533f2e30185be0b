"""``make replay SERVICE=mypage|notification``: rebuild a read model from the event log.

A read model (a service built only from events) is rebuilt into a **fresh
store** from the log alone (``common.eventlog``), through the service's own
handlers (the service class's ``@handles`` methods, called as Nameko would,
so the domain code, validation and the applied-event log are the service's),
then switched to, while the rest of the system runs:

1. *Rebuild* (the service still runs): every event of the log, from the
   first offset to the tail of that moment, goes into a new SQLite file
   beside the store (``<store>.replay``). What the handlers emit is marked
   sent and never published (MyPage's ``mypage_changed`` was published
   once already), and no mail is queued (notification: the notices were
   mailed once already).
2. *Catch up*: the service stops (every replica; its queues keep buffering
   what arrives), and the events the log got during step 1 are applied.
3. *Check*: every event the old store applied (its applied-event log keeps
   ``Store.retention``) must be in the new one; otherwise the log is missing
   history and nothing is switched.
4. *Switch*: the old store is kept as ``<store>.before-replay``, the new one
   takes its place; notification's mail outbox (the record of mails sent and
   to send: a side effect, not an event) is carried over.
5. *Drain*: the service starts again with as many replicas as before; its
   queues hold every event since the stop, already in the new store or not:
   the applied-event log makes the first kind no-ops. The command returns once
   those queues are empty.

Refused: a service that is not a read model (``product``...), a store that is
not SQLite, a log whose head was dropped by retention (``--partial`` to
rebuild anyway). An event that no longer validates is reported, skipped and
counted in the summary.
"""
import argparse
import importlib
import logging
import os
import sqlite3
import sys
import time
from contextlib import closing

from kombu import Connection
from nameko.dependency_providers import Config
from nameko.events import EventHandler
from nameko.extensions import DependencyProvider
from nameko_sqlalchemy.database import DB_URIS_KEY

from common import eventlog, events
from common.store import Store, StoreHandle

log = logging.getLogger("ops.replay")

# The read models: services built only from events (SPEC §2), and what of
# their store is not built from events but carried over at the switch.
READ_MODELS = {
    "mypage": {"service": "mypage.service:MyPageService", "carry": ()},
    "notification": {"service": "notification.service:NotificationService", "carry": ("mails",)},
}
BACKUP_SUFFIX = ".before-replay"
REPLAY_SUFFIX = ".replay"


class Refused(Exception):
    """The replay cannot be done as asked; nothing was changed."""


class Summary:
    def __init__(self):
        self.scanned = self.applied = self.skipped = self.invalid = 0
        self.last_offset = -1
        self.invalid_offsets = []

    def __str__(self):
        return (f"{self.scanned} events read from the log, {self.applied} applied, "
                f"{self.skipped} not for this service, {self.invalid} invalid (skipped"
                + (f": offsets {self.invalid_offsets[:20]}" if self.invalid_offsets else "") + ")")


def load_service(name):
    if name not in READ_MODELS:
        raise Refused(f"{name} is not a read model: it is the source of its own events, not built from "
                      f"them. make replay rebuilds {', '.join(READ_MODELS)}.")
    module, cls = READ_MODELS[name]["service"].split(":")
    return getattr(importlib.import_module(module), cls)


def routes(service_cls):
    """{(producer, event_type): handler method name} of the service's ``@handles``."""
    found = {}
    for name in dir(service_cls):
        for entrypoint in getattr(getattr(service_cls, name, None), "nameko_entrypoints", ()):
            if isinstance(entrypoint, EventHandler):
                found[(entrypoint.source_service, entrypoint.event_type)] = name
    return found


def sqlite_path(uri):
    if not uri.startswith("sqlite:///"):
        raise Refused(f"make replay rebuilds SQLite stores; this one is {uri.split('://')[0]}. "
                      "Stop the service, point its DB URI at a new database, replay, start it.")
    return uri[len("sqlite:///"):]


class _Container:
    def __init__(self, **attributes):
        self.__dict__.update(attributes)


class _NoSideEffects:
    """Any other dependency while replaying (the mailer): switched off."""

    enabled = False

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attribute):
        raise RuntimeError(f"{self._name}.{attribute} is not available while replaying")


class Rebuild:
    """The service's handlers, over a fresh SQLite store at ``path``."""

    def __init__(self, service_name, config, path):
        self.service_name = service_name
        self.cls = load_service(service_name)
        self.routes = routes(self.cls)
        self.path = path
        config = {**config, DB_URIS_KEY: {**config[DB_URIS_KEY], f"{service_name}:Base": f"sqlite:///{path}"}}
        # What a dependency asks of its Nameko container (it keeps a weak reference: kept here).
        self.container = container = _Container(service_name=service_name, config=config, service_cls=self.cls)
        self.service = self.cls()
        for attribute in dir(self.cls):
            provider = getattr(self.cls, attribute, None)
            if not isinstance(provider, DependencyProvider):
                continue
            if attribute == "store":
                bound = provider.bind(container, attribute)
                bound.setup()
                self.store = getattr(bound, "impl", bound)  # mypage.views.ViewStore wraps a Store
                if not isinstance(self.store, Store):
                    raise Refused(f"{service_name}'s store is not SQL")
                self.store.publish = self._mark_sent  # never publish what the handlers emit again
                setattr(self.service, attribute, StoreHandle(self.store))
            elif isinstance(provider, Config):
                setattr(self.service, attribute, config)
            else:
                setattr(self.service, attribute, _NoSideEffects(attribute))
        self.summary = Summary()

    def _mark_sent(self, rows):
        self.store._write_marks([seq for seq, _, _ in rows])
        return len(rows)

    def apply(self, entry):
        self.summary.scanned += 1
        self.summary.last_offset = entry.offset
        handler = self.routes.get((entry.producer, entry.event_type))
        if handler is None:
            self.summary.skipped += 1
            return
        try:
            getattr(self.service, handler)(entry.event)
        except events.InvalidEvent as error:
            self.summary.invalid += 1
            self.summary.invalid_offsets.append(entry.offset)
            log.warning("offset %d skipped: %s", entry.offset, error)
            return
        self.summary.applied += 1

    def remind_due(self, now=None):
        """notification: the due-soon reminders whose moment has passed, as the
        service's timer recorded them (at the moment they were due)."""
        if self.service_name != "notification":
            return 0
        from notification import models

        recorded = 0
        with self.store.transaction() as tx:
            for loan in models.loans_to_remind(tx.session, now or time.time(), limit=100000):
                notice = loan.reminder(loan.remind_at, models.title_of(tx.session, loan.book_id))
                if notice is not None:
                    self.service._record(tx, notice)
                    recorded += 1
        return recorded

    def close(self):
        # The last connection to close checkpoints the WAL into the file.
        self.store.engine.dispose()
        self.store.read_engine.dispose()


def _sqlite_files(path):
    return [path + suffix for suffix in ("", "-wal", "-shm") if os.path.exists(path + suffix)]


def _move(path, target):
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(target + suffix):
            os.remove(target + suffix)
    for name in _sqlite_files(path):
        os.replace(name, target + name[len(path):])


def missing_history(old_path, new_path):
    """Applied events (id, handler) the old store has and the new one lacks."""
    if not os.path.exists(old_path):
        return 0
    with closing(sqlite3.connect(old_path)) as connection:
        connection.execute("ATTACH DATABASE ? AS rebuilt", (new_path,))
        try:
            return connection.execute(
                "SELECT COUNT(*) FROM processed_events AS old WHERE NOT EXISTS (SELECT 1 FROM "
                "rebuilt.processed_events AS new WHERE new.event_id = old.event_id AND new.handler = old.handler)"
            ).fetchone()[0]
        except sqlite3.OperationalError:  # an old store without the table: nothing to compare
            return 0


def carry_over(old_path, new_path, tables):
    """Copy ``tables`` (not built from events) from the old store into the new one."""
    if not tables or not os.path.exists(old_path):
        return 0
    copied = 0
    with closing(sqlite3.connect(new_path)) as connection:
        connection.execute("ATTACH DATABASE ? AS old", (old_path,))
        for table in tables:
            try:
                copied += connection.execute(f"INSERT OR REPLACE INTO main.{table} SELECT * FROM old.{table}").rowcount
            except sqlite3.OperationalError as error:
                log.warning("%s not carried over: %s", table, error)
        connection.commit()
        connection.execute("DETACH DATABASE old")
    return copied


def handler_queues(service_name, service_cls):
    """The durable queues Nameko consumes the service's events from."""
    return [f"evt-{source}-{event_type}--{service_name}.{method}"
            for (source, event_type), method in routes(service_cls).items()]


def backlog(amqp_uri, queues):
    total = 0
    with Connection(amqp_uri, connect_timeout=5) as connection:
        for queue in queues:
            try:
                total += connection.channel().queue_declare(queue, passive=True).message_count
            except Exception:  # a queue not declared yet holds nothing
                pass
    return total


def wait_drained(amqp_uri, queues, timeout=120):
    deadline = time.time() + timeout
    quiet = 0
    while time.time() < deadline:
        quiet = quiet + 1 if backlog(amqp_uri, queues) == 0 else 0
        if quiet >= 3:
            return True
        time.sleep(0.3)
    return False


def replay(cluster, service_name, partial=False, say=print):
    """Rebuild ``service_name``'s store from the log and switch to it (see the module)."""
    cls = load_service(service_name)
    config = cluster.config
    amqp_uri = config["AMQP_URI"]
    path = os.path.abspath(sqlite_path(config[DB_URIS_KEY][f"{service_name}:Base"]))
    head = eventlog.first_offset(amqp_uri, config)
    if head not in (None, 0) and not partial:
        raise Refused(f"the event log starts at offset {head}: older events were dropped by its retention "
                      f"(EVENT_LOG_MAX_AGE={config.get('EVENT_LOG_MAX_AGE')}); a replay would build a partial "
                      f"store. Nothing was changed (--partial, or PARTIAL=1, rebuilds from what is left).")
    fresh = path + REPLAY_SUFFIX
    _move(fresh, fresh + ".discarded")  # what an interrupted replay left
    for name in _sqlite_files(fresh + ".discarded"):
        os.remove(name)
    started = time.time()
    rebuild = Rebuild(service_name, config, fresh)
    reached = eventlog.scan(amqp_uri, config, rebuild.apply)
    say(f"{service_name}: rebuilt from the log up to offset {reached} while it runs ({rebuild.summary})")

    replicas = len(cluster.pids(service_name))
    stopped_at = time.time()
    switched = False
    try:
        if replicas:
            cluster.stop(service_name)
        time.sleep(0.5)  # what the stopped service applied last is in the log by now
        for attempt in range(3):
            start = reached + 1 if reached >= 0 else "first"
            reached = max(reached, eventlog.scan(amqp_uri, config, rebuild.apply, start=start))
            reminders = rebuild.remind_due()
            rebuild.close()
            missing = missing_history(path, fresh)
            if not missing or partial:
                break
            time.sleep(1)
        if missing and not partial:
            raise Refused(f"{missing} event(s) the {service_name} store applied are not in the event log "
                          f"(events from before the log existed, or dropped by its retention); the store was "
                          f"left as it was. --partial (PARTIAL=1) switches anyway.")
        carried = carry_over(path, fresh, READ_MODELS[service_name]["carry"])
        if os.path.exists(path):
            _move(path, path + BACKUP_SUFFIX)
        _move(fresh, path)
        switched = True
        say(f"{service_name}: caught up to offset {reached} while stopped; switched to the rebuilt store"
            + (f" ({reminders} due-soon reminder(s) recorded)" if reminders else "")
            + (f" ({carried} row(s) of {', '.join(READ_MODELS[service_name]['carry'])} carried over)" if carried else "")
            + f"; the old one is {path + BACKUP_SUFFIX}")
    finally:
        if replicas:
            cluster.start(service_name, replicas)
    down_for = time.time() - stopped_at
    if not wait_drained(amqp_uri, handler_queues(service_name, cls)):
        say(f"{service_name}: its queues have not drained yet; it catches up on its own")
    summary = rebuild.summary
    say(f"{service_name}: replayed in {time.time() - started:.1f}s ({summary}); "
        + (f"stopped for {down_for:.1f}s; " if replicas else "")
        + ("caught up" if switched else "not switched"))
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description="Rebuild a read model's store from the event log.")
    parser.add_argument("service")
    parser.add_argument("--partial", action="store_true",
                        help="rebuild even when the log lacks history the store had")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from ops.run import Cluster

    try:
        load_service(args.service)
        replay(Cluster(), args.service, partial=args.partial)
    except Refused as error:
        print(f"make replay refused: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
