import pytest
import torch

from treelora.adapters import LayerwiseLoRA, find_target_modules
from treelora.backbones import load_backbone


def test_targets_found_per_architecture():
    bert = load_backbone("tiny-bert").model
    names = find_target_modules(bert)
    assert names and all(n.endswith(("query", "value")) for n in names)
    assert names[0].endswith("query") and names[1].endswith("value")  # module order: layer 0 q, layer 0 v, ...
    llama = load_backbone("tiny-llama").model
    assert all(n.endswith(("q_proj", "v_proj")) for n in find_target_modules(llama))
    vit = load_backbone("tiny-vit").model
    assert find_target_modules(vit)


def test_lora_depth_and_unknown_targets():
    model = load_backbone("tiny-bert").model
    assert len(find_target_modules(model, lora_depth=3)) == 3
    with pytest.raises(ValueError, match="Linear layers are named"):
        find_target_modules(model, ["nonexistent"])


def test_layer_state_round_trip_and_validation():
    lora = LayerwiseLoRA(load_backbone("tiny-bert").model, r=4)
    state = {k: torch.randn_like(v) for k, v in lora.layer_state(1).items()}
    lora.load_layer_state(1, state)
    got = lora.layer_state(1)
    assert torch.equal(got["A"], state["A"]) and torch.equal(got["B"], state["B"])
    with pytest.raises(ValueError, match="shape"):
        lora.load_layer_state(0, {"A": torch.zeros(1, 1), "B": state["B"]})
    with pytest.raises(ValueError, match="non-finite"):
        lora.load_layer_state(0, {"A": torch.full_like(state["A"], float("nan")), "B": state["B"]})
    assert lora.layer_dims()[0] == state["A"].numel() + state["B"].numel()


def test_snapshot_saves_in_peft_format(tmp_path):
    from peft import PeftModel

    lora = LayerwiseLoRA(load_backbone("tiny-bert", seed=1).model, r=4)
    snap = {k: torch.randn_like(v) for k, v in lora.snapshot().items()}
    lora.save_peft(tmp_path / "adapter", snap)
    loaded = PeftModel.from_pretrained(load_backbone("tiny-bert", seed=1).model, tmp_path / "adapter")
    a = [m for n, m in loaded.named_modules() if hasattr(m, "lora_A") and n.endswith("query")][0]
    assert torch.allclose(a.lora_A["default"].weight, snap["0.A"])


def test_merge_into_base_preserves_function():
    backbone = load_backbone("tiny-bert", seed=2)
    lora = LayerwiseLoRA(backbone.model, r=4, dropout=0.0)
    with torch.no_grad():
        for p in lora.parameters():
            p.normal_(0, 0.1)
    lora.model.eval()
    ids = torch.randint(0, 100, (2, 6))
    before = lora.model(input_ids=ids).last_hidden_state
    lora.merge_into_base()
    lora.reset(seed=0)  # B = 0: the fresh adapter adds nothing
    after = lora.model(input_ids=ids).last_hidden_state
    assert torch.allclose(before, after, atol=1e-5)
