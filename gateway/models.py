"""How accounts are stored."""
from sqlalchemy import Column, String, Table, func, select

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


def name_taken(session, username):
    """Taken in any case: "Alice" next to "alice" would pass for her."""
    return session.scalar(select(func.count()).select_from(accounts)
                          .where(func.lower(accounts.c.username) == username.lower())) > 0
