#!/usr/bin/env bash
# Make sure a RabbitMQ broker with the management plugin is running.
# Uses the one at AMQP_URI when it answers; otherwise installs (Debian) and
# starts a local one. Nameko's test fixtures need the management API (15672).
set -euo pipefail
cd "$(dirname "$0")/.."
HOST=127.0.0.1
PORT=5672
MGMT=15672
mkdir -p var/run

listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

if [ -n "${AMQP_URI:-}" ]; then
  hostport=$(python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(p.hostname or "127.0.0.1", p.port or 5672)' "$AMQP_URI")
  read -r HOST PORT <<<"$hostport"
  if [ "$HOST" != 127.0.0.1 ] && [ "$HOST" != localhost ]; then
    listening "$HOST" "$PORT" && { echo "broker: using $HOST:$PORT"; exit 0; }
    echo "broker: $HOST:$PORT does not answer" >&2; exit 1
  fi
fi

if ! listening "$HOST" "$PORT"; then
  if ! command -v rabbitmq-server >/dev/null; then
    echo "broker: installing rabbitmq-server (apt-get)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  echo "broker: starting rabbitmq-server"
  as_root env RABBITMQ_ENABLED_PLUGINS_FILE="$PWD/rabbitmq/enabled_plugins" rabbitmq-server -detached >/dev/null 2>&1 || true
  touch var/run/broker.started
  for _ in $(seq 1 60); do listening "$HOST" "$PORT" && break; sleep 1; done
  listening "$HOST" "$PORT" || { echo "broker: did not start on $PORT" >&2; exit 1; }
fi

if ! listening "$HOST" "$MGMT"; then
  echo "broker: enabling the management plugin"
  as_root rabbitmq-plugins enable rabbitmq_management >/dev/null
  for _ in $(seq 1 60); do listening "$HOST" "$MGMT" && break; sleep 1; done
  listening "$HOST" "$MGMT" || { echo "broker: management API did not come up on $MGMT" >&2; exit 1; }
fi
echo "broker: amqp://$HOST:$PORT, management http://$HOST:$MGMT"
