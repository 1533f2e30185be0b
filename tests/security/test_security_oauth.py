"""Sign-in the way OAuth 2 clients expect, end to end, on a gateway of two
replicas (ports p and p+1) sharing one Redis (``REDIS_URL``) and one
database, as ``make start SERVICE=gateway REPLICAS=2`` runs them:

- a generic OAuth 2 client (requests-oauthlib) signs in and refreshes from
  the OpenAPI document alone; the JSON sign-in keeps its form;
- every bad token request gets RFC 6749 §5.2's error, never a 500;
- RS256 access tokens with a kid, verified by anyone with the JWK Set; forged
  ones (alg=none, HS256 with the public key, an unknown kid) are refused;
- refresh tokens work once, and a reused one ends its whole session;
- key rotation keeps old tokens good until their key is removed;
- a sign-out on one replica is refused by both within a second;
- failed sign-ins are counted across both replicas.

The deny list also holds across replicas without Redis (the gateway's
database): the last test starts a second pair that way.
"""
import base64
import contextlib
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
import uuid

import jwt
import pytest
import redis
import requests
from cryptography.hazmat.primitives import serialization
from oauthlib.oauth2 import LegacyApplicationClient
from requests_oauthlib import OAuth2Session

from helpers import eventually, free_port
from ops.run import ROOT
from security_support import running

pytestmark = pytest.mark.e2e

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# Failed sign-ins: 3 in any 9 seconds per address and username.
LIMITS = {"RATE_LIMIT_LOGIN_PER_MINUTE": 20, "RATE_LIMIT_LOGIN_BURST": 3}
WITHIN = 1.0  # seconds: a sign-out reaches every replica (SPEC §5; the deny list syncs every 0.5 s)
SLACK = 2.0  # what a busy shared machine may add to it


class Pair:
    """The two replicas of one gateway, and its key file."""

    def __init__(self, cluster):
        self.cluster = cluster
        base, port = cluster.gateway_url.rsplit(":", 1)
        self.urls = [cluster.gateway_url, f"{base}:{int(port) + 1}"]
        self.key_file = cluster._process_env(1, "gateway")["TOKEN_KEYS"]

    def keys(self, *args):
        """``python -m gateway.keys --keys <this system's file> ...``"""
        result = subprocess.run([sys.executable, "-m", "gateway.keys", "--keys", self.key_file, *args], cwd=ROOT,
                                env=dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="ignore"),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout


