"""Image-quality metrics: PSNR and SSIM on batches of RGB images.

Inputs are (B, H, W, 3) (or (H, W, 3)) float tensors in [0, 1], channel-last, any device. Both
functions return a (B,) float32 tensor of per-image scores; average them yourself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim"]


def _check(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        raise ValueError(f"psnr/ssim: image shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}.")
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.ndim != 4 or a.shape[-1] not in (1, 3):
        raise ValueError(f"psnr/ssim expect (B, H, W, 3) or (H, W, 3) images in [0, 1]; got {tuple(a.shape)}.")
    return a.double(), b.double()


def psnr(a: torch.Tensor, b: torch.Tensor, max_val: float = 1.0, eps: float = 1e-10) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image: 10 log10(max^2 / MSE). (B,) float32."""
    a, b = _check(a, b)
    mse = (a - b).pow(2).flatten(1).mean(1)
    return (10.0 * torch.log10(max_val**2 / (mse + eps))).float()


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, max_val: float = 1.0, window: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image with a Gaussian window, averaged over channels.

    ``window`` is clipped to the image size (odd); statistics use 'valid' filtering (no padding), as in
    the reference implementation. (B,) float32 in [-1, 1].
    """
    a, b = _check(a, b)
    x, y = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)  # (B, C, H, W)
    c = x.shape[1]
    size = min(window, x.shape[-1], x.shape[-2])
    size = size if size % 2 == 1 else size - 1
    w1 = _gaussian_window(size, sigma, x.dtype, x.device)
    wh = w1.view(1, 1, 1, size).expand(c, 1, 1, size)
    wv = w1.view(1, 1, size, 1).expand(c, 1, size, 1)

    def filt(t):
        return F.conv2d(F.conv2d(t, wh, groups=c), wv, groups=c)

    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x**2
    syy = filt(y * y) - mu_y**2
    sxy = filt(x * y) - mu_x * mu_y
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    smap = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return smap.flatten(1).mean(1).float()
