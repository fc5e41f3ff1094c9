"""Shared helpers of the benchmark scripts (``simulations/bench_*.py``): machine record, tables, JSON output.

Every benchmark prints a markdown table and writes ``runs/bench/<name>.json`` holding the measured rows plus a
``machine`` block: date (UTC), ``nproc``, the CPU model from /proc/cpuinfo, memory, torch version and intra-op
threads, the load average before and after, the process' CPU time over its wall time (a low value means the
benchmark was starved by other processes on a shared machine), the GPU (or why there is none) and the command.

Timings on a shared, noisy machine: compare ratios measured side by side in one process, interleave the
repetitions, report medians (and the spread), and read the load average next to them.
"""

from __future__ import annotations

import os
import sys as _sys

# On this shared 2-core machine, OpenMP's default *active* wait makes torch's worker threads spin against the other
# tenants' processes: a MiniLM step with 2 threads measured 4x slower than with the passive policy under load
# average 5 (bench_step --omp-compare). Must be set before torch starts its thread pool, so every bench script
# imports this module before torch; an explicit OMP_WAIT_POLICY in the environment wins. Only when a bench script is
# the program (python -m simulations.bench_*), so that importing the scripts (the smoke tests) changes nothing else.
if os.path.basename(_sys.argv[0] if _sys.argv else "").startswith("bench_"):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import datetime as _dt
import json
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "runs" / "bench"
NO_GPU = "not measured: no GPU in this task"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo ('unknown' when unreadable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def nproc() -> int:
    """Processors available to this process (what ``nproc`` prints)."""
    try:
        return int(subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip())
    except Exception:  # noqa: BLE001 - nproc missing: fall back to the affinity mask
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (MiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mib() -> float:
    """Current resident set size (MiB)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:  # noqa: BLE001
        return "unknown"


class Machine:
    """Records the machine and the load around a benchmark; ``finish()`` returns the JSON-able block."""

    def __init__(self, threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()
        self.start = _dt.datetime.now(_dt.timezone.utc)
        self.load_start = loadavg()

    def finish(self) -> dict[str, Any]:
        import torch

        wall = time.perf_counter() - self.t0
        cpu = time.process_time() - self.cpu0
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else NO_GPU
        return {
            "date_utc": self.start.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "nproc": nproc(),
            "cpu_model": cpu_model(),
            "mem_total_gib": mem_total_gib(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
            "python": platform.python_version(),
            "git_commit": git_commit(),
            "gpu": gpu,
            "loadavg_start": self.load_start,
            "loadavg_end": loadavg(),
            "wall_s": round(wall, 2),
            "process_cpu_s": round(cpu, 2),
            "cpu_per_wall": round(cpu / wall, 2) if wall > 0 else None,
            "peak_rss_mib": round(peak_rss_mib(), 1),
            "command": command(),
        }


def command() -> str:
    """The command line that ran this benchmark."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(".py"):
        try:
            rel = Path(argv[0]).resolve().relative_to(ROOT)
            argv[0] = str(rel.with_suffix("")).replace("/", ".")
            return "python -m " + " ".join(shlex.quote(a) for a in argv)
        except ValueError:
            pass
    return "python " + " ".join(shlex.quote(a) for a in argv)


def machine_line(m: dict[str, Any]) -> str:
    """One-line summary of the machine block for the markdown output."""
    la0 = "/".join(f"{x:.2f}" for x in m.get("loadavg_start", []))
    la1 = "/".join(f"{x:.2f}" for x in m.get("loadavg_end", []))
    return (
        f"{m['date_utc']}; {m['nproc']} cores ({m['cpu_model']}), {m['mem_total_gib']} GiB; torch "
        f"{m['torch']}, {m['torch_threads']} threads (OMP_WAIT_POLICY={m.get('omp_wait_policy') or 'default'}); "
        f"load avg (1/5/15 min) {la0} at start, {la1} at end; "
        f"process CPU/wall {m['cpu_per_wall']}; GPU: {m['gpu']}; commit {m['git_commit']}"
    )


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats are printed as given (format them before)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(x) for x in row) + " |")
    return "\n".join(lines)


def write_json(name: str, payload: dict[str, Any], out_dir: str | Path | None = None) -> Path:
    """Write ``<out_dir or runs/bench>/<name>.json`` and return its path."""
    d = Path(out_dir) if out_dir else BENCH_DIR
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return path


def _json_default(x: Any) -> Any:
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:
        pass
    if isinstance(x, Path):
        return str(x)
    return str(x)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (q in [0, 1])."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))


def fmt_s(x: float) -> str:
    """Seconds in a readable unit."""
    if x != x:  # nan
        return "-"
    if x < 1e-3:
        return f"{x * 1e6:.0f} µs"
    if x < 1:
        return f"{x * 1e3:.2f} ms"
    return f"{x:.2f} s"


