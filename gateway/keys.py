"""The keys that sign access tokens: a key ring, published as a JWK Set.

The ring is one file (``TOKEN_KEYS``; by default ``var/keys/token-keys.pem``,
under the state directory, never committed): RSA private keys in PEM, one
after the other. The **last** key signs; every key in the file verifies. A
key's id (the ``kid`` of the tokens it signs) is its RFC 7638 thumbprint, so
it is the same wherever the key is loaded and cannot be chosen by anyone.

- Development: the first gateway to start creates the file with one key
  (under a file lock, so replicas starting together make one key, not two).
- Production (any ``PROFILE`` but development): the file must be there (a
  mounted secret); the gateway refuses to start without it.
- Rotation: ``python -m gateway.keys rotate`` appends a new key. It signs from
  then on; tokens signed by the older keys stay valid until they expire.
  ``python -m gateway.keys remove KID`` drops an old key once its tokens have
  expired (``TOKEN_TTL`` after the rotation): whatever it signed is refused.
  ``python -m gateway.keys list`` names each key, the signing one last.

Every gateway replica reads the file again when it changes (checked at most
once a second, and at once when a token names a kid the ring lacks), so a
rotation or a removal reaches every replica of one checkout within a second.

A little over 250 lines: the ring's file format, rotation, the JWK Set and
the command line that rotates it are one job, kept together.
"""
import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import sys
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ALGORITHM = "RS256"
KEY_BITS = 2048  # RFC 7518's minimum for RS256, and what JWKS consumers expect
MIN_KEY_BITS = 2048
DEFAULT_PATH = "var/keys/token-keys.pem"
RELOAD_EVERY = 1.0  # seconds between two looks at the file
PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.S)


class KeyRingError(Exception):
    """The key ring is missing or unusable."""


class Key:
    """One RSA key pair of the ring."""

    def __init__(self, private_key):
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise KeyRingError("a token key must be an RSA private key")
        if private_key.key_size < MIN_KEY_BITS:
            raise KeyRingError(f"a token key must have {MIN_KEY_BITS} bits or more, not {private_key.key_size}")
        self.private_key = private_key
        self.public_key = private_key.public_key()
        jwk = RSAAlgorithm.to_jwk(self.public_key, as_dict=True)
        self.kid = thumbprint(jwk)
        self.jwk = {"kty": "RSA", "use": "sig", "alg": ALGORITHM, "kid": self.kid, "n": jwk["n"], "e": jwk["e"]}

    def pem(self):
        return self.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())


