"""Schema migrations: one Alembic environment per service, run at start.

Each service keeps its migrations beside its code, in ``<service>/migrations``
(``env.py`` and ``versions/``); its ``models.Base.metadata`` is the target.
``Store.setup`` brings the database to the newest revision before the
service consumes anything, so a deploy needs no separate step; ``make
migrate`` does the same by hand (and ``make revision`` writes the next one).

Several replicas may start at once; exactly one migrates, the others wait
for it and then find nothing to do:

- PostgreSQL: the upgrade runs in one transaction (DDL is transactional there)
  that first takes a transaction-scoped advisory lock;
- SQLite: the upgrade runs in one ``BEGIN IMMEDIATE`` transaction (the engine
  ``Store`` uses), which holds the database's write lock; a replica that gives
  up waiting for it retries.

A database made before migrations existed (by ``create_all``) is stamped as
``0001`` once, after checking that its tables are the initial ones, then
upgraded like any other.

``make migrate`` and ``make revision`` are ``python -m ops.migrate``.
"""
import contextlib
import importlib
import logging
import os
import time

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import OperationalError

from common.engines import advisory_key

log = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INITIAL = "0001"
LOCK_RETRIES = 5


def migrations_dir(package):
    return os.path.join(ROOT, package, "migrations")


def has_migrations(package):
    return os.path.isfile(os.path.join(migrations_dir(package), "env.py"))


def alembic_config(package, connection=None, uri=None):
    """The Alembic configuration of ``package``'s environment, in code: no
    alembic.ini to keep in step. ``connection`` (in a transaction) is used as
    it is; otherwise env.py connects to ``uri``."""
    config = Config()
    config.set_main_option("script_location", migrations_dir(package))
    config.set_main_option("version_locations", os.path.join(migrations_dir(package), "versions"))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if uri:
        config.set_main_option("sqlalchemy.url", uri.replace("%", "%%"))
    config.attributes["package"] = package
    config.attributes["connection"] = connection
    return config


def lock_key(package):
    """The advisory lock of ``package``'s migrations (a signed 64-bit int)."""
    return advisory_key(f"bookrental-migrate:{package}")


def upgrade(package, engine, revision="head"):
    """Bring ``engine``'s database to ``revision``; safe to call from many
    replicas at once. ``engine`` is the service's own: on SQLite it must begin
    its transactions with ``BEGIN IMMEDIATE`` (``common.store`` does)."""
    for attempt in range(LOCK_RETRIES):
        try:
            with engine.connect() as connection, connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(package)})
                config = alembic_config(package, connection=connection)
                _stamp_if_made_by_create_all(package, connection, config)
                command.upgrade(config, revision)
            return
        except OperationalError as error:  # SQLite: another replica held the lock too long
            if "locked" not in str(error) or attempt == LOCK_RETRIES - 1:
                raise
            log.warning("migration of %s waits for another replica: %s", package, error)
            time.sleep(0.5 * (attempt + 1))


def _stamp_if_made_by_create_all(package, connection, config):
    tables = set(inspect(connection).get_table_names())
    if "alembic_version" in tables or not tables:
        return
    expected = set(_metadata(package).tables)
    if not expected <= tables:
        raise RuntimeError(
            f"{package}: the database has tables {sorted(tables)} but no migration history, "
            f"and not all of the initial tables {sorted(expected)}; refusing to guess")
    log.warning("%s: database made before migrations; stamping it as %s", package, INITIAL)
    command.stamp(config, INITIAL)


def _metadata(package):
    return importlib.import_module(f"{package}.models").Base.metadata


def run_env(context, metadata):
    """The body of every service's ``migrations/env.py``."""
    config = context.config
    options = dict(target_metadata=metadata, compare_type=True, render_as_batch=True)
    if context.is_offline_mode():
        context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    with contextlib.ExitStack() as stack:
        if connection is None:
            engine = create_engine(config.get_main_option("sqlalchemy.url"))
            stack.callback(engine.dispose)
            connection = stack.enter_context(engine.connect())
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
