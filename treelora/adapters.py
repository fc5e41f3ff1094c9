"""Layer-wise LoRA through peft on any transformers model.

The "layers" of TreeLoRA are the LoRA-wrapped modules in module order (input → output): by default the attention
query and value projections of every block, whose names differ per architecture (BERT ``query``/``value``,
Llama/ViT in transformers 5 ``q_proj``/``v_proj``, T5 ``q``/``v``). ``lora_depth`` D keeps only the first D
matched modules (the paper's depth ablation). Layer l's adapter is the pair (A_l, B_l); its flattened gradient
``[dL/dA_l, dL/dB_l]`` is what the ``grad`` signature averages.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

# Leaf-name pairs tried in order; the first pair that matches any nn.Linear wins.
TARGET_CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("query", "value"),  # BERT, MiniLM, RoBERTa
    ("q_proj", "v_proj"),  # Llama, SmolLM2, Mistral, ViT (transformers 5), OPT
    ("q", "v"),  # T5
    ("q_lin", "v_lin"),  # DistilBERT
    ("c_attn",),  # GPT-2 (fused qkv)
)


def find_target_modules(
    model: nn.Module, target_modules: Iterable[str] | None = None, lora_depth: int = 0
) -> list[str]:
    """Full names of the modules to wrap, in module order.

    ``target_modules`` are leaf names (e.g. ``("query", "value")``); None tries :data:`TARGET_CANDIDATES`.
    Raises ValueError listing the model's Linear leaf names when nothing matches.
    """
    linear = [(name, name.rsplit(".", 1)[-1]) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    candidates = (tuple(target_modules),) if target_modules else TARGET_CANDIDATES
    for leafs in candidates:
        names = [full for full, leaf in linear if leaf in leafs]
        if names:
            return names[:lora_depth] if lora_depth > 0 else names
    seen = sorted({leaf for _, leaf in linear})
    raise ValueError(f"no LoRA target modules {list(candidates)} in this model; its Linear layers are named {seen}")


class LayerwiseLoRA:
    """A peft LoRA on a model, addressed layer by layer.

    Holds the peft model and the ordered LoRA modules. Only LoRA parameters require grad afterwards.
    """

    adapter_name = "default"

    def __init__(
        self,
        model: nn.Module,
        *,
        r: int = 8,
        alpha: float = 32.0,
        dropout: float = 0.1,
        target_modules: Iterable[str] | None = None,
        lora_depth: int = 0,
        seed: int = 0,
    ) -> None:
        from peft import LoraConfig, get_peft_model

        self.names = find_target_modules(model, target_modules, lora_depth)
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=self.names, bias="none")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = get_peft_model(model, config)
        modules = dict(self.model.named_modules())
        self.layers = []
        for name in self.names:
            match = [m for n, m in modules.items() if n.endswith(name) and hasattr(m, "lora_A")]
            if len(match) != 1:
                raise RuntimeError(f"could not locate the LoRA module wrapping {name!r}")
            self.layers.append(match[0])
        self.r = r

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def params(self, layer: int) -> tuple[nn.Parameter, nn.Parameter]:
        """(A, B) weights of one layer: A is (r, d_in), B is (d_out, r)."""
        mod = self.layers[layer]
        return mod.lora_A[self.adapter_name].weight, mod.lora_B[self.adapter_name].weight

    def parameters(self) -> list[nn.Parameter]:
        """All LoRA parameters, layer by layer as [A_0, B_0, A_1, B_1, ...]."""
        return [p for layer in range(self.num_layers) for p in self.params(layer)]

    def layer_dims(self) -> list[int]:
        """Length of each layer's flattened [A, B] vector (the ``grad`` signature size)."""
        return [sum(p.numel() for p in self.params(layer)) for layer in range(self.num_layers)]

    def a_dims(self) -> list[int]:
        """Length of each layer's flattened A (the ``weights`` signature size)."""
        return [self.params(layer)[0].numel() for layer in range(self.num_layers)]

    def grad_vectors(self) -> list[torch.Tensor]:
        """Flattened ``.grad`` of [A, B] per layer (zeros where no gradient was computed)."""
        out = []
        for layer in range(self.num_layers):
            parts = [
                (p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten() for p in self.params(layer)
            ]
            out.append(torch.cat(parts))
        return out

    def layer_state(self, layer: int) -> dict[str, torch.Tensor]:
        """A CPU copy of one layer's adapter."""
        a, b = self.params(layer)
        return {"A": a.detach().to("cpu", copy=True), "B": b.detach().to("cpu", copy=True)}

    def load_layer_state(self, layer: int, state: dict[str, torch.Tensor]) -> None:
        """Overwrite one layer's adapter, or only the parts given (``{"A": ...}`` and/or ``{"B": ...}``); shapes
        must match."""
        a, b = self.params(layer)
        parts = [(name, param) for name, param in (("A", a), ("B", b)) if name in state]
        if not parts:
            raise ValueError(f"layer {layer}: nothing to load (expected A and/or B)")
        for name, param in parts:
            value = state[name]
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(f"layer {layer} {name}: shape {tuple(value.shape)} != {tuple(param.shape)}")
            if not torch.isfinite(value).all():
                raise ValueError(f"layer {layer} {name}: non-finite values")
        with torch.no_grad():
            for name, param in parts:
                param.copy_(state[name].to(param.device, param.dtype))

    def snapshot(self) -> dict[str, torch.Tensor]:
        """The live adapter as ``{"<layer>.A": ..., "<layer>.B": ...}`` on CPU (a task's adapter)."""
        out = {}
        for layer in range(self.num_layers):
            for name, value in self.layer_state(layer).items():
                out[f"{layer}.{name}"] = value
        return out

    def load_snapshot(self, snapshot: dict[str, torch.Tensor], layers: Iterable[int] | None = None) -> None:
        """Load a snapshot (all layers, or only ``layers``)."""
        for layer in range(self.num_layers) if layers is None else layers:
            self.load_layer_state(layer, {"A": snapshot[f"{layer}.A"], "B": snapshot[f"{layer}.B"]})

    def reset(self, seed: int) -> None:
        """Fresh LoRA: A re-initialised (seeded), B zeros — the adapter contributes nothing until trained."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for mod in self.layers:
                mod.reset_lora_parameters(self.adapter_name, True)

    def merge_into_base(self) -> None:
        """Add the live adapter's B·A·scale into the frozen base weights (O-LoRA freezes earlier LoRAs this way)."""
        with torch.no_grad():
            for mod in self.layers:
                a = mod.lora_A[self.adapter_name].weight
                b = mod.lora_B[self.adapter_name].weight
                mod.get_base_layer().weight += (b @ a) * mod.scaling[self.adapter_name]

    def save_peft(self, path: str | Path, snapshot: dict[str, torch.Tensor] | None = None) -> Path:
        """Save (a snapshot of) the adapter in peft's own format: ``PeftModel.from_pretrained(backbone, path)``."""
        path = Path(path)
        live = self.snapshot() if snapshot is not None else None
        if snapshot is not None:
            self.load_snapshot(snapshot)
        try:
            self.model.save_pretrained(str(path))
        finally:
            if live is not None:
                self.load_snapshot(live)
        return path
