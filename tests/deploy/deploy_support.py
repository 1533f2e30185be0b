"""What the deployment tests share: the repository as files, read offline.

Nothing here imports the services or Nameko; the service classes and their
names are found by reading the source (``ast``), so these tests run without
a broker, a database or Docker.
"""
import ast
import re
from functools import lru_cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
K8S = ROOT / "k8s"
RABBITMQ = ROOT / "rabbitmq"
DEPLOY = ROOT / "deploy"

# Files where a well-known broker account must never appear.
NO_GUEST_PATHS = [
    COMPOSE_FILE, ENV_EXAMPLE, ROOT / "Dockerfile", ROOT / ".dockerignore",
    K8S, RABBITMQ, DEPLOY / "postgres", DEPLOY / "entrypoint.py", DEPLOY / "generate-secrets.sh",
]

HEALTH_ROUTES = {"/health/live", "/health/ready"}
GATEWAY_PORT = 8000


@lru_cache(maxsize=None)
def config_settings():
    """The environment variables config.yml reads: every ``${NAME...}``."""
    text = (ROOT / "config.yml").read_text()
    return frozenset(re.findall(r"\$\{([^}:\s]+)", text))


@lru_cache(maxsize=None)
def service_classes():
    """``{service name: "module:Class"}`` for every ``*/service.py`` class
    that declares ``name = "..."`` (the Nameko service name)."""
    found = {}
    for path in sorted(ROOT.glob("*/service.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            for statement in node.body:
                if (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                        and isinstance(statement.targets[0], ast.Name) and statement.targets[0].id == "name"
                        and isinstance(statement.value, ast.Constant) and isinstance(statement.value.value, str)):
                    found[statement.value.value] = f"{path.parent.name}.service:{node.name}"
    return found


def class_exists(spec):
    """True when ``package.module:Class`` names a class defined in the repo."""
    module, _, cls = spec.partition(":")
    path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    if not cls or not path.is_file():
        return False
    tree = ast.parse(path.read_text(), filename=str(path))
    return any(isinstance(node, ast.ClassDef) and node.name == cls for node in tree.body)


def service_of_class(spec):
    """The Nameko service name a ``module:Class`` declares, or None."""
    return {value: key for key, value in service_classes().items()}.get(spec)


def gateway_routes():
    """The paths the gateway serves, read from its ``@api(METHOD, PATH)``
    decorators; empty if the gateway is not in the repo."""
    path = ROOT / "gateway" / "service.py"
    if not path.is_file():
        return set()
    return set(re.findall(r"""@api\(\s*["']GET["']\s*,\s*["']([^"']+)["']""", path.read_text()))


def string_constant(path, name):
    """The value of a module-level ``NAME = "..."`` in a source file."""
    tree = ast.parse(Path(path).read_text())
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == name and isinstance(node.value, ast.Constant)):
            return node.value.value
    raise LookupError(f"{name} not found in {path}")


def _plain_loader():
    """yaml.SafeLoader without the implicit ``${NAME}`` resolver that Nameko's
    CLI and pytest plugin register on SafeLoader itself (they would
    substitute this process's environment into the files under test)."""

    class PlainLoader(yaml.SafeLoader):
        pass

    PlainLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if not tag.startswith("!")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    return PlainLoader


def load_yaml(text):
    return yaml.load(text, Loader=_plain_loader())


def load_yaml_all(text):
    return [doc for doc in yaml.load_all(text, Loader=_plain_loader()) if doc]


def yaml_documents(path):
    return load_yaml_all(Path(path).read_text())


def dotenv(path):
    """``KEY=VALUE`` lines of an env file, comments and blanks skipped."""
    values = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not KEY=VALUE: {line!r}"
        values[key.strip()] = value.strip()
    return values


# -- compose variable interpolation (the Compose specification's rules) -----

_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


class MissingVariable(Exception):
    pass


def compose_variables(text):
    """The variables a compose string interpolates (``$$`` is an escape)."""
    return {m.group("braced") or m.group("bare") for m in _INTERPOLATION.finditer(text)
            if not m.group("escaped")}


def interpolate(value, env):
    """A compose string with its variables substituted from ``env``."""

    def substitute(match):
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        present = name in env
        value = env.get(name, "")
        if op in (":-", ":?", ":+"):
            present = present and value != ""
        if op in (":-", "-"):
            return value if present else arg
        if op in (":?", "?"):
            if not present:
                raise MissingVariable(f"{name}: {arg}")
            return value
        if op in (":+", "+"):
            return arg if present else ""
        return value

    return _INTERPOLATION.sub(substitute, value)


def interpolate_tree(node, env):
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env) for value in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def environment(service):
    """A compose service's ``environment`` as a dict (map or list form)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {key: ("" if value is None else str(value)) for key, value in env.items()}


def strings(node):
    """Every string in a YAML/JSON tree (keys and values)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        yield node
