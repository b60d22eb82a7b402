#!/bin/sh
# The `mqtt-secrets` step of deploy/compose.yaml: on the first start (and when the certificates are within
# a week of expiring) it makes a CA, the broker's certificate, the client certificates of citywatch
# ingest and of the broker's health check, and an empty device password file. Later starts change nothing.
#
#   SECRETS_ROOT/broker   mounted in the mosquitto service at /mosquitto/secrets (owner MOSQUITTO_UID)
#   SECRETS_ROOT/ingest   mounted in the ingest service at /etc/citywatch/mqtt (owner CITYWATCH_UID)
#   SECRETS_ROOT/ca       the CA key, mounted nowhere else (sign device certificates with it)
#
# Certificates from this step are for trying the set-up; a city uses its PKI (docs/security.md).
set -eu
root=${SECRETS_ROOT:-/secrets}
here=$(dirname "$0")
gen_certs=$here/gen-test-certs.sh                                        # beside it in the container
[ -f "$gen_certs" ] || gen_certs=$here/../mosquitto/gen-test-certs.sh    # run from the repository
broker_name=${MQTT_SERVER_NAME:-mosquitto}
mosquitto_uid=${MOSQUITTO_UID:-1883}     # the mosquitto user of the eclipse-mosquitto image
citywatch_uid=${CITYWATCH_UID:-10001}    # the citywatch user of deploy/Dockerfile
mkdir -p "$root/broker" "$root/ingest" "$root/ca"

ingest_cert="$root/ingest/citywatch-ingest.crt"
if [ -f "$ingest_cert" ] && openssl x509 -checkend 604800 -noout -in "$ingest_cert" >/dev/null; then
  echo "mqtt-secrets: certificates in place, valid for at least a week"
else
  work=$(mktemp -d)
  CERT_DAYS=${CERT_DAYS:-365} sh "$gen_certs" "$work" "$broker_name" \
    citywatch-ingest compose-healthcheck >/dev/null
  cp "$work/ca.crt" "$work/server.crt" "$work/server.key" \
    "$work/compose-healthcheck.crt" "$work/compose-healthcheck.key" "$root/broker/"
  cp "$work/ca.crt" "$work/citywatch-ingest.crt" "$work/citywatch-ingest.key" "$root/ingest/"
  cp "$work/ca.key" "$work/ca.crt" "$root/ca/"
  rm -rf "$work"
  echo "mqtt-secrets: new CA and certificates for $broker_name, citywatch-ingest and compose-healthcheck"
fi
# Devices are added with mosquitto_passwd (docs/deploy.md); an empty file lets nobody in yet.
[ -f "$root/broker/passwd" ] || : > "$root/broker/passwd"

chown -R "$mosquitto_uid:$mosquitto_uid" "$root/broker"
chown -R "$citywatch_uid:$citywatch_uid" "$root/ingest"
chmod 700 "$root/ca" && chmod 600 "$root/ca/ca.key" "$root/broker/"*.key "$root/ingest/"*.key \
  "$root/broker/passwd"
