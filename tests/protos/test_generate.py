"""The committed generated code matches the .proto and imports as ``from protos import ...`` (Flower-freedom of
the package: test_layering.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from protos import SCHEMA_VERSION, generate

PROTOS = Path(generate.__file__).resolve().parent
_STAMP = re.compile(r"^# Protobuf Python Version: (\S+)$", re.M)


def _stamp(text: str) -> str | None:
    m = _STAMP.search(text)
    return m.group(1) if m else None


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    if not generate.have_grpc_tools():
        pytest.skip("grpc_tools is not importable (pip install grpcio-tools==1.81.1)")
    out = tmp_path_factory.mktemp("gen")
    generate.generate(out)
    return out


@pytest.mark.parametrize("name", generate.GENERATED)
def test_committed_files_match_regeneration(regenerated, name):
    fresh = (regenerated / name).read_text()
    committed = (PROTOS / name).read_text()
    if fresh != committed and _stamp(fresh) != _stamp(committed):
        pytest.skip(f"this grpcio-tools generates for protobuf {_stamp(fresh)}, the committed files were "
                    f"generated for {_stamp(committed)} (grpcio-tools 1.81.1); cannot compare byte for byte")
    assert fresh == committed, f"protos/{name} is stale: run `python -m protos.generate`"


def test_check_cli_passes():
    if not generate.have_grpc_tools():
        pytest.skip("grpc_tools is not importable (pip install grpcio-tools==1.81.1)")
    proc = subprocess.run([sys.executable, "-m", "protos.generate", "--check"], cwd=generate.REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_check_detects_a_stale_file(monkeypatch, tmp_path):
    if not generate.have_grpc_tools():
        pytest.skip("grpc_tools is not importable (pip install grpcio-tools==1.81.1)")
    for name in generate.GENERATED:
        (tmp_path / name).write_text((PROTOS / name).read_text())
    (tmp_path / "treelora_fed_pb2.pyi").write_text("# stale\n")
    monkeypatch.setattr(generate, "PROTOS_DIR", tmp_path)
    problems = generate.check()
    assert len(problems) == 1 and "treelora_fed_pb2.pyi" in problems[0]


def test_readme_and_script_carry_the_exact_command():
    cmd = "python -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos protos/treelora_fed.proto"
    assert cmd in (PROTOS / "README.md").read_text()
    assert cmd in generate.__doc__
    assert generate.protoc_command()[1:] == cmd.split()[1:]


def test_generated_module_imports_from_the_package():
    from protos import treelora_fed_pb2 as pb

    assert pb.DESCRIPTOR.package == "treelora.fed.v1"
    assert not list(pb.DESCRIPTOR.dependencies), "keep the schema one file without imports"
    top = {"Assignment", "ClientReport", "EvalReport", "Checkpoint", "ErrorReply"}
    assert top <= set(pb.DESCRIPTOR.message_types_by_name)
    for name in top:
        field = pb.DESCRIPTOR.message_types_by_name[name].fields_by_name["version"]
        assert field.number == 1 and field.type == field.TYPE_UINT32
    assert SCHEMA_VERSION == 1

