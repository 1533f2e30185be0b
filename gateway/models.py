"""How accounts and the refresh tokens of their sessions are stored, and the
repository the gateway goes through (``Accounts``): no route holds a session.
Each write transaction of ``gateway.store.AccountStore`` carries one
(``tx.accounts``), ``store.accounts()`` is a read through one, and
``python -m gateway.accounts`` uses one too; tests/unit/test_gateway_accounts.py
puts an in-memory fake in its place."""
from sqlalchemy import Column, Float, String, Table, and_, bindparam, func, insert, select, update

from common.store import declare_base
from gateway.domain import Account

Base = declare_base()

accounts = Table(
    "accounts", Base.metadata,
    Column("username", String(64), primary_key=True),
    Column("password_hash", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("email", String(254), nullable=True),  # where notices are mailed
    Column("address", String(300), nullable=True),  # where books go, unless a reservation says otherwise
)
Base.registry.map_imperatively(Account, accounts)


# Refresh tokens (gateway.sessions): only the SHA-256 of each is stored. A
# sign-in starts a session (a family of refresh tokens); each refresh uses one
# up and adds the next; a session is revoked as a whole.
refresh_tokens = Table(
    "refresh_tokens", Base.metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("session_id", String(64), nullable=False, index=True),
    Column("username", String(64), nullable=False),
    Column("client_id", String(64), nullable=True),
    Column("issued_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
    Column("used_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
    # the access token issued with it: denied too when the session is revoked
    Column("access_jti", String(64), nullable=False),
    Column("access_expires_at", Float, nullable=False),
)

# Access tokens signed out before they expired (gateway.denylist), when the
# deny list is not kept in Redis.
denied_tokens = Table(
    "denied_tokens", Base.metadata,
    Column("jti", String(64), primary_key=True),
    Column("expires_at", Float, nullable=False, index=True),
)


# Read on every reservation (gateway.store.AccountStore.address_of): made once.
_ADDRESS_OF = select(accounts.c.address).where(accounts.c.username == bindparam("username"))


def address_of(connection, username):
    """The account's address (None without one or without an account), on ``connection``."""
    return connection.execute(_ADDRESS_OF, {"username": username}).scalar()


class Accounts:
    """The gateway's port to its storage, over one session: the accounts, and
    the refresh tokens that hold their sessions (the rules for those are
    ``gateway.sessions``'; this only stores and finds)."""

    def __init__(self, session):
        self.session = session

    # -- accounts -----------------------------------------------------------

    def find(self, username):
        """The account (None without one). A change to it (``change_contact``)
        is saved with the transaction."""
        return self.session.get(Account, username)

    def name_taken(self, username):
        """Taken in any case: "Alice" next to "alice" would pass for her."""
        return self.session.scalar(select(func.count()).select_from(accounts)
                                   .where(func.lower(accounts.c.username) == username.lower())) > 0

    def add(self, account):
        self.session.add(account)

    def address_of(self, username):
        """The account's address (None without one), in one SQL-core statement
        (``address_of`` below: ``AccountStore.address_of`` reads it without a session)."""
        return address_of(self.session.connection(), username)

    def everyone(self):
        """Every account, by username (for an operator's list)."""
        return self.session.scalars(select(Account).order_by(Account.username)).all()

    # -- refresh tokens (gateway.sessions) ----------------------------------

    def add_refresh_token(self, token_hash, session_id, username, client_id, issued_at, expires_at, access):
        """``access``: the (jti, expiry) of the access token issued with it."""
        self.session.execute(insert(refresh_tokens).values(
            token_hash=token_hash, session_id=session_id, username=username, client_id=client_id,
            issued_at=issued_at, expires_at=expires_at, used_at=None, revoked_at=None,
            access_jti=access[0], access_expires_at=access[1]))

    def refresh_token(self, token_hash):
        """The stored row (a mapping of its columns), or None."""
        return self.session.execute(
            select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash)).mappings().first()

    def use_refresh_token(self, token_hash, now):
        """Mark it used, unless it is already: True when this call did. Of two
        requests with the same token at once, only one marks it."""
        marked = self.session.execute(update(refresh_tokens).where(and_(
            refresh_tokens.c.token_hash == token_hash, refresh_tokens.c.used_at.is_(None))).values(used_at=now))
        return marked.rowcount == 1

    def revoke_session(self, session_id, now):
        """Mark the session's refresh tokens revoked; returns the (jti, expiry)
        of its access tokens that have not expired by ``now``."""
        live = self.session.execute(select(refresh_tokens.c.access_jti, refresh_tokens.c.access_expires_at).where(
            and_(refresh_tokens.c.session_id == session_id, refresh_tokens.c.access_expires_at > now))).all()
        self.session.execute(update(refresh_tokens).where(and_(
            refresh_tokens.c.session_id == session_id, refresh_tokens.c.revoked_at.is_(None))).values(revoked_at=now))
        return [(jti, expires_at) for jti, expires_at in live]

    def forget_refresh_tokens(self, expired_before):
        """Delete the refresh tokens that expired before ``expired_before``."""
        self.session.execute(refresh_tokens.delete().where(refresh_tokens.c.expires_at < expired_before))
