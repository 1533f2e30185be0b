"""Rate limits at the gateway: token buckets, kept in the gateway process.

Five families of buckets, each a rate and a burst (``RATE_LIMIT`` in
config.yml, every value overridable by a ``RATE_LIMIT_*`` environment
variable):

- ``address``: every request from one client address (health probes excepted);
- ``account``: every request that carries a valid token, per account;
- ``password``: every sign-in and sign-up, per client address: each costs a
  scrypt hash (tens of milliseconds of CPU), so this bounds what one address
  can make the gateway spend on them, whatever usernames it tries;
- ``login``: failed sign-ins, per client address and username. An empty bucket
  refuses every attempt for that pair, the right password included, until it
  refills, so guessing a password is limited to the refill rate;
- ``signup``: registrations, per client address (no mass account creation).

A request that finds its bucket empty is answered 429 with ``Retry-After``
(the whole seconds until the bucket holds a token again).

The buckets live in the memory of one gateway process: with *n* replicas a
client gets up to *n* times these limits (limits are per replica). At most
``MAX_KEYS`` buckets are kept per family; the least recently used go first,
and a bucket that is forgotten is as good as a full one, which is what an idle
bucket has refilled to anyway.
"""
import ipaddress
import math
import time
from collections import OrderedDict

from nameko.extensions import SharedExtension

MAX_KEYS = 100_000

# family: (config key of the rate, unit in seconds, config key of the burst, default rate, default burst)
FAMILIES = {
    "address": ("ADDRESS_PER_SECOND", 1, "ADDRESS_BURST", 200, 400),
    "account": ("ACCOUNT_PER_SECOND", 1, "ACCOUNT_BURST", 100, 200),
    "password": ("PASSWORD_PER_SECOND", 1, "PASSWORD_BURST", 5, 100),
    "login": ("LOGIN_PER_MINUTE", 60, "LOGIN_BURST", 5, 10),
    "signup": ("SIGNUP_PER_MINUTE", 60, "SIGNUP_BURST", 30, 60),
}


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` tokens a second."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate, burst, now):
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def _refill(self, now):
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait(self, now):
        """Seconds until a token is there (0.0 when one is there now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self, now):
        """Take a token: 0.0 when taken, else the seconds until one is there."""
        wait = self.wait(now)
        if wait == 0.0:
            self.tokens -= 1
        return wait

    def charge(self, now):
        """Take a token even if that leaves the bucket in debt (not below -burst)."""
        self._refill(now)
        self.tokens = max(-self.burst, self.tokens - 1)


class Buckets:
    """Token buckets by key (an address, an account...), at most ``max_keys``."""

    def __init__(self, rate, burst, max_keys=MAX_KEYS, clock=time.monotonic):
        self.rate = float(rate)
        self.burst = max(1.0, float(burst))
        self.max_keys = max_keys
        self.clock = clock
        self._buckets = OrderedDict()

    def __len__(self):
        return len(self._buckets)

    def _bucket(self, key, now):
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def take(self, key):
        """Spend a token of ``key``'s bucket: 0.0, or the seconds to wait (nothing spent)."""
        now = self.clock()
        return self._bucket(key, now).take(now)

    def wait(self, key):
        """The seconds ``key`` would wait for a token, spending nothing."""
        if key not in self._buckets:
            return 0.0
        now = self.clock()
        return self._bucket(key, now).wait(now)

    def charge(self, key):
        """Spend a token of ``key``'s bucket whether or not there is one."""
        now = self.clock()
        self._bucket(key, now).charge(now)


def retry_after(seconds):
    """The ``Retry-After`` value for a wait: whole seconds, at least 1."""
    return max(1, math.ceil(seconds - 1e-9))


def settings(config):
    """{family: (tokens per second, burst)} from the config, None for a family
    that is switched off (``RATE_LIMIT_ENABLED`` false, or a rate of 0)."""
    section = config.get("RATE_LIMIT") or {}
    enabled = _flag(section.get("ENABLED", True))
    out = {}
    for family, (rate_key, unit, burst_key, default_rate, default_burst) in FAMILIES.items():
        rate = float(section.get(rate_key, default_rate)) / unit
        burst = float(section.get(burst_key, default_burst))
        out[family] = (rate, burst) if enabled and rate > 0 and burst > 0 else None
    return out


def _flag(value):
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)


def client_address(request, trusted_hops=0):
    """Who to count a request against: the peer address, or, behind
    ``trusted_hops`` proxies of our own, the address the outermost of them saw
    (``X-Forwarded-For``, read from the right). IPv6 clients are counted by
    their /64, which is what one of them usually holds."""
    address = request.remote_addr or "unknown"
    if trusted_hops > 0:
        forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
        if len(forwarded) >= trusted_hops:
            address = forwarded[-trusted_hops]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class RateLimiter(SharedExtension):
    """The gateway's buckets, shared by every route of one process."""

    def setup(self):
        self.configure(self.container.config)

    def configure(self, config):
        self.trusted_hops = int((config.get("RATE_LIMIT") or {}).get("TRUSTED_PROXY_HOPS") or 0)
        self.families = {family: Buckets(*limits) if limits else None
                         for family, limits in settings(config).items()}

    def address(self, request):
        return client_address(request, self.trusted_hops)

    def take(self, family, key):
        """0.0 when the request may go on, else the seconds it should wait."""
        buckets = self.families.get(family)
        return buckets.take(key) if buckets is not None else 0.0

    def wait(self, family, key):
        buckets = self.families.get(family)
        return buckets.wait(key) if buckets is not None else 0.0

    def charge(self, family, key):
        buckets = self.families.get(family)
        if buckets is not None:
            buckets.charge(key)
