"""A tiny deterministic :class:`~magicboost_core.refine.guidance.Guidance` with no diffusion model.

Pixel-space (latents = 2 * image - 1), noise predicted by one fixed random 3x3 convolution, SDEdit =
a mild contrast change. It exercises every code path of the loop in milliseconds; it is **not** a
refinement prior. A test helper (``import toy_guidance``: tests/ is on sys.path under pytest).
"""
from __future__ import annotations

import torch

from magicboost_core.model.schedule import alphas_cumprod
from magicboost_core.refine.guidance import Guidance

__all__ = ["ToyGuidance"]


class ToyGuidance(Guidance):
    def __init__(self, image_size: int = 32, seed: int = 0):
        g = torch.Generator().manual_seed(int(seed))
        self.image_size = int(image_size)
        self.alphas_cumprod = alphas_cumprod()
        self.device = torch.device("cpu")
        self.weight = torch.randn(3, 3, 3, 3, generator=g) * 0.1
        self.calls = {"encode": 0, "predict": 0, "sdedit": 0}
        self.last_drop_mask = None

    def encode(self, images, generator=None):
        self.calls["encode"] += 1
        return images * 2 - 1

    def decode(self, latents):
        return ((latents + 1) / 2).clamp(0, 1)

    def predict(self, z_t, t, elevation_deg, azimuth_deg, drop_mask=None):
        self.calls["predict"] += 1
        e = torch.nn.functional.conv2d(z_t, self.weight.to(z_t), padding=1)
        return e, 0.9 * e

    def sdedit(self, images, elevation_deg, azimuth_deg, drop_mask=None, strength=0.1, num_steps=50, seed=0):
        self.calls["sdedit"] += 1
        self.last_drop_mask = drop_mask
        return (0.5 + 1.1 * (images - 0.5)).clamp(0, 1)


class Cond:
    """Condition views as the refinement loop reads them (a stand-in for ``ViewConditioning``): images
    (A, H, W, 3), masks (A, H, W), elevations / azimuths (A,) in degrees, where the masks came from."""

    def __init__(self, images, masks, el, az, mask_source: str = "alpha"):
        self.images, self.masks, self.elevations, self.azimuths = images, masks, el, az
        self.mask_source = mask_source
