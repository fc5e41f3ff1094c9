"""Regenerate (or, with ``--check``, verify) the committed protobuf code for ``protos/treelora_fed.proto``.

    python -m protos.generate            # rewrite protos/treelora_fed_pb2.py and protos/treelora_fed_pb2.pyi
    python -m protos.generate --check    # regenerate into a temp dir; exit 1 if the committed files differ

Run from the repository root. The command it runs is exactly::

    python -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos protos/treelora_fed.proto

The generated code records the protobuf version of the protoc bundled with grpcio-tools (grpcio-tools 1.81.1
→ protobuf 6.33.5), and needs a protobuf runtime at least that new. Exit codes: 0 ok, 1 differs, 2 grpc_tools
missing or protoc failed.
"""

from __future__ import annotations

import argparse
import difflib
import subprocess
import sys
import tempfile
from pathlib import Path

PROTOS_DIR = Path(__file__).resolve().parent
REPO_ROOT = PROTOS_DIR.parent
PROTO = "treelora_fed.proto"
GENERATED = ("treelora_fed_pb2.py", "treelora_fed_pb2.pyi")


def protoc_command(out_dir: str = "protos") -> list[str]:
    """The protoc invocation (run from the repository root), writing into ``out_dir``."""
    return [sys.executable, "-m", "grpc_tools.protoc", "-Iprotos", f"--python_out={out_dir}",
            f"--pyi_out={out_dir}", f"protos/{PROTO}"]


def have_grpc_tools() -> bool:
    try:
        import grpc_tools.protoc  # noqa: F401
    except ImportError:
        return False
    return True


def generate(out_dir: str | Path = "protos") -> None:
    """Run protoc into ``out_dir`` (relative paths are relative to the repository root)."""
    proc = subprocess.run(protoc_command(str(out_dir)), cwd=REPO_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"protoc failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")


def check() -> list[str]:
    """Regenerate into a temp dir; return one message per generated file that differs from the committed one."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp)
        for name in GENERATED:
            fresh = (Path(tmp) / name).read_text()
            committed_path = PROTOS_DIR / name
            if not committed_path.exists():
                problems.append(f"protos/{name} is missing (run `python -m protos.generate`)")
                continue
            committed = committed_path.read_text()
            if fresh != committed:
                diff = "".join(list(difflib.unified_diff(committed.splitlines(True), fresh.splitlines(True),
                                                         f"protos/{name} (committed)", f"{name} (regenerated)"))[:40])
                problems.append(f"protos/{name} differs from a fresh generation:\n{diff}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m protos.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="regenerate into a temp dir and exit 1 if the committed files differ")
    args = parser.parse_args(argv)
    if not have_grpc_tools():
        print("grpc_tools is not installed: pip install grpcio-tools==1.81.1", file=sys.stderr)
        return 2
    try:
        if args.check:
            problems = check()
            for p in problems:
                print(p, file=sys.stderr)
            if not problems:
                print("protos: generated files are up to date")
            return 1 if problems else 0
        generate()
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    print("protos: wrote " + ", ".join(f"protos/{n}" for n in GENERATED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
