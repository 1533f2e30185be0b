#!/bin/bash
# Runs once, when the postgres container starts on an empty data volume
# (mounted into /docker-entrypoint-initdb.d by docker-compose.yml).
#
# One database per service, each owned by a role of the same name that can
# reach no other database: "every service owns its own database; no service
# reads another's" (SPEC.md, section 2). The passwords are compose secrets,
# /run/secrets/<service>_db_password; the superuser's is POSTGRES_PASSWORD_FILE.
set -euo pipefail

services=(product reservation delivery mypage notification gateway)
secrets_dir="${BOOKRENTAL_SECRETS_DIR:-/run/secrets}"

for service in "${services[@]}"; do
    password_file="$secrets_dir/${service}_db_password"
    if [[ ! -r "$password_file" ]]; then
        echo "init-databases: $password_file is missing; run deploy/generate-secrets.sh" >&2
        exit 1
    fi
    password="$(<"$password_file")"
    password="${password%$'\n'}"
    if [[ -z "$password" ]]; then
        echo "init-databases: $password_file is empty" >&2
        exit 1
    fi
    # psql variables (:"name" an identifier, :'pass' a literal) quote safely.
    psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres \
        -v name="$service" -v pass="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'name', :'pass')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"name" TO :"name";
SQL
    echo "init-databases: database $service, owned by role $service"
done
