#!/bin/sh
# The `first-admin-key` step of deploy/compose.yaml: creates an API key with the admin scope when the key
# store (PostgreSQL in the compose set-up) has none yet, and writes its token to a file on this step's own
# volume that only the citywatch user can read (the token is shown once; only its hash is stored). Later
# starts leave the keys alone.
set -eu
config=${CITYWATCH_CONFIG:-/etc/citywatch/citywatch.yaml}
data_dir=${CITYWATCH_DATA_DIR:-/var/lib/citywatch}
token_file="$data_dir/first-admin-key.txt"
show="docker compose -f deploy/compose.yaml run --rm --no-deps --entrypoint cat first-admin-key $token_file"

if [ -n "$(citywatch keys --config "$config" --data-dir "$data_dir" list)" ]; then
  echo "first-admin-key: the api already has keys (citywatch keys list); the first one's token, if not"
  echo "deleted since: $show"
  exit 0
fi
umask 077
mkdir -p "$data_dir"
citywatch keys --config "$config" --data-dir "$data_dir" create --name first-admin --scopes admin \
  > "$token_file"
echo "first-admin-key: created an admin key; its token is in $token_file on the first-admin-key volume:"
echo "  $show"
echo "Create the keys people and systems use with it (POST /v1/admin/keys, or citywatch keys create), then"
echo "delete the file."
