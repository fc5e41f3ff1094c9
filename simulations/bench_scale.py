"""Simulation scale on this machine: wall time per round and peak memory vs clients; server time vs leaves.

DESIGN.md §6 target: >= 100 clients with a tiny backbone; >= 8 with MiniLM.

    python -m simulations.bench_scale                                 # every part (~10 min on 2 loaded cores)
    python -m simulations.bench_scale --parts local --tiny-clients 8 32 100 128
    python -m simulations.bench_scale --parts server --leaves 10 100 1000 10000
    python -m simulations.bench_scale --parts flwr --flwr-clients 100

Parts (each updates its own section of ``runs/bench/bench_scale.json``):

* ``local``: in-process federations — the real ``ClientApp`` and server loop over ``server.local_grid.LocalGrid``
  (synchronous, one process: no Ray, no SuperLink) — with ``tiny-bert`` on ``synthetic-text`` (the ``scale``
  preset: 2 tasks per client, 1 round per task, 2 local steps, ``l1-grad-fd``) for ``--tiny-clients`` clients,
  and ``minilm`` on WordNet for ``--minilm-clients`` clients (default ``treelora`` with exact ``l1-grad``,
  2 local steps). Each configuration runs in a fresh subprocess so that its peak RSS is its own. Reported: wall
  time per round (train phase: every client's message handled in turn), the probe (``query``) and final
  evaluation phases, the server's own time per round, peak RSS, client state on disk.
* ``flwr``: one ``python -m simulations.run --preset scale --clients N`` (Flower's simulation engine with Ray and
  a local SuperLink), timed end to end, skipped (and said so) when another SuperLink already holds its ports.
* ``server``: server time per round as the global tree grows: synthetic, fully valid MiniLM-shaped reports
  (12 layers, bf16 adapters, 256-float sketches; ``simulations.bench_common.SynthFed``) are ingested into a real
  ``server.state.GlobalState`` until it holds N leaves, then ``--server-rounds`` rounds are timed with
  ``--server-clients`` active clients: ``assignment()`` per client (LCB descent per layer, candidates, shares),
  ``ingest()`` of each reply (validation, bandit updates; half of the clients finish a task, so leaves are
  inserted), ``aggregate()`` and the atomic ``checkpoint()``.
"""

from __future__ import annotations

import simulations.bench_common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

# isort: split
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tomllib

from simulations.bench_common import (
    BENCH_DIR,
    ROOT,
    Machine,
    dir_bytes,
    fmt_bytes,
    fmt_s,
    machine_line,
    md_table,
    peak_rss_mib,
    rss_mib,
    write_json,
)
from simulations.run import run_config_overrides
from simulations.scale_server import run_server

TINY = {"stream": "synthetic-text", "backbone": "tiny-bert", "tasks-per-client": 2, "rounds-per-task": 1,
        "local-steps": 2, "batch-size": 8, "train-per-class": 64, "test-per-class": 8, "regularizer": "l1-grad-fd"}
MINILM = {"stream": "wordnet", "backbone": "minilm", "tasks-per-client": 2, "rounds-per-task": 1, "local-steps": 2,
          "batch-size": 8, "train-per-class": 16, "test-per-class": 4}


