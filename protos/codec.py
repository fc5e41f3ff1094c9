"""The tensor codec: torch tensors ⟷ (numpy array, ``TensorInfo``) as they travel next to a message.

Tensors never travel inside a protobuf message: each one travels as a numpy array next to it (in a Flower
``ArrayRecord``, see :mod:`protos.envelope`) and is declared in the message's ``manifest`` by a ``TensorInfo``
(name, shape, wire dtype). The receiver decodes an array only against its declaration, so a peer can neither
smuggle in an undeclared tensor nor make the receiver allocate more than :data:`DEFAULT_MAX_TENSOR_BYTES`.

Wire dtypes are ``"float32"``, ``"float16"`` and ``"bfloat16"``; numpy has no bfloat16, so a bf16 tensor
travels as an ``int16`` array holding its bit patterns. Decoding always yields fresh float32 torch tensors,
finite unless asked otherwise. Every peer-input failure is a :class:`~protos.errors.ProtocolError`.
See DESIGN.md §3 (repository root).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

from protos import treelora_fed_pb2 as pb
from protos.errors import ProtocolError

__all__ = [
    "WIRE_DTYPES",
    "DEFAULT_MAX_TENSOR_BYTES",
    "check_wire_dtype",
    "encode_tensor",
    "encode_tensors",
    "decode_tensor",
    "validate_tensors",
]

WIRE_DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")
"""The dtypes a ``TensorInfo`` may declare."""

DEFAULT_MAX_TENSOR_BYTES = 64 << 20
"""Default limit on the total bytes the tensors of one message may declare (checked before any is decoded)."""

_MAX_NDIM = 16

_NP_WIRE: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(np.int16),  # bf16 bit patterns
}
_TORCH_WIRE: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def check_wire_dtype(dtype: Any, where: str = "") -> str:
    """``dtype`` when it is one of :data:`WIRE_DTYPES`, else ``ProtocolError("bad-dtype")``."""
    if not isinstance(dtype, str) or dtype not in WIRE_DTYPES:
        at = f" for {where}" if where else ""
        raise ProtocolError("bad-dtype", f"wire dtype{at} must be one of {list(WIRE_DTYPES)}, got {dtype!r}")
    return dtype


def encode_tensor(t: torch.Tensor, wire_dtype: str = "bfloat16", *,
                  name: str = "") -> tuple[np.ndarray, pb.TensorInfo]:
    """Cast ``t`` to ``wire_dtype`` and return ``(array, TensorInfo)``; the array never aliases ``t``.

    bf16 becomes an int16 array of bit patterns (``t.to(bfloat16).view(int16).numpy()``). Raises
    ``ProtocolError("bad-dtype")`` for an unknown wire dtype or a non-real-floating input and
    ``ProtocolError("non-finite")`` when the tensor, or its cast (float16 overflows above 65504), is not finite.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"encode_tensor needs a torch.Tensor, got {type(t).__name__}")
    check_wire_dtype(wire_dtype, name or "tensor")
    if not t.is_floating_point():
        raise ProtocolError("bad-dtype", f"tensor {name!r} must be real floating point, got {t.dtype}")
    label = name or "tensor"
    x = t.detach().to(device="cpu", dtype=_TORCH_WIRE[wire_dtype], copy=True).contiguous()
    if not bool(torch.isfinite(x).all()):
        if bool(torch.isfinite(t.detach()).all()):
            raise ProtocolError("non-finite", f"{label} overflows {wire_dtype} (max |x| = "
                                f"{float(t.detach().abs().max()):.4g})")
        raise ProtocolError("non-finite", f"{label} contains NaN or inf")
    if wire_dtype == "bfloat16":
        x = x.view(torch.int16)
    arr = x.numpy()
    return arr, pb.TensorInfo(name=name, shape=list(arr.shape), dtype=wire_dtype)


