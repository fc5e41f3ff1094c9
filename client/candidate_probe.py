"""The client's per-step bandit over the candidate leaves the server sent, measured in sketch space.

Each step, for every layer with candidates, the probe pulls the candidate with the smallest lower confidence bound
(``mean ξ − c·sqrt(log t / n)``, −∞ for an unpulled one) and measures ξ = the sketch estimate of
‖ĝ[l] − G_leaf[l]‖₁ / dim between this step's gradient and the candidate's stored signature. The ξ sums per
(layer, leaf) go back to the server in the report (``Pull``), which folds them into that client's bandit over
the global tree.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from protos import treelora_fed_pb2 as pb
from protos.wire import make_pull
from treelora.sketch import LayerSketcher

__all__ = ["CandidateProbe"]


class CandidateProbe:
    """Per-layer LCB over the received candidate leaves, in sketch space; sums ξ per (layer, leaf)."""

    def __init__(self, candidates: dict[int, dict[str, torch.Tensor]], sketcher: LayerSketcher, dims: list[int],
                 c: float = 2.0, vectors: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None,
                 mine: list[torch.Tensor] | None = None) -> None:
        self.candidates = candidates
        self.mine = mine  # this task's own released sketch, when leaves are placed by a shared-probe signature
        self.vectors = vectors or (lambda grads: grads)  # what a step compares: the signature's step vectors
        self.sketcher = sketcher
        self.dims = dims
        self.c = c
        self.sums: dict[tuple[int, str], float] = {}
        self.counts: dict[tuple[int, str], int] = {}
        self.t = 0

    def _lcb(self, layer: int, leaf: str) -> float:
        n = self.counts.get((layer, leaf), 0)
        if n == 0:
            return -math.inf
        return self.sums[(layer, leaf)] / n - self.c * math.sqrt(math.log(max(self.t, 2)) / n)

    def __call__(self, grads: list[torch.Tensor]) -> None:
        """One step: pull one candidate per layer and record its ξ (the learner's ``on_step`` hook)."""
        self.t += 1
        vectors = self.vectors(grads)
        for layer, cands in self.candidates.items():
            if not cands:
                continue
            best, best_key = math.inf, None
            for leaf in cands:
                lcb = self._lcb(layer, leaf)
                if lcb < best:
                    best, best_key = lcb, leaf
            assert best_key is not None
            if self.mine is not None:
                mine = self.mine[layer]
            else:
                mine = self.sketcher.layer(layer).apply(vectors[layer].detach().float().cpu())
            xi = float(self.sketcher.distance(layer, mine, cands[best_key])) / self.dims[layer]
            self.sums[(layer, best_key)] = self.sums.get((layer, best_key), 0.0) + xi
            self.counts[(layer, best_key)] = self.counts.get((layer, best_key), 0) + 1

    def pulls(self) -> list[pb.Pull]:
        """The report's pulls: one per (layer, leaf) pulled, with the ξ sum and the count."""
        return [
            make_pull(layer, leaf, self.sums[(layer, leaf)], n)
            for (layer, leaf), n in sorted(self.counts.items())
        ]
