#!/usr/bin/env bash
# Submit TreeLoRA-Fed to the deployed SuperLink (flwr run over TLS through the "$CONNECTION" connection).
#
#   simulations/deploy/run_federation.sh [PRESET.toml] [RUN_CONFIG_OVERRIDES] [extra flwr run flags]
#   simulations/deploy/run_federation.sh simulations/deploy/edge.toml 'resume=true'       # after a server crash
#                                             (first `flwr stop <crashed-run-id> deploy`: it drops its queued messages)
#   STREAM=0 simulations/deploy/run_federation.sh                                         # submit and return
#
# The app is built into a FAB from the repository (only *.py/*.toml/*.md/*.json/*.yaml files outside ignored
# folders: keys and certificates never travel) and shipped to the SuperLink, which starts the ServerApp; each
# SuperNode fetches the FAB with its first message. With STREAM=1 (default) the ServerApp's log is streamed until
# the run ends; otherwise `flwr ls $CONNECTION`, `flwr log <run-id> $CONNECTION`, `flwr stop <run-id> $CONNECTION`.
set -euo pipefail
source "$(dirname "$0")/env.sh"
PRESET="$(realpath "${1:-$(dirname "$0")/edge.toml}")"
OVERRIDES="${2:-}"
shift $(( $# < 2 ? $# : 2 ))
[[ -s "$FLWR_HOME/config.toml" ]] || "$(dirname "$0")/configure_cli.sh" >/dev/null
# flwr run takes either one TOML file or key=value pairs: merge the overrides into a copy of the preset.
mkdir -p "$FLWR_HOME"
merged="$(mktemp --suffix=.toml "$FLWR_HOME/run-config.XXXXXX")"
trap 'rm -f "$merged"' EXIT
# KEY=VALUE overrides through the project's one parser, every key checked against FedSettings (merge_config.py)
(cd "$REPO_ROOT" && "$PYTHON" -m simulations.deploy.merge_config "$PRESET" "$OVERRIDES" "$merged")
# flwr 1.42 walks every file under the app folder (the .venv too: ~7 s) to build the FAB: stage the app's files
# (same FAB, same hash) unless STAGE=0.
cd "$REPO_ROOT"
app="$REPO_ROOT"
if [[ "${STAGE:-1}" == 1 ]]; then app="$("$PYTHON" -m simulations.deploy.stage_app "$FLWR_HOME/staged-app")"; fi
args=(run "$app" "$CONNECTION" --run-config "$merged")
[[ "${STREAM:-1}" == 1 ]] && args+=(--stream)
flwr "${args[@]}" "$@"
