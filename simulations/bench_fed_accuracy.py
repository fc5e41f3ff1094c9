"""Federated accuracy at (about) equal bytes: TreeLoRA-Fed vs FedAvg-LoRA vs local-only, several seeds.

Runs a preset in-process (the real ClientApp and server loop over ``server.local_grid.LocalGrid``: same code as
``flwr run``, without Ray's start-up cost) and reports ACC/BWT as mean ± std over seeds (each seed's figure is
the mean over clients), with bytes up/down per client-round.

    python -m simulations.bench_fed_accuracy --preset similar-clients --clients 4 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import tomllib

from simulations.run import run_config_overrides

ROOT = Path(__file__).resolve().parent.parent


def run_one(preset: dict, method: str, seed: int, clients: int, out: Path) -> dict:
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
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="similar-clients")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["treelora", "fedavg-lora", "local-only"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run-config key of the preset (a TOML value or a bare string)")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench" / "fed_accuracy"))
    args = p.parse_args(argv)
    preset = tomllib.loads((ROOT / "simulations" / f"{args.preset}.toml").read_text())
    try:
        preset.update(run_config_overrides(args.set))  # the same --set as simulations.run
    except ValueError as exc:
        p.error(f"--set: {exc}")
    out = Path(args.out)
    rows: dict[str, list[dict]] = {m: [] for m in args.methods}
    for seed in args.seeds:
        for method in args.methods:  # interleaved, so machine load hits every method alike
            res = run_one(preset, method, seed, args.clients, out)
            rows[method].append(res)
            m = res["metrics"]
            print(f"{method:12s} seed {seed}: ACC {100 * m['acc']['mean']:.2f}  BWT {100 * m['bwt']['mean']:.2f}  "
                  f"up {res['bytes_up_per_client_round'] / 1024:.1f} KiB  {res['wall_s']:.0f} s", flush=True)
    table = [
        "| method | ACC % | BWT % | forgetting % | KiB up / client-round | KiB down / client-round | wall s / run |",
        "|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for method, rs in rows.items():

        def ms(key: str) -> tuple[float, float]:
            vals = [100 * r["metrics"][key]["mean"] for r in rs]
            return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0

        acc, bwt, fgt = ms("acc"), ms("bwt"), ms("forgetting")
        up = float(np.mean([r["bytes_up_per_client_round"] for r in rs])) / 1024
        down = float(np.mean([r["bytes_down_per_client_round"] for r in rs])) / 1024
        wall = float(np.mean([r["wall_s"] for r in rs]))
        summary[method] = {"acc": acc, "bwt": bwt, "forgetting": fgt, "kib_up": up, "kib_down": down, "wall_s": wall}
        table.append(
            f"| {method} | {acc[0]:.2f} ± {acc[1]:.2f} | {bwt[0]:.2f} ± {bwt[1]:.2f} | "
            f"{fgt[0]:.2f} ± {fgt[1]:.2f} | {up:.1f} | {down:.1f} | {wall:.0f} |"
        )
    text = "\n".join(table)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": str(date.today()),
        "machine": platform.processor() or platform.machine(),
        "command": "python -m simulations.bench_fed_accuracy " + " ".join(argv or []),
        "preset": preset,
        "clients": args.clients,
        "seeds": args.seeds,
        "summary": summary,
        "table": text,
    }
    (out / "fed_accuracy.json").write_text(json.dumps(meta, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
