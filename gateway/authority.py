"""The gateway's authority over access tokens, one per process: the key ring
(``gateway.keys``), the deny list (``gateway.denylist``) and the verifier
(``gateway.auth.Tokens``), set up once when the gateway starts and shared by
the HTTP entrypoint (who is calling) and the service's workers (signing in,
refreshing, signing out).

Setting up refuses to start the gateway (``auth.ConfigurationError``, logged
as critical) outside the development profile when there is no signing key.
"""
import redis
from nameko.extensions import DependencyProvider, SharedExtension

from common.store import engine_for
from gateway import auth
from gateway.denylist import DenyList, RedisDenied, SqlDenied
from gateway.ratelimit import redis_prefix


class Authority(SharedExtension):
    def setup(self):
        config = self.container.config
        source = auth.key_source(config)
        redis_url = str(config.get("REDIS_URL") or "").strip()
        self.redis = None
        if redis_url:
            self.redis = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
            store = RedisDenied(self.redis, redis_prefix(config))
        else:
            uri = config["DB_URIS"]["gateway:Base"]
            store = SqlDenied(engine_for(uri, write=True), engine_for(uri, write=False))
        self.deny_list = DenyList(store)
        self.tokens = auth.Tokens(source, self.deny_list, ttl=int(config.get("TOKEN_TTL") or auth.DEFAULT_TTL))


class Tokens(DependencyProvider):
    """Gives a worker the process's ``Authority``."""

    authority = Authority()

    def get_dependency(self, worker_ctx):
        return self.authority
