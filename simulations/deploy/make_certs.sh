#!/usr/bin/env bash
# Private CA + SuperLink server certificate for TLS (flower-superlink --ssl-ca-certfile/--ssl-certfile/--ssl-keyfile;
# SuperNodes and the flwr CLI verify the server with the CA: --root-certificates / root-certificates in config.toml).
#
#   simulations/deploy/make_certs.sh [OUT_DIR] [EXTRA_SAN ...]
#
#   OUT_DIR    default: $CERTS, else $DEPLOY_DIR/certs, else ~/.treelora-fed/deploy/certs (as env.sh; keep ca.key
#              offline in a real deployment)
#   EXTRA_SAN  more host names or IP addresses the SuperLink is reached by, e.g. superlink.lab.example 10.0.0.5
#              (127.0.0.1, ::1 and localhost are always included: the SuperLink's own SuperExec/ServerApp
#              processes reach its Runtime API on the loopback address, so the certificate must cover it).
#
# Writes ca.crt, ca.key, server.crt, server.key, server.csr (mode 600 keys). Idempotent: an existing CA is reused
# (so already-distributed ca.crt stays valid); the server certificate is always re-issued (to pick up new SANs).
# Needs openssl >= 1.1.1 (for -addext); without openssl it runs `python -m simulations.deploy.certs` (same files,
# made with the `cryptography` package that flwr already depends on).
set -euo pipefail
OUT="${1:-${CERTS:-${DEPLOY_DIR:-$HOME/.treelora-fed/deploy}/certs}}"
shift || true
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
if ! command -v openssl >/dev/null; then
  echo "openssl not found; falling back to python -m simulations.deploy.certs (cryptography)" >&2
  cd "$(dirname "$0")/../.." && exec "${PYTHON:-python}" -m simulations.deploy.certs "$OUT" "$@"
fi
mkdir -p "$OUT"
chmod 700 "$OUT"
DAYS="${CERT_DAYS:-365}"

san="DNS:localhost,IP:127.0.0.1,IP:::1"
for extra in "$@"; do
  if [[ "$extra" =~ ^[0-9.]+$ || "$extra" == *:* ]]; then san+=",IP:$extra"; else san+=",DNS:$extra"; fi
done

umask 077
if [[ ! -s "$OUT/ca.key" || ! -s "$OUT/ca.crt" ]]; then
  openssl ecparam -name prime256v1 -genkey -noout -out "$OUT/ca.key"
  openssl req -x509 -new -key "$OUT/ca.key" -sha256 -days "$DAYS" -subj "/CN=TreeLoRA-Fed private CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$OUT/ca.crt" 2>/dev/null
fi
openssl ecparam -name prime256v1 -genkey -noout -out "$OUT/server.key"
openssl req -new -key "$OUT/server.key" -subj "/CN=${1:-localhost}" -out "$OUT/server.csr" 2>/dev/null
ext="$(mktemp)"
trap 'rm -f "$ext"' EXIT
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$san" >"$ext"
openssl x509 -req -in "$OUT/server.csr" -CA "$OUT/ca.crt" -CAkey "$OUT/ca.key" -CAcreateserial -days "$DAYS" \
  -sha256 -extfile "$ext" -out "$OUT/server.crt" 2>/dev/null
chmod 644 "$OUT/ca.crt" "$OUT/server.crt"
openssl verify -CAfile "$OUT/ca.crt" "$OUT/server.crt" >/dev/null
echo "CA:     $OUT/ca.crt   (give this to every SuperNode and to the flwr CLI)"
echo "server: $OUT/server.crt + $OUT/server.key   SAN: $san"
