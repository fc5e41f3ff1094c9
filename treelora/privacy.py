"""Differential privacy for what a client releases: the Gaussian mechanism on clipped vectors.

A release (a signature before it is sketched, or an adapter update) is clipped jointly over all layers to L2
norm ≤ ``clip`` and perturbed with i.i.d. ``N(0, (noise_multiplier · clip)²)`` noise per coordinate. Sketching
happens after the noise, so the sketch is post-processing and inherits the guarantee; the noise must be added
before sketching because a Cauchy sketch has unbounded L2 sensitivity. One release is one Gaussian event with
that noise multiplier (L2 sensitivity ``clip`` under add/remove-one-client); the server composes each client's
events over rounds with Flower's RDP accountant (``server/privacy.py``) and reports (ε, δ).

This module is framework-free: it only transforms tensors.
"""

from __future__ import annotations

import math

import torch


def clip_by_global_norm(vectors: list[torch.Tensor], max_norm: float) -> tuple[list[torch.Tensor], float]:
    """Scale all vectors together so their joint L2 norm is at most ``max_norm``; returns (clipped, norm before)."""
    if max_norm <= 0:
        raise ValueError(f"clip must be > 0, got {max_norm}")
    norm = math.sqrt(sum(float((v.float() ** 2).sum()) for v in vectors))
    scale = min(1.0, max_norm / norm) if norm > 0 else 1.0
    return [v.float() * scale for v in vectors], norm


def gaussian_release(
    vectors: list[torch.Tensor], *, clip: float, noise_multiplier: float, generator: torch.Generator
) -> list[torch.Tensor]:
    """Clip jointly to ``clip`` and add Gaussian noise of std ``noise_multiplier · clip`` to every coordinate."""
    if noise_multiplier < 0 or not math.isfinite(noise_multiplier):
        raise ValueError(f"noise multiplier must be a finite number >= 0, got {noise_multiplier}")
    clipped, _ = clip_by_global_norm(vectors, clip)
    std = noise_multiplier * clip
    out = []
    for v in clipped:
        noise = torch.randn(v.shape, generator=generator, dtype=torch.float32) * std
        out.append(v + noise.to(v.device))
    return out
