"""Flower ServerApp of TreeLoRA-Fed: parses the run config, runs :func:`server.loop.run`, writes the results."""

from __future__ import annotations

from treelora.logs import quiet_third_party

quiet_third_party()  # other packages' deprecation notices off before Ray and transformers load (treelora/logs.py)

# isort: split
from flwr.app import Context  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402

from treelora.fed.settings import FedSettings  # noqa: E402

from .loop import run  # noqa: E402
from .report import write_results  # noqa: E402

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Custom round loop: per-node messages, global tree, layer-wise sharing, checkpoints."""
    fed = FedSettings.from_run_config(context.run_config)
    results = run(grid, fed, run_id=str(grid.run.run_id))
    out = write_results(results, fed.out_dir)
    print(f"TreeLoRA-Fed results: {out}")
