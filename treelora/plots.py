"""Result figures: accuracy-matrix heatmap, metric bars with error bars, lines over rounds, the similarity tree.

matplotlib is imported inside each function, and figures are drawn on ``matplotlib.figure.Figure`` with the
Agg canvas rather than through pyplot, so importing treelora stays fast, no global backend is switched, and
plotting works headless and from several threads. The file's suffix picks the format: ``.png``, or ``.svg`` (what
the HTML report inlines).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["plot_accuracy_matrix", "plot_metric_bars", "metric_bars_figure", "plot_lines", "plot_tree",
           "render_tree_text", "FAMILY_COLOURS"]

#: Leaf colours of a tree drawn by task family, in order of first appearance (light, so the labels stay readable).
FAMILY_COLOURS = ("#a6cee3", "#b2df8a", "#fb9a99", "#fdbf6f", "#cab2d6", "#ffff99", "#8dd3c7", "#d9d9d9",
                  "#bebada", "#fccde5")


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".svg":
        import matplotlib

        # text as <text> (a tenth of the size, selectable in a browser), no date: the same figure, the same bytes
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": out.stem}):
            fig.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None})
    else:
        fig.savefig(out, format="png", bbox_inches="tight")
    return out


def plot_accuracy_matrix(R: ArrayLike, task_names: list[str], path: str | Path, title: str = "") -> Path:
    """Annotated heatmap of R (rows "after task j", columns "task i") saved as PNG; NaN cells are left blank."""
    try:
        arr = np.asarray(R, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"accuracy matrix must be numeric: {exc}") from exc
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] < 1:
        raise ValueError(f"accuracy matrix must be square (T, T) with T >= 1, got shape {arr.shape}")
    T = arr.shape[0]
    if len(task_names) != T:
        raise ValueError(f"got {len(task_names)} task names for a {T}x{T} matrix")
    finite = arr[np.isfinite(arr)]
    fmt = "{:.2f}" if finite.size == 0 or np.abs(finite).max() <= 1.0 else "{:.1f}"
    side = max(3.0, 0.6 * T + 2.0)
    fig = _new_figure(side + 1.0, side)
    ax = fig.add_subplot(1, 1, 1)
    masked = np.ma.masked_invalid(arr)
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    im = ax.imshow(masked, cmap="viridis", vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1e-9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    mid = 0.5 * (vmin + vmax)
    if T <= 30:  # beyond that the numbers are unreadable anyway
        for j in range(T):
            for i in range(T):
                if math.isfinite(arr[j, i]):
                    ax.text(i, j, fmt.format(arr[j, i]), ha="center", va="center", fontsize=8,
                            color="black" if arr[j, i] > mid else "white")
    ax.set_xticks(range(T), labels=[str(n) for n in task_names], rotation=45, ha="right")
    ax.set_yticks(range(T), labels=[f"after {n}" for n in task_names])
    ax.set_xlabel("task i (evaluated)")
    ax.set_ylabel("after training task j")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_metric_bars(table: dict[str, dict[str, tuple[float, float]]], metric: str, path: str | Path, *,
                     percent: bool = False, label: str = "", over: str = "seeds") -> Path:
    """Bar chart of ``metric`` per method (``table[method][metric] = (mean, std)``), in % when ``percent``.

    Error bars (± std) only where the mean is over at least two seeds (``table[method]["seeds"] = (n, 0)``; rows
    without that entry count as several): the std of one seed is no spread. Methods that lack the metric (e.g.
    ``fwt`` where it could not be computed) are left out; it is an error when none has it.
    """
    return _save(metric_bars_figure(table, metric, percent=percent, label=label, over=over), path)


def metric_bars_figure(table: dict[str, dict[str, tuple[float, float]]], metric: str, *, percent: bool = False,
                       label: str = "", over: str = "seeds") -> Any:
    """The figure of :func:`plot_metric_bars`, unsaved (its axes hold one bar per method and the error bars).
    ``over`` names what the mean is over (``"seeds"``; a federated run's ``"clients"``: ``seeds`` then counts them)."""
    if not isinstance(table, dict) or not table:
        raise ValueError("table must be a non-empty dict: method -> metric -> (mean, std)")
    methods, means, stds, seeds = [], [], [], []
    for method, row in table.items():
        if not isinstance(row, dict):
            raise ValueError(f"table[{method!r}] must be a dict metric -> (mean, std), got {type(row).__name__}")
        if metric not in row:
            continue
        try:
            mean, std = (float(v) for v in row[metric])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"table[{method!r}][{metric!r}] must be a (mean, std) pair, got {row[metric]!r}") from exc
        if not (math.isfinite(mean) and math.isfinite(std)) or std < 0:
            raise ValueError(f"table[{method!r}][{metric!r}] = ({mean}, {std}) is not a finite mean with std >= 0")
        scale = 100.0 if percent else 1.0
        methods.append(str(method))
        means.append(scale * mean)
        stds.append(scale * std)
        seeds.append(int(row["seeds"][0]) if "seeds" in row else 2)
    if not methods:
        raise ValueError(f"no method in the table has metric {metric!r}")
    fig = _new_figure(max(4.0, 0.9 * len(methods) + 2.0), 4.0)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(methods))
    ax.bar(x, means, color="tab:blue", alpha=0.85)
    spread = [i for i, n in enumerate(seeds) if n >= 2]
    if spread:
        ax.errorbar(x[spread], [means[i] for i in spread], yerr=[stds[i] for i in spread], fmt="none",
                    ecolor="black", capsize=4, linewidth=1.0)
    ax.set_xticks(x, labels=methods, rotation=30, ha="right")
    name = (label or metric.upper()) if percent else (label or metric)
    ax.set_ylabel(f"{name} %" if percent else name)
    ax.axhline(0.0, color="black", linewidth=0.6)
    one = over[:-1] if over.endswith("s") else over
    if len(spread) == len(methods):
        ax.set_title(f"{name} (mean ± std over {over})")
    elif spread:
        ax.set_title(f"{name} (mean ± std over {over}; no bar: one {one})")
    else:
        ax.set_title(f"{name} (one {one} each)")
    return fig


