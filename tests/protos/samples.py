"""Sample messages and receiver configuration shared by the tests of ``protos/`` (not a test module)."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, settings

from protos import wire

L = 3
ADAPTER_SHAPES = [((2, 5), (4, 2)), ((2, 5), (4, 2)), ((2, 3), (6, 2))]
S = 8
HEAD_SHAPES = ((4, 6), (4,))
LEAVES = {"c0/t0", "c1/t0", "c2/t1"}
FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def report_tensors(finished: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for l, (a, b) in enumerate(ADAPTER_SHAPES):
        out[wire.adapter_name(l, "A")] = torch.randn(*a, generator=g)
        out[wire.adapter_name(l, "B")] = torch.randn(*b, generator=g)
        out[wire.sketch_name(l)] = torch.randn(S, generator=g)
        if finished:
            out[wire.final_name(l)] = torch.randn(S, generator=g)
    return out


def sketch_dtype(name: str) -> str:
    return "float32" if name.startswith(("sketch.", "final.")) else "bfloat16"


def good_report(finished: bool = False, **kw):
    tensors = report_tensors(finished)
    arrays, manifest = wire.encode_tensors(tensors, sketch_dtype)
    args = dict(round=7, client_id="c1", task_key="t1", task_index=1, task_finished=finished, num_examples=32,
                steps=10, loss=0.5, pulls=[(0, "c0/t0", 1.25, 4), (2, "c2/t1", 0.0, 6)], manifest=manifest,
                metrics={"train_s": 0.9})
    args.update(kw)
    return wire.make_report(**args), arrays, tensors


def check_report(report, arrays, **kw):
    args = dict(num_layers=L, adapter_shapes=ADAPTER_SHAPES, sketch_dim=S, known_leaves=LEAVES)
    args.update(kw)
    return wire.validate_report(report, arrays, **args)


def good_assignment(warm: bool = True, head: bool = True):
    """An Assignment with every optional part: layer dims in its spec, a shared layer, a warm start with head."""
    g = torch.Generator().manual_seed(1)
    layers = [wire.make_layer_assignment(0, ["c0/t0", "c2/t1"], "n0", 3, True),
              wire.make_layer_assignment(2, ["c1/t0"], "n5", 1, False)]
    tensors = {}
    for la in layers:
        for leaf in la.candidates:
            tensors[wire.cand_name(leaf, la.layer)] = torch.randn(S, generator=g)
        if la.shared:
            a, b = ADAPTER_SHAPES[la.layer]
            tensors[wire.share_name(la.layer, "A")] = torch.randn(*a, generator=g)
            tensors[wire.share_name(la.layer, "B")] = torch.randn(*b, generator=g)
    if warm:
        for l, (a, b) in enumerate(ADAPTER_SHAPES):
            tensors[wire.warm_name(l, "A")] = torch.randn(*a, generator=g)
            tensors[wire.warm_name(l, "B")] = torch.randn(*b, generator=g)
        if head:
            tensors[wire.WARM_HEAD_WEIGHT] = torch.randn(*HEAD_SHAPES[0], generator=g)
            tensors[wire.WARM_HEAD_BIAS] = torch.randn(*HEAD_SHAPES[1], generator=g)
    arrays, manifest = wire.encode_tensors(tensors, "float16")
    spec = {"kind": "cauchy", "out_dim": S, "seed": 3, "layer_dims": [10, 10, 8], "version": 1}
    msg = wire.make_assignment(round=7, client_id="c1", run_id="r", local_steps=10, lam=0.1, sketch=spec,
                               layers=layers, warm_start_leaf="c0/t0" if warm else "", manifest=manifest)
    return msg, arrays, tensors


def check_assignment(msg, arrays, **kw):
    args = dict(num_layers=L, adapter_shapes=ADAPTER_SHAPES, head_shapes=HEAD_SHAPES)
    args.update(kw)
    return wire.validate_assignment(msg, arrays, **args)


def set_fields(obj, **kw):
    for k, v in kw.items():
        setattr(obj, k, v)


def check_case(code: str, run) -> None:
    """``run()`` raises a ProtocolError with ``code``, a known code, and a message that starts with it."""
    import pytest

    from protos.wire import ProtocolError

    with pytest.raises(ProtocolError) as e:
        run()
    assert e.value.code == code, str(e.value)
    assert e.value.code in wire.ERROR_CODES and str(e.value).startswith(f"[{code}] ")
