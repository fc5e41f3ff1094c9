#!/usr/bin/env bash
# Write the SuperLink connection "$CONNECTION" (address + CA certificate) into $FLWR_HOME/config.toml and make it the
# default: what `flwr run . $CONNECTION`, `flwr supernode register ... $CONNECTION`, `flwr ls`, `flwr log`, `flwr stop`
# use to reach a deployed SuperLink over TLS (flwr/cli/flower_config.py: [superlink.<name>] address,
# root-certificates — an absolute path). Run it on the operator's machine.
#
#   SUPERLINK_ADDRESS=superlink.lab.example:8000 simulations/deploy/configure_cli.sh
set -euo pipefail
source "$(dirname "$0")/env.sh"
mkdir -p "$FLWR_HOME"
ca="$(cd "$(dirname "$CERTS/ca.crt")" && pwd)/ca.crt"
[[ -s "$ca" ]] || { echo "no CA certificate at $ca; run make_certs.sh first" >&2; exit 1; }
"$PYTHON" - "$FLWR_HOME/config.toml" "$CONNECTION" "$SUPERLINK_ADDRESS" "$ca" <<'PY'
import sys, tomllib
from pathlib import Path
import tomli_w
path, name, address, ca = Path(sys.argv[1]), *sys.argv[2:]
cfg = tomllib.loads(path.read_text()) if path.exists() else {}
links = cfg.setdefault("superlink", {})
links[name] = {"address": address, "root-certificates": ca}
links["default"] = name
path.write_text(tomli_w.dumps(cfg))
print(f"{path}: [superlink.{name}] address={address} root-certificates={ca} (default)")
PY
