"""The pieces of the gateway's edge, without a process: token buckets,
limit settings, client addresses, password rules, token checks, body parsing."""
import time

import jwt
import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from common.errors import BadRequest
from gateway import auth
from gateway.http import PayloadTooLarge, UnsupportedMediaType, _json_body
from gateway.ratelimit import Buckets, client_address, retry_after, settings

CONFIG = {"TOKEN_SECRET": "unit-test-secret-" + "s" * 32, "TOKEN_TTL": 60, "PROFILE": "development"}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


# -- token buckets ----------------------------------------------------------

def test_a_bucket_lets_a_burst_through_then_refills_at_its_rate():
    clock = Clock()
    buckets = Buckets(rate=2, burst=5, clock=clock)
    assert [buckets.take("a") for _ in range(5)] == [0.0] * 5
    wait = buckets.take("a")
    assert wait == pytest.approx(0.5)
    assert retry_after(wait) == 1
    assert buckets.take("b") == 0.0  # another key has its own bucket
    clock.now += 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    clock.now += 60
    assert [buckets.take("a") for _ in range(5)] == [0.0] * 5  # never more than the burst
    assert buckets.take("a") > 0


def test_a_slow_bucket_says_how_long_to_wait():
    clock = Clock()
    buckets = Buckets(rate=5 / 60, burst=2, clock=clock)  # 5 a minute
    buckets.take("a")
    buckets.take("a")
    assert retry_after(buckets.take("a")) == 12
    clock.now += 11.5
    assert retry_after(buckets.wait("a")) == 1


def test_charging_failures_empties_a_bucket_and_a_debt_is_bounded():
    clock = Clock()
    buckets = Buckets(rate=1, burst=3, clock=clock)
    assert buckets.wait("k") == 0.0
    for _ in range(10):
        buckets.charge("k")
    assert buckets.wait("k") == pytest.approx(4.0)  # -3 tokens at most: 4 s to one token
    clock.now += 4
    assert buckets.wait("k") == 0.0


def test_buckets_forget_the_least_recently_used_beyond_max_keys():
    clock = Clock()
    buckets = Buckets(rate=1, burst=1, max_keys=3, clock=clock)
    for key in "abc":
        buckets.take(key)
    buckets.take("a")  # a is used again: b is now the oldest
    buckets.take("d")
    assert len(buckets) == 3
    assert buckets.wait("b") == 0.0  # forgotten: as good as full
    assert buckets.wait("a") > 0


def test_limit_settings_come_from_the_config_with_defaults():
    defaults = settings({})
    assert defaults["account"] == (100.0, 200.0)
    assert defaults["password"] == (5.0, 100.0)
    assert defaults["login"] == (pytest.approx(5 / 60), 10.0)
    configured = settings({"RATE_LIMIT": {"ADDRESS_PER_SECOND": "7", "ADDRESS_BURST": 9, "LOGIN_PER_MINUTE": 0}})
    assert configured["address"] == (7.0, 9.0)
    assert configured["login"] is None  # a rate of 0 switches it off
    assert set(settings({"RATE_LIMIT": {"ENABLED": "false"}}).values()) == {None}
    assert set(settings({"RATE_LIMIT": {"ENABLED": False}}).values()) == {None}


class FakeRequest:
    def __init__(self, remote_addr, forwarded=""):
        self.remote_addr = remote_addr
        self.headers = {"X-Forwarded-For": forwarded} if forwarded else {}


@pytest.mark.parametrize("remote, forwarded, hops, expected", [
    ("127.0.0.1", "", 0, "127.0.0.1"),
    ("10.0.0.9", "6.6.6.6, 1.2.3.4", 0, "10.0.0.9"),  # X-Forwarded-For is not trusted by default
    ("10.0.0.9", "6.6.6.6, 1.2.3.4", 1, "1.2.3.4"),  # what our own proxy saw, not what the client wrote
    ("10.0.0.9", "", 1, "10.0.0.9"),
    ("::ffff:10.1.2.3", "", 0, "10.1.2.3"),
    ("2001:db8::1", "", 0, "2001:db8::/64"),
    ("2001:db8::ffff:1", "", 0, "2001:db8::/64"),
])
def test_clients_are_counted_by_address(remote, forwarded, hops, expected):
    assert client_address(FakeRequest(remote, forwarded), hops) == expected


# -- passwords --------------------------------------------------------------

@pytest.mark.parametrize("password", ["short", "carol-2024", "password123", "aaaaaaaaaaa", "Password1"])
def test_weak_passwords_are_refused_on_the_password_field(password):
    with pytest.raises(BadRequest) as raised:
        auth.check_new_password("carol", password)
    assert list(raised.value.details) == ["password"]


def test_a_reasonable_password_is_accepted_and_stored_as_a_salted_scrypt_hash():
    auth.check_new_password("carol", "correct horse battery")
    first, second = auth.hash_password("correct horse battery"), auth.hash_password("correct horse battery")
    assert first.startswith("scrypt$") and first != second  # salted
    assert "correct horse" not in first
    assert auth.check_password("correct horse battery", first)
    assert not auth.check_password("correct horse batterY", first)


# -- tokens -----------------------------------------------------------------

def claims(**overrides):
    now = int(time.time())
    out = {"sub": "alice", "role": "customer", "iat": now, "nbf": now, "exp": now + 60,
           "iss": auth.ISSUER, "aud": auth.AUDIENCE}
    out.update(overrides)
    return {key: value for key, value in out.items() if value is not None}