def plot_lines(series: Mapping[str, tuple[list[float], list[float]]], path: str | Path, *, xlabel: str,
               ylabel: str, title: str = "", xlim: tuple[float, float] | None = None) -> Path:
    """One line per name (``series[name] = (x values, y values)``), e.g. bytes per round of each method."""
    if not series:
        raise ValueError("series must name at least one line")
    fig = _new_figure(6.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for name, (xs, ys) in series.items():
        if len(xs) != len(ys):
            raise ValueError(f"series {name!r}: {len(xs)} x values for {len(ys)} y values")
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.4, label=str(name))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _check_node(node: Any, where: str) -> None:
    if not isinstance(node, dict):
        raise ValueError(f"tree node at {where} must be a dict, got {type(node).__name__}")
    for key in ("depth", "tasks", "children"):
        if key not in node:
            raise ValueError(f"tree node at {where} is missing {key!r}")
    if isinstance(node["depth"], bool) or not isinstance(node["depth"], int):
        raise ValueError(f"tree node at {where}: depth must be an int, got {node['depth']!r}")
    if not isinstance(node["tasks"], list) or not all(isinstance(t, str) for t in node["tasks"]):
        raise ValueError(f"tree node at {where}: tasks must be a list of str")
    if not isinstance(node["children"], list):
        raise ValueError(f"tree node at {where}: children must be a list")
    for k, child in enumerate(node["children"]):
        _check_node(child, f"{where}/{k}")


def _describe(node: dict, labels: Mapping[str, str]) -> str:
    if node["children"]:
        return f"layer {node['depth']} ({len(node['tasks'])} tasks)"
    return f"leaf d={node['depth']}: " + (", ".join(labels.get(t, t) for t in node["tasks"]) or "(empty)")


