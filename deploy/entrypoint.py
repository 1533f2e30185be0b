#!/usr/bin/env python3
"""Container entrypoint: secrets from files into the environment, then exec.

``config.yml`` reads every setting from an environment variable, but secrets
should not sit in a container's environment definition (``docker inspect``
shows it) nor in the compose file. So, before the real command starts:

1. ``NAME_FILE=/run/secrets/x`` becomes ``NAME=<content of x>`` (trailing
   newlines dropped; ``NAME_FILE`` is removed) for every ``NAME`` that
   ``config.yml`` reads or that another variable refers to as ``${NAME}``.
   Other ``*_FILE`` variables (``SSL_CERT_FILE``...) are left alone;
2. a ``${NAME}`` inside another variable's value is replaced by ``NAME``'s
   value, so a URI can be assembled from a secret:
   ``AMQP_URI=pyamqp://bookrental:${RABBITMQ_PASSWORD}@rabbitmq:5672/bookrental``.
   Inside a URI (a value containing ``://``) the inserted text is
   percent-encoded, so any password is safe there;
3. with ``PROFILE=production`` it refuses to start while a value still holds
   the ``REPLACE_ME`` placeholder of ``k8s/secret.yaml``;
4. it execs the command; with none, ``nameko run --config config.yml
   $SERVICE_CLASS`` (e.g. ``SERVICE_CLASS=product.service:ProductService``).

Healthchecks run through it too (``entrypoint.py python -m common.probe x``),
since ``docker exec`` does not go through the image's entrypoint.
Standard library only: it runs before anything else is imported.
"""
import os
import re
import sys
from urllib.parse import quote

PLACEHOLDER = "REPLACE_ME"
FILE_SUFFIX = "_FILE"
NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
REFERENCE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")
SETTING = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")  # config.yml's ${NAME:default}


class SetupError(Exception):
    pass


def settings(env):
    """The variables the Nameko config reads (its ``${NAME...}``), plus those
    other variables refer to: the only ones a ``NAME_FILE`` may provide."""
    names = {match.group(1) for value in env.values() for match in REFERENCE.finditer(value)}
    try:
        with open(env.get("NAMEKO_CONFIG", "config.yml"), encoding="utf-8") as stream:
            names.update(SETTING.findall(stream.read()))
    except OSError:
        pass
    return names


def read_secret_files(env):
    """``NAME_FILE`` -> ``NAME``; returns the names read from files."""
    loaded = set()
    wanted = settings(env)
    for key in sorted(env):
        if not key.endswith(FILE_SUFFIX):
            continue
        name = key[: -len(FILE_SUFFIX)]
        if not NAME.match(name) or name not in wanted:
            continue
        if env.get(name):
            raise SetupError(f"both {name} and {key} are set; set only one")
        path = env[key]
        try:
            with open(path, encoding="utf-8") as stream:
                value = stream.read().rstrip("\r\n")
        except OSError as error:
            raise SetupError(f"{key}: cannot read {path}: {error.strerror}") from None
        if not value:
            raise SetupError(f"{key}: {path} is empty")
        env[name] = value
        del env[key]
        loaded.add(name)
    return loaded


def expand_references(env):
    """Replaces ``${NAME}`` in every value by ``NAME``'s value."""
    for key in sorted(env):
        value = env[key]
        if "${" not in value:
            continue
        in_uri = "://" in value

        def substitute(match, key=key, in_uri=in_uri):
            name = match.group(1)
            if name not in env:
                raise SetupError(f"{key} refers to ${{{name}}}, which is not set")
            inserted = env[name]
            return quote(inserted, safe="") if in_uri else inserted

        env[key] = REFERENCE.sub(substitute, value)


def refuse_placeholders(env):
    if env.get("PROFILE", "development") == "development":
        return
    left = sorted(key for key, value in env.items() if PLACEHOLDER in value)
    if left:
        raise SetupError(f"{', '.join(left)} still hold the {PLACEHOLDER} placeholder; "
                         "set the real values (k8s/secret.yaml) before deploying")


def command(argv, env):
    if argv:
        return argv
    service_class = env.get("SERVICE_CLASS")
    if not service_class:
        raise SetupError("no command given and SERVICE_CLASS is not set "
                         "(e.g. SERVICE_CLASS=product.service:ProductService)")
    return ["nameko", "run", "--config", env.get("NAMEKO_CONFIG", "config.yml"), service_class]


def prepare(argv, env):
    """The command to exec and its environment (``env`` is changed in place)."""
    read_secret_files(env)
    expand_references(env)
    refuse_placeholders(env)
    return command(argv, env)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    env = dict(os.environ)
    try:
        args = prepare(argv, env)
    except SetupError as error:
        print(f"entrypoint: {error}", file=sys.stderr, flush=True)
        return 78  # EX_CONFIG
    try:
        os.execvpe(args[0], args, env)
    except OSError as error:
        print(f"entrypoint: cannot run {args[0]}: {error.strerror}", file=sys.stderr, flush=True)
        return 127


if __name__ == "__main__":
    sys.exit(main())
