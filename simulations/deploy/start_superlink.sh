#!/usr/bin/env bash
# Start the SuperLink of a TreeLoRA-Fed deployment: TLS, SuperNode authentication, SQLite persistence.
#
#   simulations/deploy/start_superlink.sh [extra flower-superlink flags]
#   SUPERLINK_HOST=0.0.0.0 simulations/deploy/start_superlink.sh        # serve SuperNodes on other hosts
#
# One HTTPS port ($SUPERLINK_PORT, Flower 1.42 default 8000) carries the Fleet API (SuperNodes), the Control API
# (flwr CLI: run, ls, log, stop, supernode register) and the Runtime API (the SuperExec this SuperLink starts, and
# the ServerApp process it launches per run). --enable-supernode-auth: only SuperNodes whose public key was
# registered (make_keys.py register) get in. --database: node registrations, runs and in-flight messages survive a
# restart of this process (the ServerApp's own state is its checkpoint.pb under the run's out-dir: resume=true).
# The process runs in the foreground (exec) so that a supervisor (systemd, a test) owns its pid.
set -euo pipefail
source "$(dirname "$0")/env.sh"
for f in ca.crt server.crt server.key; do
  [[ -s "$CERTS/$f" ]] || { echo "missing $CERTS/$f; run simulations/deploy/make_certs.sh first" >&2; exit 1; }
done
certs="$(cd "$CERTS" && pwd)"   # absolute: the SuperExec child gets the CA path as is
mkdir -p "$(dirname "$SUPERLINK_DB")"
cd "$REPO_ROOT"   # the ServerApp's cwd: a relative out-dir in the run config lands under the repository
exec flower-superlink \
  --ssl-ca-certfile "$certs/ca.crt" --ssl-certfile "$certs/server.crt" --ssl-keyfile "$certs/server.key" \
  --enable-supernode-auth \
  --database "$SUPERLINK_DB" \
  --host "$SUPERLINK_HOST" --port "$SUPERLINK_PORT" \
  --disable-runtime-dependency-installation \
  "$@"
