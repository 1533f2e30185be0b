"""Alembic environment of the notification service: its models are the target.

Run by Store.setup at start and by `make migrate`; see common/migrate.py.
"""
from alembic import context

from common.migrate import run_env
from notification.models import Base

run_env(context, Base.metadata)
