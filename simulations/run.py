"""Run a scenario preset through ``flwr run .`` (Flower's simulation engine) for one or more methods, then stop
the local SuperLink that ``flwr run`` started and print a summary table.

    python -m simulations.run                                    # the default preset, three methods
    python -m simulations.run --preset similar-clients --clients 4 --methods treelora fedavg-lora
    python -m simulations.run --preset scale --clients 100 --methods treelora

Sets what Flower needs offline: ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` (otherwise ``flwr run``
``uv sync``-s the dependencies and pulls a CUDA torch), a private ``FLWR_HOME`` under ``.flwr/`` and
``HF_HUB_OFFLINE=1``. Each method writes ``<out>/<method>/results.json`` (+ plots); the table goes to
``<out>/summary.md``, and the comparison of the methods to ``<out>/report.html`` (one self-contained page,
:mod:`treelora.report_html`), whose path is printed last. Other packages' deprecation notices and per-actor load
bars are kept out of the log (:mod:`treelora.logs`).

``--set KEY=VALUE`` (repeatable) overrides a run-config key of the preset: kebab-case keys of
``treelora.fed.settings.FedSettings``, each value a TOML literal or a bare string (``--set l1-reduction=mean``,
``--set lr=1e-3``; see ``treelora.overrides``), checked and typed before anything starts
(:func:`run_config_overrides`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import tomllib

from treelora.fed.settings import FedSettings
from treelora.logs import quiet_env
from treelora.overrides import coerce, parse_pairs
from treelora.report_html import write_report

ROOT = Path(__file__).resolve().parent.parent


def run_config_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` items → ``{kebab-case run-config key: value typed as its FedSettings field}``.

    Snake-case keys are accepted and written kebab-case. Raises ValueError naming a bad item, key or value.
    """
    values = coerce(FedSettings, parse_pairs(items), kebab=True)
    return {name.replace("_", "-"): value for name, value in values.items()}


def _superlinks() -> list[tuple[int, str]]:
    """(pid, command line) of every running flower-superlink process."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "flower-superlink" in cmd:
            found.append((int(proc.name), cmd.strip()))
    return found


def _superlink_pids(flwr_home: Path) -> set[int]:
    """PIDs of flower-superlink processes using our FLWR_HOME (the local one ``flwr run`` leaves running)."""
    return {pid for pid, cmd in _superlinks() if str(flwr_home) in cmd}


def foreign_superlinks(flwr_home: Path) -> list[str]:
    """Local simulation SuperLinks of *another* FLWR_HOME: ``flwr run`` would silently submit to them (same
    fixed ports), and whoever owns them may stop them mid-run."""
    return [
        f"pid {pid}: {cmd[:160]}" for pid, cmd in _superlinks() if "--simulation" in cmd and str(flwr_home) not in cmd
    ]


def stop_superlink(pids: set[int]) -> None:
    """SIGTERM, then SIGKILL what is left after 5 s."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 5
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.2)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def write_run_config(preset: Path, method: str, out: Path, extra: dict[str, object]) -> Path:
    """``<out>/.<method>.toml``: the preset, then ``extra``, then the method and output directory."""
    config = tomllib.loads(preset.read_text())
    config.update(extra)
    config["method"] = method
    config["out-dir"] = str(out / method)
    run_cfg = out / f".{method}.toml"
    run_cfg.parent.mkdir(parents=True, exist_ok=True)
    # JSON's str/int/float/bool literals are TOML's too (strings quoted and escaped)
    run_cfg.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items()))
    return run_cfg


