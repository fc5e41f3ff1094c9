"""Real-process deployment tests: SuperLink + SuperNodes on loopback, started through simulations/deploy/*.sh by
the harness they share with the demo (:mod:`simulations.deploy.harness`).

Every process a test starts carries a unique ``TREELORA_DEPLOY_TAG`` in its environment, which its children
(SuperExec, ServerApp, ClientApp processes) inherit; the fixture's finalizer kills exactly the processes with that
tag, so nothing survives a failed test. Ports are chosen free at run time. Logs stay under the test's tmp dir and
the tail of each is attached to a failure message.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from simulations.deploy.harness import (  # noqa: F401  (re-exported for the tests)
    BIN,
    DEPLOY,
    ROOT,
    TINY,
    Deployment,
    Proc,
    checkpoint_round,
    free_port,
    kill_pids,
    process_tree,
    tagged_pids,
)


def _missing_tools() -> list[str]:
    missing = [t for t in ("flower-superlink", "flower-supernode", "flwr", "flower-superexec")
               if not (BIN / t).exists() and shutil.which(t) is None]
    if shutil.which("bash") is None:
        missing.append("bash")
    if not Path("/proc/self/environ").exists():
        missing.append("Linux /proc (process-tree cleanup)")
    return missing


def pytest_collection_modifyitems(config, items):  # noqa: ARG001
    for item in items:
        if "tests/deployment" in str(item.fspath):
            item.add_marker(pytest.mark.slow)  # real SuperLink / SuperNode processes
    missing = _missing_tools()
    if missing:
        skip = pytest.mark.skip(reason=f"deployment tests need {', '.join(missing)} (the flwr 1.42 CLIs of this venv, "
                                       "bash and Linux /proc; openssl is optional: cryptography is the fallback)")
        for item in items:
            if "tests/deployment" in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture
def deployment(tmp_path, request):
    dep = Deployment(tmp_path)
    yield dep
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(dep.diagnostics())
    dep.cleanup()
    left = tagged_pids(dep.tag)
    assert not left, f"processes left behind: {left}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # noqa: ARG001
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
