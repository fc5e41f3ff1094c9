"""treelora.logs: other packages' deprecation notices are filtered, this project's own warnings are not."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

from treelora.backbones import load_backbone
from treelora.logs import QUIET_ENV, install_warning_filters, quiet_env


def _warn_from(module: str, message: str, category: type[Warning]) -> None:
    """``warnings.warn`` executed by code whose module is ``module`` (as a warning raised inside that package)."""
    code = compile("import warnings\nwarnings.warn(MESSAGE, CATEGORY)\n", f"<{module}>", "exec")
    exec(code, {"__name__": module, "MESSAGE": message, "CATEGORY": category})


def test_transformers_notice_is_filtered_and_ours_is_not():
    model = load_backbone("tiny-bert").model
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        install_warning_filters()
        assert model.is_gradient_checkpointing is False  # the real transformers FutureWarning (what peft triggers)
        _warn_from("ray._private.worker", "Tip: In future versions of Ray ...", FutureWarning)
        _warn_from("treelora.learner", "ours: a deprecated knob", FutureWarning)
        _warn_from("client.node", "ours: deprecated", DeprecationWarning)
        warnings.warn("ours: from a test", UserWarning, stacklevel=1)
    assert sorted(str(w.message) for w in caught) == ["ours: a deprecated knob", "ours: deprecated",
                                                       "ours: from a test"]


def test_without_filters_the_transformers_notice_shows():
    model = load_backbone("tiny-bert").model
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.is_gradient_checkpointing  # noqa: B018 - the property warns
    assert any("is_gradient_checkpointing" in str(w.message) and w.category is FutureWarning for w in caught)


def test_quiet_env_keeps_the_users_values_and_appends_warning_options():
    env = quiet_env({"TRANSFORMERS_VERBOSITY": "info", "PYTHONWARNINGS": "error::UserWarning"})
    assert env["TRANSFORMERS_VERBOSITY"] == "info"
    assert env["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and env["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] == "0"
    assert env["PYTHONWARNINGS"].split(",")[0] == "error::UserWarning"
    assert "ignore::FutureWarning:transformers.modeling_utils" in env["PYTHONWARNINGS"]
    assert quiet_env({"TREELORA_VERBOSE_LOGS": "1"}) == {"TREELORA_VERBOSE_LOGS": "1"}


def test_client_app_import_quiets_a_fresh_process():
    """What a deployed message's process does: import the ClientApp module, then load a backbone — no bar, no
    transformers notice on stderr; the PYTHONWARNINGS option is valid (no 'Invalid -W option' complaint)."""
    code = ("import client.client_app\nfrom treelora.backbones import load_backbone\nfrom treelora.adapters import "
            "LayerwiseLoRA\nLayerwiseLoRA(load_backbone('minilm').model)\nprint('ok')\n")
    env = {k: v for k, v in os.environ.items() if k not in QUIET_ENV and k != "TREELORA_VERBOSE_LOGS"}
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, "-c", code], env=quiet_env(env), capture_output=True, text=True,
                          timeout=300, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert "Loading weights" not in proc.stderr and "FutureWarning" not in proc.stderr, proc.stderr
    assert "Invalid -W option" not in proc.stderr
    # and without the quiet environment the same process is noisy: the test measures something
    env_loud = dict(env, TREELORA_VERBOSE_LOGS="1")
    loud = subprocess.run([sys.executable, "-c", code], env=env_loud, capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert loud.returncode == 0, loud.stderr
    assert "Loading weights" in loud.stderr and "is_gradient_checkpointing" in loud.stderr