def run_preset(
    preset: Path, method: str, clients: int, out: Path, env: dict[str, str], extra: dict[str, object]
) -> Path:
    """One ``flwr run`` of a preset with the method and output directory overridden; returns results.json."""
    run_cfg = write_run_config(preset, method, out, extra)
    results = out / method / "results.json"
    results.unlink(missing_ok=True)
    cmd = [
        "flwr",
        "run",
        str(ROOT),
        "--run-config",
        str(run_cfg),
        "--federation-config",
        f"num-supernodes={clients}",
        "--stream",
    ]
    print(f"$ {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    for _ in range(60):  # the log stream can end a moment before the ServerApp has written its results
        if results.exists():
            return results
        time.sleep(1)
    raise RuntimeError(
        f"{method}: the run ended without writing {results}; see {env['FLWR_HOME']}/local-superlink/superlink.log"
    )


def summary_table(rows: list[tuple[str, dict[str, Any], float]]) -> str:
    """Markdown table of federated runs: (method, results.json dict, wall seconds) per row; ACC/BWT/forgetting
    mean ± std over clients in %, bytes up per client-round, rejected replies. Also the deployment demo's."""
    lines = [
        "| method | ACC % | BWT % | forgetting % | KiB up / client-round | up vs full model | rejected | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, res, wall in rows:
        m = res["metrics"]
        f = lambda k: f"{100 * m[k]['mean']:.2f} ± {100 * m[k]['std']:.2f}" if k in m else "-"  # noqa: E731
        ratio = res.get("up_vs_full_model")
        lines.append(
            f"| {method} | {f('acc')} | {f('bwt')} | {f('forgetting')} | "
            f"{res['bytes_up_per_client_round'] / 1024:.1f} | {'-' if not ratio else f'{100 * ratio:.3f}%'} | "
            f"{len(res['errors'])} | {wall:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="default", help="name of simulations/<preset>.toml, or a path")
    p.add_argument("--methods", nargs="+", default=["treelora", "fedavg-lora", "local-only"])
    p.add_argument("--clients", type=int, default=3, help="number of simulated SuperNodes")
    p.add_argument("--out", default=None, help="output directory (default runs/federated/<preset>)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra run-config (a TOML value or a bare string)",
    )
    p.add_argument("--flwr-home", default=str(ROOT / ".flwr"), help="private FLWR_HOME (local SuperLink state)")
    args = p.parse_args(argv)
    preset = Path(args.preset) if args.preset.endswith(".toml") else ROOT / "simulations" / f"{args.preset}.toml"
    if not preset.exists():
        raise SystemExit(
            f"no preset {preset}; presets: {', '.join(x.stem for x in (ROOT / 'simulations').glob('*.toml'))}"
        )
    out = Path(args.out or ROOT / "runs" / "federated" / preset.stem).resolve()
    try:
        extra = run_config_overrides(args.set)
    except ValueError as exc:
        p.error(f"--set: {exc}")
    flwr_home = Path(args.flwr_home).resolve()
    # quiet_env: other packages' deprecation notices and per-actor load bars off in every process flwr run starts
    # (the local SuperLink, the simulation, Ray's actors); Flower's INFO lines and our progress bars stay
    env = quiet_env(dict(
        os.environ,
        FLWR_HOME=str(flwr_home),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        HF_HUB_OFFLINE="1",
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    ))
    foreign = foreign_superlinks(flwr_home)
    if foreign:
        raise SystemExit(
            "another local Flower SuperLink holds the simulation ports; stop it first:\n  " + "\n  ".join(foreign)
        )
    rows = []
    try:
        for method in args.methods:
            t0 = time.time()
            path = run_preset(preset, method, args.clients, out, env, extra)
            res = json.loads(path.read_text())
            rows.append((method, res, time.time() - t0))
    finally:
        stop_superlink(_superlink_pids(flwr_home))
    table = summary_table(rows)
    (out / "summary.md").write_text(table + "\n")
    print(f"\n{preset.stem}: {args.clients} clients, results in {out}\n{table}")
    report = write_report([out / method for method, _, _ in rows], out / "report.html",
                          title=f"{preset.stem}: {args.clients} clients, {', '.join(m for m, _, _ in rows)}")
    print(f"\nreport (open in a browser): {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
