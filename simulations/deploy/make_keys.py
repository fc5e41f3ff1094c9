"""SuperNode authentication keys for Flower 1.42, and their registration with the SuperLink.

Flower 1.42 SuperNode authentication (``flower-superlink --enable-supernode-auth``): every SuperNode signs its Fleet
requests with an elliptic-curve key on a NIST curve (we use P-384), given to it as an **OpenSSH-format private key**
(``flower-supernode --auth-supernode-private-key keys/<name>``). The SuperLink only lets a node in whose
**public key was registered beforehand** through the Control API: ``flwr supernode register keys/<name>.pub
<connection>`` (the old ``--auth-list-public-keys`` CSV is gone in 1.42 and is refused by flower-superlink).
Registrations live in the SuperLink's ``--database`` and survive restarts; the node id is tied to the key, so a
restarted SuperNode gets its old node id back.

    python -m simulations.deploy.make_keys gen --out simulations/deploy/keys edge0 edge1 edge2
    python -m simulations.deploy.make_keys register --keys simulations/deploy/keys --connection deploy edge0 edge1 edge2

``gen`` writes ``<out>/<name>`` (private, mode 600) and ``<out>/<name>.pub`` (``ecdsa-sha2-nistp384 ...``) and never
overwrites an existing key. ``register`` runs ``flwr supernode register`` per key against a SuperLink connection
of ``$FLWR_HOME/config.toml`` and prints ``name node_id``. Same as ``ssh-keygen -t ecdsa -b 384 -N '' -f keys/edge0``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def generate(out: str | Path, name: str) -> tuple[Path, Path]:
    """One P-384 key pair in OpenSSH format; an existing pair is kept."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    priv, pub = out / name, out / f"{name}.pub"
    if priv.exists() and pub.exists():
        return priv, pub
    key = ec.generate_private_key(ec.SECP384R1())
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                  serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
                    + f" {name}\n".encode())
    return priv, pub


def register(pub: str | Path, connection: str, env: dict[str, str] | None = None, name: str | None = None) -> int:
    """``flwr supernode register <pub> <connection> --format json``; returns the node id the SuperLink assigned."""
    flwr = shutil.which("flwr", path=(env or os.environ).get("PATH")) or "flwr"
    cmd = [flwr, "supernode", "register", str(pub), connection, "--format", "json"]
    if name:
        cmd += ["--name", name]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    start = proc.stdout.find("{")
    data = json.loads(proc.stdout[start:]) if start >= 0 else {}
    if not data.get("success"):
        raise RuntimeError(f"{' '.join(cmd)}: unexpected output:\n{proc.stdout}\n{proc.stderr}")
    return int(data["node-id"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen", help="generate key pairs")
    g.add_argument("--out", default=str(Path(__file__).resolve().parent / "keys"))
    g.add_argument("names", nargs="+")
    r = sub.add_parser("register", help="register public keys with a running SuperLink")
    r.add_argument("--keys", default=str(Path(__file__).resolve().parent / "keys"))
    r.add_argument("--connection", default="deploy", help="SuperLink connection name in $FLWR_HOME/config.toml")
    r.add_argument("names", nargs="+")
    args = p.parse_args(argv)
    if args.cmd == "gen":
        for name in args.names:
            priv, pub = generate(args.out, name)
            print(f"{name}: {priv} {pub}")
    else:
        for name in args.names:
            print(name, register(Path(args.keys) / f"{name}.pub", args.connection, name=name), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
