"""Flower ServerApp of TreeLoRA-Fed: parses the run config, runs :func:`server.loop.run`, writes the results."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from treelora.fed.settings import FedSettings

from .loop import run
from .report import write_results

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Custom round loop: per-node messages, global tree, layer-wise sharing, checkpoints."""
    fed = FedSettings.from_run_config(context.run_config)
    results = run(grid, fed, run_id=str(grid.run.run_id))
    out = write_results(results, fed.out_dir)
    print(f"TreeLoRA-Fed results: {out}")
