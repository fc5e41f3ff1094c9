"""Federated accuracy at (about) equal bytes: TreeLoRA-Fed vs FedAvg-LoRA vs local-only, several seeds.

Runs a preset in-process (the real ClientApp and server loop over ``server.local_grid.LocalGrid``: same code as
``flwr run``, without Ray's start-up cost) and reports ACC/BWT as mean ± std over seeds (each seed's figure is
the mean over clients), with bytes up/down per client-round.

    python -m simulations.bench_fed_accuracy --preset similar-clients --clients 4 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import tomllib

from simulations.run import run_config_overrides

ROOT = Path(__file__).resolve().parent.parent


def run_one(preset: dict, method: str, seed: int, clients: int, out: Path, resume: bool = False) -> dict:
    """One method at one seed; with ``resume``, a finished run's saved results (same preset) are read back."""
    saved = out / method / f"seed{seed}" / "bench_run.json"
    if resume and saved.exists():
        res = json.loads(saved.read_text())
        if res.get("bench_preset") == preset and res.get("bench_clients") == clients:
            return res
    import shutil

    shutil.rmtree(saved.parent, ignore_errors=True)  # a fresh run: no client state or checkpoint of an earlier one
    from client.client_app import app as client_app
    from server.local_grid import LocalGrid
    from server.loop import run
    from treelora.fed.settings import FedSettings

    rc = dict(preset, method=method, seed=seed)
    rc["out-dir"] = str(out / method / f"seed{seed}")
    grid = LocalGrid(client_app, clients, run_config=rc, state_dir=str(out / method / f"seed{seed}" / "clients"))
    t0 = time.perf_counter()
    res = run(grid, FedSettings.from_run_config(rc), progress=False)
    res["wall_s"] = time.perf_counter() - t0
    res["bench_preset"], res["bench_clients"] = preset, clients
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(res, default=str))
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="similar-clients")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["treelora", "fedavg-lora", "local-only"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run-config key of the preset (a TOML value or a bare string)")
    p.add_argument("--method-set", action="append", default=[], metavar="METHOD:KEY=VALUE",
                   help="override a run-config key for one method only (after --set)")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench" / "fed_accuracy"))
    p.add_argument("--reference", default="treelora", help="method every other is compared with, paired by seed")
    p.add_argument("--results", default="", help="also write simulations/results/<NAME>.json (committed summaries)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave)")
    p.add_argument("--resume", action="store_true",
                   help="reuse each (method, seed) run already finished under --out with the same preset")
    args = p.parse_args(argv)
    from simulations.bench_common import Machine

    machine = Machine(threads=args.threads or None)
    path = Path(args.preset) if args.preset.endswith(".toml") else ROOT / "simulations" / f"{args.preset}.toml"
    preset = tomllib.loads(path.read_text())
    try:
        preset.update(run_config_overrides(args.set))  # the same --set as simulations.run
    except ValueError as exc:
        p.error(f"--set: {exc}")
    per_method: dict[str, dict] = {m: dict(preset) for m in args.methods}
    for item in args.method_set:
        method, sep, kv = item.partition(":")
        if not sep or method not in per_method:
            p.error(f"--method-set {item!r}: expected METHOD:KEY=VALUE with METHOD one of --methods")
        try:
            per_method[method].update(run_config_overrides([kv]))
        except ValueError as exc:
            p.error(f"--method-set: {exc}")
    out = Path(args.out)
    rows: dict[str, list[dict]] = {m: [] for m in args.methods}
    for seed in args.seeds:
        for method in args.methods:  # interleaved, so machine load hits every method alike
            res = run_one(per_method[method], method, seed, args.clients, out, resume=args.resume)
            rows[method].append(res)
            m = res["metrics"]
            print(f"{method:12s} seed {seed}: ACC {100 * m['acc']['mean']:.2f}  BWT {100 * m['bwt']['mean']:.2f}  "
                  f"up {res['bytes_up_per_client_round'] / 1024:.1f} KiB  {res['wall_s']:.0f} s", flush=True)
    return report(rows, args, argv, preset, machine.finish(), per_method)


TREE_FIGURES = ("clade_purity", "sibling_rate", "nn_purity", "nn_purity_tree_weighted", "top_levels_ari_family",
                "warm_start", "candidates", "sharing_precision")


def _rate(x: object) -> float | None:
    """A figure's value: a rate dict's ``rate``, or the number itself."""
    if isinstance(x, dict):
        return x.get("rate", x.get("value"))
    return x if isinstance(x, (int, float)) else None


def _fmt(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    return f"{100 * float(np.mean(vals)):.0f}% ({' '.join(f'{100 * v:.0f}' for v in vals)})"


def tree_figures(rows: dict[str, list[dict]]) -> dict[str, dict[str, list[float | None]]]:
    """Per method, the tree-quality figures of each seed's run (results' ``tree_quality``) where it has them."""
    out: dict[str, dict[str, list[float | None]]] = {}
    for method, rs in rows.items():
        figs: dict[str, list[float | None]] = {k: [] for k in TREE_FIGURES}
        for r in rs:
            q = r.get("tree_quality") or {}
            tree = q.get("tree") or {}
            figs["clade_purity"].append(_rate(tree.get("clade_purity")))
            figs["sibling_rate"].append(_rate(tree.get("sibling_rate")))
            nn = tree.get("nn_purity") or {}
            figs["nn_purity"].append(_rate(nn.get("overall", nn)) if nn else None)
            figs["nn_purity_tree_weighted"].append(_rate(nn.get("tree_weighted")) if nn else None)
            figs["top_levels_ari_family"].append(tree.get("top_levels_ari_family"))
            figs["warm_start"].append(_rate(q.get("warm_start")))
            figs["candidates"].append(_rate((q.get("candidates") or {}).get("any")))
            prec = [s["precision"] for s in (q.get("sharing") or {}).values() if s.get("precision") is not None]
            figs["sharing_precision"].append(float(np.mean(prec)) if prec else None)
        if any(v is not None for vs in figs.values() for v in vs):
            out[method] = figs
    return out


def layer_precision(rs: list[dict]) -> str:
    """Each layer's sharing-group precision and recall, averaged over the seeds' runs that formed groups there."""
    per: dict[str, list[tuple[float, float | None]]] = {}
    for r in rs:
        for layer, s in ((r.get("tree_quality") or {}).get("sharing") or {}).items():
            if s.get("precision") is not None:
                per.setdefault(layer, []).append((s["precision"], s.get("recall")))
    parts = []
    for layer in sorted(per, key=int):
        ps = [p for p, _ in per[layer]]
        rc = [r for _, r in per[layer] if r is not None]
        parts.append(f"{layer}: {100 * np.mean(ps):.0f}% / {100 * np.mean(rc):.0f}%" if rc else
                     f"{layer}: {100 * np.mean(ps):.0f}% / -")
    return ", ".join(parts) or "no groups"


def report(rows: dict[str, list[dict]], args: argparse.Namespace, argv: list[str] | None, preset: dict,
           machine: dict, per_method: dict[str, dict] | None = None) -> int:
    """Tables (mean ± sd, paired differences to the reference with 95% intervals), the oracle-gain share, JSON."""
    from treelora.paired import markdown_paired, oracle_gain_share, paired_table

    table = [
        "| method | ACC % | BWT % | forgetting % | TIL ACC % | KiB up / client-round | KiB down / client-round | "
        "wall s / run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for method, rs in rows.items():

        def ms(key: str, rs: list[dict] = rs) -> tuple[float, float]:
            vals = [100 * r["metrics"][key]["mean"] for r in rs]
            return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0

        acc, bwt, fgt = ms("acc"), ms("bwt"), ms("forgetting")
        tils = [100 * r["view_metrics"]["til_acc"]["mean"] for r in rs if "til_acc" in r.get("view_metrics", {})]
        til = f"{np.mean(tils):.2f}" if len(tils) == len(rs) else "-"
        up = float(np.mean([r["bytes_up_per_client_round"] for r in rs])) / 1024
        down = float(np.mean([r["bytes_down_per_client_round"] for r in rs])) / 1024
        wall = float(np.mean([r["wall_s"] for r in rs]))
        summary[method] = {"acc": acc, "bwt": bwt, "forgetting": fgt, "kib_up": up, "kib_down": down, "wall_s": wall,
                           "per_seed_acc": [r["metrics"]["acc"]["mean"] for r in rs],
                           "per_seed_til_acc": [r.get("view_metrics", {}).get("til_acc", {}).get("mean")
                                                for r in rs]}
        table.append(
            f"| {method} | {acc[0]:.2f} ± {acc[1]:.2f} | {bwt[0]:.2f} ± {bwt[1]:.2f} | "
            f"{fgt[0]:.2f} ± {fgt[1]:.2f} | {til} | {up:.1f} | {down:.1f} | {wall:.0f} |"
        )
    tree_rows = tree_figures(rows)
    if tree_rows:
        table += ["", "| method | clade purity | two-leaf siblings | NN purity | NN purity (tree's weights) | "
                  "top-level ARI (family) | warm-start hits | candidate hits (any) | sharing precision (mean over "
                  "layers) |", "|---|---|---|---|---|---|---|---|---|"]
        for method, f in tree_rows.items():
            table.append(f"| {method} | " + " | ".join(_fmt(f[k]) for k in TREE_FIGURES) + " |")
        table += ["", "sharing-group precision per layer (mean over seeds; layer: precision / recall):"]
        for method, rs in rows.items():
            table.append(f"- {method}: " + layer_precision(rs))
    values = {m: {s: r["metrics"]["acc"]["mean"] for s, r in zip(args.seeds, rs)} for m, rs in rows.items()}
    paired = None
    if args.reference in values:
        paired = paired_table(values, args.reference)
        table += ["", markdown_paired(paired, args.reference, metric="ACC %")]
    gain = None
    if {"oracle-sharing", "local-only"} <= set(values):
        gain, _ = oracle_gain_share(values, "oracle-sharing", "local-only")
        table += ["", "share of the oracle's gain over local-only: " + ", ".join(
            f"{m} {100 * g:.0f}%" for m, g in gain.items() if g is not None)]
    text = "\n".join(table)
    print(text)
    from simulations.bench_common import machine_line

    print(machine_line(machine))
    meta = {
        "date": str(date.today()),
        "machine": machine,
        "command": "python -m simulations.bench_fed_accuracy " + " ".join(sys.argv[1:] if argv is None else argv),
        "preset": preset,
        "method_overrides": {m: {k: v for k, v in rc.items() if preset.get(k) != v}
                             for m, rc in (per_method or {}).items() if rc != preset},
        "clients": args.clients,
        "seeds": args.seeds,
        "summary": summary,
        "paired": paired,
        "oracle_gain_share": gain,
        "tree_figures": tree_rows,
        "tree_quality_per_seed": {m: [r.get("tree_quality") for r in rs] for m, rs in rows.items()},
        "table": text,
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "fed_accuracy.json").write_text(json.dumps(meta, indent=2, default=str))
    if args.results:
        path = ROOT / "simulations" / "results" / f"{args.results}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(meta, indent=2, default=str) + "\n")
        print(f"summary: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
