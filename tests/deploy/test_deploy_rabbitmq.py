"""rabbitmq/ (the broker's files for docker-compose) and the PostgreSQL
init script, checked offline; the compose entrypoint is run for real with
a stand-in for the image's own entrypoint."""
import json
import os
import re
import shutil
import subprocess

import pytest

from deploy_support import DEPLOY, NO_GUEST_PATHS, RABBITMQ, ROOT, string_constant

# Policy keys RabbitMQ 3.10 through 4.x all accept for queues (an unknown key
# makes the definitions import, and so the node's boot, fail).
POLICY_KEYS = {
    "max-length", "max-length-bytes", "overflow", "message-ttl", "expires",
    "dead-letter-exchange", "dead-letter-routing-key", "delivery-limit",
}


@pytest.fixture(scope="module")
def definitions():
    return json.loads((RABBITMQ / "definitions.json").read_text())


def conf_settings():
    settings = {}
    for number, line in enumerate((RABBITMQ / "rabbitmq.conf").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and key.strip() and value.strip(), f"rabbitmq.conf:{number}: not `key = value`: {line!r}"
        assert re.fullmatch(r"[a-z_][a-z0-9_.]*", key.strip()), f"rabbitmq.conf:{number}: bad key {key!r}"
        assert key.strip() not in settings, f"rabbitmq.conf:{number}: {key.strip()} set twice"
        settings[key.strip()] = value.strip()
    return settings


def test_enabled_plugins_is_an_erlang_list_with_management():
    text = (RABBITMQ / "enabled_plugins").read_text().strip()
    match = re.fullmatch(r"\[([a-z_,\s]*)\]\.", text)
    assert match, text
    plugins = {plugin.strip() for plugin in match.group(1).split(",")}
    assert "rabbitmq_management" in plugins


def test_rabbitmq_conf_loads_the_definitions_and_serves_management():
    settings = conf_settings()
    assert settings["load_definitions"] == "/etc/rabbitmq/definitions.json"
    assert settings["management.tcp.port"] == "15672"
    assert settings["listeners.tcp.default"] == "5672"
    # Credentials never live in this file.
    assert not {key for key in settings if key.startswith(("default_user", "default_pass", "default_users"))}


def test_definitions_hold_no_user_and_no_password(definitions):
    assert "users" not in definitions and "permissions" not in definitions
    assert "password" not in json.dumps(definitions)
    # compose-entrypoint.sh splices the user in after the opening brace.
    assert (RABBITMQ / "definitions.json").read_text().splitlines()[0] == "{"


def test_definitions_declare_the_vhost_the_exchange_and_the_dead_letter_policy(definitions):
    assert [vhost["name"] for vhost in definitions["vhosts"]] == ["bookrental"]
    dead_letters = string_constant(ROOT / "common" / "handlers.py", "DEAD_LETTER_EXCHANGE")
    exchange = next(x for x in definitions["exchanges"] if x["name"] == dead_letters)
    # As common/handlers.py declares it: any difference and the services'
    # own declaration fails with PRECONDITION_FAILED.
    assert (exchange["type"], exchange["durable"], exchange["auto_delete"], exchange["internal"]) == \
        ("direct", True, False, False)
    assert exchange["arguments"] == {}
    for item in definitions["exchanges"] + definitions["policies"]:
        assert item["vhost"] == "bookrental"
    policy = next(p for p in definitions["policies"] if p["pattern"] == r".*\.dead$")
    assert policy["apply-to"] == "queues"
    pattern = re.compile(policy["pattern"])
    assert pattern.search("evt-reservation-reservation_requested--product.on_reservation_requested.dead")
    assert not pattern.search("evt-reservation-reservation_requested--product.on_reservation_requested")
    for each in definitions["policies"]:
        assert set(each["definition"]) <= POLICY_KEYS, each["name"]


def test_no_well_known_account_anywhere():
    for path in NO_GUEST_PATHS:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        assert files, f"{path} is missing"
        for file in files:
            text = file.read_text(errors="replace").lower()
            assert "guest" not in text, f"'guest' in {file.relative_to(ROOT)}"


# -- rabbitmq/compose-entrypoint.sh, run -------------------------------------

@pytest.fixture
def entrypoint_run(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker-entrypoint.sh"
    fake.write_text('#!/bin/sh\necho "started: $*"\n')
    fake.chmod(0o755)
    topology = tmp_path / "topology.json"
    shutil.copy(RABBITMQ / "definitions.json", topology)
    target = tmp_path / "definitions.json"

    def run(password):
        secret = tmp_path / "rabbitmq_password"
        if password is not None:
            secret.write_text(password)
        env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
                   BOOKRENTAL_AMQP_PASSWORD_FILE=str(secret), BOOKRENTAL_TOPOLOGY_FILE=str(topology),
                   BOOKRENTAL_DEFINITIONS_FILE=str(target))
        result = subprocess.run(["sh", str(RABBITMQ / "compose-entrypoint.sh"), "rabbitmq-server"],
                                env=env, capture_output=True, text=True, timeout=30)
        return result, target

    return run


def test_compose_entrypoint_adds_the_user_from_the_secret(entrypoint_run, definitions):
    result, target = entrypoint_run("Abc123-secret_value.x~\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started: rabbitmq-server"
    written = json.loads(target.read_text())
    assert written["users"] == [{"name": "bookrental", "password": "Abc123-secret_value.x~", "tags": "administrator"}]
    assert written["permissions"] == [{"user": "bookrental", "vhost": "bookrental",
                                       "configure": ".*", "write": ".*", "read": ".*"}]
    for key, value in definitions.items():
        assert written[key] == value
    assert oct(target.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("password", [None, "", 'quote"breaks-json', "spaces are out"],
                         ids=["missing", "empty", "quote", "space"])
def test_compose_entrypoint_refuses_a_bad_secret(entrypoint_run, password):
    result, target = entrypoint_run(password)
    assert result.returncode != 0
    assert "compose-entrypoint:" in result.stderr
    assert not target.exists()


# -- deploy/postgres/init-databases.sh ---------------------------------------

def test_postgres_init_script_is_valid_bash():
    script = DEPLOY / "postgres" / "init-databases.sh"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    services = set(re.search(r"services=\(([^)]*)\)", text).group(1).split())
    assert services == {"product", "reservation", "delivery", "mypage", "notification", "gateway"}
    assert "REVOKE ALL ON DATABASE" in text, "no service may reach another's database"
    assert "ON_ERROR_STOP=1" in text
