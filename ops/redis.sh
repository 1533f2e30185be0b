#!/usr/bin/env bash
# Make sure a Redis answers at REDIS_URL (default redis://127.0.0.1:6379/0):
# the gateway replicas count rate limits and keep the deny list of signed-out
# tokens there, together (gateway/ratelimit.py, gateway/denylist.py). Uses the
# one that answers; otherwise installs (Debian) and starts a local one,
# listening on 127.0.0.1 only, as ops/broker.sh does for RabbitMQ.
set -euo pipefail
cd "$(dirname "$0")/.."
URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
mkdir -p var/run

listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

hostport=$(python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(p.hostname or "127.0.0.1", p.port or 6379)' "$URL")
read -r HOST PORT <<<"$hostport"
if listening "$HOST" "$PORT"; then
  echo "redis: using $HOST:$PORT"; exit 0
fi
if [ "$HOST" != 127.0.0.1 ] && [ "$HOST" != localhost ]; then
  echo "redis: $HOST:$PORT does not answer" >&2; exit 1
fi
if ! command -v redis-server >/dev/null; then
  echo "redis: installing redis-server (apt-get)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
echo "redis: starting redis-server on $HOST:$PORT"
redis-server --bind 127.0.0.1 --port "$PORT" --daemonize yes --save '' --appendonly no \
  --dir "$PWD/var/run" --pidfile "$PWD/var/run/redis.pid" --logfile "$PWD/var/run/redis.log" >/dev/null
touch var/run/redis.started
for _ in $(seq 1 30); do listening "$HOST" "$PORT" && break; sleep 0.2; done
listening "$HOST" "$PORT" || { echo "redis: did not start on $PORT" >&2; exit 1; }
echo "redis: $URL"
