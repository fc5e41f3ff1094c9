"""One self-contained HTML page per run or comparison (``treelora report RUN_DIR...``; ``make run`` writes one).

Everything is inside the file: figures are inline SVG (:mod:`treelora.report_figures`), the style is one
``<style>`` block, there is no script, no font, no network request (not even a favicon), so the page opens
from a mail attachment or an air-gapped machine the same. It holds, for every results.json under the given
directories: a summary table (ACC/BWT/forgetting in %, mean ± std over seeds or clients, bytes per client-round,
rejected replies), ACC and BWT bars per method, the accuracy matrices, the federated runs' figures over rounds
(bytes up/down, tree size, recorded evaluations), each tree a method selects from coloured by task family, the
tree-purity figures when results.json has ``tree_quality`` (whatever dict of numbers it holds, as a table), and
the rejected replies.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .io import write_text_atomic
from .report_figures import accuracy_figures, metric_figures, round_figures, run_name, tree_figures
from .results import compare_runs, find_results

__all__ = ["build_report", "write_report", "flatten_numbers"]

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; } th { background: #f3f3f3; white-space: normal; }
.figs { display: flex; flex-wrap: wrap; gap: 1.2em; }
figure { margin: 0; border: 1px solid #e3e3e3; padding: .5em; background: #fff; max-width: 100%; }
figure svg { max-width: 100%; height: auto; display: block; }
figcaption { font-size: .85em; color: #555; max-width: 36em; margin-top: .3em; }
.scroll { overflow-x: auto; max-width: 100%; }
.note { color: #666; font-size: .9em; } code { background: #f5f5f5; padding: 0 .2em; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _pct(mean_std: tuple[float, float] | Mapping[str, float] | None) -> str:
    if mean_std is None:
        return "-"
    mean, std = (mean_std["mean"], mean_std["std"]) if isinstance(mean_std, Mapping) else mean_std
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _figures(figs: list[tuple[str, str]]) -> str:
    return '<div class="figs">' + "".join(
        f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>" for caption, svg in figs) + "</div>"


def flatten_numbers(data: Any, prefix: str = "") -> list[tuple[str, float]]:
    """Every number in a nested dict/list as (dotted path, value): how ``tree_quality`` is shown, whatever it holds."""
    out: list[tuple[str, float]] = []
    if isinstance(data, bool):
        out.append((prefix, float(data)))
    elif isinstance(data, (int, float)):
        out.append((prefix, float(data)))
    elif isinstance(data, Mapping):
        for k, v in data.items():
            out += flatten_numbers(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(data, (list, tuple)):
        for k, v in enumerate(data):
            out += flatten_numbers(v, f"{prefix}[{k}]")
    return out


def _summary(central: list[dict[str, Any]], central_table: dict[str, Any], federated: list[dict[str, Any]]) -> str:
    parts = []
    if central_table:
        rows = [[m, int(row["seeds"][0]), _pct(row["acc"]), _pct(row["bwt"]), _pct(row["forgetting"]),
                 f"{row['step_time_s'][0]:.3g}", f"{row['time_per_task_s'][0]:.3g}"]
                for m, row in central_table.items()]
        streams = sorted({f"{r['stream']} on {r['backbone']}" for r in central})
        parts.append(f"<p>Centralized ({_e(', '.join(streams))}): mean ± std over seeds.</p>" + _table(
            ["method", "seeds", "ACC %", "BWT %", "forgetting %", "step s", "time / task s"], rows))
    if federated:
        rows = []
        for r in federated:
            m = r["metrics"]
            ratio, down = r.get("up_vs_full_model"), r.get("bytes_down_per_client_round")
            rows.append([run_name(r), len(r["per_client"]), r.get("rounds", ""), _pct(m.get("acc")),
                         _pct(m.get("bwt")), _pct(m.get("forgetting")), f"{r['bytes_up_per_client_round'] / 1024:.1f}",
                         "-" if down is None else f"{down / 1024:.1f}",
                         f"{100 * ratio:.3f}%" if ratio else "-", len(r.get("errors") or [])])
        cfgs = [r.get("config") or {} for r in federated]
        settings = sorted({f"{c.get('stream', '?')} on {c.get('backbone', '?')}, {c.get('scenario', '?')} scenario"
                           for c in cfgs})
        parts.append(f"<p>Federated ({_e('; '.join(settings))}): mean ± std over clients.</p>" + _table(
            ["method", "clients", "rounds", "ACC %", "BWT %", "forgetting %", "KiB up / client-round",
             "KiB down / client-round", "up vs full model", "rejected"], rows))
    return "".join(parts)


def _tree_quality(runs: list[dict[str, Any]]) -> str:
    parts = []
    for r in runs:
        tq = r.get("tree_quality")
        if isinstance(tq, Mapping) and tq:
            nums = flatten_numbers(tq)
            text = [(k, v) for k, v in tq.items() if isinstance(v, str)]
            rows = [[k, f"{v:.4g}" if math.isfinite(v) else str(v)] for k, v in nums] + [[k, v] for k, v in text]
            parts.append(f"<h3>{_e(run_name(r))}</h3>" + _table(["measure", "value"], rows))
    return "".join(parts)


def _errors(runs: list[dict[str, Any]]) -> str:
    rows = []
    for r in runs:
        for err in (r.get("errors") or [])[:20]:
            e = err if isinstance(err, Mapping) else {"reason": err}
            rows.append([run_name(r), e.get("round", ""), e.get("node_id", e.get("node", "")), e.get("code", ""),
                         str(e.get("reason", e.get("message", "")))[:200]])
    if not rows:
        return "<p>No reply was rejected.</p>"
    return _table(["run", "round", "node", "code", "reason"], rows)


def build_report(runs: list[dict[str, Any]], title: str = "TreeLoRA-Fed report") -> str:
    """The HTML page of these loaded results (``find_results`` output: dicts with ``_path``)."""
    if not runs:
        raise ValueError("no runs to report")
    central = [r for r in runs if "per_client" not in r]
    federated = [r for r in runs if "per_client" in r]
    names = [run_name(r) for r in federated]
    for r in federated:  # two federated runs of one method (two presets): tell them apart by their folder
        if names.count(run_name(r)) > 1:
            r["label"] = f"{run_name(r)} ({Path(r['_path']).parent.name})"
    central_table = compare_runs(central) if central else {}
    sections = [
        ("Summary", _summary(central, central_table, federated)),
        ("ACC and BWT per method", _figures(metric_figures(central_table, federated))),
        ("Accuracy matrices", '<p class="note">Row j: accuracy on every task seen so far, after training task j '
                              "(task names with their keys).</p>" + _figures(accuracy_figures(central, federated))),
    ]
    if federated:
        sections.append(("Over rounds", _figures(round_figures(federated))))
    trees = tree_figures(central, federated)
    sections.append(("Trees", _figures(trees) if trees else
                     "<p>No method here selects from a tree (SeqLoRA, O-LoRA, EWC, FedAvg-LoRA, local-only).</p>"))
    tq = _tree_quality(runs)
    if tq:
        sections.append(("Tree purity", '<p class="note">How well the tree groups tasks of one family '
                                        "(<code>tree_quality</code> in results.json).</p>" + tq))
    if federated:
        sections.append(("Rejected replies", _errors(federated)))
    sources = _table(["run", "results.json"], [[run_name(r), r.get("_path", "")] for r in runs])
    sections.append(("Runs", sources))
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join(f"<section><h2>{_e(h)}</h2>{content}</section>" for h, content in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><style>{STYLE}</style></head>'
            f'<body><h1>{_e(title)}</h1><p class="note">{len(runs)} run(s), written {when} by '
            f"<code>treelora report</code>.</p>{body}</body></html>\n")


def write_report(paths: list[str | Path], out: str | Path, *, title: str | None = None) -> Path:
    """Load every results.json under ``paths`` and write the page to ``out``; returns ``out``."""
    runs = [r for r in find_results(list(paths)) if "export" not in Path(r["_path"]).parts]
    if title is None:
        title = "TreeLoRA-Fed report: " + ", ".join(sorted({run_name(r) for r in runs}))
    return write_text_atomic(out, build_report(runs, title))
