"""``make up CLUSTER=n``: the system on brokers and a database built for
more than one machine (SPEC §12).

- ``n`` RabbitMQ nodes of the system's own, clustered (``ops/brokers.py``);
- every service on PostgreSQL at ``DATABASE_HOST`` (default 127.0.0.1:5432,
  as ``DATABASE_USER``/``DATABASE_PASSWORD``, default postgres and none),
  one database per service, ``<DATABASE_PREFIX><service>`` (default
  ``bookrental_product``...), created when missing;
- every service given every node (``AMQP_URI`` as kombu's failover list,
  each process starting with another node so that the connections spread)
  and ``QUEUE_TYPE=quorum`` (common/queues.py).

What was chosen is kept in ``<state>/run/cluster.json`` until ``make down``:
``make start``, ``stop``, ``rollout``, ``status`` and a second ``make up``
(with or without ``CLUSTER``) go on with the same brokers and databases.
"""
import os

from common.config import SERVICES
from ops import state
from ops.brokers import Brokers

FILE = "cluster.json"
DATABASES = tuple(SERVICES)  # one database per service


def settings_path(state_dir):
    return os.path.join(os.path.abspath(state_dir), "run", FILE)


def load(state_dir):
    """The clustered settings of this state directory, or None (one broker)."""
    return state.read_json(settings_path(state_dir))


def brokers_of(settings, state_dir):
    return Brokers.described(state_dir, settings["nodes"])


def database_uris(prefix=None, host=None, user=None, password=None, create=True):
    """{service: PostgreSQL URI} of one database per service, created when missing."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import URL

    host = host or os.environ.get("DATABASE_HOST") or "127.0.0.1:5432"
    name, _, port = host.partition(":")
    user = user or os.environ.get("DATABASE_USER") or "postgres"
    password = password if password is not None else os.environ.get("DATABASE_PASSWORD") or None
    prefix = prefix if prefix is not None else os.environ.get("DATABASE_PREFIX", "bookrental_")

    def url(database):
        return URL.create("postgresql+psycopg2", username=user, password=password, host=name,
                          port=int(port or 5432), database=database)

    uris = {service: url(prefix + service).render_as_string(hide_password=False) for service in DATABASES}
    if create:
        admin = create_engine(url("postgres"), isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
        try:
            with admin.connect() as connection:
                existing = {row[0] for row in connection.execute(text("SELECT datname FROM pg_database"))}
                for service in DATABASES:
                    if prefix + service not in existing:
                        connection.execute(text(f'CREATE DATABASE "{prefix}{service}"'))
        finally:
            admin.dispose()
    return uris


def prepare(state_dir, size=3, brokers=None, database_prefix=None, timeout=180, **database):
    """Start and cluster the brokers, make the databases, and write down
    the settings every process of the system gets. Returns the settings."""
    databases = database_uris(database_prefix, **database)  # first: it fails at once when there is no server
    brokers = brokers or Brokers(state_dir, size)
    brokers.up(timeout)
    settings = {
        "nodes": brokers.describe(),
        "amqp_uris": brokers.amqp_uris,
        "management_urls": [node.management_url for node in brokers.nodes if node.management_url],
        "env": {"AMQP_URI": ";".join(brokers.amqp_uris), "QUEUE_TYPE": "quorum",
                **{f"{service.upper()}_DB_URI": uri for service, uri in databases.items()}},
    }
    os.makedirs(os.path.dirname(settings_path(state_dir)), exist_ok=True)
    state.write_json(settings_path(state_dir), settings)
    return settings


def rotated(uris, offset):
    """The failover list starting at node ``offset`` (mod n)."""
    offset %= len(uris)
    return ";".join(uris[offset:] + uris[:offset])


def down(state_dir, brokers=None):
    """Stop the nodes and forget the settings (their data stays, for the next
    ``make up CLUSTER=n``). [(name, pid)] of the nodes that ran."""
    settings = load(state_dir)
    if settings is None and brokers is None:
        return []
    stopped = (brokers or brokers_of(settings, state_dir)).down()
    try:
        os.unlink(settings_path(state_dir))
    except FileNotFoundError:
        pass
    return stopped
