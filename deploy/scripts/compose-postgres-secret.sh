#!/bin/sh
# The `postgres-secret` step of deploy/compose.yaml: makes the citywatch user's PostgreSQL password on the
# first start, in a file the postgres service reads at its first initialisation (POSTGRES_PASSWORD_FILE)
# and the api role reads at every start (CITYWATCH_RELATIONAL__POSTGRESQL__PASSWORD_FILE). Later starts
# keep it: PostgreSQL keeps the password it was initialised with.
set -eu
dir=${SECRETS_DIR:-/run/citywatch-secrets}
citywatch_uid=${CITYWATCH_UID:-10001}    # the citywatch user of deploy/Dockerfile
file="$dir/postgres-password"
mkdir -p "$dir"
if [ -s "$file" ]; then
  echo "postgres-secret: password in place"
  exit 0
fi
umask 077
python -c "import secrets; print(secrets.token_urlsafe(32))" > "$file"
# Readable by the citywatch user; the postgres image reads it as root when it initialises.
chown "$citywatch_uid" "$file" 2>/dev/null || true
chmod 0400 "$file"
echo "postgres-secret: made a new password for the citywatch database user"
