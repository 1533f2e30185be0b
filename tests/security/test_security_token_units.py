"""Tokens, keys and sessions without a process: the key ring (gateway.keys),
access tokens (gateway.auth.Tokens), refresh token sessions
(gateway.sessions), the deny list (gateway.denylist) and the OAuth 2 token
request's parsing (gateway.bodies.form_grant). The same cases run end to end
in test_security_oauth.py."""
import base64
import hashlib
import hmac
import json
import os
import stat
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from common.errors import Unavailable
from gateway import auth, keys, models, schemas, sessions
from gateway.denylist import DenyList, RedisDenied, SqlDenied
from gateway.bodies import form_grant
from gateway.errors import OAuthError


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    """A ring of two keys: the second signs."""
    path = str(tmp_path_factory.mktemp("keys") / "token-keys.pem")
    keys.ensure(path)
    keys.rotate(path)
    return path


@pytest.fixture(scope="module")
def ring(key_file):
    return keys.load(key_file)


@pytest.fixture(scope="module")
def other_key():
    """Another gateway's key."""
    return keys.generate()


@pytest.fixture(scope="module")
def source(key_file):
    return keys.KeySource(key_file)


@pytest.fixture
def tokens(source):
    return auth.Tokens(source, set(), ttl=60)


def b64(data):
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(**overrides):
    now = int(time.time())
    out = {"sub": "alice", "role": "customer", "iat": now, "nbf": now, "exp": now + 60,
           "iss": auth.ISSUER, "aud": auth.AUDIENCE, "jti": "jti-1", "sid": "s1"}
    out.update(overrides)
    return {key: value for key, value in out.items() if value is not None}


# -- the key ring -------------------------------------------------------------

def test_a_kid_is_the_rfc7638_thumbprint():
    # RFC 7638 §3.1's example key and thumbprint.
    jwk = {"kty": "RSA", "e": "AQAB", "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknj"
        "hMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6"
        "qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8aw"
        "apJzKnqDKgw")}
    assert keys.thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_the_first_run_makes_one_private_key_file_and_later_runs_reuse_it(tmp_path):
    path = str(tmp_path / "state" / "keys" / "token-keys.pem")
    first = keys.ensure(path)
    again = keys.ensure(path)
    assert [key.kid for key in first.keys] == [key.kid for key in again.keys] and len(first.keys) == 1
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert first.signing.private_key.key_size >= 2048


def test_rotation_appends_a_signing_key_and_removal_drops_an_old_one(tmp_path):
    path = str(tmp_path / "token-keys.pem")
    old = keys.ensure(path).signing.kid
    ring = keys.rotate(path)
    new = ring.signing.kid
    assert [key.kid for key in ring.keys] == [old, new]
    assert [key["kid"] for key in ring.jwks()["keys"]] == [new, old]
    with pytest.raises(keys.KeyRingError, match="signing key"):
        keys.remove(path, new)
    with pytest.raises(keys.KeyRingError, match="no key"):
        keys.remove(path, "nope")
    assert [key.kid for key in keys.remove(path, old).keys] == [new]


