"""Who is calling: accounts, password hashes and access tokens.

Passwords are hashed with scrypt (standard library; salted, memory-hard).
Access tokens are JWTs signed with RS256 by the last key of the key ring
(``gateway.keys``), with its ``kid`` in the header; PyJWT checks them with
the public key of that kid, the algorithm pinned to RS256 (so ``alg=none``
and an HS256 token "signed" with a public key are refused), and the expiry,
issue time, issuer, audience and subject all required. The role is taken
from the verified token, never from the request. A token whose ``jti`` is on
the deny list (``gateway.denylist``: signed out) is refused too.
"""
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict

import jwt

from common.errors import BadRequest
from gateway import keys

log = logging.getLogger(__name__)

ROLES = ("librarian", "customer", "courier")
ISSUER = "bookrental-gateway"
AUDIENCE = "bookrental-api"
ALGORITHM = keys.ALGORITHM
DEFAULT_TTL = 3600

# The demo accounts of the README, created in the development profile only.
DEMO_ACCOUNTS = [("librarian", "librarian", "librarian"), ("alice", "alice", "customer"),
                 ("bob", "bob", "customer"), ("courier", "courier", "courier")]

_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1, "dklen": 32}
MIN_PASSWORD = 8
# The passwords that are tried first; a real deployment would check a breach list.
COMMON_PASSWORDS = frozenset({
    "password", "password1", "password123", "passw0rd", "12345678", "123456789", "1234567890",
    "qwertyui", "qwertyuiop", "qwerty123", "iloveyou", "letmein1", "welcome1", "admin123",
    "abc12345", "abcd1234", "11111111", "00000000", "trustno1", "sunshine", "football",
    "baseball", "superman", "princess", "starwars", "whatever", "changeme", "librarian",
    "customer", "bookrental"})
MIN_DISTINCT = 4  # characters: "aaaaaaaa" and "abababab" are too easy to guess


def _any_case(word):
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


# The same rules as a JSON Schema pattern (ECMA 262 and Python alike), so the
# OpenAPI document says which passwords sign-up accepts: not a common one in
# any case, at least MIN_DISTINCT different characters (each counted at its
# last occurrence). Only "nothing but the username" cannot be said there.
NEW_PASSWORD_PATTERN = (
    "^(?!(?:" + "|".join(_any_case(word) for word in sorted(COMMON_PASSWORDS)) + ")$)"
    + "(?=(?:[\\s\\S]*?([\\s\\S])(?![\\s\\S]*?\\1)){%d})" % MIN_DISTINCT
)


class ConfigurationError(Exception):
    pass


def hash_password(password):
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${salt.hex()}${digest.hex()}"


def check_password(password, stored):
    try:
        _, n, salt, digest = stored.split("$")
        params = dict(_SCRYPT, n=int(n))
        candidate = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), **params)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(candidate.hex(), digest)


# A hash to compare against when the account does not exist, so that a
# wrong username takes as long as a wrong password.
_DUMMY_HASH = hash_password(secrets.token_hex(8))


def verify(account, password):
    """True when ``account`` (or None) has this password; constant-ish time."""
    if account is None:
        check_password(password, _DUMMY_HASH)
        return False
    return check_password(password, account.password_hash)


def _only_the_username(password, username):
    """"dave", "dave-dave" or "dave1234!" for dave: nothing but the name,
    repeated or dressed up with digits and punctuation."""
    rest = password.replace(username, "") if username else password
    return rest != password and not any(character.isalpha() for character in rest)


def check_new_password(username, password):
    problems = []
    if len(password) < MIN_PASSWORD:
        problems.append(f"use at least {MIN_PASSWORD} characters")
    lowered = password.lower()
    if _only_the_username(lowered, username.lower()) or lowered in COMMON_PASSWORDS or len(set(password)) < MIN_DISTINCT:
        problems.append("this password is too easy to guess")
    if problems:
        raise BadRequest("the password is too weak", password=problems)