def encode_tensors(tensors: Mapping[str, torch.Tensor],
                   wire_dtype: str | Callable[[str], str] = "bfloat16",
                   ) -> tuple[dict[str, np.ndarray], list[pb.TensorInfo]]:
    """Encode named tensors: ``(arrays, manifest)``, ready for an ArrayRecord and a message's ``manifest``.

    ``wire_dtype`` is one dtype for all, or a function of the name (e.g. float32 for ``sketch.*``).
    """
    arrays: dict[str, np.ndarray] = {}
    manifest: list[pb.TensorInfo] = []
    for name, t in tensors.items():
        dt = wire_dtype(name) if callable(wire_dtype) else wire_dtype
        arr, info = encode_tensor(t, dt, name=name)
        arrays[name] = arr
        manifest.append(info)
    return arrays, manifest


def _as_array(name: str, value: Any) -> np.ndarray:
    """Accept a numpy array, or anything with a ``numpy()`` method (a Flower ``Array``, a CPU tensor)."""
    if isinstance(value, np.ndarray):
        return value
    to_numpy = getattr(value, "numpy", None)
    if callable(to_numpy):
        try:
            arr = to_numpy()
        except Exception as exc:  # noqa: BLE001 - any failure of a foreign object is the peer's problem
            raise ProtocolError("malformed", f"tensor {name!r}: cannot read it as a numpy array ({exc})") from None
        if isinstance(arr, np.ndarray):
            return arr
    raise ProtocolError("malformed", f"tensor {name!r} must be a numpy array, got {type(value).__name__}")


def _check_array(name: str, arr: np.ndarray, dtype: str, shape: tuple[int, ...]) -> None:
    want = _NP_WIRE[dtype]
    got = arr.dtype
    if got.fields is not None or got.subdtype is not None or got.kind != want.kind or got.itemsize != want.itemsize:
        raise ProtocolError("bad-dtype", f"tensor {name!r} is declared {dtype} (numpy {want.name}) "
                            f"but arrived as numpy {got}")
    if tuple(arr.shape) != shape:
        raise ProtocolError("bad-shape", f"tensor {name!r} is declared with shape {list(shape)} "
                            f"but arrived with shape {list(arr.shape)}")


def _decode_checked(name: str, arr: np.ndarray, dtype: str, check_finite: bool) -> torch.Tensor:
    # numpy all the way to the float32 result (one copy, one finiteness pass): a report carries ~40 small
    # tensors, and per-tensor torch calls (copy, view, cast, isfinite) cost more than the arithmetic
    if dtype == "bfloat16":  # bf16 is the top half of a float32: widen the bit pattern, then reinterpret
        bits = np.asarray(arr).astype(np.dtype(np.uint16).newbyteorder("="), order="C")
        wide = bits.astype(np.uint32)
        wide <<= np.uint32(16)  # in place: a 0-d array stays an array
        native = wide.view(np.float32)
    else:
        native = np.array(arr, dtype=np.dtype(np.float32).newbyteorder("="), copy=True, order="C")
    if check_finite and not np.isfinite(native).all():
        bad = int((~np.isfinite(native)).sum())
        raise ProtocolError("non-finite", f"tensor {name!r} has {bad} NaN/inf value(s)")
    return torch.from_numpy(native)


def decode_tensor(arr: np.ndarray, info: pb.TensorInfo, *, check_finite: bool = True) -> torch.Tensor:
    """Decode one array against its ``TensorInfo`` into a fresh float32 tensor.

    Raises ``ProtocolError``: ``bad-dtype`` (unknown wire dtype, or the numpy dtype does not match it),
    ``bad-shape`` (shape differs from ``info.shape``), ``non-finite`` (NaN/inf after decoding, unless
    ``check_finite=False``), ``malformed`` (not an array / not a TensorInfo).
    """
    if not isinstance(info, pb.TensorInfo):
        raise ProtocolError("malformed", f"expected a TensorInfo, got {type(info).__name__}")
    name = info.name
    dtype = check_wire_dtype(info.dtype, repr(name))
    shape = tuple(int(d) for d in info.shape)
    arr = _as_array(name, arr)
    _check_array(name, arr, dtype, shape)
    return _decode_checked(name, arr, dtype, check_finite)