# ----------------------------------------------------------------------------------------------- local (child)
def run_local_child(cfg: dict[str, Any]) -> dict[str, Any]:
    """One in-process federation (called in a fresh subprocess); returns timings and memory."""
    from client.client_app import app as client_app
    from server.local_grid import LocalGrid
    from server.loop import run
    from treelora.fed.settings import FedSettings

    work = Path(cfg["work"])
    rc = dict(cfg["run_config"], **{"out-dir": str(work / "server"), "threads": cfg["threads"]})
    phases: list[tuple[str, int, float, float]] = []

    class TimedGrid(LocalGrid):
        def push_messages(self, messages):  # type: ignore[override]
            messages = list(messages)
            t0 = time.perf_counter()
            out = super().push_messages(messages)
            kind = messages[0].metadata.message_type if messages else "-"
            phases.append((kind, len(messages), t0, time.perf_counter() - t0))
            return out

    grid = TimedGrid(client_app, cfg["clients"], run_config=rc, state_dir=str(work / "clients"))
    fed = FedSettings.from_run_config(rc)
    rss0 = rss_mib()
    t0 = time.perf_counter()
    res = run(grid, fed, progress=False)
    wall = time.perf_counter() - t0
    train = [p for p in phases if p[0] == "train"]
    query = [p for p in phases if p[0] == "query"]
    evals = [p for p in phases if p[0] == "evaluate"]
    server_s = [h["server_s"] for h in res["history"]]
    return {
        "backbone": rc["backbone"], "clients": cfg["clients"], "rounds": res["rounds"], "errors": len(res["errors"]),
        "leaves": len(res["leaves"]), "wall_s": wall,
        "train_phase_s": [p[3] for p in train], "train_msgs": [p[1] for p in train],
        "query_phase_s": [p[3] for p in query], "eval_phase_s": [p[3] for p in evals],
        "round_s_median": statistics.median([p[3] for p in train]) if train else None,
        "per_client_msg_s_median": statistics.median([p[3] / p[1] for p in train]) if train else None,
        "server_s_per_round": server_s, "peak_rss_mib": peak_rss_mib(), "rss_before_mib": rss0,
        "client_state_bytes": dir_bytes(work / "clients"), "server_dir_bytes": dir_bytes(work / "server"),
        "acc_mean": res["metrics"].get("acc", {}).get("mean"),
        "bytes_up_per_client_round": res["bytes_up_per_client_round"],
        "run_config": rc,
    }