def key_source(config):
    """The key ring of ``TOKEN_KEYS``: made on first use in development; in
    any other profile it must exist (ConfigurationError, logged, otherwise)."""
    profile = config.get("PROFILE", "development")
    path = keys.path_of(config)
    try:
        return keys.KeySource(path, create=profile == "development")
    except keys.KeyRingError as error:
        message = (f"refusing to start: PROFILE={profile} and {error}; give the gateway its signing key "
                   f"(TOKEN_KEYS={path}, a mounted secret; make one with: python -m gateway.keys --keys {path} rotate)")
        if profile == "development":
            message = f"refusing to start: {error} (TOKEN_KEYS={path})"
        log.critical("%s", message)
        raise ConfigurationError(message) from None


class Tokens:
    """Issues and verifies the access tokens of one gateway process.

    Verified tokens are remembered with what they grant: checking a token's
    signature and claims is a tenth of a request's cost in the gateway
    (docs/performance.md), and a client sends the same token on every request.
    On a hit, what can change is checked again: the times (as PyJWT checks
    them), that the signing key is still in the ring (a removed key's tokens
    are refused), and the deny list (a signed-out token is refused)."""

    MAX_VERIFIED = 10_000

    def __init__(self, source, denied=frozenset(), ttl=DEFAULT_TTL, clock=time.time):
        self.source = source
        self.denied = denied  # anything with ``in``: gateway.denylist.DenyList
        self.ttl = int(ttl)
        self.clock = clock
        self._verified = OrderedDict()  # token -> (exp, nbf, iat, kid, jti, user)

    # -- signing ------------------------------------------------------------

    def sign(self, claims):
        key = self.source.current().signing
        return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})

    def decode(self, token, audience, require):
        """The claims of a token signed by a key of the ring; jwt.PyJWTError otherwise."""
        header = jwt.get_unverified_header(token)
        if header.get("alg") != ALGORITHM:
            raise jwt.InvalidAlgorithmError("the token is not signed with RS256")
        public_key = self.source.public_key(header.get("kid"))
        if public_key is None:
            raise jwt.InvalidKeyError("the token's kid is not in the key set")
        return jwt.decode(token, public_key, algorithms=[ALGORITHM], audience=audience, issuer=ISSUER,
                          options={"require": list(require)})

    def issue(self, username, role, session_id):
        """A new access token for ``username``: (the token, its claims)."""
        now = int(self.clock())
        claims = {"sub": username, "role": role, "iat": now, "nbf": now, "exp": now + self.ttl,
                  "iss": ISSUER, "aud": AUDIENCE, "jti": secrets.token_urlsafe(16), "sid": session_id}
        return self.sign(claims), claims

    # -- verifying ----------------------------------------------------------

    def verify(self, token):
        """The user a valid, not signed-out token names, else None:
        {"username", "role", "jti", "exp", "session"}."""
        hit = self._verified.get(token)
        if hit is not None:
            exp, nbf, iat, kid, jti, user = hit
            now = int(self.clock())
            if exp > now and nbf <= now and iat <= now and self.source.current().public_key(kid) is not None:
                return None if jti in self.denied else user
            self._verified.pop(token, None)
        try:
            claims = self.decode(token, AUDIENCE, ["exp", "iat", "iss", "aud", "sub", "jti"])
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        if claims.get("role") not in ROLES or not isinstance(claims.get("sub"), str):
            return None
        if not isinstance(claims.get("jti"), str) or claims["jti"] in self.denied:
            return None
        user = {"username": claims["sub"], "role": claims["role"], "jti": claims["jti"], "exp": claims["exp"],
                "session": claims.get("sid") if isinstance(claims.get("sid"), str) else None}
        times = (claims["exp"], claims.get("nbf", claims["iat"]), claims["iat"])
        if all(isinstance(t, int) and not isinstance(t, bool) for t in times):
            if len(self._verified) >= self.MAX_VERIFIED:
                self._verified.popitem(last=False)
            self._verified[token] = (*times, jwt.get_unverified_header(token)["kid"], claims["jti"], user)
        return user

    def from_request(self, request):
        """The verified user of a request, or None (no token, or a bad one)."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.verify(token.strip())
