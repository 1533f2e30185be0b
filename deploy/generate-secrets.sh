#!/bin/sh
# Creates the compose secrets that do not exist yet, in deploy/secrets/,
# with random values. Existing files are kept. See deploy/secrets/README.md.
set -eu

dir="$(cd "$(dirname "$0")" && pwd)/secrets"
names="rabbitmq_password postgres_password product_db_password reservation_db_password
delivery_db_password mypage_db_password notification_db_password gateway_db_password
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

# The gateway's token signing key (RSA, PEM): rotate it later with
# python -m gateway.keys --keys deploy/secrets/token_keys rotate.
file="$dir/token_keys"
if [ -s "$file" ]; then
    echo "kept    $file"
else
    (umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$file" 2>/dev/null)
    chmod 644 "$file"  # read by the container's user, which differs from yours
    echo "created $file"
fi
