"""``make migrate`` and ``make revision``: the schema migrations of
``common.migrate``, run by hand on every SQL database config.yml names.

Usage: ``python -m ops.migrate upgrade [service...]``,
``python -m ops.migrate current [service...]``,
``python -m ops.migrate revision SERVICE -m "what changes"``.
"""
import argparse
import logging
import os
import sys

from alembic import command
from alembic.runtime.migration import MigrationContext

from common.config import ROOT, SERVICES, load_config
from common.migrate import alembic_config, upgrade
from common.store import engine_for


def configured_uris(env=None):
    """{service: database URI} from config.yml under the environment."""
    config = load_config(dict(env or {}))
    return {name: config["DB_URIS"][f"{name}:Base"] for name in SERVICES}


def is_sql(uri):
    return "://" in uri and not uri.split("://", 1)[0].startswith(("redis", "rediss", "unix"))


def _engine(uri):
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        os.makedirs(os.path.dirname(os.path.join(ROOT, uri[len("sqlite:///"):])) or ".", exist_ok=True)
    return engine_for(uri)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Book Rental schema migrations (Alembic).")
    parser.add_argument("command", choices=["upgrade", "current", "revision"])
    parser.add_argument("services", nargs="*", metavar="service", help=", ".join(SERVICES))
    parser.add_argument("-m", "--message", default="change")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.chdir(ROOT)  # the default SQLite paths are relative to the project
    sys.path.insert(0, ROOT)
    uris = configured_uris()
    services = args.services or list(SERVICES)
    unknown = sorted(set(services) - set(SERVICES))
    if unknown:
        parser.error(f"unknown service(s): {', '.join(unknown)}")
    if args.command == "revision":
        if len(services) != 1:
            parser.error("revision: name exactly one service")
        service = services[0]
        engine = _engine(uris[service])
        upgrade(service, engine)  # autogenerate compares against an up-to-date database
        with engine.connect() as connection:
            command.revision(alembic_config(service, connection=connection), message=args.message,
                             autogenerate=True)
        return
    for service in services:
        uri = uris[service]
        if not is_sql(uri):
            print(f"{service}: {uri.split('://')[0]} store, nothing to migrate")
            continue
        engine = _engine(uri)
        try:
            if args.command == "upgrade":
                upgrade(service, engine)
            with engine.connect() as connection:
                heads = MigrationContext.configure(connection).get_current_heads()
            print(f"{service}: at {', '.join(heads) or 'no revision'} ({engine.url.render_as_string(hide_password=True)})")
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
