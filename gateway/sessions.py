"""Sessions: what a sign-in starts and a sign-out ends, held by refresh tokens.

A sign-in starts a session (an id, the ``sid`` claim of its access tokens)
and gives the client a refresh token: 32 random bytes, opaque, stored only
as its SHA-256 (a stolen database holds no usable token; the tokens are
random enough that a plain hash is safe). The tokens of one session form a
family (the OAuth 2.0 Security BCP, RFC 6819 §5.2.2.3):

- a refresh token works once: ``refresh`` marks it used and returns the next
  one, with a new access token;
- a used one presented again means two parties hold the family (one stole
  it): the whole session is revoked, and the access tokens it issued that
  have not expired are returned, for the deny list;
- a token expires ``REFRESH_TOKEN_TTL`` after it was issued (each refresh
  issues a new one with the full time); a revoked session's tokens, an
  expired one, one issued to another client or presented for another user
  are refused alike (``invalid_grant``; the client cannot tell which).

Functions here take the SQLAlchemy session of a transaction of the
gateway's store (``self.store.transaction()``), so a refresh commits or not
as a whole.
"""
import hashlib
import secrets

from sqlalchemy import and_, insert, select, update

from gateway import models

DEFAULT_TTL = 14 * 24 * 3600
PRUNE_AFTER = 24 * 3600  # expired rows are kept this long, then deleted


class InvalidGrant(Exception):
    """The refresh token is not (or no longer) good; ``revoked`` lists the
    (jti, expiry) of access tokens to deny when it revoked a session."""

    def __init__(self, message, revoked=()):
        super().__init__(message)
        self.message = message
        self.revoked = list(revoked)


def digest(token):
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_session_id():
    return secrets.token_urlsafe(16)


def issue(db, session_id, username, client_id, access, now, ttl=DEFAULT_TTL):
    """Store a new refresh token of ``session_id``; returns the token.
    ``access`` is the (jti, expiry) of the access token issued with it."""
    token = secrets.token_urlsafe(32)
    db.execute(insert(models.refresh_tokens).values(
        token_hash=digest(token), session_id=session_id, username=username, client_id=client_id,
        issued_at=now, expires_at=now + ttl, used_at=None, revoked_at=None,
        access_jti=access[0], access_expires_at=access[1]))
    return token


def use(db, token, now, client_id=None, username=None):
    """Use ``token`` up: (session id, username) of a good one; InvalidGrant
    otherwise (with what to deny when a reuse revoked its session).
    ``username``: the user the client is known to act for, if any."""
    table = models.refresh_tokens
    row = db.execute(select(table).where(table.c.token_hash == digest(token))).mappings().first()
    if row is None:
        raise InvalidGrant("the refresh token is not valid")
    if row["revoked_at"] is not None:
        raise InvalidGrant("the session of this refresh token has ended; sign in again")
    if (client_id is not None and row["client_id"] is not None and client_id != row["client_id"]) or (
            username is not None and username != row["username"]):
        raise InvalidGrant("the refresh token was not issued to this client")
    if row["used_at"] is not None:
        raise InvalidGrant("the refresh token was used already; the session has ended",
                           revoked=revoke(db, row["session_id"], now))
    if row["expires_at"] <= now:
        raise InvalidGrant("the refresh token has expired; sign in again")
    # Two requests with the same token at once: only one marks it used.
    marked = db.execute(update(table).where(and_(table.c.token_hash == row["token_hash"], table.c.used_at.is_(None)))
                        .values(used_at=now))
    if marked.rowcount != 1:
        raise InvalidGrant("the refresh token was used already; the session has ended",
                           revoked=revoke(db, row["session_id"], now))
    return row["session_id"], row["username"], row["client_id"]


def revoke(db, session_id, now):
    """End a session: its refresh tokens are refused from now on. Returns the
    (jti, expiry) of its access tokens that have not expired, to deny."""
    table = models.refresh_tokens
    live = db.execute(select(table.c.access_jti, table.c.access_expires_at).where(and_(
        table.c.session_id == session_id, table.c.access_expires_at > now))).all()
    db.execute(update(table).where(and_(table.c.session_id == session_id, table.c.revoked_at.is_(None)))
               .values(revoked_at=now))
    return [(jti, expires_at) for jti, expires_at in live]


def prune(db, now):
    """Forget tokens that expired more than a day ago."""
    table = models.refresh_tokens
    db.execute(table.delete().where(table.c.expires_at < now - PRUNE_AFTER))
