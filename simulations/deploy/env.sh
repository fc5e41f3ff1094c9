# Shared settings of the deployment scripts (sourced; every value can be overridden from the environment).
#
#   DEPLOY_DIR        where certs/, keys/, state/, flwr-home/ and the SuperLink database live (default:
#                     ~/.treelora-fed/deploy — outside the repository, so that no secret or state can end up in a
#                     FAB or a commit)
#   CERTS, KEYS       certificate and SuperNode-key folders (default: $DEPLOY_DIR/certs, $DEPLOY_DIR/keys)
#   SUPERLINK_HOST    address the SuperLink binds (default 127.0.0.1; 0.0.0.0 to serve other hosts)
#   SUPERLINK_PORT    its single HTTPS port: Fleet API (SuperNodes), Control API (flwr CLI) and Runtime API
#                     (its own SuperExec/ServerApp) — Flower 1.42's default is 8000
#   SUPERLINK_ADDRESS host:port SuperNodes and the flwr CLI dial (default 127.0.0.1:$SUPERLINK_PORT); the host
#                     must be one of the certificate's SANs
#   SUPERLINK_DB      SQLite database (node registrations, runs, messages) — persistence across restarts
#   CONNECTION        name of the SuperLink connection in $FLWR_HOME/config.toml (default "deploy")
#   FLWR_HOME         Flower's home (CLI config, installed FABs) — private per deployment (default $DEPLOY_DIR/flwr-home)
#   PYTHON            interpreter of the project's venv (default: .venv/bin/python of the repository if present)
_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$_here/../.." && pwd)"
DEPLOY_DIR="${DEPLOY_DIR:-$HOME/.treelora-fed/deploy}"
CERTS="${CERTS:-$DEPLOY_DIR/certs}"
KEYS="${KEYS:-$DEPLOY_DIR/keys}"
SUPERLINK_HOST="${SUPERLINK_HOST:-127.0.0.1}"
SUPERLINK_PORT="${SUPERLINK_PORT:-8000}"
SUPERLINK_ADDRESS="${SUPERLINK_ADDRESS:-127.0.0.1:$SUPERLINK_PORT}"
SUPERLINK_DB="${SUPERLINK_DB:-$DEPLOY_DIR/superlink.db}"
CONNECTION="${CONNECTION:-deploy}"
export FLWR_HOME="${FLWR_HOME:-$DEPLOY_DIR/flwr-home}"
# flwr would otherwise `uv sync` the app's dependencies into a fresh environment per run (a multi-GB CUDA torch).
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export HF_HUB_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then PYTHON="$REPO_ROOT/.venv/bin/python"; else PYTHON="$(command -v python3)"; fi
fi
# flower-superlink / flower-supernode / flwr of the same environment (their SuperExec children are found on PATH).
export PATH="$(dirname "$PYTHON"):$PATH"
