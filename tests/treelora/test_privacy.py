import math

import pytest
import torch

from treelora.privacy import clip_by_global_norm, gaussian_release


def test_clip_bounds_the_joint_norm_and_keeps_small_vectors():
    big = [torch.full((100,), 3.0), torch.full((50,), -4.0)]
    clipped, norm = clip_by_global_norm(big, 2.0)
    assert norm == pytest.approx(math.sqrt(100 * 9 + 50 * 16))
    assert math.sqrt(sum(float((v**2).sum()) for v in clipped)) == pytest.approx(2.0, rel=1e-5)
    small = [torch.full((4,), 0.1)]
    assert torch.equal(clip_by_global_norm(small, 2.0)[0][0], small[0])
    with pytest.raises(ValueError):
        clip_by_global_norm(small, 0.0)


def test_gaussian_release_noise_has_the_calibrated_std():
    g = torch.Generator().manual_seed(0)
    zero = [torch.zeros(20000), torch.zeros(20000)]
    out = gaussian_release(zero, clip=0.5, noise_multiplier=2.0, generator=g)
    noise = torch.cat(out)
    assert float(noise.std()) == pytest.approx(1.0, rel=0.02)  # σ = 2.0 × 0.5
    assert abs(float(noise.mean())) < 0.02
    assert torch.equal(gaussian_release(zero, clip=0.5, noise_multiplier=0.0, generator=g)[0], zero[0])
    with pytest.raises(ValueError):
        gaussian_release(zero, clip=0.5, noise_multiplier=float("nan"), generator=g)
