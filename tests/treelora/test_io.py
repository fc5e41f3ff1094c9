"""Durable writes: atomic, fsync'd, the usual permissions, nothing left behind on failure."""

import os

import pytest

from treelora.io import save_torch_atomic, write_bytes_atomic, write_json_atomic


def test_atomic_writes_replace_whole_files_with_normal_permissions(tmp_path):
    p = write_bytes_atomic(tmp_path / "a" / "x.bin", b"one")
    assert p.read_bytes() == b"one"
    write_bytes_atomic(p, b"two")
    assert p.read_bytes() == b"two" and sorted(os.listdir(p.parent)) == ["x.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~umask)
    write_json_atomic(tmp_path / "r.json", {"a": 1})
    assert (tmp_path / "r.json").read_text() == '{\n  "a": 1\n}'
    save_torch_atomic({"k": 1}, tmp_path / "s.pt")
    assert (tmp_path / "s.pt").stat().st_size > 0


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    p = write_bytes_atomic(tmp_path / "x.bin", b"old")
    with pytest.raises(TypeError):
        write_bytes_atomic(p, "not bytes")  # type: ignore[arg-type]
    assert p.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.bin"]