def test_the_gateways_own_token_is_accepted():
    token = auth.issue_token(CONFIG, "alice", "customer")["access_token"]
    assert auth.user_from_token(CONFIG, token) == {"username": "alice", "role": "customer"}
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def _unsigned(payload):
    return jwt.encode(payload, None, algorithm="none")


@pytest.mark.parametrize("case", [
    "none-algorithm", "wrong-secret", "HS512", "HS384", "expired", "not-yet-valid", "issued-in-the-future",
    "wrong-audience", "wrong-issuer", "no-exp", "no-iat", "no-aud", "no-iss", "no-sub", "unknown-role",
    "tampered-role", "garbage", "empty",
])
def test_bad_tokens_are_refused(case):
    secret = CONFIG["TOKEN_SECRET"]
    now = int(time.time())
    good = jwt.encode(claims(), secret, algorithm="HS256")
    token = {
        "none-algorithm": lambda: _unsigned(claims()),
        "wrong-secret": lambda: jwt.encode(claims(), "another-secret-" + "z" * 32, algorithm="HS256"),
        "HS512": lambda: jwt.encode(claims(), secret, algorithm="HS512"),
        "HS384": lambda: jwt.encode(claims(), secret, algorithm="HS384"),
        "expired": lambda: jwt.encode(claims(iat=now - 120, nbf=now - 120, exp=now - 60), secret),
        "not-yet-valid": lambda: jwt.encode(claims(nbf=now + 600), secret),
        "issued-in-the-future": lambda: jwt.encode(claims(iat=now + 600), secret),
        "wrong-audience": lambda: jwt.encode(claims(aud="someone-else"), secret),
        "wrong-issuer": lambda: jwt.encode(claims(iss="someone-else"), secret),
        "no-exp": lambda: jwt.encode(claims(exp=None), secret),
        "no-iat": lambda: jwt.encode(claims(iat=None), secret),
        "no-aud": lambda: jwt.encode(claims(aud=None), secret),
        "no-iss": lambda: jwt.encode(claims(iss=None), secret),
        "no-sub": lambda: jwt.encode(claims(sub=None), secret),
        "unknown-role": lambda: jwt.encode(claims(role="admin"), secret),
        "tampered-role": lambda: _tamper(good, role="librarian"),
        "garbage": lambda: "not.a.token",
        "empty": lambda: "",
    }[case]()
    assert auth.user_from_token(CONFIG, token) is None


def _tamper(token, **changes):
    """The same header and signature, with a payload of our choosing."""
    import base64
    import json

    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize("profile, value, refused", [
    ("development", auth.DEFAULT_SECRET, False),
    ("production", auth.DEFAULT_SECRET, True),
    ("production", "short-secret", True),
    ("production", "a-random-production-secret-of-40-characters", False),
    ("staging", auth.DEFAULT_SECRET, True),
    ("development", "", True),
])
def test_the_secret_must_be_safe_outside_development(profile, value, refused):
    config = {"PROFILE": profile, "TOKEN_SECRET": value}
    if refused:
        with pytest.raises(auth.ConfigurationError, match="TOKEN_SECRET"):
            auth.check_config(config)
    else:
        auth.check_config(config)


# -- bodies -----------------------------------------------------------------

def _body(data, content_type="application/json", **headers):
    environ = EnvironBuilder(method="POST", data=data, content_type=content_type, headers=headers).get_environ()
    return _json_body(Request(environ))


@pytest.mark.parametrize("data, message", [
    (b"", "send a JSON object"),
    (b"{", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"text"', "must be a JSON object"),
    (b"null", "must be a JSON object"),
    (b'{"copies": NaN}', "not valid JSON"),
    (b'{"copies": Infinity}', "not valid JSON"),
    (b"\xff\xfe{}", "not valid UTF-8"),
    (b'{"a": ' + b"[" * 20000 + b"]" * 20000 + b"}", "nested too deeply"),
    (b'{"a": 1' + b"0" * 5000 + b"}", "not valid JSON"),  # past Python's digit limit
])
def test_malformed_bodies_are_bad_requests(data, message):
    with pytest.raises(BadRequest, match=message):
        _body(data)


def test_a_lone_surrogate_is_refused_on_its_field():
    with pytest.raises(BadRequest) as raised:
        _body(b'{"title": "a\\ud800b", "isbn": "ok"}')
    assert raised.value.details == {"title": ["not valid Unicode text (a lone surrogate)"]}
    assert _body(b'{"title": "\\ud83d\\udcda"}') == {"title": "\U0001F4DA"}  # a whole pair is fine


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          "application/xml", "application/json; charset=latin-1"])
def test_bodies_that_are_not_json_are_unsupported(content_type):
    with pytest.raises(UnsupportedMediaType):
        _body(b'{"a": 1}', content_type)


def test_json_content_types_are_accepted():
    for content_type in ["application/json", "application/json; charset=utf-8", "application/problem+json", None]:
        assert _body(b'{"a": 1}', content_type) == {"a": 1}


def test_a_body_over_the_limit_is_too_large_whatever_it_claims():
    with pytest.raises(PayloadTooLarge):
        _body(b'{"a": "' + b"x" * 70_000 + b'"}')
