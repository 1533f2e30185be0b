"""Configuration (API8): outside the development profile the gateway will not
start without its token signing key (it never makes one up there), and it
has no demo accounts; in development it makes its key on first run."""
import os
import time

import pytest
import requests

from gateway import auth, keys
from helpers import free_port, throwaway_vhost
from security_support import start_gateway_process

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def amqp_uri():
    with throwaway_vhost("bookrental-sec") as uri:
        yield uri


def _exit_of(process, timeout=60):
    try:
        output, _ = process.communicate(timeout=timeout)
    except Exception:
        process.kill()
        output, _ = process.communicate()
        raise
    return process.returncode, output.decode(errors="replace")


@pytest.mark.parametrize("content, reason", [
    (None, "no token key file"),
    (b"REPLACE_ME", "holds no key"),
])
def test_the_gateway_refuses_to_start_in_production_without_a_signing_key(tmp_path, amqp_uri, content, reason):
    key_file = tmp_path / "keys" / "token-keys.pem"
    if content is not None:
        key_file.parent.mkdir()
        key_file.write_bytes(content)
    started = time.time()
    code, output = _exit_of(start_gateway_process(tmp_path, amqp_uri, PROFILE="production",
                                                  TOKEN_KEYS=str(key_file)))
    assert code != 0, output
    assert time.time() - started < 60
    # the reason, said in the log as a critical line, and as the error that stopped it
    assert "refusing to start: PROFILE=production" in output
    assert reason in output
    assert '"level": "critical"' in output
    assert "python -m gateway.keys" in output
    assert content is not None or not key_file.exists()  # no key made up in production


def _wait_live(process, url):
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if requests.get(url + "/health/live", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        assert process.poll() is None, process.stdout.read().decode(errors="replace")
        time.sleep(0.3)
    raise AssertionError("the gateway did not start")


def _stop(process):
    process.terminate()
    try:
        process.wait(timeout=30)
    except Exception:
        process.kill()
        process.wait()


def test_in_production_with_its_key_it_starts_without_demo_accounts(tmp_path, amqp_uri):
    key_file = str(tmp_path / "secret" / "token-keys.pem")
    kid = keys.rotate(key_file).signing.kid  # what an operator does once: python -m gateway.keys rotate
    port = free_port()
    process = start_gateway_process(tmp_path, amqp_uri, PROFILE="production", TOKEN_KEYS=key_file,
                                    GATEWAY_ADDRESS=f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_live(process, url)
        for username, password, _ in auth.DEMO_ACCOUNTS:
            response = requests.post(url + "/auth/token", json={"username": username, "password": password},
                                     timeout=10)
            assert response.status_code == 401, (username, response.text)
        response = requests.post(url + "/auth/register", json={"username": "frank", "password": "a long passphrase"},
                                 timeout=10)
        assert response.status_code == 201, response.text
        token = requests.post(url + "/auth/token", json={"username": "frank", "password": "a long passphrase"},
                              timeout=10).json()["access_token"]
        assert [key["kid"] for key in requests.get(url + "/.well-known/jwks.json", timeout=10).json()["keys"]] == [kid]
        # a token signed by another key (a development gateway's) means nothing here
        other = auth.Tokens(keys.KeySource(str(tmp_path / "dev" / "token-keys.pem"), create=True))
        forged, _ = other.issue("frank", "librarian", "s")
        assert requests.post(url + "/books", json={}, headers={"Authorization": f"Bearer {forged}"},
                             timeout=10).status_code == 401
        assert requests.post(url + "/books", json={}, headers={"Authorization": f"Bearer {token}"},
                             timeout=10).status_code == 403
    finally:
        _stop(process)


def test_in_development_the_first_run_makes_the_key_under_the_state_directory(tmp_path, amqp_uri):
    port = free_port()
    process = start_gateway_process(tmp_path, amqp_uri, GATEWAY_ADDRESS=f"127.0.0.1:{port}")
    try:
        _wait_live(process, f"http://127.0.0.1:{port}")
        key_file = tmp_path / "keys" / "token-keys.pem"
        assert key_file.exists() and oct(os.stat(key_file).st_mode & 0o777) == "0o600"
        assert len(keys.load(str(key_file)).keys) == 1
    finally:
        _stop(process)
