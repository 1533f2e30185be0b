"""Rate limits at the gateway, counted across every gateway replica.

Five families of limits, each a rate and a burst (``RATE_LIMIT`` in
config.yml, every value overridable by a ``RATE_LIMIT_*`` environment
variable):

- ``address``: every request from one client address (health probes excepted);
- ``account``: every request that carries a valid token, per account;
- ``password``: every sign-in and sign-up, per client address: each costs a
  scrypt hash (tens of milliseconds of CPU), so this bounds what one address
  can make the gateway spend on them, whatever usernames it tries;
- ``login``: failed sign-ins, per client address and username. Once full it
  refuses every attempt for that pair, the right password included, until
  the oldest failure leaves the window, so guessing a password is limited to
  the rate;
- ``signup``: registrations, per client address (no mass account creation).

Each family is a moving window (the ``limits`` package): at most ``burst``
requests in any ``burst / rate`` seconds, which lets a burst through and
holds the long-run rate. A request past it is answered 429 with
``Retry-After``: the whole seconds until the oldest request in the window
leaves it.

Where the counts live: in Redis when ``REDIS_URL`` is set, so every replica
counts against the same windows (keys under ``<REDIS_PREFIX>:limits``);
otherwise in the process (``memory://``: *n* replicas then let a client
through *n* times the limit; for a single process and unit tests). If Redis
cannot be reached a request is let through (logged): a limiter that is down
must not take the API down with it.
"""
import hashlib
import ipaddress
import logging
import math
import time

from limits import RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from nameko.extensions import SharedExtension

log = logging.getLogger(__name__)

# family: (config key of the rate, unit in seconds, config key of the burst, default rate, default burst)
FAMILIES = {
    "address": ("ADDRESS_PER_SECOND", 1, "ADDRESS_BURST", 200, 400),
    "account": ("ACCOUNT_PER_SECOND", 1, "ACCOUNT_BURST", 100, 200),
    "password": ("PASSWORD_PER_SECOND", 1, "PASSWORD_BURST", 5, 100),
    "login": ("LOGIN_PER_MINUTE", 60, "LOGIN_BURST", 5, 10),
    "signup": ("SIGNUP_PER_MINUTE", 60, "SIGNUP_BURST", 30, 60),
}
WARN_EVERY = 30.0  # seconds between two warnings that the store is unreachable


def window(rate, burst):
    """The moving window of ``burst`` requests that holds ``rate`` a second."""
    burst = max(1, int(burst))
    return RateLimitItemPerSecond(burst, max(1, math.ceil(burst / rate)))


class Limits:
    """The windows of every family, in one ``limits`` storage."""

    def __init__(self, families, storage_uri="memory://", clock=time.time, **storage_options):
        self.windows = {family: window(*limits) for family, limits in families.items() if limits}
        self.storage = storage_from_string(storage_uri, **storage_options)
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.clock = clock
        self._warned_at = float("-inf")

    def take(self, family, key):
        """Count a request: 0.0 when it may go on, else the seconds it should wait."""
        item = self.windows.get(family)
        if item is None:
            return 0.0
        try:
            if self.limiter.hit(item, family, key):
                return 0.0
            return self._wait(item, family, key)
        except (StorageError, OSError, ConnectionError) as error:
            return self._unreachable(error)

    def wait(self, family, key):
        """The seconds ``key`` would wait, counting nothing."""
        item = self.windows.get(family)
        if item is None:
            return 0.0
        try:
            return self._wait(item, family, key)
        except (StorageError, OSError, ConnectionError) as error:
            return self._unreachable(error)

    def charge(self, family, key):
        """Count a request (a failed sign-in) whether or not there is room."""
        item = self.windows.get(family)
        if item is None:
            return
        try:
            self.limiter.hit(item, family, key)
        except (StorageError, OSError, ConnectionError) as error:
            self._unreachable(error)

    def _wait(self, item, family, key):
        reset, remaining = self.limiter.get_window_stats(item, family, key)
        return 0.0 if remaining > 0 else max(0.001, reset - self.clock())

    def _unreachable(self, error):
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning("the rate limit store cannot be reached; requests are not limited: %s", error)
        return 0.0


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


def redis_prefix(config):
    """The prefix of every key this system keeps in Redis (limits, deny list):
    ``REDIS_PREFIX``, by default one made from the gateway's database URI, so
    the replicas of one system share their keys and two systems on one Redis
    (parallel test runs, two checkouts) never see each other's."""
    explicit = str(config.get("REDIS_PREFIX") or "").strip()
    if explicit:
        return explicit
    database = str((config.get("DB_URIS") or {}).get("gateway:Base", ""))
    return "bookrental:" + hashlib.sha256(database.encode()).hexdigest()[:12]


class RateLimiter(SharedExtension):
    """The gateway's limits, shared by every route of one process."""

    def setup(self):
        self.configure(self.container.config)

    def configure(self, config):
        self.trusted_hops = int((config.get("RATE_LIMIT") or {}).get("TRUSTED_PROXY_HOPS") or 0)
        redis_url = str(config.get("REDIS_URL") or "").strip()
        options = {}
        if redis_url:
            options = {"key_prefix": f"{redis_prefix(config)}:limits", "wrap_exceptions": True,
                       "socket_timeout": 1, "socket_connect_timeout": 1}
        self.limits = Limits(settings(config), redis_url or "memory://", **options)

    def address(self, request):
        return client_address(request, self.trusted_hops)

    def take(self, family, key):
        """0.0 when the request may go on, else the seconds it should wait."""
        return self.limits.take(family, key)

    def wait(self, family, key):
        return self.limits.wait(family, key)

    def charge(self, family, key):
        self.limits.charge(family, key)
