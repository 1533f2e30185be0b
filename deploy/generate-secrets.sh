#!/bin/sh
# Creates the compose secrets that do not exist yet, in deploy/secrets/,
# with random values. Existing files are kept. See deploy/secrets/README.md.
set -eu

dir="$(cd "$(dirname "$0")" && pwd)/secrets"
names="rabbitmq_password postgres_password product_db_password reservation_db_password
delivery_db_password mypage_db_password notification_db_password gateway_db_password token_secret
redis_password"

random_value() {
    # 48 letters and digits; the leading letter keeps YAML from reading a number.
    value=$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 47)
    letter=$(LC_ALL=C tr -dc 'A-Za-z' </dev/urandom | head -c 1)
    printf '%s%s' "$letter" "$value"
}

mkdir -p "$dir"
chmod 700 "$dir"
umask 022  # readable inside the containers, whose users differ from yours;
           # the directory itself (700) keeps other local users out
for name in $names; do
    file="$dir/$name"
    if [ -s "$file" ]; then
        echo "kept    $file"
    else
        random_value > "$file"
        echo "created $file"
    fi
done
