"""fedproto's tensors on the wire: a report's ``proto.<c>.sum/count`` and an assignment's ``proto.<c>.mean``,
checked by the same validators as every other tensor (exact names, shapes, bounds), without a model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protos.wire import (
    MAX_FEATURE_ABS,
    ProtocolError,
    encode_tensors,
    make_assignment,
    make_report,
    proto_name,
    validate_assignment,
    validate_report,
)

D = 5
SHAPES = [((2, 4), (4, 2))]


def report(tensors: dict[str, torch.Tensor]):
    arrays, manifest = encode_tensors(tensors, "float32")
    r = make_report(round=1, client_id="c0", task_key="c0/t0", num_examples=8, steps=1, loss=0.5, manifest=manifest)
    return r, arrays


def stats(counts: dict[int, float], value: float = 1.0) -> dict[str, torch.Tensor]:
    out = {}
    for c, n in counts.items():
        out[proto_name(c, "sum")] = torch.full((D,), value * n)
        out[proto_name(c, "count")] = torch.tensor([float(n)])
    return out


def check(tensors, prototypes=None, feature_dim=D):
    r, arrays = report(tensors)
    return validate_report(r, arrays, num_layers=0, adapter_shapes=[], sketch_dim=8, known_leaves=set(),
                           with_adapters=False, with_sketches=False, prototypes=prototypes or {3: 10, 4: 10},
                           feature_dim=feature_dim)


def test_a_valid_report_passes_and_returns_the_statistics():
    out = check(stats({3: 4, 4: 10}))
    assert float(out[proto_name(4, "count")][0]) == 10 and out[proto_name(3, "sum")].shape == (D,)
    assert check(stats({3: 4, 4: 10}), feature_dim=None)  # the width is learned from the first report


@pytest.mark.parametrize("tensors,code", [
    (stats({3: 4}), "missing-tensor"),
    (stats({3: 4, 4: 4, 5: 4}), "unexpected-tensor"),
    (stats({3: 11, 4: 4}), "bad-value"),
    (stats({3: 0, 4: 4}), "bad-value"),
    (stats({3: 2.5, 4: 4}), "bad-value"),
    ({**stats({3: 4, 4: 4}), proto_name(3, "sum"): torch.full((D,), 5 * MAX_FEATURE_ABS)}, "bad-value"),
    ({**stats({3: 4, 4: 4}), proto_name(3, "sum"): torch.full((D + 1,), 1.0)}, "bad-shape"),
    ({**stats({3: 4, 4: 4}), proto_name(3, "mean"): torch.ones(D)}, "unexpected-tensor"),
])
def test_bad_statistics_are_refused(tensors, code):
    with pytest.raises(ProtocolError) as err:
        check(tensors)
    assert err.value.code == code and err.value.reason


def test_sums_of_two_widths_are_refused_before_the_width_is_known():
    tensors = {**stats({3: 4, 4: 4}), proto_name(3, "sum"): torch.ones(D + 1)}
    with pytest.raises(ProtocolError) as err:
        check(tensors, feature_dim=None)
    assert err.value.code == "bad-shape"


def test_nan_in_a_sum_is_non_finite():
    r, arrays = report(stats({3: 4, 4: 4}))
    arrays[proto_name(3, "sum")] = np.array([np.nan] * D, np.float32)
    with pytest.raises(ProtocolError) as err:
        validate_report(r, arrays, num_layers=0, adapter_shapes=[], sketch_dim=8, known_leaves=set(),
                        with_adapters=False, with_sketches=False, prototypes={3: 10, 4: 10}, feature_dim=D)
    assert err.value.code == "non-finite"


def assignment(classes):
    arrays, manifest = encode_tensors({proto_name(c, "mean"): torch.ones(D) for c in classes}, "float32")
    return make_assignment(round=2, client_id="c0", manifest=manifest), arrays


def test_an_assignment_carries_prototypes_only_of_the_clients_classes():
    a, arrays = assignment([0, 1])
    out = validate_assignment(a, arrays, num_layers=1, adapter_shapes=SHAPES, sketch_dim=8, proto_classes={0, 1, 2},
                              feature_dim=D)
    assert set(out) == {proto_name(0, "mean"), proto_name(1, "mean")}
    for kwargs, code in (({"proto_classes": {0}}, "unexpected-tensor"), ({"proto_classes": None}, "unexpected-tensor"),
                         ({"proto_classes": {0, 1}, "feature_dim": D + 1}, "bad-shape")):
        with pytest.raises(ProtocolError) as err:
            validate_assignment(a, arrays, num_layers=1, adapter_shapes=SHAPES, sketch_dim=8,
                                **{"feature_dim": D, **kwargs})
        assert err.value.code == code
