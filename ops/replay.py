"""``make replay SERVICE=mypage|notification``: rebuild a read model from the event log.

A read model (a service built only from events) is rebuilt into a **fresh
store** from the log alone (``common.eventlog``), through the service's own
handlers (the service class's ``@handles`` methods, called as Nameko would,
so the domain code, validation and the applied-event log are the service's),
then switched to, while the rest of the system runs:

1. *Rebuild* (the service still runs): every event of the log, from the
   first offset to the tail of that moment, goes into a new store beside
   the old one (SQLite: the file ``<store>.replay``; PostgreSQL: the
   database ``<name>_replay``, which the account must be allowed to create). What the handlers emit is marked
   sent and never published (MyPage's ``mypage_changed`` was published
   once already), and no mail is queued (notification: the notices were
   mailed once already).
2. *Catch up*: the service stops (every replica; its queues keep buffering
   what arrives), and the events the log got during step 1 are applied.
3. *Check*: every event the old store applied (its applied-event log keeps
   ``Store.retention``) must be in the new one; otherwise the log is missing
   history and nothing is switched.
4. *Switch*: the old store is kept (``<store>.before-replay``,
   ``<name>_before_replay``), the new one takes its place; notification's mail outbox (the record of mails sent and
   to send: a side effect, not an event) is carried over.
5. *Drain*: the service starts again with as many replicas as before; its
   queues hold every event since the stop, already in the new store or not:
   the applied-event log makes the first kind no-ops. The command returns once
   those queues are empty.

Refused: a service that is not a read model (``product``...), a store that is
not SQL (MyPage on Redis), a log whose head was dropped by retention (``--partial`` to
rebuild anyway). An event that no longer validates is reported, skipped and
counted in the summary.
"""
import argparse
import importlib
import logging
import os
import sys
import time

from kombu import Connection
from nameko.dependency_providers import Config
from nameko.events import EventHandler
from nameko.extensions import DependencyProvider
from nameko_sqlalchemy.database import DB_URIS_KEY
from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from common import eventlog, events
from common.store import Store
from common.storeport import StoreHandle

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
    """The service's handlers, over a fresh store at ``uri``."""

    def __init__(self, service_name, config, uri):
        self.service_name = service_name
        self.cls = load_service(service_name)
        self.routes = routes(self.cls)
        config = {**config, DB_URIS_KEY: {**config[DB_URIS_KEY], f"{service_name}:Base": uri}}
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
                self.store.committed = self._mark_sent  # never publish what the handlers emit again
                setattr(self.service, attribute, StoreHandle(self.store))
            elif isinstance(provider, Config):
                setattr(self.service, attribute, config)
            else:
                setattr(self.service, attribute, _NoSideEffects(attribute))
        self.summary = Summary()

    def _mark_sent(self, pending):
        """What a transaction committed (``common.outbox.Pending``): marked sent, not handed to the relay."""
        durable = [p.key for p in pending if p.durable]
        if durable:
            self.store.mark_published(durable)

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
        recorded = 0
        with self.store.transaction() as tx:  # notification.models.NotificationStore: tx.notices
            for loan in tx.notices.loans_to_remind(now or time.time(), limit=100000):
                notice = loan.reminder(loan.remind_at, tx.notices.title_of(loan.book_id))
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


class SqliteTarget:
    """A store in a SQLite file: rebuilt in ``<file>.replay``, the old one kept as ``<file>.before-replay``."""

    def __init__(self, uri):
        self.uri = uri
        self.path = os.path.abspath(uri[len("sqlite:///"):])
        self.fresh = self.path + REPLAY_SUFFIX
        self.fresh_uri = f"sqlite:///{self.fresh}"
        self.backup = self.path + BACKUP_SUFFIX

    def exists(self):
        return os.path.exists(self.path)

    def prepare(self):
        for name in _sqlite_files(self.fresh):  # what an interrupted replay left
            os.remove(name)

    def switch(self):
        if self.exists():
            _move(self.path, self.backup)
        _move(self.fresh, self.path)


