"""MyPage's view store: one small port, two adapters, chosen by a URI.

The port is what ``mypage.service`` asks of a store of views, inside a
handler's transaction (``tx.views``) or for a page (``store.views()``):

    get(reservation_id) -> ReservationView or None     add(view) -> view
    save_title(book_id, title)                         waiting_ahead(view) -> int
    for_customer(customer, limit, before=None) -> [(view, title)]
    waiting_behind(view, limit) -> [view]

(``for_customer``: newest first by ``line_key``, only those before the
``line_key`` ``before`` when given: a page of MyPage, ``mypage.domain.page``.
``waiting_ahead``, ``waiting_behind``: a title's line, ``mypage.domain``; the
views ``waiting_behind`` gives are for reading only, never saved.)

A view changed in place is saved with the transaction, as the SQL session
does, so ``mypage.domain`` and the service code are the same on both.

- **SQL** (``MYPAGE_DB_URI=sqlite:///...`` or ``postgresql+psycopg2://...``):
  ``common.store.Store``; views, titles, the outbox and the applied-event log
  are tables of one database, written in one transaction.
- **Redis** (``MYPAGE_DB_URI=redis://host:6379/0?prefix=bookrental:mypage``):
  ``RedisViewStore``, the same port as the SQL store (``common.storeport``,
  no SQL underneath). Everything a handler writes is in Redis, so that it is
  written in **one** ``MULTI``/``EXEC``: the applied-event marker, the view,
  the customer's index and the events it emits (the outbox, a sorted set).
  Every key read is ``WATCH``ed first; if another replica changed one before
  ``EXEC``, nothing is written and the handler fails with ``ViewConflict``, so
  the event is retried (``common.handlers``) against the new state. Emitted
  events are published after ``EXEC`` and then removed from the outbox; the
  relay every replica runs publishes those a crash left behind, exactly as
  for SQL. No SQL database takes part: a change and its event can never be
  split between two stores.

Keys (``P`` is the prefix, ``bookrental:mypage`` unless the URI's ``prefix``
says otherwise): ``P:view:<reservation_id>`` (JSON), ``P:customer:<name>``
(sorted set of reservation ids by creation time), ``P:title:<book_id>``,
``P:processed:<handler>:<event_id>`` (expires after ``Store.retention``),
``P:outbox`` (sorted set of events by creation time), ``P:line:<book_id>``
(sorted set of the title's waitlisted reservation ids by creation time,
written with the views; equal times in id order, as Redis sorts them).
"""
import json
import logging
import time
from contextlib import contextmanager
from datetime import datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from eventlet.semaphore import Semaphore
from nameko.extensions import DependencyProvider
from nameko_sqlalchemy.database import DB_URIS_KEY

from common import correlation, errors, events
from common.outbox import Pending
from common.store import Store, for_update
from common.storeport import OutboxStore
from mypage import models
from mypage.domain import ReservationView

log = logging.getLogger(__name__)

REDIS_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_PREFIX = "bookrental:mypage"
VIEW_FIELDS = ("reservation_id", "customer", "book_id", "status", "delivery_status",
               "created_at", "updated_at", "history", "due_at", "overdue")


def is_redis(uri):
    return uri.split("://", 1)[0] in REDIS_SCHEMES


class ViewConflict(Exception):
    """Another replica changed what this transaction read; retry the event."""


# -- the port, over SQL ---------------------------------------------------


class SqlViews:
    """The port over SQL. Inside a transaction, the views it hands out are
    kept, so that the events of one batch see each other's changes, and
    written before the commit if they changed (``SqlViewStore``)."""

    def __init__(self, session):
        self.session = session
        self.for_update = for_update(session)  # a write transaction's: rows read are locked (PostgreSQL)
        self._views = {}  # reservation_id -> (view, its row's values as read, or None if new)

    def get(self, reservation_id):
        # PostgreSQL: the row stays locked until the commit, so two replicas
        # applying two events to one view take turns (SQLite: already serial).
        if reservation_id in self._views:
            return self._views[reservation_id][0]
        found = models.find(self.session, reservation_id, for_update=self.for_update)
        if found is None:
            return None
        self._views[reservation_id] = found
        return found[0]

    def add(self, view):
        self._views[view.reservation_id] = (view, None)
        return view

    def save_title(self, book_id, title):
        models.save_title(self.session, book_id, title)

    def for_customer(self, customer, limit, before=None):
        return models.for_customer(self.session, customer, limit, before)

    def waiting_ahead(self, view):
        return models.waiting_ahead(self.session, view)

    def waiting_behind(self, view, limit):
        return models.waiting_behind(self.session, view, limit)

    def write_changed(self):
        models.save(self.session, self._views.values())


