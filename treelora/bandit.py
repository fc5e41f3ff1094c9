"""Which earlier task should each layer look at this step? Three selectors over the tasks stored in a TaskTree.

* :class:`TreeLCBBandit` (paper, DESIGN.md §2 "LCB bandit"): per layer, descend the tree taking at every node the
  child with the smallest lower confidence bound. Leaf arm: ``μ̂_k − c·sqrt(log t / n_k)`` (−∞ if never pulled);
  internal node (smooth-tree bound): ``max(min_children LCB, μ̂_v − c·sqrt(log t / n_v) − δ_depth)``. Pulling
  costs one distance evaluation per layer; statistics are updated along the pulled path and the cached
  ``min_children`` bounds are refreshed bottom-up along that path only (as in HOO), so a step is O(depth).
* :class:`FlatLCBBandit`: the same arm bounds, argmin over every arm (O(n) per layer) — the baseline the tree
  descent is measured against.
* :class:`OfficialSoftmaxSampler` (released code, DESIGN.md §8): per-module softmax sampling
  of a score that grows with distance, statistics reset every epoch, a root-only tree bias.

Losses are the observed distances ξ. Their scale depends on the model, so the LCB selectors divide means by the
layer's running mean loss: ``c`` and ``δ`` are then unit-free and the defaults (c = 2) carry across backbones.
Ties are broken by a seeded generator so that unpulled siblings are explored in random order.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .tree import Node, TaskTree


class _ArmStats:
    """Per-layer sum and count of observed losses for every arm (tree entry key)."""

    def __init__(self, num_layers: int) -> None:
        self.num_layers = num_layers
        self.sum: dict[str, np.ndarray] = {}
        self.cnt: dict[str, np.ndarray] = {}
        self.layer_sum = np.zeros(num_layers)
        self.layer_cnt = np.zeros(num_layers)

    def ensure(self, key: str) -> None:
        if key not in self.sum:
            self.sum[key] = np.zeros(self.num_layers)
            self.cnt[key] = np.zeros(self.num_layers)

    def add(self, layer: int, key: str, loss: float, count: int = 1) -> None:
        """Record ``count`` pulls whose losses sum to ``loss``."""
        self.ensure(key)
        self.sum[key][layer] += loss
        self.cnt[key][layer] += count
        self.layer_sum[layer] += loss
        self.layer_cnt[layer] += count

    def scale(self, layer: int) -> float:
        if self.layer_cnt[layer] == 0:
            return 1.0
        mean = self.layer_sum[layer] / self.layer_cnt[layer]
        return mean if mean > 0 else 1.0

    def absorb_merges(self, tree: TaskTree) -> None:
        """Stats of entries merged by a storage budget become the merged entry's stats."""
        for key in list(self.sum):
            first = key.split("+")[0]
            if key in tree.entries or first not in tree:
                continue
            target = tree.entry_of(first).key
            self.ensure(target)
            self.sum[target] += self.sum.pop(key)
            self.cnt[target] += self.cnt.pop(key)

    def state(self) -> dict:
        return {
            "sum": {k: v.tolist() for k, v in self.sum.items()},
            "cnt": {k: v.tolist() for k, v in self.cnt.items()},
            "layer_sum": self.layer_sum.tolist(),
            "layer_cnt": self.layer_cnt.tolist(),
        }

    def load(self, state: dict) -> None:
        self.sum = {k: np.asarray(v, dtype=float) for k, v in state["sum"].items()}
        self.cnt = {k: np.asarray(v, dtype=float) for k, v in state["cnt"].items()}
        self.layer_sum = np.asarray(state["layer_sum"], dtype=float)
        self.layer_cnt = np.asarray(state["layer_cnt"], dtype=float)


