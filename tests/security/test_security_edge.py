"""The gateway's edge on a live gateway process: who may call what (API2,
API5), what a body may be (API3, API4, API8). None of these reach a backend:
the gateway answers them itself, before any RPC."""
import base64
import json
import re
import time

import jwt
import pytest
import requests

import gateway.service  # noqa: F401  (declares the routes)
from gateway import auth, keys
from gateway.bodies import MAX_BODY_BYTES
from gateway.http import ROUTES
from helpers import Client

pytestmark = pytest.mark.e2e

ROLES = ("librarian", "customer", "courier")
USERS = {"librarian": "librarian", "customer": "alice", "courier": "courier"}


@pytest.fixture(scope="module")
def url(gateway):
    return gateway.gateway_url


@pytest.fixture(scope="module")
def signing_key(gateway):
    """The gateway's own signing key (its state directory's key file): a
    token it signs but whose claims are wrong must be refused all the same."""
    return keys.load(gateway._process_env(1, "gateway")["TOKEN_KEYS"]).signing


@pytest.fixture(scope="module")
def tokens(url):
    return {role: Client.signed_in(url, username).session.headers["Authorization"].split(" ", 1)[1]
            for role, username in USERS.items()}


def call(url, method, path, token=None, **kwargs):
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, url + path, headers=headers, timeout=15, **kwargs)


def assert_error(response, status, code=None):
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert isinstance(error["details"], dict) and error["message"]
    if code:
        assert error["code"] == code
    assert "Traceback" not in response.text
    return error


# -- tokens (API2) ----------------------------------------------------------

def _claims(**overrides):
    now = int(time.time())
    claims = {"sub": "alice", "role": "customer", "iat": now, "nbf": now, "exp": now + 600,
              "iss": auth.ISSUER, "aud": auth.AUDIENCE, "jti": "forged-1"}
    claims.update(overrides)
    return claims


def _b64(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _forged(kind, good, key):
    now = int(time.time())
    header, payload, signature = good.split(".")

    def signed(claims, algorithm="RS256"):
        return jwt.encode(claims, key.private_key, algorithm=algorithm, headers={"kid": key.kid})

    return {
        "none-algorithm": lambda: f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}.",
        "none-algorithm-librarian": lambda: jwt.encode(_claims(role="librarian", sub="librarian"), None,
                                                       algorithm="none"),
        "wrong-signature": lambda: jwt.encode(_claims(), keys.generate().private_key, algorithm="RS256",
                                              headers={"kid": key.kid}),
        "other-algorithm": lambda: signed(_claims(), "RS512"),
        "hmac-with-a-guessable-secret": lambda: jwt.encode(_claims(), "not-the-secret-" + "x" * 32,
                                                           headers={"kid": key.kid}),
        "expired": lambda: signed(_claims(iat=now - 7200, nbf=now - 7200, exp=now - 3600)),
        "wrong-audience": lambda: signed(_claims(aud="another-api")),
        "wrong-issuer": lambda: signed(_claims(iss="someone-else")),
        "tampered-role": lambda: f"{header}.{_b64(_claims(role='librarian'))}.{signature}",
        "signature-stripped": lambda: f"{header}.{payload}.",
        "unknown-role": lambda: signed(_claims(role="admin")),
        "no-jti": lambda: signed({k: v for k, v in _claims().items() if k != "jti"}),
        "garbage": lambda: "garbage",
    }[kind]()


FORGERIES = ["none-algorithm", "none-algorithm-librarian", "wrong-signature", "other-algorithm",
             "hmac-with-a-guessable-secret", "expired", "wrong-audience", "wrong-issuer", "tampered-role",
             "signature-stripped", "unknown-role", "no-jti", "garbage"]


def test_a_good_token_passes_and_the_role_comes_from_it(url, tokens):
    # librarian-only route, with a customer's token: authenticated (not 401), refused (403)
    assert_error(call(url, "POST", "/books", tokens["customer"], json={}), 403, "forbidden")
    # the librarian's token gets past the role check to the body check
    assert_error(call(url, "POST", "/books", tokens["librarian"], json={}), 400, "bad_request")


@pytest.mark.parametrize("kind", FORGERIES)
def test_refused_tokens_are_401(url, tokens, signing_key, kind):
    token = _forged(kind, tokens["customer"], signing_key)
    for method, path in [("GET", "/mypage"), ("POST", "/books"), ("GET", "/deliveries")]:
        response = call(url, method, path, token, json={})
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "sign in again" in response.json()["error"]["message"]  # not "send a token": one was sent


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic YWxpY2U6YWxpY2U=", "Token abc", "bearer"])
def test_missing_or_malformed_authorization_is_401(url, header):
    assert_error(requests.get(url + "/mypage", headers={"Authorization": header}, timeout=10), 401)


