"""Configuration (API8): outside the development profile the gateway will not
start with the development token secret, and it has no demo accounts."""
import time

import pytest
import requests

from gateway import auth
from helpers import free_port, throwaway_vhost
from security_support import STRONG_SECRET, start_gateway_process

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


@pytest.mark.parametrize("secret, reason", [
    (None, "development default TOKEN_SECRET"),  # config.yml's default
    (auth.DEFAULT_SECRET, "development default TOKEN_SECRET"),
    ("short-secret", "shorter than 32 characters"),
])
def test_the_gateway_refuses_to_start_in_production_with_an_unsafe_secret(tmp_path, amqp_uri, secret, reason):
    env = {"PROFILE": "production"}
    if secret is not None:
        env["TOKEN_SECRET"] = secret
    started = time.time()
    code, output = _exit_of(start_gateway_process(tmp_path, amqp_uri, **env))
    assert code != 0, output
    assert time.time() - started < 60
    # the reason, said in the log as a critical line, and as the error that stopped it
    assert "refusing to start: PROFILE=production" in output
    assert reason in output
    assert '"level": "critical"' in output
    assert "set TOKEN_SECRET to a random value of 32 or more characters" in output


def test_in_production_with_a_strong_secret_it_starts_without_demo_accounts(tmp_path, amqp_uri):
    port = free_port()
    process = start_gateway_process(tmp_path, amqp_uri, PROFILE="production", TOKEN_SECRET=STRONG_SECRET,
                                    GATEWAY_ADDRESS=f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if requests.get(url + "/health/live", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None, process.stdout.read().decode(errors="replace")
            time.sleep(0.3)
        for username, password, _ in auth.DEMO_ACCOUNTS:
            response = requests.post(url + "/auth/token", json={"username": username, "password": password},
                                     timeout=10)
            assert response.status_code == 401, (username, response.text)
        response = requests.post(url + "/auth/register", json={"username": "frank", "password": "a long passphrase"},
                                 timeout=10)
        assert response.status_code == 201, response.text
        token = requests.post(url + "/auth/token", json={"username": "frank", "password": "a long passphrase"},
                              timeout=10).json()["access_token"]
        # a token signed with the development secret means nothing here
        forged = auth.issue_token({"TOKEN_SECRET": auth.DEFAULT_SECRET}, "frank", "librarian")["access_token"]
        assert requests.post(url + "/books", json={}, headers={"Authorization": f"Bearer {forged}"},
                             timeout=10).status_code == 401
        assert requests.post(url + "/books", json={}, headers={"Authorization": f"Bearer {token}"},
                             timeout=10).status_code == 403
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except Exception:
            process.kill()
            process.wait()
