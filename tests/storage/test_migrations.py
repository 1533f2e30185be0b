"""The migrations make exactly the models' schema, on SQLite and PostgreSQL,
however many replicas run them at once, and take over a create_all database."""
import importlib
import os
import subprocess
import sys

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from common import migrate
from common.store import engine_for
from common.config import SERVICES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def metadata(service):
    return importlib.import_module(f"{service}.models").Base.metadata


def head(service):
    return ScriptDirectory.from_config(migrate.alembic_config(service)).get_current_head()


def differences(engine, service):
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, metadata(service))


def current(engine):
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_heads()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path, pg_database):
    """database(service) -> the URI of an empty database of that dialect."""
    if request.param == "sqlite":
        return lambda service: f"sqlite:///{tmp_path}/{service}.db"
    return pg_database


@pytest.mark.parametrize("service", SERVICES)
def test_the_migrations_make_exactly_the_models_schema(database, service):
    engine = engine_for(database(service))
    try:
        migrate.upgrade(service, engine)
        assert current(engine) == (head(service),)
        assert differences(engine, service) == []
        migrate.upgrade(service, engine)  # again: nothing to do
        assert current(engine) == (head(service),)
    finally:
        engine.dispose()


@pytest.mark.parametrize("service", ["product", "mypage"])
def test_downgrade_to_nothing_and_up_again(database, service):
    engine = engine_for(database(service))
    try:
        migrate.upgrade(service, engine)
        with engine.connect() as connection, connection.begin():
            command.downgrade(migrate.alembic_config(service, connection=connection), "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(service, engine)
        assert differences(engine, service) == []
    finally:
        engine.dispose()


def test_a_database_made_by_create_all_is_taken_over(database):
    engine = engine_for(database("product"))
    try:
        metadata("product").create_all(engine)
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO titles (isbn, title, author, stock, stocked) "
                                    "VALUES ('1', 'Kept', 'A', 1, 1)"))
        migrate.upgrade("product", engine)
        assert current(engine) == (head("product"),)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT title FROM titles")).scalar() == "Kept"
    finally:
        engine.dispose()


def test_a_database_with_foreign_tables_is_not_guessed_at(database):
    engine = engine_for(database("product"))
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE something_else (id INTEGER PRIMARY KEY)"))
        with pytest.raises(RuntimeError, match="refusing to guess"):
            migrate.upgrade("product", engine)
    finally:
        engine.dispose()


REPLICA = """
import sys
from common import migrate
from common.store import engine_for
migrate.upgrade(sys.argv[1], engine_for(sys.argv[2]))
"""


def test_replicas_starting_at_once_migrate_once(database):
    """Four processes upgrade one empty database at the same moment: each
    returns, the schema is right, the history has one entry."""
    uri = database("reservation")
    replicas = [subprocess.Popen([sys.executable, "-c", REPLICA, "reservation", uri], cwd=ROOT,
                                 env={**os.environ, "PYTHONPATH": ROOT, "PYTHONWARNINGS": "ignore"},
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                for _ in range(4)]
    outputs = [replica.communicate(timeout=60)[0].decode() for replica in replicas]
    assert [replica.returncode for replica in replicas] == [0] * 4, outputs
    engine = engine_for(uri)
    try:
        assert current(engine) == (head("reservation"),)
        assert differences(engine, "reservation") == []
    finally:
        engine.dispose()


def test_make_migrate_upgrades_every_configured_database(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore",
           **{f"{service.upper()}_DB_URI": f"sqlite:///{tmp_path}/{service}.db" for service in SERVICES}}
    env["MYPAGE_DB_URI"] = "redis://127.0.0.1:6379/0"
    result = subprocess.run([sys.executable, "-m", "ops.migrate", "upgrade"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "mypage: redis store, nothing to migrate" in result.stdout
    for service in ("product", "reservation", "delivery", "gateway"):
        assert f"{service}: at {head(service)}" in result.stdout


def test_titles_from_before_get_13_digit_isbns_and_keep_their_duplicates(database):
    """product 0002: valid ISBNs become 13 digits, an invalid one stays, a
    later duplicate is kept with a mark, so the unique index can be made."""
    engine = engine_for(database("product"))
    try:
        migrate.upgrade("product", engine, revision="0001")
        with engine.begin() as connection:
            for isbn in ("0-441-17271-7", "978-0-00-000000-0", "9780441172719", "978-0-00-000000-0"):
                connection.execute(text("INSERT INTO titles (isbn, title, author, stock, stocked) "
                                        "VALUES (:isbn, 'T', 'A', 1, 1)"), {"isbn": isbn})
        migrate.upgrade("product", engine)
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id, isbn FROM titles ORDER BY id")).all()
        ids = [row[0] for row in rows]
        assert [row[1] for row in rows] == ["9780441172719", "978-0-00-000000-0",
                                            f"9780441172719~dup{ids[2]}", f"978-0-00-000000-0~dup{ids[3]}"]
        assert differences(engine, "product") == []
    finally:
        engine.dispose()
