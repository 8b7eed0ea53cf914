"""Anchor Iterative Update (reference §5.2 and §6.1).

Every few hundred steps the current mesh is rendered (albedo, no gradient) from the four AIU anchor
cameras (az 0/90/180/270, el 0, the preset's distance and fov), the renders are SDEdit'ed by the
multi-view model (strength 0.1 -> the first 5 of 50 DDIM steps, from t = 81, CFG 5) with the side
anchor closest in azimuth dropped from the target's attention, and the results become **pseudo
ground-truth views** for the reconstruction loss. The condition anchors themselves never change.

Differences from the official code: the pseudo-view mask is the render's own alpha (no rembg / u2net
download); when the model works at a lower resolution than the renders, the SDEdit correction
(``sdedit(down(render)) - down(render)``) is upsampled and added to the full-resolution render, which
equals the official output when both sizes agree.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..geometry.camera import Cameras, orbit_cameras
from ..geometry.presets import AIU_ANCHOR_AZIMUTHS

__all__ = ["drop_nearest_anchor_mask", "PseudoViews", "aiu_cameras", "sdedit_pseudo_views",
           "condition_pseudo_views", "resize_images"]


def drop_nearest_anchor_mask(render_azimuths, anchor_azimuths) -> torch.Tensor:
    """(B, A-1) float32 drop mask of the official ``du_forward_fix``.

    For each render azimuth ``az`` the side anchor (1..A-1) with the smallest
    ``|((az + 360) mod 360) - anchor_az|`` is dropped (1); no wrap-around in the distance; ties go to
    the lower index; anchor 0 (the reference) is never dropped. The mask lives on ``render_azimuths``'
    device (CPU for plain numbers); the anchor azimuths are moved there.
    """
    dev = render_azimuths.device if isinstance(render_azimuths, torch.Tensor) else torch.device("cpu")
    az = torch.as_tensor(render_azimuths, dtype=torch.float64, device=dev).reshape(-1)
    anchors = torch.as_tensor(anchor_azimuths, dtype=torch.float64).reshape(-1).to(dev)
    if anchors.numel() < 2:
        return torch.zeros(az.numel(), 0, device=dev)
    wrapped = torch.remainder(az + 360.0, 360.0)
    dist = (wrapped[:, None] - anchors[None, 1:]).abs()
    idx = dist.argmin(dim=1)
    mask = torch.zeros(az.numel(), anchors.numel() - 1, device=dev)
    mask[torch.arange(az.numel(), device=dev), idx] = 1.0
    return mask


def resize_images(x: torch.Tensor, size: int, mode: str = "area") -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size); ``area`` when shrinking, bilinear when growing."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    if x.shape[-1] > size and mode == "area":
        return F.interpolate(x, size=(size, size), mode="area")
    if mode == "nearest":
        return F.interpolate(x, size=(size, size), mode="nearest")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def aiu_cameras(distance: float, fovy_deg: float, resolution: int) -> Cameras:
    """The four AIU anchor cameras (el 0, az 0/90/180/270)."""
    return orbit_cameras([0.0] * len(AIU_ANCHOR_AZIMUTHS), list(AIU_ANCHOR_AZIMUTHS), distance, fovy_deg,
                         width=resolution)


@dataclass
class PseudoViews:
    """Reconstruction targets: images (P, H, W, 3) on white, masks (P, H, W, 1), their cameras."""

    images: torch.Tensor
    masks: torch.Tensor
    cameras: Cameras
    source: str = "sdedit"


@torch.no_grad()
def sdedit_pseudo_views(guidance, refinable, cameras: Cameras, anchor_azimuths, strength: float = 0.1,
                        num_ddim_steps: int = 50, mask_threshold: float = 0.5, seed: int = 0) -> PseudoViews:
    """Render ``cameras`` (albedo, white background), SDEdit them, return the pseudo views."""
    out = refinable.render(cameras, background=1.0, grad=False)
    rgb = out.rgb.permute(0, 3, 1, 2).float()  # (P, 3, H, W)
    H = rgb.shape[-1]
    small = resize_images(rgb, guidance.image_size)
    drop = drop_nearest_anchor_mask(cameras.azimuth_deg, anchor_azimuths)
    edited = guidance.sdedit(small, cameras.elevation_deg, cameras.azimuth_deg, drop_mask=drop,
                             strength=strength, num_steps=num_ddim_steps, seed=seed).float().to(rgb.device)
    if guidance.image_size != H:
        edited = rgb + resize_images(edited - small.to(edited.device), H, mode="bilinear")
    mask = (out.alpha.float() > mask_threshold).float()
    img = edited.permute(0, 2, 3, 1).clamp(0, 1)
    img = img * mask + (1 - mask)
    return PseudoViews(images=img, masks=mask, cameras=cameras, source="sdedit")


def condition_pseudo_views(images: torch.Tensor, masks: torch.Tensor, cameras: Cameras) -> PseudoViews:
    """Ablation "plain L1": the condition views (A, H, W, 3) on white are the pseudo targets."""
    return PseudoViews(images=images, masks=masks, cameras=cameras, source="condition_views")
