"""House rules a tool checks: dependencies point one way, one registry per kind of variant, small modules.

tests/, simulations/ -> client/, server/ -> protos/, treelora/. Neither app imports the other; treelora/ never
imports Flower (the algorithm works without federation); protos/ imports Flower only in its envelope module.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATED = {"protos/treelora_fed_pb2.py", "protos/treelora_fed_pb2.pyi"}


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if str(p.relative_to(ROOT)) not in GENERATED)


def _imports(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (absolute imports; relative ones stay in the package)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


FORBIDDEN = {
    "treelora": {"flwr", "client", "server", "protos", "simulations", "tests"},
    "protos": {"client", "server", "treelora", "simulations", "tests"},
    "client": {"server", "simulations", "tests"},
    "server": {"client", "simulations", "tests"},
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_point_one_way(package):
    bad = {}
    for path in _modules(package):
        names = _imports(path) & FORBIDDEN[package]
        if package == "protos" and path.name != "envelope.py":
            names |= _imports(path) & {"flwr"}
        if names:
            bad[str(path.relative_to(ROOT))] = sorted(names)
    assert not bad, f"imports against the house rule: {bad}"


def test_no_hand_written_module_is_over_450_lines():
    long = {str(p.relative_to(ROOT)): n for pkg in ("treelora", "protos", "client", "server", "simulations")
            for p in _modules(pkg) if (n := len(p.read_text().splitlines())) > 450}
    assert not long, f"split these modules: {long}"


def test_every_federated_method_has_its_server_strategy():
    from server.strategies import STRATEGY_REGISTRY
    from treelora.fed.methods import FED_METHOD_REGISTRY

    assert sorted(STRATEGY_REGISTRY.names()) == sorted(FED_METHOD_REGISTRY.names())