def test_rotation_keeps_the_mode_of_a_key_file_made_elsewhere(tmp_path):
    path = str(tmp_path / "token_keys")  # e.g. deploy/secrets/token_keys, 0644 for the container's user
    keys.ensure(path)
    os.chmod(path, 0o644)
    keys.rotate(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_the_jwk_set_holds_public_keys_only(ring):
    for jwk in ring.jwks()["keys"]:
        assert set(jwk) == {"kty", "use", "alg", "kid", "n", "e"}
        assert jwk["alg"] == "RS256" and jwk["use"] == "sig"


def test_a_source_reads_the_file_again_when_it_changes(tmp_path):
    path = str(tmp_path / "token-keys.pem")
    keys.ensure(path)
    clock = [0.0]
    source = keys.KeySource(path, clock=lambda: clock[0])
    before = source.current().signing.kid
    after = keys.rotate(path).signing.kid
    assert source.current().signing.kid == before  # looked at less than a second ago
    clock[0] += keys.RELOAD_EVERY
    assert source.current().signing.kid == after
    assert source.public_key(before) is not None


@pytest.mark.parametrize("content", [b"", b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"])
def test_a_bad_key_file_is_refused(tmp_path, content):
    path = tmp_path / "token-keys.pem"
    path.write_bytes(content)
    with pytest.raises(keys.KeyRingError):
        keys.load(str(path))


def test_a_short_key_is_refused():
    from cryptography.hazmat.primitives.asymmetric import rsa

    with pytest.raises(keys.KeyRingError, match="2048"):
        keys.Key(rsa.generate_private_key(public_exponent=65537, key_size=1024))


@pytest.mark.parametrize("profile", ["production", "staging"])
def test_outside_development_the_gateway_refuses_to_start_without_a_key(tmp_path, profile):
    path = str(tmp_path / "missing.pem")
    with pytest.raises(auth.ConfigurationError, match=f"refusing to start: PROFILE={profile}.*no token key file"):
        auth.key_source({"PROFILE": profile, "TOKEN_KEYS": path})
    assert not os.path.exists(path)  # nothing made up in production


def test_in_development_the_key_is_made_on_first_run(tmp_path):
    path = str(tmp_path / "keys" / "token-keys.pem")
    source = auth.key_source({"PROFILE": "development", "TOKEN_KEYS": path})
    assert os.path.exists(path) and source.current().signing.kid


# -- access tokens --------------------------------------------------------------

def test_an_access_token_is_rs256_with_the_signing_kid_and_verifies(tokens, ring):
    token, issued = tokens.issue("alice", "customer", "session-1")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["kid"] == ring.signing.kid
    user = tokens.verify(token)
    assert user == {"username": "alice", "role": "customer", "jti": issued["jti"], "exp": issued["exp"],
                    "session": "session-1"}


def test_anyone_verifies_a_token_with_the_published_jwk_set(tokens, ring):
    token, _ = tokens.issue("alice", "customer", "s")
    jwk_set = jwt.PyJWKSet.from_dict(ring.jwks())
    key = next(k for k in jwk_set.keys if k.key_id == jwt.get_unverified_header(token)["kid"])
    decoded = jwt.decode(token, key.key, algorithms=["RS256"], audience=auth.AUDIENCE, issuer=auth.ISSUER)
    assert decoded["sub"] == "alice"


def _signed_with(ring, payload, index=-1, kid=None):
    key = ring.keys[index]
    return jwt.encode(payload, key.private_key, algorithm="RS256", headers={"kid": kid or key.kid})


def _hs256_with_public_key(ring, payload):
    """Algorithm confusion: HMAC "signed" with the public key's PEM, which a
    verifier that trusts the header's alg would use as the HMAC secret."""
    key = ring.signing
    public_pem = key.public_key.public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': key.kid})}.{b64(payload)}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def _tamper(token, **changes):
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    return f"{header}.{b64(data)}.{signature}"


@pytest.mark.parametrize("case", [
    "alg-none", "alg-none-with-kid", "hs256-with-the-public-key", "unknown-kid", "no-kid", "another-key-same-kid",
    "expired", "not-yet-valid", "issued-in-the-future", "wrong-audience", "wrong-issuer", "no-exp", "no-iat",
    "no-aud", "no-iss", "no-sub", "no-jti", "unknown-role", "tampered-role", "garbage", "empty",
])
def test_bad_tokens_are_refused(tokens, ring, other_key, case):
    now = int(time.time())
    kid = ring.signing.kid
    good = _signed_with(ring, claims())
    other = other_key
    token = {
        "alg-none": lambda: jwt.encode(claims(), None, algorithm="none"),
        "alg-none-with-kid": lambda: f"{b64({'alg': 'none', 'kid': kid})}.{b64(claims())}.",
        "hs256-with-the-public-key": lambda: _hs256_with_public_key(ring, claims()),
        "unknown-kid": lambda: _signed_with(ring, claims(), kid="no-such-kid"),
        "no-kid": lambda: jwt.encode(claims(), ring.signing.private_key, algorithm="RS256"),
        "another-key-same-kid": lambda: jwt.encode(claims(), other.private_key, algorithm="RS256",
                                                   headers={"kid": kid}),
        "expired": lambda: _signed_with(ring, claims(iat=now - 120, nbf=now - 120, exp=now - 60)),
        "not-yet-valid": lambda: _signed_with(ring, claims(nbf=now + 600)),
        "issued-in-the-future": lambda: _signed_with(ring, claims(iat=now + 600)),
        "wrong-audience": lambda: _signed_with(ring, claims(aud="someone-else")),
        "wrong-issuer": lambda: _signed_with(ring, claims(iss="someone-else")),
        "no-exp": lambda: _signed_with(ring, claims(exp=None)),
        "no-iat": lambda: _signed_with(ring, claims(iat=None)),
        "no-aud": lambda: _signed_with(ring, claims(aud=None)),
        "no-iss": lambda: _signed_with(ring, claims(iss=None)),
        "no-sub": lambda: _signed_with(ring, claims(sub=None)),
        "no-jti": lambda: _signed_with(ring, claims(jti=None)),
        "unknown-role": lambda: _signed_with(ring, claims(role="admin")),
        "tampered-role": lambda: _tamper(good, role="librarian"),
        "garbage": lambda: "not.a.token",
        "empty": lambda: "",
    }[case]()
    assert tokens.verify(token) is None


def test_a_token_of_an_old_key_is_good_until_the_key_is_removed_even_when_remembered(tmp_path):
    path = str(tmp_path / "token-keys.pem")
    keys.ensure(path)
    clock = [0.0]
    source = keys.KeySource(path, clock=lambda: clock[0])
    tokens = auth.Tokens(source)
    old_token, _ = tokens.issue("alice", "customer", "s")
    old_kid = source.current().signing.kid
    keys.rotate(path)
    clock[0] += 1
    new_token, _ = tokens.issue("bob", "customer", "s")
    assert jwt.get_unverified_header(new_token)["kid"] != old_kid
    assert tokens.verify(old_token)["username"] == "alice"  # and now it is remembered
    keys.remove(path, old_kid)
    clock[0] += 1
    assert tokens.verify(old_token) is None
    assert tokens.verify(new_token)["username"] == "bob"


def test_a_denied_token_is_refused_even_when_remembered(source):
    denied = set()
    tokens = auth.Tokens(source, denied)
    token, issued = tokens.issue("alice", "customer", "s")
    assert tokens.verify(token) is not None
    denied.add(issued["jti"])
    assert tokens.verify(token) is None


# -- refresh token sessions -----------------------------------------------------

@pytest.fixture
def db(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    models.Base.metadata.create_all(engine)
    with Session(engine) as session:
        yield models.Accounts(session)  # the repository the gateway's transactions carry


def test_a_refresh_token_is_stored_as_a_hash_and_works_once(db):
    now = 1000.0
    token = sessions.issue(db, "s1", "alice", "web", ("a1", now + 60), now)
    stored = db.session.execute(models.refresh_tokens.select()).mappings().one()
    assert stored["token_hash"] == hashlib.sha256(token.encode()).hexdigest() and token not in str(dict(stored))
    assert sessions.use(db, token, now + 1, "web") == ("s1", "alice", "web")
    following = sessions.issue(db, "s1", "alice", "web", ("a2", now + 61), now + 1)
    assert sessions.use(db, following, now + 2, "web")[0] == "s1"


def test_a_reused_refresh_token_revokes_its_whole_session(db):
    now = 1000.0
    first = sessions.issue(db, "s1", "alice", None, ("a1", now + 60), now)
    sessions.use(db, first, now + 1)
    second = sessions.issue(db, "s1", "alice", None, ("a2", now + 61), now + 1)
    elsewhere = sessions.issue(db, "s2", "alice", None, ("b1", now + 60), now)
    with pytest.raises(sessions.InvalidGrant, match="used already") as raised:
        sessions.use(db, first, now + 2)
    assert sorted(jti for jti, _ in raised.value.revoked) == ["a1", "a2"]  # its access tokens, to deny
    with pytest.raises(sessions.InvalidGrant, match="ended"):
        sessions.use(db, second, now + 3)  # the thief's (or the owner's) newer token: gone too
    assert sessions.use(db, elsewhere, now + 3)[0] == "s2"  # another session is untouched


@pytest.mark.parametrize("case", ["unknown", "expired", "other-client", "other-user", "revoked"])
def test_refresh_tokens_that_are_not_good_are_invalid_grants(db, case):
    now = 1000.0
    token = sessions.issue(db, "s1", "alice", "web", ("a1", now + 60), now, ttl=100)
    if case == "revoked":
        sessions.revoke(db, "s1", now)
    presented, at, client, user = {
        "unknown": ("x" * 43, now, "web", None), "expired": (token, now + 100, "web", None),
        "other-client": (token, now, "cli", None), "other-user": (token, now, None, "bob"),
        "revoked": (token, now, "web", None),
    }[case]
    with pytest.raises(sessions.InvalidGrant):
        sessions.use(db, presented, at, client, user)


# -- the deny list ---------------------------------------------------------------

class Store:
    def __init__(self):
        self.entries = {}
        self.down = False

    def add(self, entries, now):
        if self.down:
            raise ConnectionError("down")
        self.entries.update(entries)

    def live(self, now):
        if self.down:
            raise ConnectionError("down")
        return {jti: expiry for jti, expiry in self.entries.items() if expiry >= now}


def test_a_token_denied_by_one_replica_is_refused_by_another_within_the_sync_interval():
    clock = [100.0]
    store = Store()
    here, there = DenyList(store, clock=lambda: clock[0]), DenyList(store, clock=lambda: clock[0])
    assert "j1" not in here and "j1" not in there
    here.deny([("j1", 200.0)])
    assert "j1" in here  # at once where it was denied
    clock[0] += 0.5
    assert "j1" in there  # at the next sync elsewhere
    clock[0] = 201.0
    assert "j1" not in here and "j1" not in there  # expired: no longer listed


def test_the_last_list_read_holds_while_the_store_is_down_and_denying_then_fails():
    clock = [100.0]
    store = Store()
    replica = DenyList(store, clock=lambda: clock[0])
    store.entries["j1"] = 200.0
    assert "j1" in replica
    store.down = True
    clock[0] += 1
    assert "j1" in replica
    with pytest.raises(Unavailable):
        replica.deny([("j2", 200.0)])
    assert "j2" not in replica  # nothing denied that the others cannot see


def test_the_deny_list_in_the_gateways_database(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    models.Base.metadata.create_all(engine)
    store = SqlDenied(engine)
    store.add([("j1", 200.0), ("j2", 150.0)], 100.0)
    store.add([("j1", 200.0)], 100.0)  # twice is once
    assert store.live(160.0) == {"j1": 200.0}
    store.add([("j3", 300.0)], 160.0)  # and the expired are deleted
    assert set(store.live(0.0)) == {"j1", "j3"}


def test_the_deny_list_in_redis_lives_as_long_as_its_last_token():
    import redis

    client = redis.Redis.from_url(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0", socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis at REDIS_URL (make redis)")
    store = RedisDenied(client, f"bookrental-unit-{os.getpid()}-{time.time_ns()}")
    try:
        store.add([("j1", 200.0), ("j2", 150.0)], 100.0)
        assert store.live(160.0) == {"j1": 200.0}
        assert 0 < client.ttl(store.key) <= 101
        store.add([("j3", 1000.0)], 100.0)
        assert set(store.live(0.0)) == {"j1", "j2", "j3"} and client.ttl(store.key) > 800
    finally:
        client.delete(store.key)


# -- the OAuth 2 token request ---------------------------------------------------

def _form(body, content_type="application/x-www-form-urlencoded", **headers):
    environ = EnvironBuilder(method="POST", data=body, content_type=content_type, headers=headers).get_environ()
    return form_grant(Request(environ), schemas.GRANTS)


@pytest.mark.parametrize("body, error", [
    (b"", "invalid_request"),
    (b"username=alice&password=alice", "invalid_request"),  # no grant_type
    (b"grant_type=", "invalid_request"),  # empty is as if not sent
    (b"grant_type=client_credentials", "unsupported_grant_type"),
    (b"grant_type=authorization_code&code=x", "unsupported_grant_type"),
    (b"grant_type=password&username=alice", "invalid_request"),
    (b"grant_type=refresh_token", "invalid_request"),
    (b"grant_type=password&grant_type=refresh_token", "invalid_request"),
    (b"grant_type=password&username=a&password=b&password=c", "invalid_request"),
    (b"grant_type=password&username=%FF&password=b", "invalid_request"),
    (b"\xff\xfe=1", "invalid_request"),
    (b"grant_type=password&username=a&password=b&scope=admin", "invalid_scope"),
    (b"grant_type=password&username=a&password=b&client_secret=s", "invalid_client"),
    (b"grant_type=password&username=" + b"a" * 65 + b"&password=b", "invalid_request"),
    (b"&".join(b"p%d=1" % n for n in range(30)), "invalid_request"),
])
def test_bad_token_requests_get_rfc6749_errors(body, error):
    with pytest.raises(OAuthError) as raised:
        _form(body)
    assert raised.value.error == error
    assert raised.value.status == (401 if error == "invalid_client" else 400)


def test_a_token_request_ignores_unknown_parameters_and_takes_a_public_client():
    grant = _form(b"grant_type=password&username=alice&password=alice&client_id=web&color=red&scope=")
    assert grant == {"grant_type": "password", "username": "alice", "password": "alice", "client_id": "web"}
    basic = "Basic " + base64.b64encode(b"web:").decode()
    assert _form(b"grant_type=refresh_token&refresh_token=abc", Authorization=basic)["client_id"] == "web"


@pytest.mark.parametrize("header, error", [
    ("Basic " + base64.b64encode(b"web:secret").decode(), "invalid_client"),
    ("Basic !!!", "invalid_client"),
])
def test_client_authentication_this_server_cannot_check_is_invalid_client(header, error):
    with pytest.raises(OAuthError) as raised:
        _form(b"grant_type=refresh_token&refresh_token=abc", Authorization=header)
    assert (raised.value.error, raised.value.status) == (error, 401)


def test_the_command_removes_a_key_whose_kid_starts_with_a_dash(tmp_path, monkeypatch, capsys):
    """A kid is a base64url thumbprint: about one in 64 starts with "-", which
    argparse would take for an option ("the following arguments are required: kid")."""
    path = str(tmp_path / "token-keys.pem")
    old = keys.ensure(path).signing.kid
    keys.rotate(path)
    dashed = "-" + old[1:]
    monkeypatch.setattr(keys, "remove", lambda file, kid: (_ for _ in ()).throw(keys.KeyRingError(f"asked {kid}")))
    with pytest.raises(SystemExit, match=f"asked {dashed}"):
        keys.main(["--keys", path, "remove", dashed])
    with pytest.raises(SystemExit, match=f"asked {dashed}"):
        keys.main(["--keys", path, "remove", "--", dashed])