def test_identity_headers_and_body_fields_are_ignored_or_refused(url, tokens):
    # a header cannot make anyone anyone
    response = call(url, "POST", "/books", tokens["customer"], json={},
                    headers={"X-User": "librarian", "X-Role": "librarian", "X-Forwarded-User": "librarian"})
    assert_error(response, 403)
    # nor can a body field (mass assignment): unknown fields are refused by name
    error = assert_error(call(url, "POST", "/reservations", tokens["customer"],
                              json={"book_id": 1, "customer": "bob"}), 400)
    assert error["details"] == {"customer": ["Unknown field."]}
    error = assert_error(call(url, "POST", "/auth/register",
                              json={"username": "mallory", "password": "long enough pass", "role": "librarian"}),
                         400)
    assert list(error["details"]) == ["role"]


# -- roles on every route (API5), table-driven from the routes ---------------

def _path(url_rule):
    """A concrete path for a route, with ids that fail cheaply after the role check."""
    def value(match):
        converter = match.group(1) or ""
        return "0" if converter.startswith("int") else "not-an-id"

    return re.sub(r"<(?:([\w]+(?:\([^)]*\))?):)?\w+>", value, url_rule)


PROTECTED = [route for route in ROUTES if route.get("roles")]
CASES = [(route, role) for route in PROTECTED for role in ROLES]


def test_every_route_but_the_public_ones_needs_a_role():
    public = sorted((route["method"], route["url"]) for route in ROUTES if not route.get("roles"))
    assert public == sorted([
        ("POST", "/auth/token"), ("POST", "/auth/register"), ("GET", "/books"),
        ("GET", "/books/<int(max=2147483647):book_id>"), ("GET", "/health/live"), ("GET", "/health/ready"),
        ("GET", "/openapi.json"), ("GET", "/asyncapi.json"), ("GET", "/"), ("GET", "/static/<path:path>"),
        ("GET", "/mypage/events"),  # authenticated by its one-time ticket instead (gateway/live.py)
        ("GET", "/.well-known/jwks.json"),  # the public keys: anyone may verify a token
    ])


@pytest.mark.parametrize("route", PROTECTED, ids=lambda r: f"{r['method']} {r['url']}")
def test_every_protected_route_refuses_anonymous_callers(url, route):
    assert_error(call(url, route["method"], _path(route["url"]), json={}), 401, "unauthorized")


@pytest.mark.parametrize("route, role", CASES, ids=lambda x: x if isinstance(x, str) else f"{x['method']} {x['url']}")
def test_every_protected_route_admits_exactly_its_roles(url, tokens, route, role):
    params = {"limit": "0"} if route.get("query") is not None else None
    token = tokens[role]
    if route["name"] == "logout":  # it ends the session of the token it is sent with: not the shared one
        token = Client.signed_in(url, USERS[role]).session.headers["Authorization"].split(" ", 1)[1]
    response = call(url, route["method"], _path(route["url"]), token, json={}, params=params)
    if role in route["roles"]:
        assert response.status_code not in (401, 403), (role, response.text)
    else:
        assert_error(response, 403, "forbidden")


# -- sign-up (API2) ---------------------------------------------------------

def test_sign_up_makes_a_customer_and_never_echoes_the_password(url):
    response = call(url, "POST", "/auth/register", json={"username": "carol.k", "password": "carol's long password"})
    assert response.status_code == 201, response.text
    assert response.json() == {"username": "carol.k", "role": "customer"}
    again = call(url, "POST", "/auth/register", json={"username": "carol.k", "password": "another long password"})
    assert_error(again, 409, "conflict")
    signed_in = call(url, "POST", "/auth/token", json={"username": "carol.k", "password": "carol's long password"})
    assert signed_in.status_code == 200
    assert set(signed_in.json()) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert signed_in.json()["token_type"] == "bearer"
    claims = jwt.decode(signed_in.json()["access_token"], options={"verify_signature": False})
    assert claims["role"] == "customer" and claims["sub"] == "carol.k"


@pytest.mark.parametrize("body, field", [
    ({"username": "dave", "password": "short"}, "password"),
    ({"username": "dave", "password": "dave-dave-dave"}, "password"),
    ({"username": "dave", "password": "password123"}, "password"),
    ({"username": "d", "password": "a long enough password"}, "username"),
    ({"username": "dave smith", "password": "a long enough password"}, "username"),
    ({"username": "<script>", "password": "a long enough password"}, "username"),
    ({"username": "x" * 33, "password": "a long enough password"}, "username"),
    ({"username": "dave", "password": "p" * 257}, "password"),
    ({"username": "dave"}, "password"),
    ({"password": "a long enough password"}, "username"),
])
def test_bad_sign_ups_are_400_on_the_field(url, body, field):
    error = assert_error(call(url, "POST", "/auth/register", json=body), 400, "bad_request")
    assert field in error["details"], error


