"""Logs a person can read: other packages' deprecation notices and per-process load bars off; this project's own
warnings, Flower's INFO lines and this project's progress bars untouched.

What a federated run printed before (``python -m simulations.run``, three methods): per method and per simulated
client process, Ray's ``FutureWarning: Tip: In future versions of Ray ...`` (2 lines), transformers'
``FutureWarning: `is_gradient_checkpointing` is deprecated`` (2 lines, raised when peft wraps the backbone) and a
``Loading weights: 100%|...`` bar — 15 of 65 lines. Three mechanisms, each applied as early as possible:

- :func:`install_warning_filters`: ``warnings.filterwarnings("ignore", category=..., module=...)`` for
  ``FutureWarning``/``DeprecationWarning``/``PendingDeprecationWarning`` whose *module* (where ``warnings.warn``
  attributes them) is one of :data:`THIRD_PARTY` — a warning attributed to ``treelora``, ``client``, ``server``,
  ``protos`` or ``simulations`` is never matched, whatever its category.
- :data:`QUIET_ENV`, set in this process (:func:`quiet_third_party`) and passed to child processes
  (:func:`quiet_env`: ``flwr run``, its SuperLink, SuperExec, the simulation and Ray's actors inherit it):
  ``HF_HUB_DISABLE_PROGRESS_BARS`` turns off transformers' own tqdm (the "Loading weights" bar; this project's
  bars use tqdm directly and stay), ``TRANSFORMERS_VERBOSITY=error`` its per-load advice, Ray's
  ``RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0`` opts into the behaviour its tip announces (an actor with ``num_gpus=0``
  keeps the visible devices; Ray will do so by default), ``RAY_DEDUP_LOGS=1`` folds repeated actor lines, and
  ``PYTHONWARNINGS`` ignores the two known notices by their exact module in processes that warn before any of
  this project's modules is imported.
- Values already in the environment win (``TRANSFORMERS_VERBOSITY=info python -m simulations.run`` shows
  transformers' advice again); ``TREELORA_VERBOSE_LOGS=1`` turns all of this off.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Mapping

__all__ = ["THIRD_PARTY", "QUIET_ENV", "install_warning_filters", "quiet_env", "quiet_third_party"]

#: Top-level packages whose deprecation notices are filtered (never this project's: treelora, client, server, ...).
THIRD_PARTY: tuple[str, ...] = (
    "transformers", "peft", "torch", "torchvision", "huggingface_hub", "tokenizers", "safetensors", "accelerate",
    "sentence_transformers", "ray", "flwr", "grpc", "google", "pydantic", "dp_accounting", "numpy", "scipy",
    "sklearn", "matplotlib", "tqdm", "wn", "gguf", "tomli", "tomli_w",
)
NOISY: tuple[type[Warning], ...] = (FutureWarning, DeprecationWarning, PendingDeprecationWarning)

#: PYTHONWARNINGS entries: ``-W`` syntax matches a module exactly, so only the notices seen in the logs are listed.
_EXACT = ("ignore::FutureWarning:transformers.modeling_utils", "ignore::FutureWarning:ray._private.worker")

QUIET_ENV: dict[str, str] = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "RAY_DEDUP_LOGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": ",".join(_EXACT),
}

_MODULE_RE = r"(?:" + "|".join(re.escape(p) for p in THIRD_PARTY) + r")(?:\..*)?"


def _off() -> bool:
    return os.environ.get("TREELORA_VERBOSE_LOGS", "") not in ("", "0")


def install_warning_filters() -> None:
    """Ignore deprecation-type warnings attributed to a :data:`THIRD_PARTY` module. The filters go in front of
    those already installed, so they decide for exactly these warnings; every other warning meets the filters as
    before (a ``-W error`` still turns this project's own warnings into errors)."""
    if _off():
        return
    for category in NOISY:
        warnings.filterwarnings("ignore", category=category, module=_MODULE_RE)


def quiet_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process' environment) with :data:`QUIET_ENV` added where ``base`` has no value;
    ``PYTHONWARNINGS`` entries are appended to the user's own. For the environment of child processes."""
    env = dict(os.environ if base is None else base)
    if _off() or env.get("TREELORA_VERBOSE_LOGS", "") not in ("", "0"):
        return env
    for key, value in QUIET_ENV.items():
        if key == "PYTHONWARNINGS" and env.get(key):
            env[key] = ",".join([env[key], *[v for v in value.split(",") if v not in env[key].split(",")]])
        else:
            env.setdefault(key, value)
    return env


def quiet_third_party() -> None:
    """Apply all of it to this process: the environment (for what is imported later and for children), the warning
    filters, and transformers' progress bars and verbosity when it is already imported. Call it first thing in an
    entry point (the ClientApp and ServerApp modules, ``simulations.run``)."""
    if _off():
        return
    os.environ.update({k: v for k, v in quiet_env().items() if k in QUIET_ENV})
    install_warning_filters()
    hf = sys.modules.get("transformers")
    if hf is not None:  # imported before us: its bar switch was read already
        try:
            hf.utils.logging.disable_progress_bar()
            if os.environ.get("TRANSFORMERS_VERBOSITY") == "error":
                hf.utils.logging.set_verbosity_error()
        except AttributeError:  # a transformers without these helpers: the environment still applies to children
            pass
