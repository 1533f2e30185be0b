"""common/probe.py, offline: no broker is listening where it is pointed, so
it must fail fast, on one line, with exit status 1."""
import os
import socket
import subprocess
import sys
import time

import pytest

from deploy_support import ROOT

pytest.importorskip("nameko")
from common import probe  # noqa: E402  (needs nameko only when it runs)
from common.config import load_config  # noqa: E402


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_probe(*args, env=None, timeout=30):
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "common.probe", *args], cwd=ROOT,
                            env=dict(os.environ, **(env or {})), capture_output=True, text=True,
                            timeout=timeout)
    return result, time.monotonic() - started


def test_no_broker_means_unhealthy_fast_on_one_line():
    result, elapsed = run_probe("product", "--timeout", "1",
                                env={"AMQP_URI": f"pyamqp://u:p@127.0.0.1:{closed_port()}/"})
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("product: unhealthy: "), result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert elapsed < 10


def test_a_broker_that_never_answers_cannot_hang_it():
    with socket.socket() as server:  # accepts TCP, never speaks AMQP
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        result, elapsed = run_probe("product", "--timeout", "1", env={"AMQP_URI": f"pyamqp://u:p@127.0.0.1:{port}/"})
    assert result.returncode == 1
    assert result.stdout.startswith("product: unhealthy: ")
    assert elapsed < 10


def test_a_missing_config_is_a_failure_not_a_crash():
    result, _ = run_probe("product", "--config", "/nonexistent/config.yml", "--timeout", "1")
    assert result.returncode == 1
    assert result.stdout.startswith("product: unhealthy: FileNotFoundError")


def test_bad_arguments_are_a_usage_error():
    result, _ = run_probe("product", "--timeout", "0")
    assert result.returncode == 2
    result, _ = run_probe()
    assert result.returncode == 2


def test_config_is_read_as_nameko_run_reads_it(monkeypatch):
    monkeypatch.setenv("AMQP_URI", "pyamqp://someone:pw@broker:5672/vhost")
    monkeypatch.setenv("PRODUCT_DB_URI", "postgresql+psycopg2://product:pw@db:5432/product")
    monkeypatch.delenv("RPC_TIMEOUT", raising=False)
    config = load_config(path=str(ROOT / "config.yml"))
    assert config["AMQP_URI"] == "pyamqp://someone:pw@broker:5672/vhost"
    assert config["DB_URIS"]["product:Base"] == "postgresql+psycopg2://product:pw@db:5432/product"
    assert config["RPC_TIMEOUT"] == 5  # the ${NAME:default}, typed as YAML types it


@pytest.mark.parametrize("error, expected", [
    (type("RpcTimeout", (Exception,), {})(3.0), "RpcTimeout: no answer within 3.0s"),
    (type("UnknownService", (Exception,), {})("Unknown service `x`"), "nothing is consuming"),
    (type("RemoteError", (Exception,), {})("OperationalError\nsomething"),
     "RemoteError: the service answered with an error: OperationalError something"),
])
def test_errors_read_as_one_line(error, expected):
    line = probe.describe(error)
    assert expected in line and "\n" not in line
