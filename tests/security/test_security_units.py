"""The pieces of the gateway's edge, without a process: rate limits, limit
settings, client addresses, password rules, body parsing. (Tokens, keys and
sessions: test_security_token_units.py.)"""
import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from common.errors import BadRequest
from gateway import auth
from gateway.bodies import json_body
from gateway.errors import PayloadTooLarge, UnsupportedMediaType
from gateway.ratelimit import Limits, client_address, redis_prefix, retry_after, settings, window


# -- rate limits (moving windows of the limits package, in memory) ----------

def test_a_window_lets_a_burst_through_then_says_how_long_to_wait():
    limits = Limits({"address": (2, 5)})  # 5 in any 3 seconds
    assert [limits.take("address", "a") for _ in range(5)] == [0.0] * 5
    wait = limits.take("address", "a")
    assert 0 < wait <= 3
    assert retry_after(wait) in (1, 2, 3)
    assert limits.take("address", "b") == 0.0  # another key has its own window
    assert limits.take("login", "a") == 0.0  # a family that is off lets everything through


def test_charging_failures_fills_a_window_that_wait_then_reports():
    limits = Limits({"login": (5 / 60, 3)})  # 3 in any 36 seconds
    assert limits.wait("login", "k") == 0.0
    for _ in range(10):
        limits.charge("login", "k")
    assert 30 < limits.wait("login", "k") <= 36
    assert limits.wait("login", "other") == 0.0


def test_a_window_holds_the_burst_over_burst_over_rate_seconds():
    item = window(200, 400)
    assert (item.amount, item.get_expiry()) == (400, 2)
    item = window(5 / 60, 10)  # the default login limit: 10 in any 2 minutes
    assert (item.amount, item.get_expiry()) == (10, 120)


def test_an_unreachable_store_lets_requests_through():
    limits = Limits({"address": (1, 1)}, "redis://127.0.0.1:1/0", key_prefix="unit", wrap_exceptions=True,
                    socket_connect_timeout=0.2, socket_timeout=0.2)
    assert limits.take("address", "a") == 0.0
    assert limits.wait("address", "a") == 0.0


def test_the_redis_prefix_is_one_per_system_unless_set():
    one = redis_prefix({"DB_URIS": {"gateway:Base": "sqlite:////tmp/a/gateway.db"}})
    two = redis_prefix({"DB_URIS": {"gateway:Base": "sqlite:////tmp/b/gateway.db"}})
    assert one != two and one.startswith("bookrental:")
    assert redis_prefix({"REDIS_PREFIX": "mine", "DB_URIS": {}}) == "mine"


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


# -- tokens: see test_security_token_units.py ----------------------------------


# -- bodies -----------------------------------------------------------------

def _body(data, content_type="application/json", **headers):
    environ = EnvironBuilder(method="POST", data=data, content_type=content_type, headers=headers).get_environ()
    return json_body(Request(environ))


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
