"""How accounts are stored."""
from sqlalchemy import Column, Float, String, Table, func, select

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


def find(session, username):
    return session.get(Account, username)


def address_of(session, username):
    """The account's address (None without one), in one SQL-core statement:
    read on every reservation, and half the cost of an ORM get."""
    accounts = Account.__table__
    return session.connection().execute(
        select(accounts.c.address).where(accounts.c.username == username)).scalar()


def name_taken(session, username):
    """Taken in any case: "Alice" next to "alice" would pass for her."""
    return session.scalar(select(func.count()).select_from(accounts)
                          .where(func.lower(accounts.c.username) == username.lower())) > 0


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
