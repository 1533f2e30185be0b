"""docker-compose.yml, Dockerfile and .env.example, checked offline.

The compose file is validated against the Compose Specification's JSON
schema, vendored as compose-spec.json (see COMPOSE_SPEC.md), then against
what the services need: health checks, restart policies, start order, the
settings config.yml reads, commands that exist, and no password or
well-known account in the file.
"""
import copy
import hashlib
import json
import re
from urllib.parse import urlsplit

import jsonschema
import pytest

from deploy_support import (
    COMPOSE_FILE, DEPLOY, ENV_EXAMPLE, HERE, ROOT, class_exists, compose_variables, config_settings,
    dotenv, environment, gateway_routes, interpolate, interpolate_tree, service_classes, service_of_class,
    load_yaml, strings,
)

SCHEMA_FILE = HERE / "compose-spec.json"
# compose/config/compose_spec.json of the docker-compose 1.29.2 wheel on PyPI.
SCHEMA_SHA256 = "0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac"

# Go durations, as compose parses them ("10s", "1m30s", "500ms").
DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")

# Set by the Dockerfile or by nothing config.yml reads, and still fine in a
# service's environment.
EXTRA_SETTINGS = {"SERVICE_CLASS", "NAMEKO_CONFIG"}


@pytest.fixture(scope="module")
def raw():
    return load_yaml(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def env_example():
    return dotenv(ENV_EXAMPLE)


@pytest.fixture(scope="module", params=["defaults", "env-example"])
def compose(request, raw, env_example):
    """The file as compose sees it: variables substituted, with no .env
    (every default) and with .env.example copied to .env."""
    env = {} if request.param == "defaults" else env_example
    return interpolate_tree(raw, env)


@pytest.fixture(scope="module")
def app_services(raw):
    """The services built from this repository's Dockerfile."""
    services = interpolate_tree(raw, {})["services"]
    return {name: service for name, service in services.items() if "build" in service}


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def errors(validator, document):
    return [f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
            for error in validator.iter_errors(document)]


# -- the Compose Specification ----------------------------------------------

def test_the_vendored_schema_is_the_compose_specification():
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["title"] == "Compose Specification"
    assert {"services", "volumes", "secrets", "networks"} <= set(schema["properties"])


def test_compose_file_follows_the_compose_specification(validator, raw, compose):
    assert errors(validator, raw) == []
    assert errors(validator, compose) == []


@pytest.mark.parametrize("breakage", [
    lambda doc: doc["services"]["product"]["healthcheck"].update(interval_seconds=5),
    lambda doc: doc["services"]["gateway"].update(restart=["always"]),
    lambda doc: doc["services"]["product"].update(depends_on={"rabbitmq": {"condition": "when_ready"}}),
    lambda doc: doc["services"]["product"].update(secretz=["x"]),
    lambda doc: doc.update(service={}),
], ids=["healthcheck-key", "restart-type", "depends-on-condition", "service-key", "top-level-key"])
def test_the_schema_catches_mistakes(validator, raw, breakage):
    broken = copy.deepcopy(raw)
    breakage(broken)
    assert errors(validator, broken), "the schema accepted a broken file"


# -- health, restarts, start order -----------------------------------------

def test_every_service_has_a_healthcheck_and_a_restart_policy(compose):
    for name, service in compose["services"].items():
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL") if isinstance(check["test"], list) else True
        assert service.get("restart") == "unless-stopped", f"{name}: restart is {service.get('restart')!r}"


def test_durations_are_compose_durations(compose):
    for name, service in compose["services"].items():
        check = service["healthcheck"]
        for key in ("interval", "timeout", "start_period"):
            assert DURATION.match(check[key]), f"{name}: healthcheck {key} {check[key]!r}"
        if "stop_grace_period" in service:
            assert DURATION.match(service["stop_grace_period"]), name


def test_services_start_once_what_they_need_is_healthy(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert rule == {"condition": "service_healthy"}, f"{name} -> {dependency}: {rule}"
            assert services[dependency].get("healthcheck"), dependency
    for name, service in services.items():
        if "build" in service:
            assert {"rabbitmq", "postgres"} <= set(service.get("depends_on") or {}), name


# -- the services themselves -------------------------------------------------

def test_every_service_of_the_repository_runs(app_services):
    run = {service["command"][-1] for service in app_services.values()}
    assert set(service_classes().values()) <= run
    assert {"product", "reservation", "delivery", "mypage", "notification", "gateway"} <= set(service_classes())


def test_commands_name_modules_of_the_repository(app_services):
    assert (ROOT / "config.yml").is_file()
    for name, service in app_services.items():
        command = service["command"]
        assert command[:4] == ["nameko", "run", "--config", "config.yml"], name
        assert class_exists(command[4]), f"{name}: {command[4]} is not a class in the repository"
        assert service_of_class(command[4]) == name, f"compose service {name} runs {command[4]}"


def test_backend_healthchecks_probe_the_service_they_run(app_services):
    assert (ROOT / "common" / "probe.py").is_file() and (DEPLOY / "entrypoint.py").is_file()
    for name, service in app_services.items():
        test = service["healthcheck"]["test"]
        if name == "gateway":
            continue
        assert test[:7] == ["CMD", "python", "/app/deploy/entrypoint.py", "python", "-m", "common.probe", name], test
        assert name in service_classes()


def test_gateway_healthcheck_asks_for_readiness(app_services):
    test = " ".join(app_services["gateway"]["healthcheck"]["test"])
    url = re.search(r"http://[^'\"\s]+", test).group(0)
    assert urlsplit(url).path == "/health/ready"
    assert urlsplit(url).port == 8000
    assert environment(app_services["gateway"])["GATEWAY_ADDRESS"].endswith(":8000")
    routes = gateway_routes()
    if routes:
        assert "/health/ready" in routes


def test_services_set_only_settings_config_yml_reads(app_services):
    known = config_settings()
    for name, service in app_services.items():
        env = environment(service)
        referenced = set().union(*(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", value) for value in env.values()))
        for key in env:
            if key.endswith("_FILE"):
                base = key[: -len("_FILE")]
                assert base in known or base in referenced, f"{name}: {key} feeds nothing"
            else:
                assert key in known or key in EXTRA_SETTINGS, f"{name}: config.yml does not read {key}"
        for reference in referenced:
            assert f"{reference}_FILE" in env, f"{name}: ${{{reference}}} comes from no secret file"


def test_each_service_gets_its_own_database_only(app_services):
    for name, service in app_services.items():
        env = environment(service)
        uris = {key: value for key, value in env.items() if key.endswith("_DB_URI")}
        assert list(uris) == [f"{name.upper()}_DB_URI"], name
        uri = urlsplit(uris[f"{name.upper()}_DB_URI"])
        assert uri.scheme == "postgresql+psycopg2"
        assert uri.username == name and uri.path == f"/{name}", "one role and one database per service"
        assert uri.password == f"${{{name.upper()}_DB_PASSWORD}}"


def test_passwords_come_from_secret_files(raw, app_services):
    declared = raw["secrets"]
    for name, service in app_services.items():
        env = environment(service)
        mounted = set(service.get("secrets") or [])
        for key, value in env.items():
            if key.endswith("_FILE"):
                assert value.startswith("/run/secrets/"), f"{name}: {key}"
                assert value[len("/run/secrets/"):] in mounted, f"{name}: {key} is not mounted"
        broker = urlsplit(env["AMQP_URI"])
        assert broker.password == "${RABBITMQ_PASSWORD}", "the broker password is a secret"
    generator = (DEPLOY / "generate-secrets.sh").read_text()
    for secret, spec in declared.items():
        assert spec == {"file": f"./deploy/secrets/{secret}"}, secret
        assert re.search(rf"\b{secret}\b", generator), f"deploy/generate-secrets.sh does not create {secret}"
    ignore = (DEPLOY / "secrets" / ".gitignore").read_text().split()
    assert "*" in ignore, "deploy/secrets/ must not be committed"
    for service in raw["services"].values():
        for secret in service.get("secrets") or []:
            assert secret in declared


def test_generated_passwords_are_long():
    generator = (DEPLOY / "generate-secrets.sh").read_text()
    length = int(re.search(r"head -c (\d+)", generator).group(1)) + 1
    assert length >= 32


def test_broker_user_and_vhost_are_the_ones_the_broker_creates(raw, app_services):
    broker = environment(raw["services"]["rabbitmq"])
    definitions = json.loads((ROOT / "rabbitmq" / "definitions.json").read_text())
    vhosts = {vhost["name"] for vhost in definitions["vhosts"]}
    for name, service in app_services.items():
        uri = urlsplit(environment(service)["AMQP_URI"])
        assert uri.scheme == "pyamqp" and uri.hostname == "rabbitmq" and uri.port == 5672
        assert uri.username == broker["BOOKRENTAL_AMQP_USER"]
        assert uri.path.lstrip("/") == broker["BOOKRENTAL_AMQP_VHOST"]
        assert uri.path.lstrip("/") in vhosts


def test_postgres_creates_every_database_the_services_use(raw, app_services):
    script = (DEPLOY / "postgres" / "init-databases.sh").read_text()
    created = set(re.search(r"services=\(([^)]*)\)", script).group(1).split())
    used = {urlsplit(environment(service)[f"{name.upper()}_DB_URI"]).path.strip("/")
            for name, service in app_services.items()}
    assert created == used
    postgres = raw["services"]["postgres"]
    assert {f"{database}_db_password" for database in created} <= set(postgres["secrets"])
    assert "./deploy/postgres:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]


def test_env_example_documents_every_variable(raw, env_example):
    used = set().union(*(compose_variables(text) for text in strings(raw)))
    assert used <= set(env_example), f"not in .env.example: {sorted(used - set(env_example))}"
    assert set(env_example) <= used, f"unused in docker-compose.yml: {sorted(set(env_example) - used)}"
    for key, value in env_example.items():
        assert not re.search(r"pass|secret|token_secret", key, re.I) or key == "TOKEN_TTL", \
            f".env.example must hold no secret: {key}"
    # The defaults written in docker-compose.yml are the ones .env.example shows.
    for key, value in env_example.items():
        assert interpolate(f"${{{key}:-{value}}}", {}) == value


def test_broker_has_no_default_account(raw):
    rabbitmq = raw["services"]["rabbitmq"]
    env = environment(rabbitmq)
    assert not {"RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"} & set(env)
    assert "./rabbitmq/rabbitmq.conf:/etc/rabbitmq/rabbitmq.conf:ro" in rabbitmq["volumes"]
    assert rabbitmq["entrypoint"] == ["/usr/local/bin/bookrental-entrypoint.sh"]
    assert any(volume.startswith("./rabbitmq/compose-entrypoint.sh:/usr/local/bin/bookrental-entrypoint.sh")
               for volume in rabbitmq["volumes"])
    for port in rabbitmq.get("ports") or []:
        assert str(port).startswith("127.0.0.1:"), "the management console stays on this machine"


def test_mounted_files_exist(raw):
    for name, service in raw["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
    assert (ROOT / "rabbitmq" / "compose-entrypoint.sh").stat().st_mode & 0o111, "must be executable"
    assert (DEPLOY / "postgres" / "init-databases.sh").stat().st_mode & 0o111, "must be executable"


# -- the image -----------------------------------------------------------------

def test_dockerfile_builds_a_non_root_image_of_the_repository():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    instructions = [line.split()[0].upper() for line in lines if not line.startswith(("&&", "\\")) and line[0].isalpha()]
    assert lines[0] == "FROM python:3.11-slim"
    assert "RUN pip install -r requirements.txt" in lines
    assert lines.index("COPY requirements.txt ./") < lines.index("COPY . .")
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert instructions.index("USER") > instructions.index("COPY")
    entrypoint = json.loads(next(line for line in lines if line.startswith("ENTRYPOINT")).split(None, 1)[1])
    assert entrypoint == ["python", "/app/deploy/entrypoint.py"]
    assert "EXPOSE 8000" in lines


def test_dockerignore_keeps_secrets_and_local_state_out():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".env", "deploy/secrets", "var"} <= ignored
    for needed in ("deploy", "deploy/entrypoint.py", "common", "gateway", "docs", "config.yml", "requirements.txt"):
        assert needed not in ignored, f"{needed} is needed in the image"
