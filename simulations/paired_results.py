"""One paired table from several committed benchmark summaries: each method's per-seed ACC read from the summary
JSON that measured it, paired by seed against a reference, with the share of an oracle's gain over a floor.

A federated run takes 5–20 minutes here, so a table is often assembled from runs made at different times (same
preset, same seeds, deterministic code). This reads them back instead of re-running: every row names its source
file, and a method given by two sources must agree on every seed they share (else it refuses: different code or
settings). Only the ACC columns are compared; BWT and bytes stay in each source's own table.

    python -m simulations.paired_results --reference treelora --oracle oracle-sharing --floor local-only \\
        --from simulations/results/a.json:treelora,ffa-lora simulations/results/b.json:fedavg-lora \\
        --name combined
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from treelora.paired import markdown_paired, oracle_gain_share, paired_table

__all__ = ["collect", "main"]

RESULTS = Path(__file__).resolve().parent / "results"


def collect(sources: list[tuple[Path, list[str]]]) -> tuple[dict[str, dict[int, float]], dict[str, list[str]]]:
    """``(method → seed → ACC, method → the files it was read from)``; raises ValueError on a missing method or
    on two sources that disagree on a shared seed."""
    values: dict[str, dict[int, float]] = {}
    origin: dict[str, list[str]] = {}
    for path, methods in sources:
        data = json.loads(Path(path).read_text())
        seeds = [int(s) for s in data["seeds"]]
        for m in methods:
            if m not in data.get("summary", {}):
                raise ValueError(f"{path}: no method {m!r} (has {', '.join(sorted(data.get('summary', {})))})")
            accs = data["summary"][m]["per_seed_acc"]
            if len(accs) != len(seeds):
                raise ValueError(f"{path}: {m} has {len(accs)} per-seed values for {len(seeds)} seeds")
            for s, v in zip(seeds, accs):
                old = values.setdefault(m, {}).get(s)
                if old is not None and abs(old - float(v)) > 1e-9:
                    raise ValueError(f"{m} seed {s}: {old} in {origin[m]} but {v} in {path}: not the same runs")
                values[m][s] = float(v)
            origin.setdefault(m, []).append(str(path))
    return values, origin


def _source(spec: str) -> tuple[Path, list[str]]:
    path, _, methods = spec.rpartition(":")
    if not path or not methods:
        raise argparse.ArgumentTypeError(f"--from wants FILE:METHOD[,METHOD...], got {spec!r}")
    return Path(path), [m for m in methods.split(",") if m]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="sources", nargs="+", type=_source, required=True, metavar="FILE:METHODS")
    ap.add_argument("--reference", required=True, help="method every other is compared with, paired by seed")
    ap.add_argument("--oracle", default=None, help="the row that cannot lose (for the share of its gain)")
    ap.add_argument("--floor", default=None, help="the row that cannot win (the gain is measured from it)")
    ap.add_argument("--name", default=None, help="also write simulations/results/<NAME>.json")
    args = ap.parse_args(argv)
    try:
        values, origin = collect(args.sources)
        rows = paired_table(values, args.reference)
    except (ValueError, OSError, KeyError) as exc:
        print(f"paired_results: {exc}", file=sys.stderr)
        return 2
    lines = [markdown_paired(rows, args.reference, metric="ACC %")]
    gain: dict[str, float | None] | None = None
    if args.oracle and args.floor:
        if args.oracle not in values or args.floor not in values:
            print("paired_results: --oracle and --floor must be among the methods", file=sys.stderr)
            return 2
        gain, span = oracle_gain_share(values, args.oracle, args.floor)
        lines += ["", f"share of {args.oracle}'s gain over {args.floor} ({100 * span:+.2f} points): " + ", ".join(
            f"{m} {100 * g:.0f}%" for m, g in gain.items() if g is not None)]
    lines += ["", "sources: " + "; ".join(f"{m} ← {', '.join(f)}" for m, f in origin.items())]
    text = "\n".join(lines)
    print(text)
    if args.name:
        out: dict[str, Any] = {
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "command": "python -m simulations.paired_results " + " ".join(sys.argv[1:] if argv is None else argv),
            "reference": args.reference, "values": {m: {str(s): v for s, v in sorted(by.items())}
                                                    for m, by in values.items()},
            "sources": origin, "paired": rows, "oracle_gain_share": gain, "table": text,
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
