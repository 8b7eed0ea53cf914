import math

import pytest
import torch

from magicboost_core.eval.image_metrics import psnr, ssim


def test_psnr_known_value():
    a = torch.zeros(2, 8, 8, 3)
    b = torch.full((2, 8, 8, 3), 0.1)
    assert torch.allclose(psnr(a, b), torch.full((2,), 20.0), atol=1e-4)
    assert psnr(a[0], b[0]).shape == (1,)


def test_ssim_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 32, 32, 3, generator=g)
    assert torch.allclose(ssim(x, x), torch.ones(3), atol=1e-6)
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    s = ssim(x, y)
    assert (s < 0.95).all() and (s > 0).all()
    assert torch.allclose(s, ssim(y, x), atol=1e-6)
    # constant shift: luminance term only, = (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1)
    c = torch.full((1, 16, 16, 3), 0.3)
    d = torch.full((1, 16, 16, 3), 0.5)
    c1 = 0.01**2
    expect = (2 * 0.3 * 0.5 + c1) / (0.09 + 0.25 + c1)
    assert math.isclose(float(ssim(c, d)), expect, rel_tol=1e-5)


def test_metric_shape_errors():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(torch.zeros(1, 4, 4, 3), torch.zeros(1, 4, 5, 3))
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        ssim(torch.zeros(4, 4), torch.zeros(4, 4))
