"""The deny list: access tokens that were signed out before they expired.

An access token is stateless: once signed, any replica accepts it until its
``exp``. Signing out (``POST /auth/logout``) or a reused refresh token puts
the token's ``jti`` on this list until that ``exp``, and every replica refuses
it from then on.

Where the list lives, so every replica sees the same one:

- in Redis when ``REDIS_URL`` is set: a sorted set ``<prefix>:denied`` of
  jtis scored by their expiry;
- otherwise in the gateway's own database (``denied_tokens``), which every
  replica of one system shares.

Each replica keeps the list in memory and reads it again at most every
``SYNC_SECONDS`` (0.5 s), when a request needs it: checking a token costs a
set lookup, and a token signed out on one replica is refused by every other
one within a second. The replica that denies a token refuses it at once. The
list is short: a jti leaves it when its token expires (``TOKEN_TTL``).

If the store cannot be read, the last list read stays in force (and the
failure is logged); a token cannot be denied without the store (503).
"""
import logging
import time

from sqlalchemy import delete, insert, select

from common.errors import Unavailable
from gateway import models

log = logging.getLogger(__name__)

SYNC_SECONDS = 0.5


class RedisDenied:
    """The list in Redis: one sorted set, jti -> expiry (unix seconds).
    ``live`` answers {jti: expiry} of the tokens not yet expired."""

    def __init__(self, client, prefix):
        self.client = client
        self.key = f"{prefix}:denied"

    def add(self, entries, now):
        pipe = self.client.pipeline()
        pipe.zadd(self.key, {jti: float(expires_at) for jti, expires_at in entries})
        pipe.zremrangebyscore(self.key, "-inf", now)
        # The set goes when its last token expires (NX: a first expiry; GT: only ever later).
        ttl = max(1, int(max(expiry for _, expiry in entries) - now) + 1)
        pipe.expire(self.key, ttl, nx=True)
        pipe.expire(self.key, ttl, gt=True)
        pipe.execute()

    def live(self, now):
        return {member.decode() if isinstance(member, bytes) else member: score
                for member, score in self.client.zrangebyscore(self.key, now, "+inf", withscores=True)}


class SqlDenied:
    """The list in the gateway's database."""

    def __init__(self, writer, reader=None):
        self.writer = writer
        self.reader = reader or writer

    def add(self, entries, now):
        table = models.denied_tokens
        with self.writer.begin() as connection:
            known = set(connection.scalars(select(table.c.jti).where(table.c.jti.in_([j for j, _ in entries]))))
            rows = [{"jti": jti, "expires_at": float(expires_at)} for jti, expires_at in entries if jti not in known]
            if rows:
                connection.execute(insert(table), rows)
            connection.execute(delete(table).where(table.c.expires_at < now))

    def live(self, now):
        table = models.denied_tokens
        with self.reader.connect() as connection:
            return dict(connection.execute(select(table.c.jti, table.c.expires_at).where(table.c.expires_at >= now)).all())


class MemoryDenied:
    """The list in this process only: for a process with no shared store."""

    def __init__(self):
        self.entries = {}

    def add(self, entries, now):
        self.entries = {jti: expiry for jti, expiry in self.entries.items() if expiry >= now}
        self.entries.update(entries)

    def live(self, now):
        return {jti: expiry for jti, expiry in self.entries.items() if expiry >= now}


class DenyList:
    """What one replica knows of the shared list; ``jti in deny_list``."""

    def __init__(self, store, sync_seconds=SYNC_SECONDS, clock=time.time):
        self.store = store
        self.sync_seconds = sync_seconds
        self.clock = clock
        self.local = {}  # jti -> expiry: denied here, or read from the store
        self.synced_at = float("-inf")

    def __contains__(self, jti):
        now = self.clock()
        if now - self.synced_at >= self.sync_seconds:
            self.sync(now)
        expires_at = self.local.get(jti)
        return expires_at is not None and expires_at >= now

    def sync(self, now=None):
        now = self.clock() if now is None else now
        self.synced_at = now  # a store that is down is asked again after the interval, not on every request
        try:
            live = self.store.live(now)
        except Exception as error:
            log.warning("the deny list could not be read; the last one read stays in force: %s", error)
            return
        # Keep what this replica denied itself (it may not be readable yet), drop what expired.
        kept = {jti: expiry for jti, expiry in self.local.items() if expiry >= now}
        self.local = {**kept, **live}

    def deny(self, entries):
        """Deny each (jti, expiry) until its expiry, on every replica; raises
        Unavailable (nothing denied) when the store cannot be written."""
        entries = [(jti, float(expires_at)) for jti, expires_at in entries if jti]
        if not entries:
            return
        now = self.clock()
        try:
            self.store.add(entries, now)
        except Exception as error:
            log.error("the deny list could not be written: %s", error)
            raise Unavailable("signing out is not possible right now; try again") from None
        for jti, expires_at in entries:
            self.local[jti] = expires_at
