"""Seeded linear sketches R^p -> R^s for task signatures.

A sketch is a random matrix M (p x s) that every node regenerates from a shared seed, so two nodes with the
same ``(seed, in_dim, out_dim, kind)`` build bit-identical maps without ever sending them (DESIGN.md §4).

Two kinds:

- ``"cauchy"``: iid standard Cauchy entries. Cauchy is 1-stable, so each coordinate of ``M^T (x - y)`` is
  Cauchy with scale ``||x - y||_1``, and the median of ``|S x - S y|`` estimates the L1 distance (Indyk 2006).
  Accuracy at ``s`` coordinates: the sample median of ``|Cauchy(0, 1)|`` is asymptotically normal around 1 with
  standard deviation ``pi / (2 sqrt(s))`` (density of ``|C|`` at its median 1 is ``1/pi``), i.e. about 9.8% at
  s = 256, so the *median* relative error over many pairs is about ``0.674 * 9.8% ≈ 6.6%`` and it stays under the
  10% target of DESIGN.md §6 (measured 6.6-7.9% pooled over 16 seeds x 200 pairs, p in {3072, 6144}: see
  tests/treelora/test_sketch.py). Over draws of the matrix the error is distribution-free: it depends only on
  s, not on p or on how x - y looks (dense, sparse, heavy-tailed).
  With one fixed matrix (one seed, as in a run), the estimates of many *dense* differences share a
  multiplicative per-matrix factor (std ≈ 6% at s = 256, because given M each coordinate of a dense
  difference is Gaussian with the column's L2 norm), so one seed's median error over many dense pairs ranges
  about 5-14% (seed 0: 13% at p = 3072, 11% at p = 6144; at s = 512 every seed tried stays under 10%), while
  the error after dividing out that common factor stays ≈ 5.5%. The tree split and the bandit only compare
  distances measured with the same layer's matrix, so the common factor cancels there. Sparse differences do
  not show the effect. float32 cancellation in ``S x - S y`` is harmless: measured unchanged down to
  ``||x - y|| = 1e-6 ||x||``.
- ``"gaussian"``: iid ``N(0, 1/s)`` entries (Johnson–Lindenstrauss). ``||S x - S y||_2`` estimates the L2
  distance with relative standard deviation about ``1 / sqrt(2 s)`` (4.4% at s = 256), and the cosine of two
  sketches estimates the cosine of the originals.

Generation is done on CPU with a ``torch.Generator`` seeded from a SHA-256 of the parameters (Python's
``hash()`` is salted per process), from uniforms only (the Mersenne Twister stream of ``torch.rand`` is stable),
transformed in float64 and rounded to float32, then copied to the input's device. Matrices are cached per
``(in_dim, out_dim, kind, seed)``, so every layer of the same dimension shares one matrix.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

__all__ = [
    "KINDS",
    "L1_ESTIMATORS",
    "SPEC_VERSION",
    "LinearSketch",
    "LayerSketcher",
    "clear_sketch_cache",
    "exact_l1",
    "exact_l2",
    "relative_error",
]

KINDS: tuple[str, ...] = ("cauchy", "gaussian")
SPEC_VERSION = 1

_UNIFORM_EPS = 1e-7  # keeps tan() finite: the largest Cauchy entry is about 1 / (pi * eps) ≈ 3.2e6
_CACHE_MAX = 32
_cache: OrderedDict[tuple[int, int, str, int], torch.Tensor] = OrderedDict()
_cache_lock = threading.Lock()


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise ValueError(f"sketch kind must be one of {KINDS}, got {kind!r}")
    return kind


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"sketch seed must be an int, got {seed!r}")
    return seed


def _generator_seed(in_dim: int, out_dim: int, kind: str, seed: int) -> int:
    """A 63-bit seed that is a stable function of the sketch parameters on every machine."""
    key = f"treelora-sketch/v{SPEC_VERSION}|{kind}|{in_dim}|{out_dim}|{seed}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)


def _generate(in_dim: int, out_dim: int, kind: str, seed: int) -> torch.Tensor:
    gen = torch.Generator(device="cpu")
    gen.manual_seed(_generator_seed(in_dim, out_dim, kind, seed))
    if kind == "cauchy":
        u = torch.rand(in_dim, out_dim, dtype=torch.float64, generator=gen)
        u.clamp_(_UNIFORM_EPS, 1.0 - _UNIFORM_EPS)
        m = torch.tan(math.pi * (u - 0.5))
    else:
        # Box–Muller from uniforms rather than torch.randn, whose algorithm is free to change between releases.
        u = torch.rand(2, in_dim, out_dim, dtype=torch.float64, generator=gen)
        u1 = u[0].clamp_(_UNIFORM_EPS, 1.0)
        m = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u[1])
        m /= math.sqrt(out_dim)
    return m.to(torch.float32).contiguous()


def _cached_matrix(in_dim: int, out_dim: int, kind: str, seed: int) -> torch.Tensor:
    key = (in_dim, out_dim, kind, seed)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    matrix = _generate(in_dim, out_dim, kind, seed)
    with _cache_lock:
        matrix = _cache.setdefault(key, matrix)
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_MAX:
            _cache.popitem(last=False)
    return matrix


def clear_sketch_cache() -> None:
    """Drop every cached CPU sketch matrix (they are regenerated, identically, on next use)."""
    with _cache_lock:
        _cache.clear()


def _check_finite(name: str, t: torch.Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")


def _as_tensor(name: str, t: Any) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.is_complex():
        raise ValueError(f"{name} must be real, got dtype {t.dtype}")
    return t


def _sketch_pair(out_dim: int, sa: Any, sb: Any) -> torch.Tensor:
    """Validate two (broadcastable) sketches of width out_dim and return their float32 difference."""
    sa = _as_tensor("sa", sa)
    sb = _as_tensor("sb", sb)
    for name, t in (("sa", sa), ("sb", sb)):
        if t.dim() == 0 or t.shape[-1] != out_dim:
            raise ValueError(f"{name} must have last dimension {out_dim}, got shape {tuple(t.shape)}")
        _check_finite(name, t)
    try:
        torch.broadcast_shapes(sa.shape, sb.shape)
    except RuntimeError as exc:
        raise ValueError(f"sketch shapes {tuple(sa.shape)} and {tuple(sb.shape)} do not broadcast") from exc
    if sa.device != sb.device:
        raise ValueError(f"sketches are on different devices: {sa.device} and {sb.device}")
    return sa.to(torch.float32) - sb.to(torch.float32)


def _median_last(x: torch.Tensor) -> torch.Tensor:
    # torch.median returns the lower middle value for even sizes; average the two middle values instead.
    # On the CPU without autograd numpy's introselect (np.partition) finds the two middle values 2-3x faster than
    # torch.topk (same values: a selection, no arithmetic); elsewhere a partial sort of the smallest half + 1.
    n = x.shape[-1]
    mid = (n // 2 - 1, n // 2) if n % 2 == 0 else (n // 2,)
    if x.device.type == "cpu" and not x.requires_grad and x.dtype in (torch.float32, torch.float64):
        part = np.partition(x.detach().numpy(), mid, axis=-1)
        if n % 2:
            return torch.from_numpy(np.array(part[..., mid[0]]))
        return 0.5 * (torch.from_numpy(np.array(part[..., mid[0]])) + torch.from_numpy(np.array(part[..., mid[1]])))
    low = torch.topk(x, n // 2 + 1, dim=-1, largest=False, sorted=True).values
    if n % 2:
        return low[..., -1]
    return 0.5 * (low[..., -2] + low[..., -1])


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float32 else x.to(torch.float32)  # a same-dtype .to() still costs a dispatch


def _geomean_last(x: torch.Tensor) -> torch.Tensor:
    # Li (2008)'s geometric-mean estimator of a Cauchy scale: cos^k(pi / 2k) * prod |x_j|^(1/k), unbiased, with the
    # sample median's asymptotic variance pi^2 / 4k, and a mean instead of a selection (no sort: 5-10x cheaper).
    # An exactly zero coordinate (identical sketches there) counts as the float32 tiny value.
    k = x.shape[-1]
    scale = math.cos(math.pi / (2 * k)) ** k
    tiny = torch.finfo(torch.float32).tiny
    if x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad:
        # numpy's log and mean are 2-3x cheaper than torch's on the server's small (2, L, s) blocks
        logs = np.log(np.maximum(x.numpy(), np.float32(tiny)))
        mean = np.add.reduce(logs, axis=-1) / np.float32(k)
        return torch.from_numpy(np.asarray(np.exp(mean) * np.float32(scale), dtype=np.float32))
    return torch.exp(torch.log(x.clamp_min(tiny)).mean(dim=-1)) * scale


L1_ESTIMATORS = {"median": _median_last, "geomean": _geomean_last}


class LinearSketch:
    """A seeded random linear map R^in_dim -> R^out_dim with its distance estimators.

    ``kind="cauchy"`` estimates L1 distances (median estimator, median relative error ≈ 6.6% at out_dim=256,
    bound tested: <= 10%; asymptotic std of one estimate ``pi / (2 sqrt(out_dim))``); ``kind="gaussian"``
    estimates L2 distances and cosines (relative std ≈ ``1 / sqrt(2 out_dim)``, median error ≈ 3% at 256).
    The matrix is generated lazily on first use; see the module docstring for the per-matrix correlation.
    """

    def __init__(self, in_dim: int, out_dim: int = 256, kind: str = "cauchy", seed: int = 0) -> None:
        self.in_dim = _check_positive_int("in_dim", in_dim)
        self.out_dim = _check_positive_int("out_dim", out_dim)
        self.kind = _check_kind(kind)
        self.seed = _check_seed(seed)
        self._by_device: dict[torch.device, torch.Tensor] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"LinearSketch(in_dim={self.in_dim}, out_dim={self.out_dim}, "
                f"kind={self.kind!r}, seed={self.seed})")

    def __getstate__(self) -> dict:
        # Pickle (Ray, multiprocessing, deepcopy) only the parameters: the matrix is regenerated identically.
        return {"in_dim": self.in_dim, "out_dim": self.out_dim, "kind": self.kind, "seed": self.seed}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["in_dim"], state["out_dim"], state["kind"], state["seed"])

    def matrix(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The (in_dim, out_dim) float32 matrix on ``device`` (CPU by default); identical on every machine.

        The tensor is shared by every sketch with the same parameters: read it, never modify it in place.
        """
        dev = torch.device(device) if device is not None else torch.device("cpu")
        with self._lock:
            hit = self._by_device.get(dev)
        if hit is not None:
            return hit
        m = _cached_matrix(self.in_dim, self.out_dim, self.kind, self.seed).to(dev)
        with self._lock:
            return self._by_device.setdefault(dev, m)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Sketch ``x`` of shape (..., in_dim) to (..., out_dim), float32, on x's device.

        Raises ValueError on a wrong last dimension or non-finite input (a NaN would silently poison every
        coordinate of the sketch).
        """
        x = _as_tensor("x", x)
        if x.dim() == 0 or x.shape[-1] != self.in_dim:
            raise ValueError(f"input must have last dimension {self.in_dim}, got shape {tuple(x.shape)}")
        _check_finite("input", x)
        return x.to(torch.float32) @ self.matrix(x.device)

    def l1_distance(self, sa: torch.Tensor, sb: torch.Tensor, *, checked: bool = True,
                    estimator: str = "median") -> torch.Tensor:
        """Estimate ``||a - b||_1`` from Cauchy sketches: ``median(|sa - sb|)`` over the last dimension, or with
        ``estimator="geomean"`` Li's geometric mean ``cos^s(π/2s) · Π|sa_j − sb_j|^(1/s)`` (the same quantity and
        asymptotic accuracy, no sort).

        Shapes broadcast: ``sa`` (s,) against ``sb`` (k, s) gives (k,) estimates, one per candidate.
        ``checked=False`` skips validating the inputs (type, width, finiteness: ~75% of a single pair's cost) for
        callers that validated them once on arrival, as the server does at ingest.
        """
        if self.kind != "cauchy":
            raise ValueError(f"l1_distance needs a 'cauchy' sketch, this one is {self.kind!r}")
        if estimator not in L1_ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(L1_ESTIMATORS)}, got {estimator!r}")
        diff = _sketch_pair(self.out_dim, sa, sb) if checked else _f32(sa) - _f32(sb)
        return L1_ESTIMATORS[estimator](diff.abs_())

    def l2_distance(self, sa: torch.Tensor, sb: torch.Tensor, *, checked: bool = True) -> torch.Tensor:
        """Estimate ``||a - b||_2`` from Gaussian (JL) sketches: ``||sa - sb||_2`` over the last dimension."""
        if self.kind != "gaussian":
            raise ValueError(f"l2_distance needs a 'gaussian' sketch, this one is {self.kind!r}")
        diff = _sketch_pair(self.out_dim, sa, sb) if checked else sa.to(torch.float32) - sb.to(torch.float32)
        return torch.linalg.vector_norm(diff, dim=-1)

    def cosine(self, sa: torch.Tensor, sb: torch.Tensor) -> torch.Tensor:
        """Estimate ``cos(a, b)`` from Gaussian sketches (0 where a sketch is all zeros); broadcasts like l2."""
        if self.kind != "gaussian":
            raise ValueError(f"cosine needs a 'gaussian' sketch, this one is {self.kind!r}")
        _sketch_pair(self.out_dim, sa, sb)  # validation only
        a, b = sa.to(torch.float32), sb.to(torch.float32)
        num = (a * b).sum(dim=-1)
        den = torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1)
        return torch.where(den > 0, num / den.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(num))

    def distance(self, sa: torch.Tensor, sb: torch.Tensor, *, checked: bool = True,
                 estimator: str = "median") -> torch.Tensor:
        """The estimator that matches this sketch's kind: L1 for cauchy (``estimator`` as in :meth:`l1_distance`),
        L2 for gaussian."""
        if self.kind == "cauchy":
            return self.l1_distance(sa, sb, checked=checked, estimator=estimator)
        return self.l2_distance(sa, sb, checked=checked)

    def nbytes(self) -> int:
        """Bytes of one sketch on the wire (out_dim float32 values)."""
        return self.out_dim * 4


class LayerSketcher:
    """One sketch per layer dimension, deterministic from (seed, in_dim, out_dim, kind), so layers sharing a
    dimension share a matrix (memory: SmolLM2 has 60 LoRA layers but only two signature sizes).

    Sharing a matrix across layers only correlates the estimation errors of different layers; each layer's
    estimate keeps the accuracy stated in :class:`LinearSketch`. ``spec()`` is the JSON-able description sent to
    peers, and ``from_spec`` rebuilds the identical sketcher there.
    """

    def __init__(self, layer_dims: list[int], out_dim: int = 256, kind: str = "cauchy", seed: int = 0) -> None:
        if not isinstance(layer_dims, (list, tuple)) or len(layer_dims) == 0:
            raise ValueError(f"layer_dims must be a non-empty list of positive ints, got {layer_dims!r}")
        self.layer_dims = [_check_positive_int(f"layer_dims[{i}]", d) for i, d in enumerate(layer_dims)]
        self.out_dim = _check_positive_int("out_dim", out_dim)
        self.kind = _check_kind(kind)
        self.seed = _check_seed(seed)
        self._sketches = {d: LinearSketch(d, out_dim, kind, seed) for d in dict.fromkeys(self.layer_dims)}

    def __repr__(self) -> str:
        return (f"LayerSketcher(layers={len(self.layer_dims)}, dims={sorted(self._sketches)}, "
                f"out_dim={self.out_dim}, kind={self.kind!r}, seed={self.seed})")

    @property
    def num_layers(self) -> int:
        """Number of layers (L)."""
        return len(self.layer_dims)

    def layer(self, layer: int) -> LinearSketch:
        """The sketch used for ``layer`` (shared with every layer of the same dimension)."""
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(self.layer_dims):
            raise ValueError(f"layer must be an int in [0, {len(self.layer_dims)}), got {layer!r}")
        return self._sketches[self.layer_dims[layer]]

    def sketch(self, signature: list[torch.Tensor]) -> list[torch.Tensor]:
        """Sketch a per-layer signature (one (..., layer_dims[l]) tensor per layer) into per-layer sketches."""
        if not isinstance(signature, (list, tuple)) or len(signature) != len(self.layer_dims):
            n = len(signature) if isinstance(signature, (list, tuple)) else type(signature).__name__
            raise ValueError(f"signature must be a list of {len(self.layer_dims)} tensors, got {n}")
        out = []
        for l, g in enumerate(signature):
            try:
                out.append(self.layer(l).apply(g))
            except ValueError as exc:
                raise ValueError(f"layer {l}: {exc}") from exc
        return out

    def distance(self, layer: int, sa: torch.Tensor, sb: torch.Tensor) -> torch.Tensor:
        """Estimated distance between two sketches of ``layer``: L1 (cauchy) or L2 (gaussian)."""
        return self.layer(layer).distance(sa, sb)

    def nbytes(self) -> int:
        """Bytes of one full per-layer sketch on the wire (float32)."""
        return self.num_layers * self.out_dim * 4

    def spec(self) -> dict:
        """JSON-able description from which a peer rebuilds the identical sketcher."""
        return {"kind": self.kind, "out_dim": self.out_dim, "seed": self.seed,
                "layer_dims": list(self.layer_dims), "version": SPEC_VERSION}

    @classmethod
    def from_spec(cls, spec: dict) -> LayerSketcher:
        """Rebuild a sketcher from :meth:`spec` output; raises ValueError naming the bad or missing field."""
        if not isinstance(spec, dict):
            raise ValueError(f"sketch spec must be a dict, got {type(spec).__name__}")
        expected = {"kind", "out_dim", "seed", "layer_dims", "version"}
        missing, unknown = expected - spec.keys(), spec.keys() - expected
        if missing:
            raise ValueError(f"sketch spec is missing {sorted(missing)}")
        if unknown:
            raise ValueError(f"sketch spec has unknown fields {sorted(map(str, unknown))}")
        version = spec["version"]
        if isinstance(version, bool) or version != SPEC_VERSION:
            raise ValueError(f"unsupported sketch spec version {version!r} (this build reads {SPEC_VERSION})")
        return cls(spec["layer_dims"], out_dim=spec["out_dim"], kind=spec["kind"], seed=spec["seed"])


def _pair(a: Any, b: Any) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _as_tensor("a", a), _as_tensor("b", b)
    if a.dim() == 0 or b.dim() == 0 or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"vectors must share their last dimension, got {tuple(a.shape)} and {tuple(b.shape)}")
    _check_finite("a", a)
    _check_finite("b", b)
    return a.to(torch.float64), b.to(torch.float64)


def exact_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact ``||a - b||_1`` over the last dimension (float64, broadcasting), the reference for sketch error."""
    a, b = _pair(a, b)
    return (a - b).abs().sum(dim=-1)


def exact_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact ``||a - b||_2`` over the last dimension (float64, broadcasting), the reference for sketch error."""
    a, b = _pair(a, b)
    return torch.linalg.vector_norm(a - b, dim=-1)


def relative_error(est: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """Elementwise ``|est - exact| / |exact|`` in float64 (0 where both are 0, inf where only exact is 0)."""
    est, exact = _as_tensor("est", est), _as_tensor("exact", exact)
    try:
        torch.broadcast_shapes(est.shape, exact.shape)
    except RuntimeError as exc:
        raise ValueError(f"shapes {tuple(est.shape)} and {tuple(exact.shape)} do not broadcast") from exc
    if torch.isnan(est).any() or torch.isnan(exact).any():
        raise ValueError("relative_error got NaN")
    est, exact = est.to(torch.float64), exact.to(torch.float64)
    diff = (est - exact).abs()
    den = exact.abs()
    return torch.where(den > 0, diff / torch.where(den > 0, den, torch.ones_like(den)),
                       torch.where(diff > 0, torch.full_like(diff, math.inf), torch.zeros_like(diff)))
