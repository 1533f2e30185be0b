"""deploy/entrypoint.py: secret files into the environment, then exec."""
import importlib.util
import os
import subprocess
import sys

import pytest

from deploy_support import DEPLOY, ROOT

CONFIG = str(ROOT / "config.yml")

SCRIPT = DEPLOY / "entrypoint.py"
_spec = importlib.util.spec_from_file_location("bookrental_entrypoint", SCRIPT)
entrypoint = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(entrypoint)


@pytest.fixture
def secret(tmp_path):
    def write(name, content):
        path = tmp_path / name
        path.write_text(content)
        return str(path)
    return write


def test_a_file_variable_becomes_the_setting(secret):
    env = {"GATEWAY_DB_URI_FILE": secret("uri", "s3cret-value\n"), "OTHER": "x", "NAMEKO_CONFIG": CONFIG}
    entrypoint.prepare(["true"], env)
    assert env == {"GATEWAY_DB_URI": "s3cret-value", "OTHER": "x", "NAMEKO_CONFIG": CONFIG}


def test_other_file_variables_are_left_alone(secret):
    env = {"SSL_CERT_FILE": secret("ca.pem", "-----BEGIN CERTIFICATE-----"), "NAMEKO_CONFIG": CONFIG}
    before = dict(env)
    entrypoint.prepare(["true"], env)
    assert env == before


def test_references_are_filled_in_and_percent_encoded_inside_uris(secret):
    env = {
        "RABBITMQ_PASSWORD_FILE": secret("amqp", "p@ss/w:rd%"),
        "AMQP_URI": "pyamqp://bookrental:${RABBITMQ_PASSWORD}@rabbitmq:5672/bookrental",
        "PLAIN": "${RABBITMQ_PASSWORD}",
    }
    entrypoint.prepare(["true"], env)
    assert env["AMQP_URI"] == "pyamqp://bookrental:p%40ss%2Fw%3Ard%25@rabbitmq:5672/bookrental"
    assert env["PLAIN"] == "p@ss/w:rd%"


def test_the_amqp_uri_it_builds_is_the_one_kombu_reads(secret):
    kombu = pytest.importorskip("kombu")
    env = {"RABBITMQ_PASSWORD_FILE": secret("amqp", "p@ss/w:rd%"),
           "AMQP_URI": "pyamqp://bookrental:${RABBITMQ_PASSWORD}@rabbitmq:5672/bookrental"}
    entrypoint.prepare(["true"], env)
    connection = kombu.Connection(env["AMQP_URI"])
    assert (connection.userid, connection.password, connection.hostname, connection.virtual_host) == \
        ("bookrental", "p@ss/w:rd%", "rabbitmq", "bookrental")


@pytest.mark.parametrize("env, message", [
    ({"X_FILE": "/nonexistent/secret", "URI": "a://u:${X}@h"}, "cannot read"),
    ({"URI": "a://${MISSING}"}, "MISSING"),
    ({"X": "set", "X_FILE": "/dev/null", "URI": "a://u:${X}@h"}, "both X and X_FILE"),
])
def test_mistakes_stop_the_container(env, message):
    with pytest.raises(entrypoint.SetupError, match=message):
        entrypoint.prepare(["true"], dict(env))


def test_an_empty_secret_file_stops_the_container(secret):
    with pytest.raises(entrypoint.SetupError, match="empty"):
        entrypoint.prepare(["true"], {"X_FILE": secret("empty", "\n"), "URI": "a://u:${X}@h"})


def test_placeholders_are_refused_outside_development():
    env = {"PROFILE": "production", "REDIS_URL": "redis://:REPLACE_ME@REPLACE_ME.redis.host:6379/0"}
    with pytest.raises(entrypoint.SetupError, match="REDIS_URL"):
        entrypoint.prepare(["true"], env)
    entrypoint.prepare(["true"], {"PROFILE": "development", "REDIS_URL": "REPLACE_ME"})


def test_without_a_command_it_runs_the_service_class():
    args = entrypoint.prepare([], {"SERVICE_CLASS": "product.service:ProductService"})
    assert args == ["nameko", "run", "--config", "config.yml", "product.service:ProductService"]
    with pytest.raises(entrypoint.SetupError, match="SERVICE_CLASS"):
        entrypoint.prepare([], {})


def test_it_execs_the_command_with_the_secrets_in_its_environment(secret):
    env = dict(os.environ, DB_PASSWORD_FILE=secret("db", "pw\n"),
               DB_URI="postgresql+psycopg2://svc:${DB_PASSWORD}@db:5432/svc")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), sys.executable, "-c",
         "import os; print(os.environ['DB_URI']); print('DB_PASSWORD_FILE' in os.environ)"],
        env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["postgresql+psycopg2://svc:pw@db:5432/svc", "False"]


def test_a_setup_error_exits_with_a_message():
    env = dict(os.environ, X_FILE="/nonexistent/secret", URI="a://u:${X}@h")
    result = subprocess.run([sys.executable, str(SCRIPT), "true"], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 78
    assert result.stderr.startswith("entrypoint: X_FILE: cannot read /nonexistent/secret")
