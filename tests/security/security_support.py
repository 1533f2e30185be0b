"""What the security tests share: a gateway (alone, or with the whole system)
started with the settings a test needs, on a throwaway vhost and databases of
its own, and the gateway as a bare ``nameko run`` process."""
import contextlib
import os
import subprocess
import sys

from common.config import BACKENDS  # noqa: F401 (the security tests import it from here)
from helpers import LENDING_LIMITS_OFF, free_port, throwaway_vhost
from ops.run import ROOT, Cluster
# No limit is reached by the tests that use these: the rate-limit tests start
# a gateway of their own with tight ones; nor are the lending limits (SPEC §8).
LOOSE_LIMITS = {"RATE_LIMIT_ENABLED": "false", **LENDING_LIMITS_OFF}


@contextlib.contextmanager
def running(tmp_path_factory, backends=(), **env):
    """The gateway (and ``backends``) as processes, with ``env`` on top of the defaults."""
    with throwaway_vhost("bookrental-sec") as amqp_uri:
        state = tmp_path_factory.mktemp("security")
        cluster = Cluster(state_dir=str(state), python=sys.executable, env={
            "AMQP_URI": amqp_uri, "GATEWAY_ADDRESS": f"127.0.0.1:{free_port()}", "RPC_TIMEOUT": "2",
            **{key: str(value) for key, value in env.items()}})
        cluster.amqp_uri = amqp_uri
        try:
            for service in backends:
                cluster.start(service, timeout=60)
            cluster.start("gateway", timeout=60)
            if backends:
                cluster.wait_ready(60)
            yield cluster
        finally:
            cluster.down()


def start_gateway_process(tmp_path, amqp_uri, **env):
    """``nameko run`` of the gateway, as ``make up`` starts it, with ``env``;
    stdout and stderr together on ``process.stdout``."""
    process_env = dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="ignore", AMQP_URI=amqp_uri,
                       GATEWAY_ADDRESS=f"127.0.0.1:{free_port()}",
                       GATEWAY_DB_URI=f"sqlite:///{tmp_path}/gateway.db",
                       TOKEN_KEYS=f"{tmp_path}/keys/token-keys.pem")
    process_env.pop("PROFILE", None)
    process_env.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "nameko", "run", "--config", os.path.join(ROOT, "config.yml"),
         "gateway.service:GatewayService"],
        cwd=ROOT, env=process_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)
