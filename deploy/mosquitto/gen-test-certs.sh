#!/bin/sh
# Test certificates for a Mosquitto with TLS: a throw-away CA, a server certificate for the broker and
# one client certificate per name given. NOT for production: use your PKI there (see docs/security.md).
#
#   deploy/mosquitto/gen-test-certs.sh OUT_DIR [SERVER_NAME] [CLIENT ...]
#   e.g. deploy/mosquitto/gen-test-certs.sh certs localhost citywatch-ingest bin-0001
#
# Writes OUT_DIR/ca.crt, ca.key, server.crt, server.key and CLIENT.crt, CLIENT.key for each client,
# valid CERT_DAYS days (default 30).
set -eu
out=${1:?usage: gen-test-certs.sh OUT_DIR [SERVER_NAME] [CLIENT ...]}
server=${2:-localhost}
[ $# -ge 2 ] && shift 2 || shift $#
mkdir -p "$out"
cd "$out"
days=${CERT_DAYS:-30}

openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$days" \
  -keyout ca.key -out ca.crt -subj "/CN=citywatch test CA" >/dev/null 2>&1

cat > server.ext <<EXT
subjectAltName = DNS:$server, DNS:localhost, IP:127.0.0.1
extendedKeyUsage = serverAuth
EXT
openssl req -newkey rsa:2048 -nodes -sha256 -keyout server.key -out server.csr -subj "/CN=$server" >/dev/null 2>&1
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" -sha256 \
  -extfile server.ext -out server.crt >/dev/null 2>&1

for client in "$@"; do
  printf 'extendedKeyUsage = clientAuth\n' > "$client.ext"
  openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$client.key" -out "$client.csr" \
    -subj "/CN=$client" >/dev/null 2>&1
  openssl x509 -req -in "$client.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" -sha256 \
    -extfile "$client.ext" -out "$client.crt" >/dev/null 2>&1
  rm -f "$client.csr" "$client.ext"
done
rm -f server.csr server.ext ca.srl
chmod 600 ./*.key
echo "test certificates in $(pwd): ca.crt server.crt server.key${*:+ and client certificates for: $*}"
