"""A secure three-node federation on this machine, start to finish, in one command (``make deploy-demo``).

    python -m simulations.deploy.demo            # the default scenario (edge.toml: 3 nodes x 3 WordNet tasks, MiniLM)
    python -m simulations.deploy.demo --quick    # tiny backbone, synthetic text, 2 tasks x 1 round (~2 min)

What it does, with the scripts of ``simulations/deploy/`` (the same the deployment tests run):

1. a private CA and the SuperLink's TLS certificate (``make_certs.sh``), one key pair per edge node
   (``make_keys.py gen``);
2. a SuperLink with TLS, SuperNode authentication and an SQLite database (``start_superlink.sh``), on a free
   loopback port; the ``flwr`` CLI connection to it (``configure_cli.sh``);
3. the three public keys registered (``make_keys.py register``), three SuperNodes started with their private keys
   and their own state folders (``start_supernode.sh``), until the SuperLink has activated all three;
4. the scenario submitted through ``run_federation.sh`` (``flwr run`` over TLS), the ServerApp's log streamed here;
5. the summary table (the one ``make run`` prints) and the HTML report of the run;
6. every process it started stopped, by pid — also on Ctrl-C, on SIGTERM and on failure: each carries this demo's
   ``TREELORA_DEPLOY_TAG`` in its environment (:mod:`simulations.deploy.harness`), and exactly those are killed.

Everything lives under ``--dir`` (default ``runs/deploy-demo``, emptied first — only a folder an earlier demo made —
because a demo is a fresh federation: new certificates, keys, database and client state);
component logs are in ``<dir>/logs/``; results in ``<dir>/out/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import tomllib

from simulations.deploy.harness import DEPLOY, ROOT, TINY, Deployment, tagged_pids

NODES = ("edge0", "edge1", "edge2")
MARKER = ".deploy-demo"  # a folder the demo may empty: only one it made itself


def run_config(quick: bool, out: Path) -> dict[str, Any]:
    """The scenario: edge.toml (the default scenario for three edge nodes) or, with ``quick``, a tiny variant."""
    if quick:
        cfg = dict(TINY, **{"tasks-per-client": 2, "rounds-per-task": 1, "warm-start": False, "timeout-s": 180.0})
    else:
        cfg = tomllib.loads((DEPLOY / "edge.toml").read_text())
    cfg["out-dir"] = str(out)
    return cfg


def _stop_on_signals() -> None:
    """SIGTERM and SIGHUP end the demo like Ctrl-C does: through the ``finally`` that stops every process. SIGINT
    gets Python's own handler back even where it was inherited as ignored (a shell starts a background job
    ``cmd &`` with SIGINT ignored, and Python then keeps it so), so that ``kill -INT`` always stops the demo."""
    def handler(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def say(msg: str) -> None:
    print(f"[deploy-demo] {msg}", flush=True)


def demo(args: argparse.Namespace) -> int:
    from simulations.run import summary_table
    from treelora.report_html import write_report

    root = Path(args.dir).resolve()
    if root.exists() and any(root.iterdir()) and not (root / MARKER).exists():
        raise SystemExit(f"{root} is not empty and not a deploy-demo folder; give --dir a new or demo folder")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / MARKER).write_text("made by python -m simulations.deploy.demo; emptied by the next demo\n")
    dep = Deployment(root, tag=args.tag)
    out = root / "out"
    t0 = time.time()
    summary = ""
    try:
        dep.make_certs()
        say(f"1/6 TLS: private CA {root / 'certs' / 'ca.crt'} and the SuperLink certificate (127.0.0.1, localhost)")
        dep.make_keys(*NODES)
        say(f"    SuperNode keys (EC P-384): {', '.join(str(root / 'keys' / n) for n in NODES)}")
        link = dep.start_superlink()
        say(f"2/6 SuperLink pid {link.pid} on 127.0.0.1:{dep.port}: TLS, SuperNode authentication, database "
            f"{root / 'superlink.db'} (log {link.log})")
        dep.configure_cli()
        ids = dep.register(*NODES)
        say("3/6 registered public keys: " + ", ".join(f"{n} -> node {i}" for n, i in ids.items()))
        nodes = [dep.start_node(k, len(NODES)) for k in range(len(NODES))]
        dep.wait_nodes_active(list(ids.values()), timeout=120)
        say("    SuperNodes active: " + ", ".join(f"{n} pid {p.pid}" for n, p in zip(NODES, nodes)))
        cfg = run_config(args.quick, out)
        preset = dep.write_preset(cfg)
        say(f"4/6 flwr run over TLS: {cfg['method']}, {cfg['stream']} on {cfg['backbone']}, "
            f"{cfg['tasks-per-client']} tasks x {cfg['rounds-per-task']} round(s) per node (ServerApp log follows)")
        subprocess.run(["bash", str(DEPLOY / "run_federation.sh"), str(preset)], cwd=ROOT,
                       env=dict(dep.env, STREAM="1"), check=True, timeout=args.timeout)
        results = out / "results.json"
        dep.wait_for("results.json", results.exists, timeout=120, interval=1)
        res = json.loads(results.read_text())
        report = write_report([out], out / "report.html", title=f"deploy-demo: {res['method']} on 3 edge nodes")
        say(f"5/6 finished in {time.time() - t0:.0f} s: {res['rounds']} rounds, {len(res['leaves'])} leaves, "
            f"{len(res['errors'])} rejected replies; results in {out}")
        summary = (f"\n{summary_table([(res['method'], res, time.time() - t0)])}\n\n"
                   f"report (open in a browser): {report}")
        return 0
    except KeyboardInterrupt as exc:
        say(f"interrupted ({exc or 'Ctrl-C'}); stopping")
        return 130
    except Exception as exc:  # noqa: BLE001 - any failure: say what, show the logs, stop everything
        say(f"failed: {exc}\n{dep.diagnostics()}")
        return 1
    finally:
        dep.cleanup()
        left = tagged_pids(dep.tag)
        say(f"6/6 stopped every process this demo started{'' if not left else f' except {left}'} "
            f"(logs in {dep.logs})")
        if summary:
            print(summary, flush=True)  # last, where a person looks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny backbone, synthetic text, 2 tasks x 1 round")
    p.add_argument("--dir", default=str(ROOT / "runs" / "deploy-demo"), help="everything goes here (emptied first)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds the federated run may take")
    p.add_argument("--tag", default=None, help=argparse.SUPPRESS)  # tests: the TREELORA_DEPLOY_TAG to use
    args = p.parse_args(argv)
    _stop_on_signals()
    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