class SqlViewStore(Store):
    """The SQL ``Store`` with MyPage's port: its write transactions carry the
    views (``tx.views``), written before the commit if they changed;
    ``views()`` reads through them (``common.store.Store.repository``)."""

    repository = ("views", SqlViews)

    @contextmanager
    def transaction(self, deadline=None):
        with super().transaction(deadline) as tx:
            yield tx
            tx.views.write_changed()


# -- the port, over Redis -------------------------------------------------


def _score(at):
    try:
        return datetime.fromisoformat(at).timestamp() if at else 0.0
    except ValueError:
        return 0.0


def _dump(view):
    return json.dumps({name: getattr(view, name) for name in VIEW_FIELDS}, sort_keys=True)


def _load(raw):
    data = json.loads(raw)
    view = ReservationView(data["reservation_id"], data["customer"], data["book_id"])
    for name in VIEW_FIELDS[3:]:
        if name in data:  # a view written before a field existed keeps the field's default
            setattr(view, name, data[name])
    return view


class RedisViews:
    """The port over Redis. Inside a transaction, reads go through the
    transaction's pipeline and are WATCHed; the views it hands out are
    written at EXEC if they changed."""

    def __init__(self, client, prefix, tx=None):
        self.client = client
        self.prefix = prefix
        self.tx = tx
        self._views = {}  # reservation_id -> (view, JSON as read or None)

    def key(self, *parts):
        return ":".join([self.prefix, *(str(part) for part in parts)])

    def _read(self, key):
        if self.tx is not None:
            self.tx.pipe.watch(key)
            return self.tx.pipe.get(key)
        return self.client.get(key)

    def get(self, reservation_id):
        if reservation_id in self._views:
            return self._views[reservation_id][0]
        raw = self._read(self.key("view", reservation_id))
        if raw is None:
            return None
        view = _load(raw)
        self._views[reservation_id] = (view, raw.decode() if isinstance(raw, bytes) else raw)
        return view

    def add(self, view):
        self._views[view.reservation_id] = (view, None)
        return view

    def save_title(self, book_id, title):
        if self._read(self.key("title", book_id)) is None:
            self.tx.later(lambda pipe: pipe.set(self.key("title", book_id), title))

    def for_customer(self, customer, limit, before=None):
        key = self.key("customer", customer)
        if before is None:
            ids = self.client.zrevrange(key, 0, limit - 1)
        else:
            # Equal times in id order, as Redis sorts them: those before the
            # cursor's id first, then the earlier times.
            created_at, reservation_id = before
            score = _score(created_at)
            ties = sorted((m for m in self.client.zrangebyscore(key, score, score) if m.decode() < reservation_id),
                          reverse=True)
            ids = (ties + self.client.zrevrangebyscore(key, f"({score!r}", "-inf", start=0, num=limit))[:limit]
        ids = [i.decode() for i in ids]
        if not ids:
            return []
        raws = self.client.mget([self.key("view", i) for i in ids])
        found = [_load(raw) for raw in raws if raw is not None]
        titles = self.client.mget([self.key("title", view.book_id) for view in found]) if found else []
        return [(view, title.decode() if title is not None else None) for view, title in zip(found, titles)]

    def waiting_ahead(self, view):
        return self.client.zrank(self.key("line", view.book_id), view.reservation_id) or 0

    def waiting_behind(self, view, limit):
        # Read, not WATCHed: those views are announced, not changed.
        key, score = self.key("line", view.book_id), _score(view.created_at)
        ties = [member.decode() for member in self.client.zrangebyscore(key, score, score)]
        later = self.client.zrangebyscore(key, f"({score!r}", "+inf", start=0, num=limit)
        ids = ([i for i in ties if i > view.reservation_id] + [member.decode() for member in later])[:limit]
        raws = self.client.mget([self.key("view", i) for i in ids]) if ids else []
        return [_load(raw) for raw in raws if raw is not None]

    def write_changed(self, pipe):
        for view, as_read in self._views.values():
            raw = _dump(view)
            if raw != as_read:
                pipe.set(self.key("view", view.reservation_id), raw)
                pipe.zadd(self.key("customer", view.customer), {view.reservation_id: _score(view.created_at)})
                if view.waiting:
                    pipe.zadd(self.key("line", view.book_id), {view.reservation_id: _score(view.created_at)})
                else:
                    pipe.zrem(self.key("line", view.book_id), view.reservation_id)