def render_tree_text(tree_dict: dict, labels: Mapping[str, str] | None = None) -> str:
    """Indented ASCII rendering: internal nodes show their split layer and task count, leaves their tasks
    (``labels[key]`` where given, e.g. ``"sentiment (t0)"``, else the key).

    Each task appears once (on its leaf), so the text doubles as a readable log of the tree.
    """
    _check_node(tree_dict, "root")
    labels = labels or {}
    lines = [_describe(tree_dict, labels)]

    def walk(node: dict, prefix: str) -> None:
        kids = node["children"]
        for k, child in enumerate(kids):
            last = k == len(kids) - 1
            lines.append(prefix + ("`-- " if last else "|-- ") + _describe(child, labels))
            walk(child, prefix + ("    " if last else "|   "))

    walk(tree_dict, "")
    return "\n".join(lines) + "\n"


def plot_tree(tree_dict: dict, path: str | Path, title: str = "", *, labels: Mapping[str, str] | None = None,
              families: Mapping[str, str] | None = None) -> Path:
    """Top-down drawing of the similarity tree: leaves spread left to right in order and labelled with their
    tasks (``labels[key]`` where given), each internal node centred over its children and labelled with its split
    layer. With ``families`` (task key → family) each leaf is coloured by its tasks' family (grey when they mix)
    and a legend names the colours: how well the tree groups related tasks, at a glance."""
    _check_node(tree_dict, "root")
    labels = labels or {}
    palette: dict[str, str] = {}
    for fam in (families or {}).values():
        if fam not in palette:
            palette[fam] = FAMILY_COLOURS[len(palette) % len(FAMILY_COLOURS)]
    pos: dict[int, tuple[float, float]] = {}
    edges: list[tuple[int, int]] = []
    nodes: list[dict] = []
    next_leaf = [0]

    def place(node: dict, level: int) -> int:
        nid = len(nodes)
        nodes.append(node)
        if not node["children"]:
            pos[nid] = (float(next_leaf[0]), -float(level))
            next_leaf[0] += 1
            return nid
        kids = [place(child, level + 1) for child in node["children"]]
        edges.extend((nid, c) for c in kids)
        pos[nid] = (0.5 * (pos[kids[0]][0] + pos[kids[-1]][0]), -float(level))
        return nid

    place(tree_dict, 0)
    n_leaves = max(next_leaf[0], 1)
    n_levels = int(-min(y for _, y in pos.values())) + 1
    fig = _new_figure(min(max(4.0, 1.3 * n_leaves), 60.0), max(3.0, 1.4 * n_levels + 1.0))
    ax = fig.add_subplot(1, 1, 1)
    for a, b in edges:
        ax.plot([pos[a][0], pos[b][0]], [pos[a][1], pos[b][1]], color="gray", linewidth=1.0, zorder=1)
    for nid, node in enumerate(nodes):
        x, y = pos[nid]
        if node["children"]:
            label, colour = f"layer {node['depth']}\n({len(node['tasks'])})", "lightsteelblue"
        else:
            label = "\n".join(labels.get(t, t).replace(" (", "\n(") for t in node["tasks"]) or "(empty)"
            fams = {families[t] for t in node["tasks"] if t in families} if families else set()
            colour = palette[fams.pop()] if len(fams) == 1 else ("lightgray" if fams else "lightyellow")
        ax.text(x, y, label, ha="center", va="center", fontsize=8, zorder=2,
                bbox={"boxstyle": "round,pad=0.3", "facecolor": colour, "edgecolor": "gray"})
    ax.set_xlim(-0.7, n_leaves - 0.3)
    ax.set_ylim(-(n_levels - 1) - 0.9, 0.7)
    ax.axis("off")
    if palette:
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(facecolor=c, edgecolor="gray", label=f) for f, c in palette.items()],
                  title="task family", fontsize=8, loc="upper right", framealpha=0.9)
    if title:
        ax.set_title(title)
    return _save(fig, path)