def run_local(backbone: str, clients: int, args: argparse.Namespace, work: Path, log: Any,
              as_preset: bool = False) -> dict[str, Any]:
    rc = dict(TINY if backbone == "tiny-bert" else MINILM)
    if backbone == "minilm" and args.minilm_regularizer:
        rc["regularizer"] = args.minilm_regularizer
    if backbone == "tiny-bert" and as_preset:
        preset = tomllib.loads((ROOT / "simulations" / "scale.toml").read_text())
        rc["train-per-class"] = int(preset["train-per-class"])
    elif backbone == "tiny-bert":
        # a task's training examples are sharded over the clients that hold it (treelora.fed.scenarios.shard): with too
        # few examples per class some clients get an empty shard and reply with an error
        rc["train-per-class"] = max(int(rc["train-per-class"]), 2 * clients)
    cfg = {"run_config": rc, "clients": clients, "threads": args.threads,
           "work": str(work / f"local-{backbone}-{clients}{'-preset' if as_preset else ''}")}
    cmd = [sys.executable, "-m", "simulations.bench_scale", "--child", json.dumps(cfg)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.child_timeout_s,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false"))
    if proc.returncode != 0:
        log(proc.stderr[-3000:])
        return {"backbone": backbone, "clients": clients, "failed": proc.stderr[-1000:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = time.perf_counter() - t0
    out["as_preset"] = as_preset
    log(f"[local {backbone} x{clients}] {out['rounds']} rounds, {out['errors']} errors, round "
        f"{fmt_s(out['round_s_median'] or float('nan'))}, peak {out['peak_rss_mib']:.0f} MiB, "
        f"{out['process_wall_s']:.0f}s")
    return out


# ----------------------------------------------------------------------------------------------- flwr
def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_flwr(clients: int, args: argparse.Namespace, work: Path, log: Any) -> dict[str, Any]:
    busy = [p for p in (39091, 39093) if port_open(p)]
    if busy:
        msg = (f"skipped: ports {busy} are held by another SuperLink (another engineer's flwr run); running "
               f"beside it would mix the two runs")
        log(f"[flwr x{clients}] {msg}")
        return {"clients": clients, "skipped": msg}
    out = BENCH_DIR / "flwr_scale"
    home = work / "flwr-home"
    cmd = [sys.executable, "-m", "simulations.run", "--preset", "scale", "--clients", str(clients),
           "--methods", "treelora", "--out", str(out), "--flwr-home", str(home)]
    for item in args.flwr_set:
        cmd += ["--set", item]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.flwr_timeout_s)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-3000:]
    except subprocess.TimeoutExpired as exc:
        rc, tail = "timeout", str(exc)[-2000:]
        from simulations.run import _superlink_pids, stop_superlink

        stop_superlink(_superlink_pids(home.resolve()))
    wall = time.perf_counter() - t0
    row: dict[str, Any] = {"clients": clients, "returncode": rc, "wall_s": wall, "command": " ".join(cmd[1:]),
                           "extra_run_config": list(args.flwr_set)}
    res_path = out / "treelora" / "results.json"
    if rc == 0 and res_path.exists():
        res = json.loads(res_path.read_text())
        codes: dict[str, int] = {}
        for e in res["errors"]:
            codes[e["reason"][:120]] = codes.get(e["reason"][:120], 0) + 1
        row.update({"rounds": res["rounds"], "errors": len(res["errors"]), "leaves": len(res["leaves"]),
                    "error_reasons": codes, "history": res["history"],
                    "server_s_per_round": [h["server_s"] for h in res["history"]],
                    "acc_mean": res["metrics"].get("acc", {}).get("mean")})
    else:
        row["tail"] = tail
    log(f"[flwr x{clients}] rc={rc}, {wall:.0f}s")
    return row


# ----------------------------------------------------------------------------------------------- server
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--parts", nargs="+", default=["local", "server", "flwr"], choices=["local", "server", "flwr"])
    ap.add_argument("--tiny-clients", type=int, nargs="*", default=[8, 32, 100, 128])
    ap.add_argument("--minilm-clients", type=int, nargs="*", default=[8])
    ap.add_argument("--preset-check", type=int, nargs="*", default=[100],
                    help="tiny runs with simulations/scale.toml's own train-per-class, to count rejected replies")
    ap.add_argument("--minilm-regularizer", default="", help="'' = treelora's default (exact l1-grad)")
    ap.add_argument("--flwr-clients", type=int, nargs="*", default=[100])
    ap.add_argument("--flwr-timeout-s", type=int, default=600)
    ap.add_argument("--flwr-set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra run-config for the flwr run (default: the scale preset as is)")
    ap.add_argument("--leaves", type=int, nargs="*", default=[10, 100, 1000, 10000])
    ap.add_argument("--server-clients", type=int, default=100, help="active clients per timed server round")
    ap.add_argument("--server-rounds", type=int, default=2)
    ap.add_argument("--breakdown", action="store_true",
                    help="server part: also time each round's steps (validation, nearest, leaf files, ...)")
    ap.add_argument("--tree-split", default="bisect-linkage",
                    help="the server tree's split rule (run-config tree-split)")
    ap.add_argument("--tree-estimator", default="geomean",
                    help="the sketch L1 estimator the server tree measures with (run-config tree-estimator)")
    ap.add_argument("--share-groups", default="running", choices=["running", "route"],
                    help="how the server groups clients for layer sharing (run-config share-groups)")
    ap.add_argument("--grow-ingest", type=int, default=400,
                    help="leaves grown through GlobalState.ingest; the rest are bulk-loaded and built once")
    ap.add_argument("--child-timeout-s", type=int, default=900)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--name", default="bench_scale")
    ap.add_argument("--render-only", default=None, metavar="JSON", help="print the tables of an earlier run's JSON")
    args = ap.parse_args(argv)
    try:
        run_config_overrides(args.flwr_set)  # checked now, not after the other parts ran; passed on as typed
    except ValueError as exc:
        ap.error(f"--flwr-set: {exc}")
    if args.render_only:
        print(render(json.loads(Path(args.render_only).read_text())["parts"]))
        return 0
    if args.child:
        import torch

        cfg = json.loads(args.child)
        torch.set_num_threads(cfg["threads"])
        print(json.dumps(run_local_child(cfg)))
        return 0
    machine = Machine(args.threads)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    tmp = tempfile.TemporaryDirectory(prefix="bench_scale_") if args.work_dir is None else None
    work = Path(args.work_dir or tmp.name)
    out_path = Path(args.out or BENCH_DIR) / f"{args.name}.json"
    payload = json.loads(out_path.read_text()) if out_path.exists() else {"benchmark": "scale", "parts": {}}
    parts = payload.setdefault("parts", {})
    if "local" in args.parts:
        rows = [run_local("tiny-bert", n, args, work, log) for n in args.tiny_clients]
        rows += [run_local("tiny-bert", n, args, work, log, as_preset=True) for n in args.preset_check]
        rows += [run_local("minilm", n, args, work, log) for n in args.minilm_clients]
        parts["local"] = rows
    if "server" in args.parts:
        parts["server"] = run_server(args, work, log)
    if "flwr" in args.parts:
        new = [run_flwr(n, args, work, log) for n in args.flwr_clients]
        done = {(x["clients"], tuple(x["extra_run_config"])) for x in new}
        keep = [r for r in parts.get("flwr", []) if (r["clients"], tuple(r.get("extra_run_config", []))) not in done]
        parts["flwr"] = keep + new  # one row per (clients, extra run-config)
    m = machine.finish()
    for p in args.parts:
        payload.setdefault("machine_per_part", {})[p] = m
    payload["machine"] = m
    md = render(parts)
    print(f"Machine: {machine_line(m)}\nCommand: `{m['command']}`\n")
    print(md)
    payload["table_md"] = md
    path = write_json(args.name, {**payload, "args_last": vars(args)}, args.out)
    print(f"\nJSON: {path}")
    if tmp is not None:
        tmp.cleanup()
    return 0


def render(parts: dict[str, Any]) -> str:
    out = []
    if parts.get("local"):
        rows = []
        for r in parts["local"]:
            if "failed" in r:
                rows.append([r["backbone"], r["clients"], "-", "FAILED", "-", "-", "-", "-", "-", "-", "-", "-"])
                continue
            tpc = r["run_config"]["train-per-class"]
            label = f"{r['backbone']}" + (" (preset as is)" if r.get("as_preset") else "")
            rows.append([label, r["clients"], tpc, f"{r['rounds']} ({r['leaves']} leaves, {r['errors']} rejected)",
                         " / ".join(fmt_s(x) for x in r["train_phase_s"]),
                         fmt_s(r["train_phase_s"][-1] / max(r["train_msgs"][-1], 1)),
                         fmt_s(statistics.median(r["server_s_per_round"])),
                         fmt_s(sum(r["query_phase_s"])), fmt_s(sum(r["eval_phase_s"])), fmt_s(r["wall_s"]),
                         f"{r['peak_rss_mib']:.0f} MiB", fmt_bytes(r["client_state_bytes"])])
        out.append(
            md_table(
                [
                    "backbone",
                    "clients",
                    "train per class",
                    "rounds",
                    "wall per round: round 1 (incl. learner build) / round 2",
                    "per client message (last round)",
                    "server / round",
                    "probes (total)",
                    "final eval",
                    "whole run",
                    "peak RSS",
                    "client state on disk",
                ],
                rows,
            )
        )
    if parts.get("flwr"):
        rows = []
        for r in parts["flwr"]:
            if "skipped" in r:
                rows.append([r["clients"], "skipped", r["skipped"], "-", "-"])
            else:
                rows.append(
                    [
                        f"{r['clients']}"
                        + (f" ({' '.join(r['extra_run_config'])})" if r.get("extra_run_config") else " (preset as is)"),
                        r["returncode"],
                        fmt_s(r["wall_s"]),
                        f"{r.get('rounds', '-')} rounds, {r.get('leaves', '-')} leaves, "
                        f"{r.get('errors', '-')} rejected",
                        fmt_s(statistics.median(r["server_s_per_round"])) if r.get("server_s_per_round") else "-",
                    ]
                )
        out.append(
            md_table(
                ["flwr run clients (tiny-bert, scale preset)", "exit", "wall (end to end)", "result", "server / round"],
                rows,
            )
        )
    if parts.get("server"):
        rows = []
        for r in parts["server"]:
            start = r["leaves"]
            for k, rd in enumerate(r["rounds"]):
                rows.append(
                    [
                        f"{r['leaves']:,}",
                        r["clients"],
                        f"{k + 1} ({start:,} leaves)",
                        fmt_s(rd["assign_s"]),
                        fmt_s(rd["ingest_s"]),
                        fmt_s(rd["aggregate_s"]),
                        f"**{fmt_s(rd['server_s'])}**",
                        fmt_s(rd["checkpoint_s"]),
                        fmt_bytes(rd["checkpoint_bytes"]) + (f" + {fmt_bytes(rd['centre_store_bytes'])} centres"
                                                             if rd.get("centre_store_bytes") else ""),
                        fmt_s(r["bandit_refresh_s"]),
                        f"{r['rss_mib']:.0f} MiB",
                    ]
                )
                start = rd["leaves_after"]
        out.append(
            md_table(
                [
                    "leaves grown",
                    "active clients",
                    "timed round",
                    "assignments (all clients)",
                    "ingest (all replies)",
                    "aggregate",
                    "server / round",
                    "checkpoint",
                    "checkpoint size",
                    "one bandit refresh (after)",
                    "RSS",
                ],
                rows,
            )
        )
    return "\n\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