class RedisTransaction:
    """What a handler writes through on Redis: the same ``first_time`` and
    ``emit`` as ``common.store.Transaction``, and the views."""

    def __init__(self, store, pipe):
        self.store = store
        self.pipe = pipe
        self.views = RedisViews(store.client, store.prefix, tx=self)
        self.emitted = []  # Pending, keyed by their outbox member
        self._writes = []

    def later(self, write):
        self._writes.append(write)

    def first_time(self, event, handler):
        key = self.views.key("processed", handler, event["event_id"])
        self.pipe.watch(key)
        if self.pipe.exists(key):
            return False
        self.later(lambda pipe: pipe.set(key, time.time(), ex=int(self.store.retention)))
        return True

    def emit(self, event_type, **fields):
        event = events.make(event_type, correlation.current(), **fields)
        if not events.TYPES[event_type].persistent:  # a hint: in no outbox (common.outbox.Transaction.emit)
            self.emitted.append(Pending.of(event, durable=False))
            return event
        member = json.dumps(event, sort_keys=True)
        self.emitted.append(Pending.of(event, key=member, body=member))
        return event

    def commit(self):
        pipe = self.pipe
        pipe.multi()
        for write in self._writes:
            write(pipe)
        self.views.write_changed(pipe)
        durable = [pending.key for pending in self.emitted if pending.durable]
        if durable:
            now = time.time()
            pipe.zadd(self.store.outbox_key, {key: now for key in durable})
        if len(pipe):
            pipe.execute()  # raises WatchError if a watched key changed
        else:
            pipe.reset()


class RedisViewStore(OutboxStore):
    """The store's port (``common.storeport.OutboxStore``) on Redis: the same
    transaction, outbox, relay and health as the SQL ``Store``, for MyPage's
    views (no SQL, no migrations)."""

    def setup_database(self):
        import redis

        url, self.prefix = split_prefix(self.db_uri)
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3,
                                           health_check_interval=30)
        self.outbox_key = f"{self.prefix}:outbox"
        # One writer at a time in this process (a transaction is a few round
        # trips); other replicas are kept out of the way by WATCH.
        self.write_lock = Semaphore(1)

    def close(self):
        self.client.close()
        self.publisher.close()

    @contextmanager
    def transaction(self, deadline=None):
        import redis

        with self.write_lock:
            with self.client.pipeline(transaction=True) as pipe:
                tx = RedisTransaction(self, pipe)
                yield tx
                if deadline is not None and time.time() > float(deadline):
                    raise errors.Unavailable("the caller gave up before this could be saved")
                try:
                    tx.commit()
                except redis.WatchError:
                    raise ViewConflict("a view changed under this event; it will be retried") from None
        self.committed(tx.emitted)

    @contextmanager
    def reading(self):
        yield RedisViews(self.client, self.prefix)

    views = reading  # MyPage's port, as SqlViewStore.views

    def get_dependency(self, worker_ctx):
        handle = super().get_dependency(worker_ctx)
        handle.views = self.views
        return handle

    def ping(self):
        self.client.ping()

    def backlog(self):
        return self.client.zcard(self.outbox_key)

    def mark_published(self, keys):
        self.client.zrem(self.outbox_key, *keys)

    def unpublished(self, cutoff, limit):
        members = self.client.zrangebyscore(self.outbox_key, "-inf", cutoff, start=0, num=limit)
        members = [member.decode() if isinstance(member, bytes) else member for member in members]
        return [Pending.of(json.loads(member), key=member, body=member) for member in members]

    def prune(self):
        pass  # applied-event markers expire by themselves; sent events are removed


def view_uri(config, service_name, base):
    return config[DB_URIS_KEY][f"{service_name}:{base.__name__}"]


def split_prefix(uri):
    """``redis://h:p/0?prefix=x`` -> (``redis://h:p/0``, ``x``)."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((value for key, value in query if key == "prefix"), DEFAULT_PREFIX)
    rest = urlencode([(key, value) for key, value in query if key != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


class ViewStore(DependencyProvider):
    """MyPage's store: ``RedisViewStore`` when its URI is ``redis://``,
    ``rediss://`` or ``unix://``, else ``SqlViewStore``; the workers get the
    same ``StoreHandle`` either way."""

    def __init__(self, base):
        self.base = base
        self.impl = None

    def setup(self):
        uri = view_uri(self.container.config, self.container.service_name, self.base)
        self.impl = (RedisViewStore if is_redis(uri) else SqlViewStore)(self.base)
        self.impl.container = self.container
        self.impl.setup()

    def start(self):
        self.impl.start()

    def stop(self):
        self.impl.stop()

    def kill(self):
        self.impl.kill()

    def get_dependency(self, worker_ctx):
        return self.impl.get_dependency(worker_ctx)

    def backlog(self):
        return self.impl.backlog()