def thumbprint(jwk):
    """RFC 7638: the SHA-256 of the key's required members, base64url."""
    canonical = json.dumps({"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def generate(bits=KEY_BITS):
    return Key(rsa.generate_private_key(public_exponent=65537, key_size=bits))


class KeyRing:
    """The keys of the file, in order; the last one signs."""

    def __init__(self, keys):
        if not keys:
            raise KeyRingError("the key ring holds no key")
        self.keys = list(keys)
        self.by_kid = {key.kid: key for key in self.keys}
        self.signing = self.keys[-1]

    def public_key(self, kid):
        key = self.by_kid.get(kid) if isinstance(kid, str) else None
        return key.public_key if key is not None else None

    def jwks(self):
        """The JWK Set (RFC 7517): public keys only, the signing one first."""
        return {"keys": [key.jwk for key in reversed(self.keys)]}


def parse(data):
    """The keys of a PEM file's bytes."""
    keys = []
    for match in PEM_BLOCK.finditer(data):
        try:
            private_key = serialization.load_pem_private_key(match.group(0), password=None)
        except (ValueError, TypeError) as error:
            raise KeyRingError(f"a PEM block is not an unencrypted private key: {error}") from None
        keys.append(Key(private_key))
    return KeyRing(keys)


def load(path):
    try:
        with open(path, "rb") as handle:
            return parse(handle.read())
    except FileNotFoundError:
        raise KeyRingError(f"no token key file at {path}") from None
    except OSError as error:
        raise KeyRingError(f"cannot read the token key file {path}: {error.strerror}") from None


def write(path, ring):
    """Replace the file at once (a reader sees the old ring or the new one).
    A new file is the owner's alone (0600); a file that exists keeps its
    mode (a compose secret is made readable by the container's user)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    temporary = f"{path}.{os.getpid()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, mode)
    with os.fdopen(descriptor, "wb") as handle:
        for key in ring.keys:
            handle.write(key.pem())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


@contextlib.contextmanager
def locked(path):
    """One writer of the key file at a time (replicas, the CLI)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure(path):
    """The ring at ``path``, made with one new key when there is no file (development)."""
    with locked(path):
        if not os.path.exists(path):
            write(path, KeyRing([generate()]))
        return load(path)


def rotate(path):
    """Append a new key, which signs from now on; the ring after it."""
    with locked(path):
        ring = load(path) if os.path.exists(path) else None
        new = generate()
        ring = KeyRing((ring.keys if ring else []) + [new])
        write(path, ring)
        return ring


def remove(path, kid):
    """Drop the key ``kid``; the signing key cannot be dropped (rotate first)."""
    with locked(path):
        ring = load(path)
        if kid not in ring.by_kid:
            raise KeyRingError(f"no key {kid} in {path}")
        if ring.signing.kid == kid:
            raise KeyRingError(f"{kid} is the signing key; rotate first, then remove it once its tokens expired")
        ring = KeyRing([key for key in ring.keys if key.kid != kid])
        write(path, ring)
        return ring


class KeySource:
    """The ring of one file, read again when the file changes."""

    def __init__(self, path, create=False, clock=time.monotonic):
        self.path = path
        self.clock = clock
        self.ring = ensure(path) if create else load(path)
        self.stamp = self._stamp()
        self.checked_at = clock()

    def _stamp(self):
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return info.st_mtime_ns, info.st_ino, info.st_size

    def current(self, force=False):
        """The ring; the file is looked at again after ``RELOAD_EVERY``
        seconds, or at once with ``force`` (but not twice in one instant)."""
        now = self.clock()
        if now - self.checked_at >= (0.05 if force else RELOAD_EVERY):
            self.checked_at = now
            stamp = self._stamp()
            if stamp is not None and stamp != self.stamp:
                try:
                    self.ring, self.stamp = load(self.path), stamp
                except KeyRingError:
                    pass  # half-written by hand, or emptied: keep the ring we have
        return self.ring

    def public_key(self, kid):
        """The public key of ``kid``, reading the file again for an unknown one."""
        key = self.current().public_key(kid)
        if key is None:
            key = self.current(force=True).public_key(kid)
        return key


def path_of(config):
    return str(config.get("TOKEN_KEYS") or DEFAULT_PATH)


def main(argv=None):
    from common.config import load_config

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description="The gateway's token signing keys.")
    parser.add_argument("--config", default=os.path.join(root, "config.yml"))
    parser.add_argument("--keys", help="the key file (default: TOKEN_KEYS of the config)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the keys' ids, the signing key last")
    commands.add_parser("rotate", help="add a new key that signs from now on")
    drop = commands.add_parser("remove", help="drop an old key: tokens it signed are refused")
    drop.add_argument("kid")
    commands.add_parser("jwks", help="print the JWK Set the gateway publishes")
    argv = list(sys.argv[1:] if argv is None else argv)
    if "remove" in argv:  # a kid is base64url and may start with "-": never an option here
        at = argv.index("remove") + 1
        if at < len(argv) and argv[at].startswith("-") and argv[at] not in ("-h", "--help", "--"):
            argv.insert(at, "--")
    args = parser.parse_args(argv)
    path = args.keys or path_of(load_config(path=args.config))
    try:
        if args.command == "rotate":
            ring = rotate(path)
            print(f"{ring.signing.kid}\tsigns from now on ({len(ring.keys)} keys in {path})")
        elif args.command == "remove":
            ring = remove(path, args.kid)
            print(f"{args.kid}\tremoved ({len(ring.keys)} keys left in {path})")
        elif args.command == "jwks":
            print(json.dumps(load(path).jwks(), indent=2))
        else:
            ring = load(path)
            for key in ring.keys:
                print(f"{key.kid}\t{'signing' if key is ring.signing else 'verifying'}")
    except KeyRingError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
