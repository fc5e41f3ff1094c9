"""The global tree's node centres on disk: append-only safetensors segments, so a checkpoint writes only new ones.

A centroid tree's internal nodes each hold their children's centres (2 × layers × sketch width floats): at 10^4
leaves they were ≈ 90% of every round's checkpoint, although a round changes only the few nodes its inserts split
(a centre is set when a node is built and never edited in place; a rebuild replaces them all). So the checkpoint
refers to each centre by ``(segment, name)`` and :meth:`CentreStore.persist` writes the centres not yet on disk as
one new segment file, durably, before the checkpoint that refers to it. Segments no checkpoint refers to any more
are deleted only after the newer checkpoint is durable (:meth:`CentreStore.prune`), so a crash at any moment
leaves the last checkpoint's segments in place.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from treelora.io import write_bytes_atomic
from treelora.tree import Node

__all__ = ["CentreStore"]

_SEGMENT = re.compile(r"^centres-(\d{6,})\.safetensors$")


class CentreStore:
    """Node centres in ``directory/centres-<serial>.safetensors`` segments (module docstring)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        found = [int(_SEGMENT.match(p.name).group(1)) for p in self._segment_files()]
        self.serial = max(found, default=-1) + 1  # never reuse a name a checkpoint may still refer to
        # id(centre) -> (weak reference to it, segment, name): a centre already on disk is referred to, not rewritten
        self._saved: dict[int, tuple[weakref.ref, str, str]] = {}
        self.referenced: set[str] = set()

    def persist(self, nodes: Iterable[Node]) -> dict[str, dict[str, str]]:
        """``{node path: {"segment", "name"}}`` for every node with a centre, writing the new ones (one segment)."""
        refs: dict[str, dict[str, str]] = {}
        new: dict[str, torch.Tensor] = {}
        segment = f"centres-{self.serial:06d}.safetensors"
        saved: dict[int, tuple[weakref.ref, str, str]] = {}
        for node in nodes:
            centre = node.center
            if centre is None:
                continue
            hit = self._saved.get(id(centre))
            if hit is not None and hit[0]() is centre:
                saved[id(centre)] = hit
            else:
                name = "n" + node.path
                new[name] = centre.detach().contiguous()
                saved[id(centre)] = (weakref.ref(centre), segment, name)
            refs[node.path] = {"segment": saved[id(centre)][1], "name": saved[id(centre)][2]}
        if new:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(self.directory / segment, save(new))
            self.serial += 1
        self._saved = saved
        self.referenced = {r["segment"] for r in refs.values()}
        return refs

    def load(self, refs: dict[str, dict[str, str]]) -> dict[str, torch.Tensor]:
        """``{node path: centre}`` read back from the segments ``refs`` names; each is then known to be on disk."""
        segments: dict[str, dict[str, torch.Tensor]] = {}
        out: dict[str, torch.Tensor] = {}
        for path, ref in refs.items():
            seg = ref["segment"]
            if seg not in segments:
                file = self.directory / seg
                if not file.exists():
                    raise FileNotFoundError(f"resume: the tree's centre segment {file} (node {path!r}) is missing")
                try:
                    segments[seg] = load_file(file)
                except (SafetensorError, OSError) as exc:
                    raise ValueError(f"resume: the tree's centre segment {file} cannot be read: {exc}") from exc
            if ref["name"] not in segments[seg]:
                raise ValueError(f"resume: centre {ref['name']!r} of node {path!r} is not in {seg}")
            centre = segments[seg][ref["name"]]
            out[path] = centre
            self._saved[id(centre)] = (weakref.ref(centre), seg, ref["name"])
        self.referenced = {r["segment"] for r in refs.values()}
        return out

    def prune(self) -> list[str]:
        """Delete the segments the last :meth:`persist` (or :meth:`load`) did not refer to; returns their names.
        Call only once the checkpoint written from that persist is durable."""
        gone = []
        for p in self._segment_files():
            if p.name not in self.referenced:
                p.unlink()
                gone.append(p.name)
        return sorted(gone)

    def nbytes(self) -> int:
        """Bytes of the segment files on disk."""
        return sum(p.stat().st_size for p in self._segment_files())

    def _segment_files(self) -> list[Path]:
        """The segment files in the directory (none before it exists)."""
        if not self.directory.exists():
            return []
        return [p for p in self.directory.glob("centres-*.safetensors") if _SEGMENT.match(p.name)]
