"""Shared-probe task signatures: a task's gradient (or diagonal Fisher) at one reference point every node shares.

The live signature (:mod:`treelora.signatures`) is the gradient at a client's *own* adapter, which differs from
client to client, so two clients training the same task need not produce nearby signatures. Clustered FL compares
updates at one shared model and Task2Vec compares Fisher information at one fixed probe network; the shared probe
does the same here (issue 12): a reference LoRA and head generated from ``seed`` alone — identical on every node —
at which each task's loss gradient is measured on a few seeded mini-batches of the client's own examples.

* Reference LoRA, layer l: ``A ~ U(-1/sqrt(d_in), 1/sqrt(d_in))`` (peft's Kaiming-uniform bound) and
  ``B ~ U(-b, b)`` with ``b = 0.1 / sqrt(r)``: B must not be 0, or the gradient with respect to A vanishes.
* Reference head: ``W ~ U(-1/sqrt(h), 1/sqrt(h))`` (``nn.Linear``'s bound), bias 0. Same task → same classes →
  the same head rows on every node; a causal LM in generate mode has no head.
* ``probe-grad``: the mean over batches of each layer's flattened ``[dL/dA, dL/dB]``; ``probe-fisher``: the mean of
  its elementwise square (a diagonal empirical Fisher over mini-batch gradients).
* ``probe-input-grad``: both, from the same batches: per layer ``[input mean / ||input mean||_1,
  gradient / ||gradient||_1] / 2`` (each part at unit L1 norm, so that neither outweighs the other whatever their
  widths and scales; the layer has L1 norm 1). Its L1 distance is the mean of the two parts' distances, so tasks
  on related inputs come near each other (the input half) while tasks on the same inputs with different labels
  still separate (the gradient half).
* ``probe-norm`` (:func:`normalise_layers`): ``l1`` scales each layer of a signature to unit L1 norm before it is
  released, so that the tree compares a task's per-layer *directions*; ``none`` sends it as measured. How large a
  task's gradient is at the reference point depends on how well the random reference head happens to fit the shard,
  which varies between two shards of one task about as much as between tasks; the sketch's L1 estimate has a
  relative error of ~10% at 256 coordinates, so that magnitude spread is what turns near-ties into wrong nearest
  leaves (BENCHMARKS.md "Tree purity": ``probe-grad`` with ``l1`` against ``none``). It also bounds a release:
  every layer then has L2 norm <= 1.
* ``probe-input``: the mean over batches of each LoRA layer's *input* (over the batch's real tokens; length
  ``d_in``), a forward pass only. It does not see the labels: it places a task by what its examples look like to the
  backbone, so related tasks with disjoint classes land near each other (the gradients put them about equally far
  apart, because disjoint classes meet disjoint random head rows), but two tasks on the same inputs with different
  labels are indistinguishable to it.

Every tensor is drawn from a ``torch.Generator`` seeded from a SHA-256 of ``(seed, layer, part)``, so it depends
on nothing else (not on the global RNG, the live state, the device). The model runs in eval mode (no dropout), so
the signature is a deterministic function of (seed, examples, classes, batches). The live adapter, head, their
``.grad`` fields, the optimiser, the train/eval mode and the global RNG are restored exactly afterwards.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any

import torch

from .data import iterate_batches

if TYPE_CHECKING:
    from .learner import ContinualLearner

__all__ = ["PROBE_KINDS", "PROBE_NORMS", "reference_adapter", "reference_head", "probe_signature", "normalise_layers"]

PROBE_KINDS = ("probe-grad", "probe-fisher", "probe-input", "probe-input-grad")
PROBE_NORMS = ("l1", "none")
B_SCALE = 0.1  # B's bound is B_SCALE / sqrt(r)


def _generator(seed: int, *parts: object) -> torch.Generator:
    key = "|".join(["treelora-probe/v1", str(int(seed)), *map(str, parts)]).encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1))


def _uniform(shape: tuple[int, ...], bound: float, gen: torch.Generator) -> torch.Tensor:
    return ((torch.rand(shape, dtype=torch.float64, generator=gen) * 2 - 1) * bound).to(torch.float32)


def reference_adapter(shapes: list[tuple[tuple[int, ...], tuple[int, ...]]], seed: int) -> dict[str, torch.Tensor]:
    """The reference LoRA as a snapshot ``{"<l>.A", "<l>.B"}`` for layers of ``(A shape, B shape)``."""
    out = {}
    for layer, (a_shape, b_shape) in enumerate(shapes):
        r, d_in = a_shape
        out[f"{layer}.A"] = _uniform(tuple(a_shape), 1.0 / math.sqrt(d_in), _generator(seed, layer, "A"))
        out[f"{layer}.B"] = _uniform(tuple(b_shape), B_SCALE / math.sqrt(r), _generator(seed, layer, "B"))
    return out


def reference_head(num_classes: int, hidden: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference head ``(weight (C, h), bias (C,))``."""
    return _uniform((num_classes, hidden), 1.0 / math.sqrt(hidden), _generator(seed, "head")), torch.zeros(num_classes)


