"""Who is calling: accounts, password hashes and bearer tokens.

Passwords are hashed with scrypt (standard library; salted, memory-hard).
Tokens are JWTs signed with HS256 (PyJWT); the algorithm is pinned, and the
expiry, issue time, issuer and audience are all required and checked. The
role is taken from the verified token, never from the request.
"""
import hashlib
import hmac
import logging
import re
import secrets
import time

import jwt

from common.errors import BadRequest

log = logging.getLogger(__name__)

ROLES = ("librarian", "customer", "courier")
ISSUER = "bookrental-gateway"
AUDIENCE = "bookrental-api"
ALGORITHM = "HS256"
DEFAULT_SECRET = "dev-only-secret-change-me-dev-only-secret"

# The demo accounts of the README, created in the development profile only.
DEMO_ACCOUNTS = [("librarian", "librarian", "librarian"), ("alice", "alice", "customer"),
                 ("bob", "bob", "customer"), ("courier", "courier", "courier")]

_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1, "dklen": 32}
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,31}$")
MIN_PASSWORD = 8
# The passwords that are tried first; a real deployment would check a breach list.
COMMON_PASSWORDS = frozenset({
    "password", "password1", "password123", "passw0rd", "12345678", "123456789", "1234567890",
    "qwertyui", "qwertyuiop", "qwerty123", "iloveyou", "letmein1", "welcome1", "admin123",
    "abc12345", "abcd1234", "11111111", "00000000", "trustno1", "sunshine", "football",
    "baseball", "superman", "princess", "starwars", "whatever", "changeme", "librarian",
    "customer", "bookrental"})


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
    if _only_the_username(lowered, username.lower()) or lowered in COMMON_PASSWORDS or len(set(password)) < 4:
        problems.append("this password is too easy to guess")
    if problems:
        raise BadRequest("the password is too weak", password=problems)


def secret(config):
    """The token secret; ConfigurationError when it is unsafe for the profile."""
    value = str(config.get("TOKEN_SECRET") or "")
    profile = config.get("PROFILE", "development")
    if profile != "development":
        if value == DEFAULT_SECRET:
            raise ConfigurationError(
                f"refusing to start: PROFILE={profile} with the development default TOKEN_SECRET; "
                "set TOKEN_SECRET to a random value of 32 or more characters")
        if len(value) < 32:
            raise ConfigurationError(
                f"refusing to start: PROFILE={profile} and TOKEN_SECRET is shorter than 32 characters; "
                "set TOKEN_SECRET to a random value of 32 or more characters")
    elif not value:
        raise ConfigurationError("refusing to start: TOKEN_SECRET is empty")
    return value


def check_config(config):
    """Called when the gateway starts: logs why it refuses to, and raises."""
    try:
        secret(config)
    except ConfigurationError as error:
        log.critical("%s", error)
        raise


def issue_token(config, username, role):
    now = int(time.time())
    ttl = int(config.get("TOKEN_TTL") or 3600)
    claims = {"sub": username, "role": role, "iat": now, "nbf": now, "exp": now + ttl,
              "iss": ISSUER, "aud": AUDIENCE, "jti": secrets.token_hex(8)}
    token = jwt.encode(claims, secret(config), algorithm=ALGORITHM)
    return {"access_token": token, "token_type": "bearer", "expires_in": ttl}


# Tokens already verified, with what they grant: checking a token's signature
# and claims is a tenth of a request's cost in the gateway (docs/performance.md),
# and a client sends the same token on every request. Only what can change
# with time (expiry, not-before) is checked again on a hit, as PyJWT checks it.
_VERIFIED = {}  # (secret, token) -> (exp, nbf, iat, username, role)
MAX_VERIFIED = 10_000


def user_from_token(config, token):
    key = (secret(config), token)
    hit = _VERIFIED.get(key)
    if hit is not None:
        exp, nbf, iat, username, role = hit
        now = int(time.time())
        if exp > now and nbf <= now and iat <= now:
            return {"username": username, "role": role}
        _VERIFIED.pop(key, None)
    try:
        claims = jwt.decode(
            token, key[0], algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]})
    except jwt.PyJWTError:
        return None
    if claims.get("role") not in ROLES or not isinstance(claims.get("sub"), str):
        return None
    times = (claims["exp"], claims.get("nbf", claims["iat"]), claims["iat"])
    if all(isinstance(t, int) and not isinstance(t, bool) for t in times):
        if len(_VERIFIED) >= MAX_VERIFIED:
            del _VERIFIED[next(iter(_VERIFIED))]
        _VERIFIED[key] = (*times, claims["sub"], claims["role"])
    return {"username": claims["sub"], "role": claims["role"]}


def user_from_request(config, request):
    """The verified user of a request, or None (no token, or a bad one)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return user_from_token(config, token.strip())
