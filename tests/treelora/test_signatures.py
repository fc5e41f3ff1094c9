import pytest
import torch

from treelora.signatures import SignatureAccumulator

from . import test_regularizers as tiny
from .learners import assert_same, round_trip


@pytest.mark.parametrize("kind", ["grad", "weights"])
def test_state_dict_round_trips_and_the_restored_accumulator_continues_identically(kind):
    lora = tiny.setup()[0]
    grads = [[torch.randn(d, dtype=torch.float64) for d in lora.layer_dims()] for _ in range(4)]
    sig = SignatureAccumulator(kind, lora)
    empty = sig.state_dict()
    assert empty == {"acc": None, "count": 0, "steps_per_epoch": 1}
    sig.start_epoch(4)
    for g in grads[:2]:
        sig.observe(g)
    state = sig.state_dict()
    other = SignatureAccumulator(kind, lora)
    other.load_state_dict(round_trip(state))
    assert_same(other.state_dict(), state)
    for g in grads[2:]:
        sig.observe(g)
        other.observe(g)
    assert_same(other.state_dict(), sig.state_dict())
    assert_same(state, round_trip(state))  # the saved state is a copy: later steps do not change it
    assert state["count"] == 2
    other.load_state_dict(empty)
    assert other.current() is None and other.count == 0


def test_step_vectors_are_the_gradients_or_the_running_weight_signature():
    lora = tiny.setup()[0]
    grads = [torch.randn(d, dtype=torch.float64) for d in lora.layer_dims()]
    sig = SignatureAccumulator("grad", lora)
    sig.start_epoch(2)
    sig.observe(grads)
    assert sig.step_vectors(grads) is grads
    weights = SignatureAccumulator("weights", lora)
    weights.start_epoch(2)
    with pytest.raises(RuntimeError, match="before its first observed step"):
        weights.step_vectors(grads)
    weights.observe()
    assert weights.step_vectors(grads) is weights.current()
