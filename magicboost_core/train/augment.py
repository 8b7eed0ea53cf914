"""Condition-view augmentations of Magic-Boost training and their condition-strength labels.

The official model is trained with degraded side views and tells the UNet how degraded each one is
through the 2-number ``noise_embed`` label added to the camera code (reference §2.7):

* ``n0 = 500 (1 - strength_tex)``  <->  **random noise**: the anchor latent is diffused to a random
  timestep tau in [0, 500] with the official alpha-bar, and its label is n0 = tau;
* ``n1 = 0.5 (1 - strength_geo)``  <->  **random scale** (geometry distortion): the anchor image is
  zoomed / shifted by a random factor of magnitude g in [0, 0.5], and its label is n1 = g;
* **random drop** of side anchors through the UNet's ``drop_mask`` (B, A-1).

Anchor 0 (the reference / input view) is never augmented, never dropped, and keeps label (0, 0); so
is the target frame 0. All functions take an explicit ``torch.Generator`` (CPU) for reproducibility.
Tensors: anchors (B, A, C, H, W); labels (B, 1 + A, 2) float32 in frame order (target first).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "noise_anchors", "distort_anchors", "random_drop_mask", "cfg_dropout_mask",
           "augment_conditions", "MAX_NOISE_T", "MAX_GEO"]

MAX_NOISE_T = 500  # label n0 range: 500 * (1 - strength_tex)
MAX_GEO = 0.5      # label n1 range: 0.5 * (1 - strength_geo)


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities (per side anchor, or per sample for ``drop_prob``) and maximum magnitudes."""

    enabled: bool = True
    noise_prob: float = 0.5
    max_noise_t: int = MAX_NOISE_T
    geo_prob: float = 0.5
    max_geo: float = MAX_GEO
    max_shift: float = 0.15  # NDC units (image spans [-1, 1]) at g = max_geo
    drop_prob: float = 0.15  # per sample: use a drop mask at all
    drop_each: float = 0.5   # per side anchor once a sample is selected

    def __post_init__(self):
        for name in ("noise_prob", "geo_prob", "drop_prob", "drop_each"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be a probability in [0, 1], got {v}.")
        if not 0 <= self.max_noise_t <= MAX_NOISE_T:
            raise ValueError(f"AugmentConfig.max_noise_t must be in [0, {MAX_NOISE_T}], got {self.max_noise_t}.")
        if not 0.0 <= self.max_geo <= MAX_GEO:
            raise ValueError(f"AugmentConfig.max_geo must be in [0, {MAX_GEO}], got {self.max_geo}.")


def _side_mask(b: int, a: int, prob: float, g: torch.Generator) -> torch.Tensor:
    """(B, A) bool: True where a side anchor (index >= 1) is selected with probability ``prob``."""
    m = torch.rand(b, a, generator=g) < prob
    m[:, 0] = False
    return m


def noise_anchors(anchors: torch.Tensor, alphas_cumprod: torch.Tensor, prob: float, g: torch.Generator,
                  max_t: int = MAX_NOISE_T) -> tuple[torch.Tensor, torch.Tensor]:
    """Diffuse selected side-anchor latents to a random timestep tau ~ U{0..max_t}.

    x' = sqrt(ab[tau]) x + sqrt(1 - ab[tau]) eps. Returns (anchors', tau) with tau (B, A) float32 = the
    n0 label (0 where not applied, always 0 for anchor 0).
    """
    b, a = anchors.shape[:2]
    sel = _side_mask(b, a, prob, g)
    tau = torch.randint(0, max_t + 1, (b, a), generator=g)
    tau = torch.where(sel, tau, torch.zeros_like(tau))
    ab = alphas_cumprod.double().cpu()[tau].float().to(anchors.device)
    eps = torch.randn(anchors.shape, generator=g).to(anchors)
    scale = ab.sqrt().view(b, a, 1, 1, 1).to(anchors.dtype)
    sigma = (1 - ab).sqrt().view(b, a, 1, 1, 1).to(anchors.dtype)
    selv = sel.view(b, a, 1, 1, 1).to(anchors.device)
    out = torch.where(selv, scale * anchors + sigma * eps, anchors)
    return out, tau.float()


def distort_anchors(anchors: torch.Tensor, prob: float, g: torch.Generator, max_geo: float = MAX_GEO,
                    max_shift: float = 0.15, fill: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Zoom / shift selected side-anchor images by a random magnitude g ~ U[0, max_geo].

    Zoom factor ``1 + g * s`` (s = +-1 at random: larger or smaller object), shift ``max_shift * g / 0.5``
    NDC units in a random direction; outside pixels get ``fill`` (white = 1.0 for [-1, 1] images).
    anchors (B, A, C, H, W). Returns (anchors', g) with g (B, A) float32 = the n1 label.
    """
    b, a, c, h, w = anchors.shape
    sel = _side_mask(b, a, prob, g)
    mag = torch.rand(b, a, generator=g) * max_geo
    mag = torch.where(sel, mag, torch.zeros_like(mag))
    sign = torch.where(torch.rand(b, a, generator=g) < 0.5, -1.0, 1.0)
    zoom = 1.0 + mag * sign  # in [0.5, 1.5]
    ang = torch.rand(b, a, generator=g) * (2 * math.pi)
    shift = max_shift * mag / MAX_GEO
    theta = torch.zeros(b, a, 2, 3)
    theta[..., 0, 0] = 1.0 / zoom
    theta[..., 1, 1] = 1.0 / zoom
    theta[..., 0, 2] = -shift * torch.cos(ang) / zoom
    theta[..., 1, 2] = -shift * torch.sin(ang) / zoom
    flat = anchors.reshape(b * a, c, h, w)
    grid = F.affine_grid(theta.reshape(b * a, 2, 3).to(flat), (b * a, c, h, w), align_corners=False)
    warped = F.grid_sample(flat - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    warped = warped.reshape(b, a, c, h, w)
    out = torch.where(sel.view(b, a, 1, 1, 1).to(anchors.device), warped, anchors)
    return out, mag


def random_drop_mask(b: int, a: int, prob: float, each: float, g: torch.Generator) -> torch.Tensor:
    """drop_mask (B, A-1) float32: 1 = drop side anchor j+1 from the target's attention.

    With probability ``prob`` a sample gets a mask, then each side anchor is dropped with probability
    ``each``. Anchor 0 is not in the mask, so it is never dropped.
    """
    use = torch.rand(b, 1, generator=g) < prob
    m = (torch.rand(b, max(a - 1, 0), generator=g) < each) & use
    return m.float()


def cfg_dropout_mask(b: int, prob: float, g: torch.Generator) -> torch.Tensor:
    """(B,) bool: True = train this sample unconditionally (zero anchors, image tokens and labels)."""
    return torch.rand(b, generator=g) < prob


def augment_conditions(anchor_images: torch.Tensor, encode, alphas_cumprod: torch.Tensor, config: AugmentConfig,
                       g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Apply the three augmentations to a batch of anchor images.

    anchor_images: (B, A, 3, H, W) in [0, 1]; ``encode`` maps (N, 3, H, W) [0, 1] images to latents
    (N, C, h, w). Returns (anchor latents (B, A, C, h, w), labels (B, A, 2) for the anchor frames,
    drop_mask (B, A-1) or None).
    """
    b, a = anchor_images.shape[:2]
    labels = torch.zeros(b, a, 2)
    drop = None
    imgs = anchor_images * 2 - 1
    if config.enabled and config.geo_prob > 0:
        imgs, geo = distort_anchors(imgs, config.geo_prob, g, config.max_geo, config.max_shift)
        labels[..., 1] = geo
    flat = ((imgs + 1) / 2).clamp(0, 1).reshape(b * a, *imgs.shape[2:])
    lat = encode(flat)
    lat = lat.reshape(b, a, *lat.shape[1:])
    if config.enabled and config.noise_prob > 0:
        lat, tau = noise_anchors(lat, alphas_cumprod, config.noise_prob, g, config.max_noise_t)
        labels[..., 0] = tau
    if config.enabled and config.drop_prob > 0 and a > 1:
        drop = random_drop_mask(b, a, config.drop_prob, config.drop_each, g)
    return lat, labels, drop
