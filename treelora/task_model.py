"""The task model the learner trains: the LoRA-wrapped backbone with a class-incremental head, or, for causal
LMs in instruction mode, :class:`treelora.lm.InstructionLM`. Both offer ``encode`` / ``loss`` / ``predict``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .data import encode_examples


def set_eager_attention(model: nn.Module) -> None:
    """Double backward needs the eager attention kernel (PyTorch's CPU SDPA has no double backward)."""
    if hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("eager")
            return
        except Exception:  # noqa: BLE001 - some configs refuse; fall through to the config flag
            pass
    if hasattr(model, "config"):
        model.config._attn_implementation = "eager"


def masked_logits(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``logits`` with every class outside ``classes`` at −∞ (class-incremental training and scoring)."""
    mask = torch.full_like(logits, float("-inf"))
    mask[:, classes] = 0.0
    return logits + mask


class ClassifierModel(nn.Module):
    """Backbone with LoRA + a linear class-incremental head over every class of the stream."""

    def __init__(self, encoder: nn.Module, kind: str, hidden_size: int, num_classes: int) -> None:
        super().__init__()
        if kind not in ("encoder", "vision", "causal-lm"):
            raise ValueError(f"unsupported backbone kind {kind!r}")
        self.encoder = encoder
        self.kind = kind
        self.head = nn.Linear(hidden_size, num_classes)

    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled representation: masked mean of the last hidden state (text) or token mean (vision)."""
        if "pixel_values" in batch:
            hidden = self.encoder(pixel_values=batch["pixel_values"]).last_hidden_state
            return hidden.mean(dim=1)
        mask = batch["attention_mask"]
        if self.kind == "causal-lm":
            out = self.encoder(input_ids=batch["input_ids"], attention_mask=mask, output_hidden_states=True)
            hidden = out.hidden_states[-1]
        else:
            hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feats = self.features(batch)
        return self.head(feats.to(self.head.weight.dtype))

    def encode(self, examples: list[Any], tokenizer: Any, max_length: int) -> dict[str, torch.Tensor]:
        """Tensors for a split (the task-model interface shared with :class:`treelora.lm.InstructionLM`)."""
        return encode_examples(examples, tokenizer, max_length)

    def loss(self, batch: dict[str, torch.Tensor], classes: torch.Tensor) -> torch.Tensor:
        """Cross-entropy with logits restricted to ``classes`` (class-incremental training)."""
        return nn.functional.cross_entropy(masked_logits(self(batch).float(), classes), batch["labels"])

    def predict(self, batch: dict[str, torch.Tensor], classes: torch.Tensor) -> torch.Tensor:
        """Predicted global class ids, argmax over ``classes``."""
        return masked_logits(self(batch).float(), classes).argmax(dim=-1)


def make_task_model(backbone: Any, encoder: nn.Module, num_classes: int, lm_mode: str, stream: Any | None) -> nn.Module:
    """Causal LMs on instruction streams (``lm_mode="generate"``) generate the answer; everything else gets a
    class head. ``encoder`` is the backbone's model with LoRA attached."""
    if backbone.kind == "causal-lm" and lm_mode == "generate":
        from .lm import InstructionLM

        if stream is None:
            raise ValueError("a causal-LM learner in generate mode needs the stream (prompts and answers)")
        return InstructionLM(encoder, backbone.tokenizer, stream)
    return ClassifierModel(encoder, backbone.kind, backbone.hidden_size, num_classes)
