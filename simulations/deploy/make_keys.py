"""SuperNode authentication keys for Flower 1.42, and their registration with the SuperLink.

Flower 1.42 SuperNode authentication (``flower-superlink --enable-supernode-auth``): every SuperNode signs its Fleet
requests with an elliptic-curve key on a NIST curve (we use P-384), given to it as an **OpenSSH-format private key**
(``flower-supernode --auth-supernode-private-key keys/<name>``). The SuperLink only lets a node in whose
**public key was registered beforehand** through the Control API: ``flwr supernode register keys/<name>.pub
<connection>`` (the old ``--auth-list-public-keys`` CSV is gone in 1.42 and is refused by flower-superlink).
Registrations live in the SuperLink's ``--database`` and survive restarts; the node id is tied to the key, so a
restarted SuperNode gets its old node id back.

    python -m simulations.deploy.make_keys gen edge0 edge1 edge2          # into $KEYS / $DEPLOY_DIR/keys
    python -m simulations.deploy.make_keys register edge0 edge1 edge2     # --connection deploy (default)

``gen`` writes ``<out>/<name>`` (private, mode 600) and ``<out>/<name>.pub`` (``ecdsa-sha2-nistp384 ...``) and never
overwrites an existing key (same as ``ssh-keygen -t ecdsa -b 384 -N '' -f keys/edge0``). ``register`` does what
``flwr supernode register keys/<name>.pub <connection>`` does, for every key over one Control API connection (the
SuperLink connection of ``$FLWR_HOME/config.toml``, written by configure_cli.sh), and prints ``name node_id``.
Only the public key is sent; the private key never leaves the edge node.
"""

from __future__ import annotations

import argparse
import os
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


def register(pubs: dict[str, Path], connection: str) -> dict[str, int]:
    """Register public keys with the SuperLink of ``connection``; returns name → node id.

    What ``flwr supernode register <pub> <connection>`` does (flwr/cli/supernode/register.py), for all keys over
    one Control API client (one ``flwr`` process per key costs ~2 s of imports each).
    """
    from flwr.cli.flower_config import read_superlink_connection
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.cli.utils import init_http_client_from_connection
    from flwr.proto.control_pb2 import RegisterNodeRequest  # pylint: disable=no-name-in-module

    client = init_http_client_from_connection(read_superlink_connection(connection))
    try:
        ids = {}
        for name, pub in pubs.items():
            res = client.RegisterNode(request=RegisterNodeRequest(public_key=try_load_public_key(Path(pub)),
                                                                  name=name))
            if not res.node_id:
                raise RuntimeError(f"the SuperLink did not register {pub}")
            ids[name] = int(res.node_id)
        return ids
    finally:
        client.close()


def _deploy_dir() -> str:
    return os.environ.get("DEPLOY_DIR") or os.path.expanduser("~/.treelora-fed/deploy")


def default_keys_dir() -> str:
    """$KEYS, else $DEPLOY_DIR/keys, else ~/.treelora-fed/deploy/keys (the same default as env.sh)."""
    return os.environ.get("KEYS") or os.path.join(_deploy_dir(), "keys")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen", help="generate key pairs")
    g.add_argument("--out", default=default_keys_dir())
    g.add_argument("names", nargs="+")
    r = sub.add_parser("register", help="register public keys with a running SuperLink")
    r.add_argument("--keys", default=default_keys_dir())
    r.add_argument("--connection", default="deploy", help="SuperLink connection name in $FLWR_HOME/config.toml")
    r.add_argument("names", nargs="+")
    args = p.parse_args(argv)
    if args.cmd == "gen":
        for name in args.names:
            priv, pub = generate(args.out, name)
            print(f"{name}: {priv} {pub}")
    else:
        # the deployment's private Flower home (env.sh's default), never ~/.flwr
        os.environ.setdefault("FLWR_HOME", os.path.join(_deploy_dir(), "flwr-home"))
        ids = register({name: Path(args.keys) / f"{name}.pub" for name in args.names}, args.connection)
        for name, node_id in ids.items():
            print(name, node_id, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
