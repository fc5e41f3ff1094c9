"""protos/ layering: one Flower-aware module (envelope.py), no imports of the rest of the project, and a
façade (protos.wire) that re-exports each name from the module that owns it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import protos
from protos import wire

PROTOS = Path(protos.__file__).resolve().parent
GENERATED = {"treelora_fed_pb2.py"}
FLOWER_AWARE = {"envelope.py"}
MODULES = sorted(p.name for p in PROTOS.glob("*.py"))

WIRE_ALL = [
    "SCHEMA_VERSION", "SKETCH_SPEC_VERSION", "SKETCH_KINDS", "WIRE_DTYPES", "ERROR_CODES",
    "DEFAULT_MAX_TENSOR_BYTES", "DEFAULT_MAX_MESSAGE_BYTES", "DEFAULT_MAX_CHECKPOINT_BYTES", "ProtocolError",
    "error_reply", "serialize", "adapter_name", "sketch_name", "final_name", "cand_name", "share_name", "warm_name",
    "proto_name", "parse_proto_name", "PROTO_KINDS",
    "WARM_HEAD_WEIGHT", "WARM_HEAD_BIAS", "encode_tensor", "decode_tensor", "encode_tensors", "validate_tensors",
    "parse_assignment", "parse_report", "parse_eval", "parse_checkpoint", "parse_error", "validate_report",
    "validate_probe", "validate_done", "is_done_report", "ReportExpectation", "MAX_ADAPTER_ABS", "MAX_SKETCH_ABS",
    "MAX_FEATURE_ABS",
    "validate_assignment", "shared_parts", "expected_report_tensors", "expected_assignment_tensors", "make_tensor_info",
    "make_sketch_spec", "make_layer_assignment", "make_assignment", "make_pull", "make_report", "make_eval",
    "make_leaf_record", "make_checkpoint", "make_error", "sketch_spec_to_dict", "sketch_spec_from_dict",
]


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports, anywhere in it (function-level imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_the_modules_are_the_documented_ones():
    assert set(MODULES) == {"__init__.py", "codec.py", "envelope.py", "errors.py", "generate.py", "messages.py",
                            "names.py", "report_validation.py", "sketch_spec.py", "treelora_fed_pb2.py",
                            "validation.py", "wire.py"}


@pytest.mark.parametrize("name", [m for m in MODULES if m not in GENERATED | FLOWER_AWARE])
def test_protos_package_is_framework_free(name):
    assert "flwr" not in imported_packages(PROTOS / name), f"protos/{name} imports flwr (only envelope.py may)"


def test_envelope_is_the_flower_aware_module():
    assert "flwr" in imported_packages(PROTOS / "envelope.py")
    assert "envelope" in protos.__doc__ and "Flower" in protos.__doc__


@pytest.mark.parametrize("name", MODULES)
def test_protos_imports_nothing_of_the_project(name):
    assert not imported_packages(PROTOS / name) & {"treelora", "client", "server", "simulations"}, name


def test_importing_the_contract_does_not_import_flower():
    mods = ", ".join(f"protos.{m[:-3]}" for m in MODULES if m not in FLOWER_AWARE | {"__init__.py"})
    code = f"import sys, {mods}; sys.exit(any(m == 'flwr' or m.startswith('flwr.') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=PROTOS.parent, timeout=120).returncode == 0


def test_facade_re_exports_the_public_api_unchanged():
    assert wire.__all__ == WIRE_ALL
    owners = {}
    for module in ("errors", "names", "codec", "messages", "validation", "report_validation", "sketch_spec"):
        mod = __import__(f"protos.{module}", fromlist=["__all__"])
        for name in mod.__all__:
            owners.setdefault(name, []).append(module)
    for name in WIRE_ALL:
        if name == "SCHEMA_VERSION":
            assert wire.SCHEMA_VERSION is protos.SCHEMA_VERSION
            continue
        assert len(owners.get(name, [])) == 1, f"{name} must be owned by exactly one module: {owners.get(name)}"
        owner = __import__(f"protos.{owners[name][0]}", fromlist=[name])
        assert getattr(wire, name) is getattr(owner, name)


def test_docstrings_point_to_design_md():
    for name in ("wire.py", "errors.py", "names.py", "codec.py", "messages.py", "validation.py", "sketch_spec.py",
                 "envelope.py", "__init__.py"):
        doc = ast.get_docstring(ast.parse((PROTOS / name).read_text()))
        assert doc, f"protos/{name} has no docstring"
        if "DESIGN.md" in doc:
            assert "repository root" in doc, name
