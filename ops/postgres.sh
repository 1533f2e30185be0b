#!/usr/bin/env bash
# Make sure a PostgreSQL answers at DATABASE_HOST (default 127.0.0.1:5432):
# make up CLUSTER=3 runs every service on it (a database per service), and
# the storage tests run the stores on it. Uses the one that answers;
# otherwise installs Debian's postgresql and starts its cluster, with trust
# authentication from this machine (Debian's cluster listens on localhost:5432), as
# ops/broker.sh does for RabbitMQ and ops/redis.sh for Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${DATABASE_HOST:-127.0.0.1:5432}
HOST=${TARGET%:*}
PORT=${TARGET##*:}
[ "$PORT" = "$TARGET" ] && PORT=5432

listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

if listening "$HOST" "$PORT"; then
  echo "postgres: using $HOST:$PORT"; exit 0
fi
if [ "$HOST" != 127.0.0.1 ] && [ "$HOST" != localhost ]; then
  echo "postgres: $HOST:$PORT does not answer" >&2; exit 1
fi
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "postgres: installing postgresql (apt-get)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
VERSION=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h 2>/dev/null | grep -q .; then
  as_root pg_createcluster "$VERSION" main >/dev/null
fi
CLUSTER=$(pg_lsclusters -h | awk 'NR==1 {print $1" "$2}')
CONF=/etc/postgresql/${CLUSTER/ //}
# A development server: local connections trusted, listening on 127.0.0.1 only.
if ! as_root grep -q "^# bookrental" "$CONF/pg_hba.conf"; then
  as_root sh -c "printf '# bookrental: local development, trusted\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all all trust\n' | cat - '$CONF/pg_hba.conf' > '$CONF/pg_hba.conf.new' && mv '$CONF/pg_hba.conf.new' '$CONF/pg_hba.conf'"
fi
echo "postgres: starting PostgreSQL $CLUSTER on $HOST:$PORT"
as_root pg_ctlcluster $CLUSTER start >/dev/null 2>&1 || as_root pg_ctlcluster $CLUSTER restart
for _ in $(seq 1 50); do listening "$HOST" "$PORT" && break; sleep 0.2; done
listening "$HOST" "$PORT" || { echo "postgres: did not start on $PORT" >&2; exit 1; }
# The local user (root, as make runs) may create the services' databases.
as_root su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='$(id -un)'\" | grep -q 1 || createuser -s $(id -un)" 2>/dev/null || true
echo "postgres: $HOST:$PORT"
