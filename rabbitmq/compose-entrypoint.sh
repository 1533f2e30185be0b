#!/bin/sh
# docker-compose entrypoint of the rabbitmq container (wraps the image's own).
#
# RabbitMQ cannot read a password from the environment or a file in its
# definitions, and a node that imports definitions at boot creates no default
# user. So this writes /etc/rabbitmq/definitions.json (the file rabbitmq.conf
# loads) from the committed topology, rabbitmq/definitions.json, plus the
# application user whose password is the compose secret. The password never
# enters the image, the repository or `docker inspect`; changing the secret
# and restarting the container changes the password.
set -eu

user="${BOOKRENTAL_AMQP_USER:-bookrental}"
vhost="${BOOKRENTAL_AMQP_VHOST:-bookrental}"
password_file="${BOOKRENTAL_AMQP_PASSWORD_FILE:-/run/secrets/rabbitmq_password}"
topology="${BOOKRENTAL_TOPOLOGY_FILE:-/etc/rabbitmq/bookrental-topology.json}"
target="${BOOKRENTAL_DEFINITIONS_FILE:-/etc/rabbitmq/definitions.json}"

fail() {
    echo "compose-entrypoint: $*" >&2
    exit 1
}

[ -r "$password_file" ] || fail "$password_file is missing; run deploy/generate-secrets.sh"
[ -r "$topology" ] || fail "$topology is missing"
password=$(cat "$password_file")
# Written into JSON below, and into the services' AMQP URI: keep it plain.
case "$password" in
    '' | *[!A-Za-z0-9._~-]*) fail "the broker password must be non-empty and use only A-Z a-z 0-9 . _ ~ -" ;;
esac
case "$user$vhost" in
    *[!A-Za-z0-9._-]*) fail "user and vhost names must use only A-Z a-z 0-9 . _ -" ;;
esac
[ "$(head -n 1 "$topology")" = "{" ] || fail "$topology must start with a line holding only '{'"

umask 077
tmp="$target.tmp"
{
    echo "{"
    echo "  \"users\": [{\"name\": \"$user\", \"password\": \"$password\", \"tags\": \"administrator\"}],"
    echo "  \"permissions\": [{\"user\": \"$user\", \"vhost\": \"$vhost\", \"configure\": \".*\", \"write\": \".*\", \"read\": \".*\"}],"
    tail -n +2 "$topology"
} > "$tmp"
chown rabbitmq:rabbitmq "$tmp" 2>/dev/null || true
mv "$tmp" "$target"

exec docker-entrypoint.sh "$@"