def probe_signature(learner: ContinualLearner, examples: list[Any], classes: list[int], *, batches: int, kind: str,
                    seed: int) -> list[torch.Tensor]:
    """Per LoRA layer, the task's ``probe-grad`` / ``probe-fisher`` (CPU float32, the layer's ``[A, B]`` length),
    ``probe-input`` (the layer's input width) or ``probe-input-grad`` signature (input width + ``[A, B]`` length)
    on the first ``batches`` seeded mini-batches of
    ``examples`` (batch size of the learner's config), at the reference point of ``seed``; the learner's live state
    is left exactly as it was."""
    if kind not in PROBE_KINDS:
        raise ValueError(f"probe kind must be one of {', '.join(PROBE_KINDS)}, got {kind!r}")
    if batches < 1 or not examples:
        raise ValueError(f"a probe needs >= 1 batch and some examples, got {batches} batches, {len(examples)} examples")
    lora, model = learner.lora, learner.model
    head = getattr(model, "head", None)
    params = lora.parameters() + ([] if head is None else list(head.parameters()))
    saved_grads = [p.grad for p in params]
    live = learner.adapter_state()
    was_training = model.training
    shapes = [tuple(tuple(p.shape) for p in lora.params(layer)) for layer in range(lora.num_layers)]
    ref = reference_adapter(shapes, seed)  # type: ignore[arg-type]
    encoded = learner.encode(examples)
    cls = torch.tensor(sorted(int(c) for c in classes), device=learner.device)
    acc: list[torch.Tensor] | None = None
    acc_in: list[torch.Tensor] | None = None
    n = 0
    inputs: dict[int, torch.Tensor] = {}
    hooks = [] if kind not in ("probe-input", "probe-input-grad") else [
        layer.register_forward_hook(lambda _m, args, _out, i=i: inputs.__setitem__(i, args[0].detach()))
        for i, layer in enumerate(lora.layers)]
    try:
        with torch.random.fork_rng(devices=[learner.device] if learner.device.type == "cuda" else []):
            lora.load_snapshot(ref)
            if head is not None:
                w, b = reference_head(head.weight.shape[0], head.weight.shape[1], seed)
                with torch.no_grad():
                    head.weight.copy_(w)
                    head.bias.copy_(b)
            model.eval()
            for batch in iterate_batches(encoded, learner.cfg.batch_size, shuffle=True, seed=int(seed) & 0x7FFFFFFF):
                for p in params:
                    p.grad = None
                batch = {k: v.to(learner.device) for k, v in batch.items()}
                if kind == "probe-input":
                    with torch.no_grad(), learner._autocast():
                        model.loss(batch, cls)
                    g = [_token_mean(inputs[i], batch.get("attention_mask")) for i in range(lora.num_layers)]
                else:
                    with learner._autocast():
                        loss = model.loss(batch, cls)
                    loss.float().backward()
                    g = [v.float() for v in lora.grad_vectors()]
                if kind == "probe-input-grad":
                    acc_in = _accumulate(acc_in, [_token_mean(inputs[i], batch.get("attention_mask"))
                                                  for i in range(lora.num_layers)])
                if kind == "probe-fisher":
                    g = [v * v for v in g]
                acc = _accumulate(acc, g)
                n += 1
                if n >= batches:
                    break
    finally:
        for h in hooks:
            h.remove()
        lora.load_snapshot(live)
        if head is not None:
            with torch.no_grad():
                head.weight.copy_(live["head.weight"])
                head.bias.copy_(live["head.bias"])
        for p, g in zip(params, saved_grads):
            p.grad = g
        model.train(was_training)
    assert acc is not None
    out = _mean(acc, n)
    if kind == "probe-input-grad":
        assert acc_in is not None
        halves = zip(normalise_layers(_mean(acc_in, n), "l1"), normalise_layers(out, "l1"))
        out = [torch.cat([x, g]) / 2 for x, g in halves]
    return out


def _accumulate(acc: list[torch.Tensor] | None, values: list[torch.Tensor]) -> list[torch.Tensor]:
    """The per-layer running sum ``acc`` plus ``values`` (a copy of ``values`` when there is none yet)."""
    return [v.clone() for v in values] if acc is None else [a.add_(v) for a, v in zip(acc, values)]


def _mean(acc: list[torch.Tensor], n: int) -> list[torch.Tensor]:
    """Per-layer sums over ``n`` batches as CPU float32 means."""
    return [(a / n).detach().to("cpu", torch.float32) for a in acc]


def _token_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A layer input's mean feature vector over a batch: over the real (unmasked) tokens when ``x`` is
    ``(batch, tokens, d)`` and ``mask`` is the batch's ``(batch, tokens)`` attention mask, else over every position."""
    x = x.float()
    if mask is not None and x.dim() == 3 and tuple(mask.shape) == tuple(x.shape[:2]):
        m = mask.to(x.dtype).unsqueeze(-1)
        return (x * m).sum((0, 1)) / m.sum().clamp_min(1.0)
    return x.reshape(-1, x.shape[-1]).mean(0)


def normalise_layers(signature: list[torch.Tensor], norm: str) -> list[torch.Tensor]:
    """``signature`` with each layer scaled to unit L1 norm (``norm="l1"``; an all-zero layer stays zero) or as it
    is (``"none"``)."""
    if norm not in PROBE_NORMS:
        raise ValueError(f"probe-norm must be one of {', '.join(PROBE_NORMS)}, got {norm!r}")
    if norm == "none":
        return list(signature)
    out = []
    for v in signature:
        total = v.abs().sum()
        out.append(v / total if total > 0 else v.clone())
    return out