class PostgresTarget:
    """A store in a PostgreSQL database ``name``: rebuilt in ``name_replay``,
    the old one kept as ``name_before_replay`` (the account needs CREATEDB)."""

    def __init__(self, uri):
        self.uri = uri
        url = make_url(uri)
        self.name = url.database
        self.fresh_name = f"{self.name}_replay"
        self.backup = f"{self.name}_before_replay"
        self.fresh_uri = url.set(database=self.fresh_name).render_as_string(hide_password=False)
        self.admin_url = url.set(database="postgres")

    def _admin(self, *statements):
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                for statement in statements:
                    connection.exec_driver_sql(statement)
        finally:
            engine.dispose()

    def exists(self):
        engine = create_engine(self.admin_url)
        try:
            with engine.connect() as connection:
                return connection.exec_driver_sql(
                    "SELECT 1 FROM pg_database WHERE datname = %(name)s", {"name": self.name}).first() is not None
        finally:
            engine.dispose()

    def prepare(self):
        self._admin(f'DROP DATABASE IF EXISTS "{self.fresh_name}"', f'CREATE DATABASE "{self.fresh_name}"')

    def switch(self):
        self._admin(f'DROP DATABASE IF EXISTS "{self.backup}"',
                    f'ALTER DATABASE "{self.name}" RENAME TO "{self.backup}"',
                    f'ALTER DATABASE "{self.fresh_name}" RENAME TO "{self.name}"')


def target_for(uri):
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        return SqliteTarget(uri)
    if uri.startswith("postgresql"):
        return PostgresTarget(uri)
    raise Refused(f"make replay rebuilds SQLite and PostgreSQL stores; this one is {uri.split('://')[0]} "
                  "(MyPage on Redis: stop it, point MYPAGE_DB_URI at an empty prefix, replay, start it).")


def _rows(uri, statement):
    engine = create_engine(uri)
    try:
        with engine.connect() as connection:
            return connection.execute(statement).all()
    finally:
        engine.dispose()


def missing_history(target, base):
    """Applied events (id, handler) the old store has and the new one lacks."""
    if not target.exists():
        return 0
    processed = base.ProcessedEvent.__table__
    query = select(processed.c.event_id, processed.c.handler)
    try:
        old = set(_rows(target.uri, query))
    except SQLAlchemyError:  # an old store without the table: nothing to compare
        return 0
    return len(old - set(_rows(target.fresh_uri, query)))


def carry_over(target, base, tables):
    """Copy ``tables`` (not built from events) from the old store into the new one."""
    if not tables or not target.exists():
        return 0
    copied = 0
    engine = create_engine(target.fresh_uri)
    try:
        for name in tables:
            table = base.metadata.tables[name]
            try:
                rows = [row._asdict() for row in _rows(target.uri, select(table))]
            except SQLAlchemyError as error:
                log.warning("%s not carried over: %s", name, error)
                continue
            with engine.begin() as connection:
                connection.execute(table.delete())
                if rows:
                    connection.execute(table.insert(), rows)
            copied += len(rows)
    finally:
        engine.dispose()
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
    target = target_for(config[DB_URIS_KEY][f"{service_name}:Base"])
    head = eventlog.first_offset(amqp_uri, config)
    if head not in (None, 0) and not partial:
        raise Refused(f"the event log starts at offset {head}: older events were dropped by its retention "
                      f"(EVENT_LOG_MAX_AGE={config.get('EVENT_LOG_MAX_AGE')}); a replay would build a partial "
                      f"store. Nothing was changed (--partial, or PARTIAL=1, rebuilds from what is left).")
    target.prepare()
    started = time.time()
    rebuild = Rebuild(service_name, config, target.fresh_uri)
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
            missing = missing_history(target, rebuild.store.base)
            if not missing or partial:
                break
            time.sleep(1)
        if missing and not partial:
            raise Refused(f"{missing} event(s) the {service_name} store applied are not in the event log "
                          f"(events from before the log existed, or dropped by its retention); the store was "
                          f"left as it was. --partial (PARTIAL=1) switches anyway.")
        carried = carry_over(target, rebuild.store.base, READ_MODELS[service_name]["carry"])
        target.switch()
        switched = True
        say(f"{service_name}: caught up to offset {reached} while stopped; switched to the rebuilt store"
            + (f" ({reminders} due-soon reminder(s) recorded)" if reminders else "")
            + (f" ({carried} row(s) of {', '.join(READ_MODELS[service_name]['carry'])} carried over)" if carried else "")
            + f"; the old one is {target.backup}")
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
