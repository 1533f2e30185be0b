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

Functions here are the rules; they store and find through the gateway's
repository (``gateway.models.Accounts``) of a transaction of its store
(``tx.accounts`` in ``self.store.transaction()``), so a refresh commits or
not as a whole.
"""
import hashlib
import secrets

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


def issue(accounts, session_id, username, client_id, access, now, ttl=DEFAULT_TTL):
    """Store a new refresh token of ``session_id``; returns the token.
    ``access`` is the (jti, expiry) of the access token issued with it."""
    token = secrets.token_urlsafe(32)
    accounts.add_refresh_token(digest(token), session_id, username, client_id, now, now + ttl, access)
    return token


def use(accounts, token, now, client_id=None, username=None):
    """Use ``token`` up: (session id, username, client id) of a good one;
    InvalidGrant otherwise (with what to deny when a reuse revoked its
    session). ``username``: the user the client is known to act for, if any."""
    row = accounts.refresh_token(digest(token))
    if row is None:
        raise InvalidGrant("the refresh token is not valid")
    if row["revoked_at"] is not None:
        raise InvalidGrant("the session of this refresh token has ended; sign in again")
    if (client_id is not None and row["client_id"] is not None and client_id != row["client_id"]) or (
            username is not None and username != row["username"]):
        raise InvalidGrant("the refresh token was not issued to this client")
    if row["used_at"] is not None:
        raise InvalidGrant("the refresh token was used already; the session has ended",
                           revoked=revoke(accounts, row["session_id"], now))
    if row["expires_at"] <= now:
        raise InvalidGrant("the refresh token has expired; sign in again")
    # Two requests with the same token at once: only one marks it used.
    if not accounts.use_refresh_token(row["token_hash"], now):
        raise InvalidGrant("the refresh token was used already; the session has ended",
                           revoked=revoke(accounts, row["session_id"], now))
    return row["session_id"], row["username"], row["client_id"]


def revoke(accounts, session_id, now):
    """End a session: its refresh tokens are refused from now on. Returns the
    (jti, expiry) of its access tokens that have not expired, to deny."""
    return accounts.revoke_session(session_id, now)


def prune(accounts, now):
    """Forget tokens that expired more than a day ago."""
    accounts.forget_refresh_tokens(now - PRUNE_AFTER)
