"""The gateway's authority over access tokens, one per process: the key ring
(``gateway.keys``), the deny list (``gateway.denylist``) and the verifier
(``gateway.auth.Tokens``), shared by the HTTP entrypoint (who is calling)
and the service's workers (signing in, refreshing, signing out).

The gateway service builds it when it starts (its ``Tokens`` dependency):
outside the development profile it refuses to start without a signing key
(``auth.ConfigurationError``, logged as critical); in development it makes
the key on its first run. Any other service built on the same HTTP
entrypoint (a test's) builds it only when a request carries a token.
"""
import logging

import redis
from nameko.extensions import DependencyProvider, SharedExtension

from common.store import engine_for
from gateway import auth
from gateway.denylist import DenyList, MemoryDenied, RedisDenied, SqlDenied
from gateway.ratelimit import redis_prefix

log = logging.getLogger(__name__)


class Authority(SharedExtension):
    def setup(self):
        self.build(eager=False)

    def build(self, eager=True):
        """Make the key source, deny list and verifier (once); ``eager=False``
        leaves that to the first use."""
        if getattr(self, "_tokens", None) is not None:
            return
        self._tokens = None
        if not eager:
            return
        config = self.container.config
        source = auth.key_source(config)
        redis_url = str(config.get("REDIS_URL") or "").strip()
        self.redis = None
        database = (config.get("DB_URIS") or {}).get("gateway:Base")
        if redis_url:
            self.redis = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
            store = RedisDenied(self.redis, redis_prefix(config))
        elif database:
            store = SqlDenied(engine_for(database, write=True), engine_for(database, write=False))
        else:
            log.warning("no REDIS_URL and no gateway database: signed-out tokens are known to this process only")
            store = MemoryDenied()
        self.deny_list = DenyList(store)
        self._tokens = auth.Tokens(source, self.deny_list, ttl=int(config.get("TOKEN_TTL") or auth.DEFAULT_TTL))

    @property
    def tokens(self):
        if self._tokens is None:
            self.build()
        return self._tokens

    def user_of(self, request):
        """The verified user of a request, or None (no token, or a bad one)."""
        if not request.headers.get("Authorization"):
            return None
        return self.tokens.from_request(request)


class Tokens(DependencyProvider):
    """Gives a worker the process's ``Authority``, built when the service starts."""

    authority = Authority()

    def setup(self):
        self.authority.build()

    def get_dependency(self, worker_ctx):
        return self.authority
