"""The run config ``run_federation.sh`` submits: a preset TOML with ``KEY=VALUE`` overrides on top, checked whole.

    python -m simulations.deploy.merge_config PRESET.toml 'resume=true local-steps=4' OUT.toml

``flwr run`` takes either one TOML file or key=value pairs, so the overrides are merged into a copy of the preset.
The overrides string is split like a shell line (``out-dir="/data/my runs"`` stays one item) and read by the one
``KEY=VALUE`` parser (:func:`treelora.overrides.parse_pairs`), each key checked and typed against
:class:`treelora.fed.settings.FedSettings` (:func:`simulations.run.run_config_overrides`); then the merged config as
a whole is parsed as the apps will parse it, so a typo in a key, a value of the wrong type or an out-of-range
setting is refused here, before anything reaches the SuperLink (exit code 2, the message names the key).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import tomli_w
import tomllib

from simulations.run import run_config_overrides
from treelora.fed.settings import FedSettings


def merge(preset: str | Path, overrides: str) -> dict:
    """The preset's keys with the overrides on top; raises ValueError naming a bad item, key or value."""
    config = tomllib.loads(Path(preset).read_text())
    try:
        items = shlex.split(overrides)
    except ValueError as exc:
        raise ValueError(f"overrides {overrides!r}: {exc}") from None
    config.update(run_config_overrides(items))
    FedSettings.from_run_config(config)
    return config


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        config = merge(argv[0], argv[1])
    except (ValueError, tomllib.TOMLDecodeError, OSError) as exc:
        print(f"run_federation.sh: {exc}", file=sys.stderr)
        return 2
    Path(argv[2]).write_text(tomli_w.dumps(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