def fmt_bytes(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    if n < 2**20:
        return f"{n / 1024:.1f} KiB"
    if n < 2**30:
        return f"{n / 2**20:.2f} MiB"
    return f"{n / 2**30:.2f} GiB"


# ---------------------------------------------------------------------------------------------------------------
# Backbone shapes and a synthetic federation driver over the real server state (server.state.GlobalState)


def dir_bytes(path: Path) -> int:
    """Total size of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def lora_shapes(backbone: str, *, r: int = 8) -> dict[str, Any]:
    """Adapter shapes of the project's layer-wise LoRA on a backbone, plus parameter counts.

    Returns ``{"adapter_shapes": [((r, d_in), (d_out, r)), ...], "layers", "lora_params", "backbone_params",
    "hidden_size", "signature_dims"}``; ``backbone_params`` counts the frozen backbone without LoRA or head.
    """
    from treelora.adapters import LayerwiseLoRA
    from treelora.backbones import load_backbone

    bb = load_backbone(backbone)
    base = sum(p.numel() for p in bb.model.parameters())
    lora = LayerwiseLoRA(bb.model, r=r)
    shapes = [(tuple(a.shape), tuple(b.shape)) for a, b in (lora.params(l) for l in range(lora.num_layers))]
    return {
        "backbone": backbone,
        "adapter_shapes": shapes,
        "layers": len(shapes),
        "lora_params": sum(a[0] * a[1] + b[0] * b[1] for a, b in shapes),
        "backbone_params": base,
        "hidden_size": bb.hidden_size,
        "signature_dims": lora.layer_dims(),
        "target_modules": lora.names,
    }


class SynthFed:
    """Drives a real :class:`server.state.GlobalState` with synthetic, fully valid client reports.

    Reports are built exactly as ``client.node.ClientNode.train`` builds them (``encode_tensors`` with bf16
    adapters and float32 sketches, a ``ClientReport`` with pulls, metrics and manifest), so what the server
    validates, ingests, inserts and aggregates is the real code path; only the training is skipped. Sketches
    are drawn around ``clusters`` centres so that the tree has structure.
    """

    def __init__(
        self,
        fed: Any,
        out_dir: str | Path,
        adapter_shapes: list,
        *,
        seed: int = 0,
        clusters: int = 16,
        model_bytes: int = 0,
    ) -> None:
        import torch

        from server.state import GlobalState

        self.state = GlobalState(fed, out_dir, run_id="bench")
        self.fed = fed
        self.shapes = [(tuple(a), tuple(b)) for a, b in adapter_shapes]
        self.L = len(self.shapes)
        self.gen = torch.Generator().manual_seed(seed)
        self.centres = torch.randn(clusters, self.L, fed.sketch_dim, generator=self.gen) * 1000.0
        self.clusters = clusters
        self.model_bytes = model_bytes
        self.tasks: dict[str, int] = {}

    def sketch(self, cluster: int) -> list:
        import torch

        c = self.centres[cluster % self.clusters]
        return [c[l] + 100.0 * torch.randn(self.fed.sketch_dim, generator=self.gen) for l in range(self.L)]

    def cluster_of(self, key: str) -> int:
        """The synthetic cluster of a task key: stable across processes (``hash`` of a str is salted per process,
        which made every run, and the tests built on it, a different tree)."""
        import zlib

        return zlib.crc32(key.encode("utf-8")) % self.clusters

    def report(
        self,
        client: str,
        rnd: int,
        *,
        finished: bool,
        task_index: int | None = None,
        pulls: list | None = None,
        cluster: int | None = None,
        steps: int = 8,
    ) -> tuple[bytes, dict]:
        """(control bytes, arrays) of one train reply, built like ``ClientNode.train``."""
        import torch

        from protos import SCHEMA_VERSION
        from protos import treelora_fed_pb2 as pb
        from protos.wire import adapter_name, encode_tensors, final_name, serialize, sketch_name

        pos = self.tasks.get(client, 0) if task_index is None else task_index
        key = f"{client}/t{pos}"
        cl = self.cluster_of(key) if cluster is None else cluster
        out: dict[str, torch.Tensor] = {}
        for l, (a, b) in enumerate(self.shapes):
            out[adapter_name(l, "A")] = 0.02 * torch.randn(a, generator=self.gen)
            out[adapter_name(l, "B")] = 0.02 * torch.randn(b, generator=self.gen)
        for l, s in enumerate(self.sketch(cl)):
            out[sketch_name(l)] = s
        metrics = {"train_s": 1.0, "loss": 1.0, "model_bytes": float(self.model_bytes)}
        if finished:
            for l, s in enumerate(self.sketch(cl)):
                out[final_name(l)] = s
            metrics.update({f"acc/{client}/t{i}": 0.5 for i in range(pos + 1)})
        arrays, manifest = encode_tensors(
            out, lambda n: "float32" if n.startswith(("sketch.", "final.")) else self.fed.wire_dtype
        )
        report = pb.ClientReport(
            version=SCHEMA_VERSION,
            round=rnd,
            run_id="bench",
            client_id=client,
            task_key=key,
            task_index=pos,
            task_finished=finished,
            num_examples=steps * self.fed.batch_size,
            steps=steps,
            loss=1.0,
            pulls=pulls or [],
            manifest=manifest,
            metrics=metrics,
        )
        if finished:
            self.tasks[client] = pos + 1
        return serialize(report), arrays

    def pulls_for(self, assignment: Any, steps: int = 8) -> list:
        """Pulls a client would report for an assignment's candidates (xi sums over ``steps`` steps)."""
        from protos import treelora_fed_pb2 as pb

        out = []
        for la in assignment.layers:
            k = len(la.candidates)
            for i, leaf in enumerate(la.candidates):  # one pull per step and layer: most on the first candidate
                n = steps - (k - 1) if i == 0 else 1
                out.append(pb.Pull(layer=la.layer, leaf=leaf, xi_sum=0.1 * n, count=n))
        return out
