"""Staff accounts, for an operator: ``python -m gateway.accounts``.

Outside the development profile there are no demo accounts, and sign-up only
ever makes customers; librarians and couriers are created here, by someone
with access to the gateway's database. The password is read from the
terminal (or from standard input when it is not one), never from the command
line, where it would land in shell history and process lists.

    python -m gateway.accounts create ada --role librarian
    python -m gateway.accounts list

It goes through the gateway's repository (``gateway.models.Accounts``), as
the gateway does.
"""
import argparse
import getpass
import os
import sys
from contextlib import contextmanager

from sqlalchemy.orm import Session

from common import migrate
from common.config import load_config
from common.store import engine_for
from gateway import auth, models
from gateway.domain import Account

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextmanager
def _accounts(config_path):
    """The gateway's repository over its database, in one transaction:
    committed when the block ends, rolled back when it raises (or exits)."""
    config = load_config(path=config_path)
    engine = engine_for(config["DB_URIS"]["gateway:Base"])
    migrate.upgrade("gateway", engine)  # the same schema the gateway makes
    try:
        with Session(engine) as session, session.begin():
            yield models.Accounts(session)
    finally:
        engine.dispose()


def _password():
    if sys.stdin.isatty():
        first, second = getpass.getpass("password: "), getpass.getpass("again: ")
        if first != second:
            sys.exit("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Create and list staff accounts.")
    parser.add_argument("--config", default=os.path.join(ROOT, "config.yml"))
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create an account (the password is asked for)")
    create.add_argument("username")
    create.add_argument("--role", choices=auth.ROLES, required=True)
    commands.add_parser("list", help="list the accounts and their roles")
    args = parser.parse_args(argv)

    with _accounts(args.config) as accounts:
        if args.command == "list":
            for account in accounts.everyone():
                print(f"{account.username}\t{account.role}")
            return
        if accounts.find(args.username) is not None:
            sys.exit(f"{args.username} exists already")
        password = _password()
        auth.check_new_password(args.username, password)
        accounts.add(Account(args.username, auth.hash_password(password), args.role))
    print(f"{args.username} ({args.role}) created")


if __name__ == "__main__":
    main()