class _LCBBase:
    def __init__(self, tree: TaskTree, *, c: float = 2.0, seed: int = 0) -> None:
        self.tree = tree
        self.c = float(c)
        self.stats = _ArmStats(tree.num_layers)
        self.rng = np.random.default_rng(seed)
        self.evaluations = 0  # distance evaluations asked of the caller (one per pull)
        self.work = 0  # bound computations, a machine-independent cost measure

    def reset(self) -> None:
        """Forget all statistics: ξ measures distance to the task being trained, so a new task starts afresh."""
        self.stats = _ArmStats(self.tree.num_layers)
        self.refresh()

    def _radius(self, n: float, t: int) -> float:
        return self.c * math.sqrt(math.log(max(t, 2)) / n)

    def arm_lcb(self, layer: int, key: str, t: int) -> float:
        """LCB of one arm in scale-normalised units; −∞ for an arm never pulled on this layer."""
        self.work += 1
        cnt = self.stats.cnt.get(key)
        if cnt is None or cnt[layer] == 0:
            return -math.inf
        mean = self.stats.sum[key][layer] / cnt[layer] / self.stats.scale(layer)
        return mean - self._radius(cnt[layer], t)

    def _argmin(self, values: list[float]) -> int:
        best = min(values)
        ties = [i for i, v in enumerate(values) if v == best]
        return ties[0] if len(ties) == 1 else int(self.rng.choice(ties))

    def arm_means(self, layer: int) -> dict[str, float]:
        """Empirical mean loss of every pulled arm on ``layer`` (raw units)."""
        return {
            k: float(self.stats.sum[k][layer] / self.stats.cnt[k][layer])
            for k in self.stats.sum
            if self.stats.cnt[k][layer] > 0
        }

    def state(self) -> dict:
        """JSON-able statistics (for checkpoints)."""
        return {"c": self.c, "arms": self.stats.state(), "evaluations": self.evaluations}

    def load_state(self, state: dict) -> None:
        self.c = float(state["c"])
        self.stats.load(state["arms"])
        self.evaluations = int(state.get("evaluations", 0))
        self.refresh()

    def refresh(self) -> None:  # overridden where caches exist
        """Statistics are kept for pulled arms only (an arm without them is unpulled), so nothing to do here."""

    def select_all(self, t: int) -> list[str | None]:
        """One arm per layer (None while the tree is empty)."""
        return [self.select(layer, t) for layer in range(self.tree.num_layers)]

    def select(  # pragma: no cover - abstract
        self, layer: int, t: int, allowed: Callable[[str], bool] | None = None
    ) -> str | None:
        raise NotImplementedError

    def update_all(self, choices: list[str | None], losses: list[float], t: int) -> None:
        """Record the observed loss of each layer's pulled arm."""
        for layer, (key, loss) in enumerate(zip(choices, losses)):
            if key is not None:
                self.update(layer, key, loss, t)

    def update(self, layer: int, key: str, loss: float, t: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class FlatLCBBandit(_LCBBase):
    """Argmin-LCB over every arm: O(n) bound evaluations per layer per step."""

    def select(self, layer: int, t: int, allowed: Callable[[str], bool] | None = None) -> str | None:
        keys = [k for k in self.tree.entries if allowed is None or allowed(k)]
        if not keys:
            return None
        self.evaluations += 1
        return keys[self._argmin([self.arm_lcb(layer, k, t) for k in keys])]

    def update(self, layer: int, key: str, loss: float, t: int) -> None:
        if not math.isfinite(loss):
            raise ValueError(f"observed loss for arm {key!r} on layer {layer} is not finite")
        self.stats.add(layer, key, float(loss))


class TreeLCBBandit(_LCBBase):
    """Argmin-LCB descent of the tree with smooth-tree bounds on internal nodes (O(depth) per layer per step)."""

    def __init__(
        self, tree: TaskTree, *, c: float = 2.0, delta: float = 0.1, delta_decay: float = 0.5, seed: int = 0
    ) -> None:
        super().__init__(tree, c=c, seed=seed)
        self.delta = float(delta)
        self.delta_decay = float(delta_decay)
        self._node_sum: dict[str, np.ndarray] = {}
        self._node_cnt: dict[str, np.ndarray] = {}
        self._min_child: dict[str, np.ndarray] = {}
        self._tree_version = -1
        self.refresh()

    def refresh(self) -> None:
        """Re-derive node statistics and cached bounds after the tree changed.

        Sparse: only nodes above a pulled arm carry statistics (a node with none has n = 0 and, as every arm below
        it is unpulled, a child-bound of −∞), so this costs O(pulled arms × depth), not O(tree): a server holding
        10^5 leaves refreshes a client's bandit in milliseconds. Bounds are recomputed for all layers at once.
        """
        super().refresh()
        self.stats.absorb_merges(self.tree)
        L = self.tree.num_layers
        self._node_sum, self._node_cnt, self._min_child = {}, {}, {}
        self._tree_version = self.tree.version
        if self.tree.root is None:
            return
        touched: dict[str, Node] = {}
        for key, cnt in self.stats.cnt.items():
            if key not in self.tree.entries or not cnt.any():
                continue
            for node in self.tree.path_to(key):
                if node.path not in touched:
                    touched[node.path] = node
                    self._node_sum[node.path], self._node_cnt[node.path] = np.zeros(L), np.zeros(L)
                self._node_sum[node.path] += self.stats.sum[key]
                self._node_cnt[node.path] += cnt
        scale = np.array([self.stats.scale(layer) for layer in range(L)])
        for path in sorted(touched, key=len, reverse=True):  # children before parents
            node = touched[path]
            if not node.is_leaf:
                self._min_child[path] = np.minimum.reduce([self._bounds(c, 2, scale) for c in node.children])

    def _bounds(self, node: Node, t: int, scale: np.ndarray) -> np.ndarray:
        """:meth:`_bound` for every layer at once (the same float operations, so the same values)."""
        L = self.tree.num_layers
        log_t = math.log(max(t, 2))
        if node.is_leaf:
            out = np.full(L, math.inf)
            for k in node.keys:
                cnt = self.stats.cnt.get(k)
                if cnt is None or not cnt.all():
                    lcb = np.full(L, -math.inf)
                    if cnt is None:
                        return lcb
                    pulled = cnt > 0
                    n = cnt[pulled]
                    lcb[pulled] = self.stats.sum[k][pulled] / n / scale[pulled] - self.c * np.sqrt(log_t / n)
                else:
                    lcb = self.stats.sum[k] / cnt / scale - self.c * np.sqrt(log_t / cnt)
                np.minimum(out, lcb, out=out)
            return out
        below = self._min_child.get(node.path)
        if below is None:
            return np.full(L, -math.inf)
        own = np.full(L, -math.inf)
        n = self._node_cnt[node.path]
        pulled = n > 0
        m = n[pulled]
        own[pulled] = (
            self._node_sum[node.path][pulled] / m / scale[pulled]
            - self.c * np.sqrt(log_t / m)
            - self.delta * self.delta_decay**node.depth
        )
        return np.maximum(own, below)

    def _own_bound(self, node: Node, layer: int, t: int) -> float:
        cnt = self._node_cnt.get(node.path)
        n = 0.0 if cnt is None else cnt[layer]
        if n == 0:
            return -math.inf
        mean = self._node_sum[node.path][layer] / n / self.stats.scale(layer)
        return mean - self._radius(n, t) - self.delta * self.delta_decay**node.depth

    def _bound(self, node: Node, layer: int, t: int) -> float:
        self.work += 1
        if node.is_leaf:
            return min(self.arm_lcb(layer, k, t) for k in node.keys)
        below = self._min_child.get(node.path)
        if below is None:  # no pulled arm below this node
            return -math.inf
        return max(self._own_bound(node, layer, t), float(below[layer]))

    def select(self, layer: int, t: int, allowed: Callable[[str], bool] | None = None) -> str | None:
        """Descend by smallest child bound. ``allowed`` restricts the arms (a federated client never gets its own
        leaves back); subtrees without an allowed arm are skipped, which costs a scan of their keys."""
        if self.tree.root is None:
            return None
        if self._tree_version != self.tree.version:
            self.refresh()
        node = self.tree.root
        if allowed is not None and not any(allowed(k) for k in node.keys):
            return None
        while not node.is_leaf:
            children = node.children
            if allowed is not None:
                children = [c for c in children if any(allowed(k) for k in c.keys)]
            node = children[self._argmin([self._bound(c, layer, t) for c in children])]
        keys = node.keys if allowed is None else [k for k in node.keys if allowed(k)]
        self.evaluations += 1
        return keys[self._argmin([self.arm_lcb(layer, k, t) for k in keys])]

    def update(self, layer: int, key: str, loss: float, t: int, count: int = 1) -> None:
        """Record ``count`` pulls of ``key`` on ``layer`` with mean loss ``loss`` (a client reports sums)."""
        if not math.isfinite(loss):
            raise ValueError(f"observed loss for arm {key!r} on layer {layer} is not finite")
        if self._tree_version != self.tree.version:
            self.refresh()
        self.stats.add(layer, key, float(loss) * count, count)
        path = self.tree.path_to(key)
        L = self.tree.num_layers
        for node in path:
            if node.path not in self._node_cnt:
                self._node_sum[node.path], self._node_cnt[node.path] = np.zeros(L), np.zeros(L)
            self._node_sum[node.path][layer] += loss * count
            self._node_cnt[node.path][layer] += count
        for node in reversed(path[:-1]):
            if node.path not in self._min_child:
                self._min_child[node.path] = np.full(L, -math.inf)
            self._min_child[node.path][layer] = min(self._bound(c, layer, t) for c in node.children)


class OfficialSoftmaxSampler:
    """The released code's per-module softmax sampling (DESIGN.md §8).

    Note: the score grows with distance, so this favours *dissimilar* tasks, the opposite of the paper's
    argmin-LCB. Reproduced as released, statistics reset at every epoch start (:meth:`start_epoch`).
    """

    def __init__(self, tree: TaskTree, *, seed: int = 0) -> None:
        self.tree = tree
        self.rng = np.random.default_rng(seed)
        self.steps_per_epoch = 1
        self.evaluations = 0
        self.work = 0
        self.keys: list[str] = []
        self.S = np.zeros((0, tree.num_layers))
        self.N = np.zeros((0, tree.num_layers))

    def start_epoch(self, steps_per_epoch: int) -> None:
        """Reset statistics (as released) and record T, the number of steps in the epoch."""
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.keys = list(self.tree.entries)
        self.S = np.zeros((len(self.keys), self.tree.num_layers))
        self.N = np.zeros((len(self.keys), self.tree.num_layers))

    def scores(self, t: int) -> np.ndarray:
        """The (K, L) score U before sampling, tree bias excluded."""
        M = np.divide(self.S, self.N, out=np.zeros_like(self.S), where=self.N > 0)
        r = math.sqrt(math.log(2 * self.steps_per_epoch * (t + 1) * (t + 2))) / np.sqrt(2 * self.N + 1e-5)
        U = -(M - r)
        return U + U.min()

    @staticmethod
    def _softmax(x: np.ndarray) -> np.ndarray:
        z = np.exp(x - x.max())
        return z / z.sum()

    def select_all(self, t: int) -> list[str | None]:
        """One previous task per module, drawn from the softmax of the biased, normalised score."""
        if list(self.tree.entries) != self.keys:
            self.start_epoch(self.steps_per_epoch)
        if not self.keys:
            return [None] * self.tree.num_layers
        U = self.scores(t)
        root = self.tree.root
        if root is not None and not root.is_leaf:
            k0 = int(self.rng.choice(len(self.keys), p=self._softmax(U.sum(axis=1))))
            child = next(c for c in root.children if self.keys[k0] in c.keys)
            factor = 1.0 if child.threshold is None else min(child.threshold, 1.5)
            rows = [i for i, k in enumerate(self.keys) if k in child.keys]
            U[rows] *= factor
        U = U / (U.max() - U.min() + 1e-5)
        self.work += U.size
        out: list[str | None] = []
        for layer in range(self.tree.num_layers):
            out.append(self.keys[int(self.rng.choice(len(self.keys), p=self._softmax(U[:, layer])))])
        self.evaluations += self.tree.num_layers
        return out

    def update_all(self, choices: list[str | None], losses: list[float], t: int) -> None:
        """N[k_l, l] += 1; S[k_l, l] −= the observed L1 distance."""
        for layer, (key, loss) in enumerate(zip(choices, losses)):
            if key is None:
                continue
            if not math.isfinite(loss):
                raise ValueError(f"observed distance for {key!r} on layer {layer} is not finite")
            i = self.keys.index(key)
            self.N[i, layer] += 1
            self.S[i, layer] -= loss

    def state(self) -> dict:
        return {"keys": self.keys, "S": self.S.tolist(), "N": self.N.tolist(), "T": self.steps_per_epoch}

    def load_state(self, state: dict) -> None:
        self.keys = list(state["keys"])
        self.S, self.N = np.asarray(state["S"], dtype=float), np.asarray(state["N"], dtype=float)
        self.steps_per_epoch = int(state["T"])


class UniformRandomSelector:
    """Ablation baseline: per layer, a stored task drawn uniformly at random every step (no statistics: the
    observed distances are ignored). The generator is seeded; its state is the checkpoint state."""

    def __init__(self, tree: TaskTree, seed: int = 0) -> None:
        self.tree = tree
        self.seed = seed
        self.draws = 0
        self.rng = np.random.default_rng(seed)

    def select_all(self, t: int) -> list[str | None]:
        """One uniformly drawn stored task per layer."""
        keys = list(self.tree.entries)
        if not keys:
            return [None] * self.tree.num_layers
        self.draws += 1
        return [keys[int(i)] for i in self.rng.integers(len(keys), size=self.tree.num_layers)]

    def update_all(self, choices: list[str | None], losses: list[float], t: int) -> None:
        """Nothing to learn from."""

    def state(self) -> dict:
        return {"seed": self.seed, "draws": self.draws, "rng": self.rng.bit_generator.state}

    def load_state(self, state: dict) -> None:
        self.seed, self.draws = int(state["seed"]), int(state["draws"])
        self.rng = np.random.default_rng(self.seed)
        self.rng.bit_generator.state = state["rng"]  # the same sequence continues after a restore
