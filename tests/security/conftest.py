"""Fixtures of the security tests: a gateway (alone, or with the whole system)
started with the settings a test needs, on a throwaway vhost and databases of
its own.

Most of these tests need only the gateway: authentication, roles, rate
limits and input checks all answer before any backend is called. The ones
that reach objects (someone else's reservation, a stored title) or fuzz the
whole API use the full system.
"""
import contextlib
import os
import subprocess
import sys

import pytest

from helpers import Client, Library, free_port, throwaway_vhost
from ops.run import ROOT, Cluster

# Limits that no test of the full system reaches: the rate-limit tests start a
# gateway of their own with tight ones.
LOOSE_LIMITS = {"RATE_LIMIT_ENABLED": "false"}
# A token secret that a production profile accepts.
STRONG_SECRET = "test-secret-" + "x" * 40


@contextlib.contextmanager
def running(tmp_path_factory, services=("gateway",), **env):
    """``services`` as processes (the gateway last), with ``env`` on top of the defaults."""
    with throwaway_vhost("bookrental-sec") as amqp_uri:
        state = tmp_path_factory.mktemp("security")
        port = free_port()
        cluster = Cluster(state_dir=str(state), python=sys.executable, env={
            "AMQP_URI": amqp_uri, "GATEWAY_ADDRESS": f"127.0.0.1:{port}", "RPC_TIMEOUT": "2",
            **{key: str(value) for key, value in env.items()}})
        cluster.amqp_uri = amqp_uri
        try:
            for service in [name for name in services if name != "gateway"]:
                cluster.start(service, timeout=60)
            if "gateway" in services:
                cluster.start("gateway", timeout=60)
            if len(services) == 5:
                cluster.wait_ready(60)
            yield cluster
        finally:
            cluster.down()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """The gateway alone, development profile, limits off."""
    with running(tmp_path_factory, **LOOSE_LIMITS) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def full_system(tmp_path_factory):
    """All five services, limits off."""
    with running(tmp_path_factory, ("product", "reservation", "delivery", "mypage", "gateway"),
                 **LOOSE_LIMITS) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def people(full_system):
    return Library(full_system.gateway_url)


def sign_in(url, username, password=None):
    return Client.signed_in(url, username, password)


def start_gateway_process(tmp_path, amqp_uri, **env):
    """``nameko run`` of the gateway, as ``make up`` starts it, with ``env``."""
    process_env = dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="ignore", AMQP_URI=amqp_uri,
                       GATEWAY_ADDRESS=f"127.0.0.1:{free_port()}",
                       GATEWAY_DB_URI=f"sqlite:///{tmp_path}/gateway.db")
    process_env.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "nameko", "run", "--config", os.path.join(ROOT, "config.yml"),
         "gateway.service:GatewayService"],
        cwd=ROOT, env=process_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)
