#!/usr/bin/env bash
# Start one edge node (SuperNode) of a TreeLoRA-Fed deployment.
#
#   simulations/deploy/start_supernode.sh PARTITION_ID NUM_PARTITIONS [STATE_DIR] [DEVICE] [extra flower-supernode flags]
#
#   PARTITION_ID    this client's index 0..NUM_PARTITIONS-1 (its task schedule and data shard; client id c<PARTITION_ID>)
#   STATE_DIR       client state root; the node keeps <STATE_DIR>/c<PARTITION_ID>/state.pt (live adapter, head, task
#                   bank, stream position, last reply) — default $DEPLOY_DIR/state. Keep it on persistent disk: a
#                   restarted node continues its stream from it.
#   DEVICE          cpu | cuda | cuda:1 ... (default: cuda when available, else cpu); on CUDA the learner trains
#                   under bf16 autocast.
#   env PRECISION   auto (bf16 autocast on CUDA, fp32 on CPU; default) | bf16 (also on CPU) | fp32
#   env NODE_KEY    the node's private key (default $KEYS/edge<PARTITION_ID>; its .pub must be registered)
#   env NODE_PORT   the node's local Runtime API port that its SuperExec/ClientApp processes talk to (loopback
#                   only; default 9094 + PARTITION_ID, Flower's default being 9094 — one per node on a host)
#   env NODE_RETRY_S after a hard crash the SuperLink keeps the node "online" until 2 missed heartbeats
#                   (2 x 30 s) and refuses a new activation ("Exit Code: 305 ... Failed to activate SuperNode",
#                   process status 1): with NODE_RETRY_S=120 the script restarts the SuperNode every 10 s for up
#                   to 120 s instead of giving up (default 0: exec flower-supernode once).
set -euo pipefail
source "$(dirname "$0")/env.sh"
[[ $# -ge 2 ]] || { sed -n 2,19p "$0" >&2; exit 2; }
PID="$1"; NUM="$2"; STATE="${3:-$DEPLOY_DIR/state}"; DEVICE="${4:-}"
shift $(( $# < 4 ? $# : 4 ))
NODE_KEY="${NODE_KEY:-$KEYS/edge$PID}"
NODE_PORT="${NODE_PORT:-$((9094 + PID))}"
[[ -s "$NODE_KEY" ]] || { echo "missing $NODE_KEY; run make_keys.py gen/register first" >&2; exit 1; }
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
node_config="partition-id=$PID num-partitions=$NUM state-dir=\"$STATE\""
[[ -n "$DEVICE" ]] && node_config+=" device=\"$DEVICE\""
[[ -n "${PRECISION:-}" ]] && node_config+=" precision=\"$PRECISION\""
cmd=(flower-supernode
  --superlink "$SUPERLINK_ADDRESS"
  --root-certificates "$(cd "$CERTS" && pwd)/ca.crt"
  --auth-supernode-private-key "$NODE_KEY"
  --port "$NODE_PORT"
  --node-config "$node_config")   # (a SuperNode installs no dependencies unless --allow-runtime-dependency-installation)
cmd+=("$@")
if [[ "${NODE_RETRY_S:-0}" == 0 ]]; then exec "${cmd[@]}"; fi
# Supervised mode: restart the SuperNode while it fails (flwr exits with status 1 on any error — the log says
# "Exit Code: 305 ... Failed to activate SuperNode" for a refused activation) until NODE_RETRY_S have passed.
# A graceful stop (SIGTERM/SIGINT, exit 0) ends the loop; signals to this script are forwarded.
deadline=$(( $(date +%s) + NODE_RETRY_S ))
child=""
trap 'if [[ -n "$child" ]]; then kill -TERM "$child" 2>/dev/null; wait "$child"; fi; exit 143' TERM INT
while :; do
  "${cmd[@]}" &
  child=$!
  set +e; wait "$child"; rc=$?; set -e
  child=""
  if [[ $rc -eq 0 || $(date +%s) -ge $deadline ]]; then exit $rc; fi
  echo "start_supernode.sh: flower-supernode exited with $rc; retrying in 10 s (until NODE_RETRY_S=$NODE_RETRY_S s)" >&2
  sleep 10
done