def _declared_nbytes(shape: tuple[int, ...], itemsize: int, cap: int) -> int:
    n = itemsize
    for d in shape:
        n *= d
        if n > cap:  # stop early: the product of adversarial int64 dims is astronomically large
            return cap + 1
    return n


def validate_tensors(arrays: Mapping[str, Any], manifest: Iterable[pb.TensorInfo], *,
                     expected: Mapping[str, tuple[int, ...] | None] | None = None,
                     max_bytes: int = DEFAULT_MAX_TENSOR_BYTES) -> dict[str, torch.Tensor]:
    """Check ``arrays`` against ``manifest`` (and ``expected``) and decode them to float32 tensors.

    - the manifest is well formed: unique non-empty names (``malformed``), known dtypes (``bad-dtype``),
      non-negative dims (``bad-shape``), declared total bytes ≤ ``max_bytes`` (``too-large``);
    - when ``expected`` (name → shape, or ``None`` for "any shape") is given, the manifest names exactly its
      names (``missing-tensor`` / ``unexpected-tensor``) with those shapes (``bad-shape``);
    - every manifest entry has its array (``missing-tensor``) and there are no other arrays
      (``unexpected-tensor``), each with the declared numpy dtype (``bad-dtype``) and shape (``bad-shape``);
    - every decoded value is finite (``non-finite``).

    Returns ``{name: float32 tensor}`` in manifest order. Raises only :class:`~protos.errors.ProtocolError`.
    """
    if not isinstance(arrays, Mapping):
        raise ProtocolError("malformed", f"tensors must be a mapping name -> array, got {type(arrays).__name__}")
    try:
        infos = list(manifest)
    except TypeError:
        raise ProtocolError("malformed", f"manifest must be a list of TensorInfo, got {type(manifest).__name__}") \
            from None
    declared: dict[str, tuple[str, tuple[int, ...]]] = {}
    total = 0
    for info in infos:
        if not isinstance(info, pb.TensorInfo):
            raise ProtocolError("malformed", f"manifest entries must be TensorInfo, got {type(info).__name__}")
        name = info.name
        if not name:
            raise ProtocolError("malformed", "manifest has an entry with an empty name")
        if name in declared:
            raise ProtocolError("malformed", f"manifest names tensor {name!r} twice")
        dtype = check_wire_dtype(info.dtype, repr(name))
        shape = tuple(int(d) for d in info.shape)
        if len(shape) > _MAX_NDIM or any(d < 0 for d in shape):
            raise ProtocolError("bad-shape", f"manifest declares tensor {name!r} with invalid shape {list(shape)}")
        total += _declared_nbytes(shape, _NP_WIRE[dtype].itemsize, max_bytes)
        if total > max_bytes:
            raise ProtocolError("too-large", f"tensors declared in the manifest exceed {max_bytes} bytes "
                                f"(at {name!r})")
        declared[name] = (dtype, shape)

    if expected is not None:
        for name in declared:
            if name not in expected:
                raise ProtocolError("unexpected-tensor", f"manifest declares tensor {name!r}, which is not "
                                    f"expected here")
        for name, want in expected.items():
            if name not in declared:
                raise ProtocolError("missing-tensor", f"required tensor {name!r} is not in the manifest")
            if want is not None and declared[name][1] != tuple(want):
                raise ProtocolError("bad-shape", f"tensor {name!r} must have shape {list(want)}, "
                                    f"the manifest declares {list(declared[name][1])}")

    for key in arrays:
        if not isinstance(key, str) or key not in declared:
            raise ProtocolError("unexpected-tensor", f"array {key!r} is not declared in the manifest")
    checked: dict[str, np.ndarray] = {}
    for name, (dtype, shape) in declared.items():
        if name not in arrays:
            raise ProtocolError("missing-tensor", f"tensor {name!r} is declared in the manifest but did not arrive")
        arr = _as_array(name, arrays[name])
        _check_array(name, arr, dtype, shape)
        checked[name] = arr
    return {name: _decode_checked(name, arr, declared[name][0], True) for name, arr in checked.items()}
