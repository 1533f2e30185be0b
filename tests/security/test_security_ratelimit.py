"""Rate limits (API4) on a live gateway started with tight limits: each
bucket runs out, answers 429 with Retry-After and the spec's error body,
leaves the other buckets alone, and refills.

Every test speaks from a loopback address of its own (127.0.0.x), so each
has its own address bucket."""
import itertools
import time

import pytest
import requests
from requests.adapters import HTTPAdapter

from security_support import running

pytestmark = pytest.mark.e2e

LIMITS = {
    "RATE_LIMIT_ADDRESS_PER_SECOND": 5, "RATE_LIMIT_ADDRESS_BURST": 20,
    "RATE_LIMIT_ACCOUNT_PER_SECOND": 0.5, "RATE_LIMIT_ACCOUNT_BURST": 5,
    "RATE_LIMIT_LOGIN_PER_MINUTE": 20, "RATE_LIMIT_LOGIN_BURST": 3,
    "RATE_LIMIT_SIGNUP_PER_MINUTE": 10, "RATE_LIMIT_SIGNUP_BURST": 3,
    "RATE_LIMIT_PASSWORD_PER_SECOND": 0.5, "RATE_LIMIT_PASSWORD_BURST": 10,
}


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with running(tmp_path_factory, **LIMITS) as cluster:
        yield cluster.gateway_url


class SourceAddress(HTTPAdapter):
    def __init__(self, address):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


class From:
    """An HTTP client that connects from ``address``."""

    def __init__(self, url, address):
        self.url = url
        self.session = requests.Session()
        self.session.mount("http://", SourceAddress(address))

    def request(self, method, path, token=None, **kwargs):
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.session.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def sign_in(self, username, password=None):
        return self.request("POST", "/auth/token", json={"username": username, "password": password or username})

    def token(self, username):
        response = self.sign_in(username)
        assert response.status_code == 200, response.text
        return response.json()["access_token"]


def until_limited(send, most=100):
    """Send until a 429 (a slow machine refills a little meanwhile): the
    statuses before it, and the 429."""
    statuses = []
    for _ in range(most):
        response = send()
        if response.status_code == 429:
            return statuses, response
        statuses.append(response.status_code)
    raise AssertionError(f"no 429 in {most} requests: {statuses}")


def assert_limited(response):
    assert response.status_code == 429, response.text
    wait = int(response.headers["Retry-After"])
    assert wait >= 1
    error = response.json()["error"]
    assert error["code"] == "rate_limited" and error["message"]
    assert error["details"] == {"retry_after": wait}
    return wait


def test_an_address_runs_out_then_refills_and_other_addresses_go_on(url):
    client = From(url, "127.0.0.2")
    statuses, limited = until_limited(lambda: client.request("GET", "/openapi.json"))
    assert len(statuses) >= 20 and set(statuses) == {200}  # the burst
    wait = assert_limited(limited)
    assert_limited(client.request("GET", "/books/1"))
    assert From(url, "127.0.0.3").request("GET", "/openapi.json").status_code == 200
    assert client.request("GET", "/health/live").status_code == 200  # probes are never limited
    time.sleep(wait)
    assert client.request("GET", "/openapi.json").status_code == 200


def test_an_account_runs_out_wherever_it_calls_from_and_others_go_on(url):
    client = From(url, "127.0.0.4")
    courier, alice = client.token("courier"), client.token("alice")
    statuses, limited = until_limited(lambda: client.request("GET", "/mypage", courier))
    assert len(statuses) >= 5 and set(statuses) == {403}  # wrong role, but counted: the limit comes first
    assert_limited(limited)
    wait = assert_limited(From(url, "127.0.0.5").request("GET", "/deliveries", courier))
    assert client.request("POST", "/books", alice, json={}).status_code == 403  # alice is not limited
    time.sleep(wait)
    assert client.request("GET", "/deliveries", courier, params={"limit": "0"}).status_code == 400


def test_failed_sign_ins_lock_that_username_at_that_address_only(url):
    attacker = From(url, "127.0.0.6")
    assert [attacker.sign_in("alice", "guess-%d" % i).status_code for i in range(3)] == [401] * 3
    assert_limited(attacker.sign_in("alice", "guess-4"))
    wait = assert_limited(attacker.sign_in("alice", "alice"))  # even the right password waits
    assert attacker.sign_in("bob").status_code == 200  # another username from the same address
    assert From(url, "127.0.0.7").sign_in("alice").status_code == 200  # alice, elsewhere
    time.sleep(wait)
    assert attacker.sign_in("alice").status_code == 200


def test_successful_sign_ins_are_not_counted_as_failures(url):
    client = From(url, "127.0.0.8")
    assert [client.sign_in("bob").status_code for _ in range(6)] == [200] * 6


def test_sign_ups_from_one_address_are_limited(url):
    client = From(url, "127.0.0.9")
    statuses = [client.request("POST", "/auth/register", json={"username": f"spam{i}", "password": "spam spam spam"})
                .status_code for i in range(3)]
    assert statuses == [201] * 3
    assert_limited(client.request("POST", "/auth/register", json={"username": "spam4", "password": "spam spam spam"}))
    assert From(url, "127.0.0.10").request(
        "POST", "/auth/register", json={"username": "ham1", "password": "ham ham ham ham"}).status_code == 201


def test_password_checks_from_one_address_are_limited_whatever_the_username(url):
    sprayer = From(url, "127.0.0.11")
    usernames = (f"user{n}" for n in itertools.count())
    statuses, limited = until_limited(lambda: sprayer.sign_in(next(usernames), "Winter2026!"), most=30)
    assert len(statuses) >= 10 and set(statuses) == {401}  # each username its own login bucket, yet
    assert_limited(limited)
    assert_limited(sprayer.request("POST", "/auth/register", json={"username": "newbie", "password": "a fine pass"}))
    assert From(url, "127.0.0.12").sign_in("alice").status_code == 200