def two_free_ports():
    """A port p with p+1 free too: replica n listens on p + n - 1 (SPEC §6)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free ports side by side")


@contextlib.contextmanager
def pair_of_gateways(tmp_path_factory, **env):
    env.setdefault("GATEWAY_ADDRESS", f"127.0.0.1:{two_free_ports()}")
    with running(tmp_path_factory, **env) as cluster:
        cluster.start("gateway", replicas=2, timeout=60)
        yield Pair(cluster)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    prefix = f"bookrental-test-{uuid.uuid4().hex[:8]}"
    try:
        with pair_of_gateways(tmp_path_factory, REDIS_URL=REDIS_URL, REDIS_PREFIX=prefix, **LIMITS) as gateways:
            yield gateways
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)


@pytest.fixture(scope="module")
def url(pair):
    return pair.urls[0]


@pytest.fixture(autouse=True)
def http_is_fine_here(monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # requests-oauthlib wants https; this is loopback


def sign_in(url, username, password=None, **extra):
    response = requests.post(url + "/auth/token", data={"grant_type": "password", "username": username,
                                                         "password": password or username, **extra}, timeout=15)
    assert response.status_code == 200, response.text
    return response.json()


def refresh(url, refresh_token, **kwargs):
    return requests.post(url + "/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                         timeout=15, **kwargs)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def signed_in(url, token):
    """A customer's call the gateway answers alone (no backend runs here):
    200 while the token is good, 401 once it is refused."""
    return requests.post(url + "/mypage/events/ticket", headers=bearer(token), timeout=15)


def assert_oauth_error(response, error, status=400):
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Cache-Control"] == "no-store" and response.headers["Pragma"] == "no-cache"
    body = response.json()
    assert body["error"] == error and isinstance(body.get("error_description"), str), body
    assert "Traceback" not in response.text
    return body


def assert_refused(response):
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "unauthorized" and set(error) == {"code", "message", "details"}


def b64(data):
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# -- the flows ------------------------------------------------------------------

def test_a_generic_oauth2_client_signs_in_and_refreshes_from_the_openapi_document_alone(url):
    document = requests.get(url + "/openapi.json", timeout=15).json()
    flow = document["components"]["securitySchemes"]["oauth2"]["flows"]["password"]
    client = OAuth2Session(client=LegacyApplicationClient(client_id="generic-client"))
    token = client.fetch_token(url + flow["tokenUrl"], username="alice", password="alice")
    assert token["token_type"].lower() == "bearer" and token["expires_in"] > 0
    assert jwt.get_unverified_header(token["access_token"])["alg"] == "RS256"
    assert client.post(url + "/mypage/events/ticket", timeout=15).status_code == 200  # it sends the bearer token
    first_refresh = token["refresh_token"]
    renewed = client.refresh_token(url + flow["refreshUrl"])
    assert renewed["refresh_token"] != first_refresh and renewed["access_token"] != token["access_token"]
    assert client.post(url + "/mypage/events/ticket", timeout=15).status_code == 200
    # each secured operation names the OAuth 2 scheme
    assert document["paths"]["/mypage"]["get"]["security"][0] == {"oauth2": []}


def test_the_json_sign_in_keeps_its_form_and_its_errors(url):
    response = requests.post(url + "/auth/token", json={"username": "bob", "password": "bob"}, timeout=15)
    assert response.status_code == 200
    assert set(response.json()) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert response.json()["token_type"] == "bearer"
    assert response.headers["Cache-Control"] == "no-store"
    wrong = requests.post(url + "/auth/token", json={"username": "bob", "password": "nope"}, timeout=15)
    assert wrong.status_code == 401
    assert wrong.json()["error"] == {"code": "unauthorized", "message": "wrong username or password", "details": {}}
    # a JSON body is never an OAuth 2 request: its fields are checked as ever
    odd = requests.post(url + "/auth/token", json={"grant_type": "password", "username": "bob", "password": "bob"},
                        timeout=15)
    assert odd.status_code == 400 and odd.json()["error"]["details"] == {"grant_type": ["Unknown field."]}


def test_the_form_sign_in_answers_rfc6749(url):
    token = sign_in(url, "courier")
    assert set(token) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert signed_in(url, token["access_token"]).status_code == 403  # signed in: the role is what is refused
    assert_oauth_error(requests.post(url + "/auth/token", data={"grant_type": "password", "username": "courier",
                                                                "password": "nope"}, timeout=15), "invalid_grant")


# -- bad input --------------------------------------------------------------------

@pytest.mark.parametrize("body, error", [
    (b"username=alice&password=alice", "invalid_request"),  # no grant_type
    (b"", "invalid_request"),  # no body at all
    (b"grant_type=client_credentials", "unsupported_grant_type"),
    (b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=x", "unsupported_grant_type"),
    (b"grant_type=password&grant_type=refresh_token&username=a&password=b", "invalid_request"),  # twice
    (b"grant_type=password&username=alice", "invalid_request"),  # no password
    (b"grant_type=refresh_token", "invalid_request"),  # no refresh_token
    (b"grant_type=password&username=%E0%A4%A&password=x", "invalid_request"),  # a broken escape
    (b"grant_type=password&username=\xff\xfe&password=x", "invalid_request"),  # not UTF-8
    (b"grant_type=password&username=" + b"u" * 70_000, "invalid_request"),  # too large
    (b"{\"grant_type\": \"password\"}", "invalid_request"),  # JSON, said to be a form
    (b"grant_type=password&username=alice&password=alice&scope=admin", "invalid_scope"),
    (b"grant_type=refresh_token&refresh_token=not-a-token", "invalid_grant"),
])
def test_malformed_token_requests_get_rfc6749_errors(url, body, error):
    assert_oauth_error(requests.post(url + "/auth/token", data=body, headers=FORM, timeout=15), error)


def test_a_client_secret_cannot_be_checked_so_it_is_an_invalid_client(url):
    response = requests.post(url + "/auth/token", data={"grant_type": "password", "username": "alice",
                                                        "password": "alice"}, auth=("web", "s3cret"), timeout=15)
    assert_oauth_error(response, "invalid_client", 401)
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_a_refresh_token_of_another_user_or_client_is_an_invalid_grant(url):
    alice = sign_in(url, "alice", client_id="web")
    bob = sign_in(url, "bob")
    # bob's client, holding alice's refresh token
    assert_oauth_error(refresh(url, alice["refresh_token"], headers=bearer(bob["access_token"])), "invalid_grant")
    # another client than the one it was issued to
    assert_oauth_error(refresh(url, alice["refresh_token"], auth=("cli", "")), "invalid_grant")
    # neither used it up: alice's own client still can
    assert refresh(url, alice["refresh_token"], auth=("web", "")).status_code == 200


def test_a_reused_refresh_token_ends_the_whole_session_on_every_replica(pair):
    one, two = pair.urls
    first = sign_in(one, "alice")
    second = refresh(one, first["refresh_token"]).json()
    third = refresh(two, second["refresh_token"]).json()  # the session goes on, on the other replica
    assert signed_in(one, third["access_token"]).status_code == 200
    other_session = sign_in(two, "alice")
    # the first refresh token again: someone else holds the family
    assert_oauth_error(refresh(two, first["refresh_token"]), "invalid_grant")
    assert_oauth_error(refresh(one, third["refresh_token"]), "invalid_grant")  # every token descended from it
    for replica in (one, two):
        eventually(lambda: signed_in(replica, third["access_token"]).status_code == 401, timeout=5,
                   message="the revoked session's access token refused")
        assert signed_in(replica, other_session["access_token"]).status_code == 200  # another sign-in goes on


def test_forged_tokens_are_refused(url):
    good = sign_in(url, "alice")["access_token"]
    header, payload, _ = good.split(".")
    kid = jwt.get_unverified_header(good)["kid"]
    claims = jwt.decode(good, options={"verify_signature": False})
    jwk_set = requests.get(url + "/.well-known/jwks.json", timeout=15).json()
    public_pem = jwt.PyJWK(next(k for k in jwk_set["keys"] if k["kid"] == kid)).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    librarian = dict(claims, sub="librarian", role="librarian")
    hs_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{b64(librarian)}"
    forgeries = {
        "alg=none": f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{b64(librarian)}.",
        "HS256 with the public key": f"{hs_input}.{b64(hmac.new(public_pem, hs_input.encode(), hashlib.sha256).digest())}",
        "unknown kid": f"{b64({'alg': 'RS256', 'typ': 'JWT', 'kid': 'no-such-key'})}.{payload}.{good.split('.')[2]}",
        "tampered": f"{header}.{b64(librarian)}.{good.split('.')[2]}",
    }
    for name, token in forgeries.items():
        for path in ("/mypage", "/deliveries"):
            response = requests.get(url + path, headers=bearer(token), timeout=15)
            assert response.status_code == 401, (name, path, response.text)
            assert_refused(response)
    assert signed_in(url, good).status_code == 200


# -- the key set --------------------------------------------------------------------

def test_anyone_verifies_an_access_token_with_the_jwk_set(url):
    token = sign_in(url, "bob")["access_token"]
    response = requests.get(url + "/.well-known/jwks.json", timeout=15)  # no sign-in needed
    assert response.status_code == 200
    assert all("d" not in key and "p" not in key for key in response.json()["keys"])  # public parts only
    # What README "Security" shows a client doing:
    signing_key = jwt.PyJWKClient(url + "/.well-known/jwks.json").get_signing_key_from_jwt(token)
    claims = jwt.decode(token, signing_key.key, algorithms=["RS256"], audience="bookrental-api",
                        issuer="bookrental-gateway")
    assert claims["sub"] == "bob" and claims["role"] == "customer"


def test_rotation_signs_with_the_new_key_and_old_tokens_live_until_their_key_is_removed(pair):
    one, two = pair.urls
    before = sign_in(one, "alice")["access_token"]
    old_kid = jwt.get_unverified_header(before)["kid"]
    pair.keys("rotate")
    after = eventually(lambda: (lambda token: token if jwt.get_unverified_header(token)["kid"] != old_kid else None)(
        sign_in(two, "alice")["access_token"]), timeout=5, message="sign-ins signed by the new key")
    new_kid = jwt.get_unverified_header(after)["kid"]
    kids = [key["kid"] for key in requests.get(two + "/.well-known/jwks.json", timeout=15).json()["keys"]]
    assert kids[0] == new_kid and old_kid in kids
    for replica in (one, two):
        assert signed_in(replica, before).status_code == 200  # signed by the old key: good until it expires
        assert signed_in(replica, after).status_code == 200
    pair.keys("remove", old_kid)
    for replica in (one, two):
        eventually(lambda: signed_in(replica, before).status_code == 401, timeout=5,
                   message="a token of a removed key refused")
        assert signed_in(replica, after).status_code == 200
    kids = [key["kid"] for key in requests.get(one + "/.well-known/jwks.json", timeout=15).json()["keys"]]
    assert kids == [new_kid]


# -- sign-out on every replica ------------------------------------------------------

def _signed_out_everywhere(pair):
    one, two = pair.urls
    session = sign_in(one, "bob")
    token = session["access_token"]
    for replica in (one, two):
        assert signed_in(replica, token).status_code == 200  # and both remember it as verified
    response = requests.post(one + "/auth/logout", headers=bearer(token), timeout=15)
    assert response.status_code == 204 and response.content == b""
    signed_out = time.monotonic()
    assert_refused(signed_in(one, token))  # at once where it signed out
    eventually(lambda: signed_in(two, token).status_code == 401, timeout=WITHIN + SLACK, interval=0.05,
               message="the signed-out token refused by the other replica")
    took = time.monotonic() - signed_out
    assert_refused(signed_in(two, token))
    for replica in (one, two):
        assert_oauth_error(refresh(replica, session["refresh_token"]), "invalid_grant")
    assert requests.post(two + "/auth/logout", headers=bearer(token), timeout=15).status_code == 401
    return took


def test_a_sign_out_is_refused_by_both_replicas_within_a_second(pair):
    took = _signed_out_everywhere(pair)
    print(f"signed out on replica 1: refused by replica 2 after {took:.2f}s")


def test_failed_sign_ins_count_across_both_replicas(pair):
    one, two = pair.urls
    username = f"target{uuid.uuid4().hex[:6]}"
    assert requests.post(one + "/auth/register", json={"username": username, "password": "a fine password"},
                         timeout=15).status_code == 201

    def attempt(replica, password="guess"):
        return requests.post(replica + "/auth/token", data={"grant_type": "password", "username": username,
                                                            "password": password}, timeout=15)

    statuses = [attempt(replica).status_code for replica in (one, two, one)]
    assert statuses == [400, 400, 400]  # invalid_grant, three times, on two replicas
    for replica in (two, one):
        limited = attempt(replica, "a fine password")  # even the right password waits now
        assert limited.status_code == 429, limited.text
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["error"]["code"] == "rate_limited"


def test_without_redis_the_deny_list_is_the_gateways_database(tmp_path_factory):
    env = {"REDIS_URL": "", "RATE_LIMIT_ENABLED": "false"}
    with pair_of_gateways(tmp_path_factory, **env) as gateways:
        took = _signed_out_everywhere(gateways)
    print(f"deny list in the database: refused by replica 2 after {took:.2f}s")


# -- the web app ----------------------------------------------------------------

def test_the_web_app_signs_in_refreshes_before_expiry_and_signs_out(url):
    pytest.importorskip("playwright")
    if not os.path.exists(os.environ.get("CHROMIUM", "/usr/bin/chromium")):
        pytest.skip("Chromium is not installed (make chromium)")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "security", "session_walk.py"), url],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    first, on_time, before_call = seen["signed_in"], seen["refreshed_on_time"], seen["refreshed_before_a_call"]
    assert jwt.get_unverified_header(first["token"])["alg"] == "RS256"
    assert len({first["token"], on_time["token"], before_call["token"]}) == 3
    # signing out ended the session on the gateway: its last tokens are refused
    assert_refused(signed_in(url, before_call["token"]))
    assert_oauth_error(refresh(url, before_call["refresh_token"]), "invalid_grant")
    # and each refresh had used its refresh token up
    for used in (first, on_time):
        assert_oauth_error(refresh(url, used["refresh_token"]), "invalid_grant")