def test_a_name_taken_in_another_case_is_409(url):
    # "Alice" next to "alice" would pass for her.
    assert_error(call(url, "POST", "/auth/register", json={"username": "Alice", "password": "a long enough password"}), 409)


def test_a_wrong_password_and_an_unknown_user_look_the_same(url):
    wrong = assert_error(call(url, "POST", "/auth/token", json={"username": "alice", "password": "nope"}), 401)
    unknown = assert_error(call(url, "POST", "/auth/token", json={"username": "nobody", "password": "nope"}), 401)
    assert wrong == unknown


# -- bodies (API4, API8) ----------------------------------------------------

def test_a_body_over_the_limit_is_413(url, tokens):
    big = json.dumps({"username": "x" * (MAX_BODY_BYTES + 10), "password": "y"})
    assert_error(call(url, "POST", "/auth/register", data=big, headers={"Content-Type": "application/json"}), 413)
    assert_error(call(url, "POST", "/books", tokens["librarian"], data=big,
                      headers={"Content-Type": "application/json"}), 413)


def test_a_chunked_body_over_the_limit_is_413_and_one_under_it_is_read(url):
    def chunks(payload):
        for start in range(0, len(payload), 4096):
            yield payload[start:start + 4096]

    big = json.dumps({"username": "x" * (MAX_BODY_BYTES + 10), "password": "y"}).encode()
    response = call(url, "POST", "/auth/register", data=chunks(big), headers={"Content-Type": "application/json"})
    assert_error(response, 413)
    small = json.dumps({"username": "chunky", "password": "streamed body 42"}).encode()
    response = call(url, "POST", "/auth/register", data=chunks(small), headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("data, content_type, status", [
    ("{", "application/json", 400),
    ("[1, 2, 3]", "application/json", 400),
    ('"a string"', "application/json", 400),
    ("null", "application/json", 400),
    ("", "application/json", 400),
    ('{"username": "alice", "password": NaN}', "application/json", 400),
    ('{"a": ' + "[" * 5000 + "]" * 5000 + "}", "application/json", 400),
    ("username=alice&password=alice", "application/x-www-form-urlencoded", 400),  # an OAuth 2 request, no grant
    ('{"username": "alice", "password": "alice"}', "text/plain", 415),
    ("<xml/>", "application/xml", 415),
    ('{"username": "alice", "password": "alice"}', "application/json; charset=utf-16", 415),
])
def test_malformed_or_foreign_bodies_are_refused(url, data, content_type, status):
    response = call(url, "POST", "/auth/token", data=data.encode(), headers={"Content-Type": content_type})
    if content_type == "application/x-www-form-urlencoded":  # answered as RFC 6749 says (test_security_oauth.py)
        assert (response.status_code, response.json()["error"]) == (status, "invalid_request")
    else:
        assert_error(response, status)


def test_bytes_that_are_not_utf8_are_400(url):
    assert_error(call(url, "POST", "/auth/token", data=b'{"username": "\xff\xfe", "password": "x"}',
                      headers={"Content-Type": "application/json"}), 400)


@pytest.mark.parametrize("body, field", [
    ({"isbn": "1", "title": "t", "author": "a", "copies": "3"}, "copies"),
    ({"isbn": "1", "title": "t", "author": "a", "copies": 3.5}, "copies"),
    ({"isbn": "1", "title": "t", "author": "a", "copies": True}, "copies"),
    ({"isbn": "1", "title": "t", "author": "a", "copies": None}, "copies"),
    ({"isbn": "1", "title": "t", "author": "a", "copies": -1}, "copies"),
    ({"isbn": "1", "title": "t", "author": "a", "copies": 2 ** 63}, "copies"),
    ({"isbn": "1", "title": "t", "author": "a", "copies": [1]}, "copies"),
    ({"isbn": "1" * 33, "title": "t", "author": "a", "copies": 1}, "isbn"),
    ({"isbn": "978-0-00-000000-0", "title": "t", "author": "a", "copies": 1}, "isbn"),  # check digit
    ({"isbn": "0-441-17271-8", "title": "t", "author": "a", "copies": 1}, "isbn"),
    ({"isbn": "1", "title": "t" * 301, "author": "a", "copies": 1}, "title"),
    ({"isbn": "1", "title": "t", "author": "", "copies": 1}, "author"),
    ({"isbn": "1", "title": "a\u0000b", "author": "a", "copies": 1}, "title"),
    ({"isbn": "1", "title": "a\u001bb", "author": "a", "copies": 1}, "title"),
    ({"isbn": "1", "title": {"$ne": None}, "author": "a", "copies": 1}, "title"),
    ({"isbn": "1", "title": "t", "author": "a", "copies": 1, "stock": 99}, "stock"),
    ({"isbn": "1", "title": "t", "author": "a", "copies": 1, "id": 7}, "id"),
])
def test_every_field_is_typed_bounded_and_closed(url, tokens, body, field):
    error = assert_error(call(url, "POST", "/books", tokens["librarian"], json=body), 400)
    assert field in error["details"], error


def test_a_lone_surrogate_is_400_not_500(url, tokens):
    data = b'{"isbn": "9780441172719", "title": "half \\ud800 a pair", "author": "a", "copies": 1}'
    error = assert_error(call(url, "POST", "/books", tokens["librarian"], data=data,
                              headers={"Content-Type": "application/json"}), 400)
    assert list(error["details"]) == ["title"]
    data = b'{"username": "\\udfff", "password": "\\ud800"}'
    assert_error(call(url, "POST", "/auth/token", data=data, headers={"Content-Type": "application/json"}), 400)
    assert_error(call(url, "POST", "/auth/register", data=data, headers={"Content-Type": "application/json"}), 400)


@pytest.mark.parametrize("book_id", [0, -1, 2 ** 31, 2 ** 63, 10 ** 30])
def test_ids_in_bodies_are_typed_and_bounded(url, tokens, book_id):
    error = assert_error(call(url, "POST", "/reservations", tokens["customer"], json={"book_id": book_id}), 400)
    assert "book_id" in error["details"]


@pytest.mark.parametrize("book_id", [2 ** 31, 2 ** 63, 10 ** 30])
def test_ids_in_paths_past_the_largest_id_are_404_before_any_database(url, tokens, book_id):
    # Before the bound, 2**63 reached SQLite ("Python int too large to convert") and answered 500.
    assert_error(call(url, "GET", f"/books/{book_id}"), 404)
    assert_error(call(url, "POST", f"/books/{book_id}/stock", tokens["librarian"], json={"quantity": 1}), 404)


@pytest.mark.parametrize("path", ["/books/-1", "/books/1.5", "/books/1e3", "/books/%27%20OR%201=1",
                                  "/reservations/%27%20OR%20%271%27=%271", "/reservations/..%2F..%2Fetc%2Fpasswd",
                                  "/deliveries/<script>", "/static/..%2F..%2Fservice.py", "/static/../../auth.py"])
def test_odd_ids_in_paths_are_404(url, tokens, path):
    token = tokens["courier"] if path.startswith("/deliveries") else tokens["librarian"]
    assert_error(call(url, "GET", path, token), 404)


@pytest.mark.parametrize("params, field", [
    ({"limit": "0"}, "limit"), ({"limit": "501"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"limit": "1; DROP TABLE books"}, "limit"), ({"cursor": "' OR 1=1 --"}, "cursor"),
    ({"cursor": "9" * 40}, "cursor"), ({"status": "lost"}, "status"), ({"status": "shipped' --"}, "status"),
    ({"color": "red"}, "color"),
])
def test_query_parameters_are_typed_and_closed(url, tokens, params, field):
    error = assert_error(call(url, "GET", "/deliveries", tokens["courier"], params=params), 400)
    assert field in error["details"]


@pytest.mark.parametrize("key", ["x" * 129, "tab\there", "new\nline"])
def test_an_odd_idempotency_key_is_400(url, tokens, key):
    try:
        response = call(url, "POST", "/reservations", tokens["customer"], json={"book_id": 1},
                        headers={"Idempotency-Key": key})
    except ValueError:  # the client itself refuses to send a header with a newline
        return
    assert_error(response, 400)


def test_unknown_routes_and_methods_answer_in_json(url):
    assert_error(requests.get(url + "/admin", timeout=10), 404, "not_found")
    response = requests.delete(url + "/books", timeout=10)
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_api_answers_are_not_cached_or_sniffed(url, tokens):
    for response in [call(url, "POST", "/auth/token", json={"username": "alice", "password": "alice"}),
                     call(url, "GET", "/openapi.json"), call(url, "GET", "/nowhere")]:
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_other_origins_get_no_cors_grant(url, tokens):
    preflight = requests.options(url + "/reservations", timeout=10, headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 405
    answer = call(url, "GET", "/mypage", tokens["customer"], headers={"Origin": "https://evil.example"})
    for response in (preflight, answer):
        assert not any(name.lower().startswith("access-control-") for name in response.headers)
