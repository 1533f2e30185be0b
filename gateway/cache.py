"""What the gateway may answer without asking a service again.

Two caches, each kept in the memory of one gateway process, each found by a
profile of ``make bench`` (docs/performance.md):

- ``KnownBooks``: the ids of titles that exist. ``POST /reservations`` checks
  that the title exists (404 otherwise) with an RPC to ``product``; a title
  is never deleted, so once ``product`` has said yes for an id, the answer
  stays true and the check need not be made again. Only "yes" is kept: an id
  that is unknown now may be registered later.
- ``PageCache``: each customer's ``GET /mypage`` answers, as the JSON bytes the
  gateway sends, one per page asked for (``limit`` and ``cursor``); a change
  drops every page of the customer. ``mypage`` announces every change of a customer's page with
  a ``mypage_changed`` event, which every gateway replica already receives
  (BROADCAST, for the live pages); the entry is dropped the moment it comes,
  before the live pages are told to refetch. An answer fetched while a change
  came in is not kept, and requests that come while a fetch is in flight
  wait for its answer rather than all asking ``mypage`` at once. Entries also expire after
  ``MYPAGE_CACHE_SECONDS`` (default 2, the SPEC's bound for a change to show
  on an open MyPage), so a change announcement lost with a broken broker
  connection delays a page by no more than that. ``0`` switches it off. A
  request with ``Cache-Control: no-cache`` always reads ``mypage``.

  With several gateway replicas behind a balancer that is not sticky, a page
  told of a change by replica A may refetch from replica B a moment before B
  has heard of it (B answers from the broadcast's own delivery, microseconds
  after A, unless B is starved of CPU). A client that refetches *because* it
  was told of a change should send ``Cache-Control: no-cache``.
"""
import time
from collections import OrderedDict

import eventlet
from eventlet.event import Event
from nameko.extensions import DependencyProvider

MAX_BOOKS = 1_000_000
MAX_PAGES = 10_000
MAX_PAGE_BYTES = 64 * 1024 * 1024  # all cached pages together
DEFAULT_PAGE_SECONDS = 2.0


class KnownBooks:
    def __init__(self, max_size=MAX_BOOKS):
        self.max_size = max_size
        self.ids = set()

    def __contains__(self, book_id):
        return book_id in self.ids

    def add(self, book_id):
        if len(self.ids) < self.max_size:
            self.ids.add(book_id)


class _Pending:
    """A fetch in flight. Requests that come meanwhile wait for its answer
    instead of asking ``mypage`` too; an invalidation removes it from the
    cache, so requests after the change start a fetch of their own, and its
    answer, possibly older than the change, is not kept."""

    __slots__ = ("event",)

    def __init__(self):
        self.event = Event()

    def wait(self, timeout):
        """The body the fetch got, or None (it failed, or took too long)."""
        try:
            with eventlet.Timeout(timeout):
                return self.event.wait()
        except eventlet.Timeout:
            return None

    def done(self, body):
        if not self.event.ready():
            self.event.send(body)


class PageCache:
    def __init__(self, max_age=DEFAULT_PAGE_SECONDS, max_pages=MAX_PAGES, max_bytes=MAX_PAGE_BYTES,
                 clock=time.monotonic):
        self.max_age = max_age
        self.max_pages = max_pages
        self.max_bytes = max_bytes
        self.clock = clock
        self.entries = OrderedDict()  # (customer, part) -> (stored at, body) or a _Pending
        self.parts = {}  # customer -> the keys of their entries
        self.size = 0
        self.hits = self.misses = 0

    @property
    def enabled(self):
        return self.max_age > 0

    def page(self, customer, fetch, wait=5.0, part=()):
        """The JSON bytes of ``customer``'s page ``part`` (which page: any
        hashable): cached, or the answer of a fetch in flight, or ``fetch()``'s
        (kept unless the customer's page changed meanwhile)."""
        key = (customer, part)
        entry = self.entries.get(key)
        if isinstance(entry, _Pending):
            body = entry.wait(wait)
            if body is not None:
                self.hits += 1
                return body
        elif entry is not None:
            stored_at, body = entry
            if self.clock() - stored_at <= self.max_age:
                self.entries.move_to_end(key)
                self.hits += 1
                return body
        self.misses += 1
        marker = self.begin(key)
        body = None
        try:
            body = fetch()
        finally:
            marker.done(body)
            self.keep(key, marker, body)
        return body

    def begin(self, key):
        marker = _Pending()
        self._drop(key)
        self.entries[key] = marker
        self.parts.setdefault(key[0], set()).add(key)
        return marker

    def keep(self, key, marker, body):
        """Keep ``body`` unless the page changed since ``begin``."""
        if self.entries.get(key) is not marker:
            return False
        if body is None or len(body) > self.max_bytes // 4:
            self._drop(key)
            return False
        self.entries[key] = (self.clock(), body)
        self.entries.move_to_end(key)
        self.size += len(body)
        while len(self.entries) > self.max_pages or self.size > self.max_bytes:
            self._drop(next(iter(self.entries)))
        return True

    def invalidate(self, customer):
        for key in self.parts.get(customer, set()).copy():
            self._drop(key)

    def _drop(self, key):
        entry = self.entries.pop(key, None)
        if entry is not None and not isinstance(entry, _Pending):
            self.size -= len(entry[1])
        keys = self.parts.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.parts[key[0]]


class GatewayCaches(DependencyProvider):
    """The process's caches, given to every worker."""

    def setup(self):
        config = self.container.config
        max_age = config.get("MYPAGE_CACHE_SECONDS")
        self.caches = Caches(float(DEFAULT_PAGE_SECONDS if max_age in (None, "") else max_age))

    def get_dependency(self, worker_ctx):
        return self.caches


class Caches:
    def __init__(self, page_seconds=DEFAULT_PAGE_SECONDS):
        self.books = KnownBooks()
        self.pages = PageCache(max_age=page_seconds)
