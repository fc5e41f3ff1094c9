"""The synthetic similarity-search problem of :mod:`simulations.bench_search`, at real signature sizes.

What it holds and why: :class:`Problem` (leaves ``G_i = c_j + sigma_w * W_i B`` around ``clusters`` centres, a
query near one leaf, noisy per-step gradients, in the ``exact`` or the federated ``sketch`` storage mode; the
model is described in ``bench_search``'s docstring), :func:`bulk_tree` (all leaves bulk-loaded, one build) and
:class:`Quality` (regret, hit and same-cluster rates of a method's pulls, judged against the *exact*
p-dimensional distances). Kept apart from the benchmark driver so that the driver stays a page long and the
problem can be reused (other selectors, tests) without running the benchmark.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from treelora.sketch import LinearSketch
from treelora.tree import TaskTree, TreeEntry, l1_distance

__all__ = ["SERVER_SKETCH_SEED", "Problem", "bulk_tree", "Quality"]

SERVER_SKETCH_SEED = 1234  # treelora.fed.settings.FedSettings.sketch_seed


class Problem:
    """Leaves, query and per-step gradients of one synthetic search problem (``bench_search``'s docstring)."""

    def __init__(self, n: int, *, mode: str, layers: int, p: int, s: int, clusters: int, rank: int,
                 sigma_w: float, sigma_q: float, sigma_s: float, steps: int, seed: int) -> None:
        self.n, self.mode, self.L, self.p, self.s = n, mode, layers, p, s
        self.steps = steps
        gen = torch.Generator().manual_seed(seed)
        self.gen = gen
        self.sigma_q, self.sigma_s = sigma_q, sigma_s
        self.sketch = LinearSketch(p, s, "cauchy", SERVER_SKETCH_SEED) if mode == "sketch" else None
        M = self.sketch.matrix() if self.sketch is not None else None
        k = min(clusters, n)
        self.cluster = torch.arange(n) % k
        self.C = torch.randn(layers, k, p, generator=gen)
        self.B = torch.randn(layers, rank, p, generator=gen)
        self.W = torch.randn(n, layers, rank, generator=gen) / math.sqrt(rank)
        self.sigma_w = sigma_w
        t0 = time.perf_counter()
        if mode == "exact":
            # (n, L, p) float32: the signatures the centralised learner would store
            self.sig = torch.empty(n, layers, p)
            for l in range(layers):
                self.sig[:, l] = self.C[l][self.cluster] + sigma_w * (self.W[:, l] @ self.B[l])
        else:
            SC = self.C @ M  # (L, k, s)
            SB = self.B @ M  # (L, rank, s)
            self.sig = torch.empty(n, layers, s)
            for l in range(layers):
                self.sig[:, l] = SC[l][self.cluster] + sigma_w * (self.W[:, l] @ SB[l])
        self.gen_s = time.perf_counter() - t0

    def leaf_p(self, idx: torch.Tensor, layer: int) -> torch.Tensor:
        """Exact p-dimensional signatures of some leaves on one layer."""
        if self.mode == "exact":
            return self.sig[idx, layer]
        return self.C[layer][self.cluster[idx]] + self.sigma_w * (self.W[idx, layer] @ self.B[layer])

    _QUERY_FIELDS = ("istar", "q", "truth_s", "kstar", "dstar", "dmean", "obs", "_dcache", "truth_check")

    def new_query(self, qseed: int, sample: int = 2000) -> None:
        """Pick the query's leaf i*, its p-dim vector per layer, the true nearest arm and the T step gradients
        (cached per seed).

        Exact p-dim distances d_k = ||q - G_k||_1 / p are computed for every leaf of i*'s cluster (where the
        nearest lies), for a uniform sample of ``sample`` leaves (the mean distance of a random arm, which
        normalises the regret, and a check that no other cluster comes close), and lazily for every arm a method
        pulls. Computing all 10^5 x 12 x 6144 distances per query would take minutes on this machine.
        """
        cache = self.__dict__.setdefault("_queries", {})
        if qseed in cache:
            for k, v in zip(self._QUERY_FIELDS, cache[qseed]):
                setattr(self, k, v)
            return
        g = torch.Generator().manual_seed(qseed)
        self.istar = int(torch.randint(self.n, (1,), generator=g))
        L, p = self.L, self.p
        idx = torch.tensor([self.istar])
        self.q = torch.stack([self.leaf_p(idx, l)[0] for l in range(L)]) + self.sigma_q * torch.randn(L, p, generator=g)
        t0 = time.perf_counter()
        self._dcache = {}
        members = torch.nonzero(self.cluster == self.cluster[self.istar]).flatten()
        dm = self.exact_distances(members)  # (L, |cluster|)
        self.kstar = members[torch.from_numpy(dm.argmin(axis=1))].numpy()
        self.dstar = dm.min(axis=1)
        if self.n <= sample:
            smp = torch.arange(self.n)
        else:
            smp = torch.randperm(self.n, generator=g)[:sample]
        ds = self.exact_distances(smp)
        self.dmean = ds.mean(axis=1)
        other = (self.cluster[smp] != self.cluster[self.istar]).numpy()
        self.truth_check = {
            "cluster_size": int(len(members)), "sample": int(len(smp)),
            "min_other_cluster_over_nearest": float((ds[:, other].min(axis=1) / self.dstar).min()) if other.any()
            else None,
            "nearest_is_istar_layers": int((self.kstar == self.istar).sum()),
        }
        self.truth_s = time.perf_counter() - t0
        scale = torch.exp(0.3 * torch.randn(self.steps, generator=g))
        grads = self.q.unsqueeze(0) + self.sigma_s * scale.view(-1, 1, 1) * torch.randn(self.steps, L, p, generator=g)
        # what the selector sees of g_t: the full vector (exact) or its sketch (federated)
        self.obs = grads if self.mode == "exact" else grads @ self.sketch.matrix()
        cache[qseed] = tuple(getattr(self, k) for k in self._QUERY_FIELDS)

    def exact_distances(self, idx: torch.Tensor) -> np.ndarray:
        """(L, len(idx)) exact ||q_l - G_k,l||_1 / p, memoised per leaf for the current query."""
        idx = idx.flatten()
        todo = [int(i) for i in idx.tolist() if int(i) not in self._dcache]
        for a in range(0, len(todo), 2048):
            ids = torch.tensor(todo[a:a + 2048])
            cols = torch.stack([(self.leaf_p(ids, l) - self.q[l]).abs().sum(dim=1) / self.p for l in range(self.L)])
            for j, i in enumerate(ids.tolist()):
                self._dcache[i] = cols[:, j].double().numpy()
        return np.stack([self._dcache[int(i)] for i in idx.tolist()], axis=1)

    def xi(self, t: int, layer: int, key: str) -> float:
        """Observed loss of one pulled arm (the learner's / the client probe's formula)."""
        i = int(key[1:])
        if self.mode == "exact":
            return float((self.obs[t, layer] - self.sig[i, layer]).abs().sum()) / self.p
        return float(self.sketch.l1_distance(self.obs[t, layer], self.sig[i, layer])) / self.p

    def scan(self, t: int) -> list[int]:
        """Exact nearest scan: xi to every arm of every layer, argmin per layer (N x L distance evaluations)."""
        out = []
        for l in range(self.L):
            if self.mode == "exact":
                dist = (self.sig[:, l] - self.obs[t, l]).abs().sum(dim=1)
            else:
                dist = self.sketch.l1_distance(self.obs[t, l], self.sig[:, l])
            out.append(int(torch.argmin(dist)))
        return out

    def distance_fn(self, estimator: str = "median"):
        """The tree's distance: exact L1, or the sketch's L1 estimate by ``estimator`` (the server's
        ``tree-estimator``)."""
        if self.mode == "exact":
            return l1_distance
        sk = self.sketch
        return lambda layer, a, b: sk.l1_distance(a, b, estimator=estimator)


def bulk_tree(prob: Problem, leaf_size: int, split: str = "l1-median", estimator: str = "median"
              ) -> tuple[TaskTree, float]:
    """All leaves loaded as entries (as ``TaskTree.from_dict`` does), then one ``build()`` with the ``split`` rule;
    returns build seconds."""
    tree = TaskTree(prob.L, split=split, leaf_size=leaf_size, distance_fn=prob.distance_fn(estimator))
    tree.layer_free_distance = True  # one distance for every layer
    for i in range(prob.n):
        key = f"k{i}"
        tree.entries[key] = TreeEntry(key, list(prob.sig[i].unbind(0)), [key], 1.0, None)
        tree._member_index[key] = key
    t0, c0 = time.perf_counter(), time.process_time()
    tree.build()
    tree.build_cpu_s = time.process_time() - c0  # type: ignore[attr-defined]
    return tree, time.perf_counter() - t0


class Quality:
    """Accumulates the regret statistics of one method's pulls."""

    def __init__(self, prob: Problem) -> None:
        self.prob = prob
        self.reg, self.nreg, self.hit, self.same = [], [], [], []
        self.late_nreg: list[float] = []
        self.counts: list[dict[int, int]] = [dict() for _ in range(prob.L)]
        self.final_hit: list[float] = []

    def add(self, t: int, arms: list[int]) -> None:
        p = self.prob
        d = p.exact_distances(torch.tensor(arms))  # (L, L): column j = arm pulled on layer j
        for l, k in enumerate(arms):
            r = d[l, l] - p.dstar[l]
            nr = r / max(p.dmean[l] - p.dstar[l], 1e-12)
            self.reg.append(r)
            self.nreg.append(nr)
            self.hit.append(float(k == p.kstar[l]))
            self.same.append(float(int(p.cluster[k]) == int(p.cluster[p.kstar[l]])))
            if t >= (3 * p.steps) // 4:
                self.late_nreg.append(nr)
            self.counts[l][k] = self.counts[l].get(k, 0) + 1

    def end_run(self) -> None:
        p = self.prob
        for l in range(p.L):
            if self.counts[l]:
                best = max(self.counts[l].items(), key=lambda kv: kv[1])[0]
                self.final_hit.append(float(best == p.kstar[l]))
        self.counts = [dict() for _ in range(p.L)]

    def summary(self) -> dict[str, float]:
        m = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
        return {"regret": m(self.reg), "norm_regret": m(self.nreg), "norm_regret_last_quarter": m(self.late_nreg),
                "hit_rate": m(self.hit), "same_cluster_rate": m(self.same), "final_pick_is_nearest": m(self.final_hit),
                "pulls": len(self.reg)}
