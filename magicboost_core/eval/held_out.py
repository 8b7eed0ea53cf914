"""A mesh against its ground truth: the metrics of ``magicboost demo``, ``magicboost batch`` and the benchmarks.

PSNR / SSIM of albedo renders at :data:`HELD_OUT_POSES` (none coincides with a condition view), Chamfer
distance and normal consistency of surface samples, and the mean saturation of the renders.
"""
from __future__ import annotations

import torch

from ..geometry.camera import orbit_cameras

__all__ = ["HELD_OUT_POSES", "evaluate_against"]

#: Held-out evaluation poses (elevation, azimuth): none coincides with a condition view.
HELD_OUT_POSES = [(20.0, 45.0), (20.0, 135.0), (20.0, 225.0), (20.0, 315.0), (-10.0, 30.0), (-10.0, 210.0),
                  (35.0, 0.0), (35.0, 180.0)]


@torch.no_grad()
def evaluate_against(mesh, ground_truth, resolution: int = 128, num_points: int = 20000, distance: float = 1.5,
                     fovy_deg: float = 49.134) -> dict:
    """Metrics of ``mesh`` vs ``ground_truth`` (same frame): PSNR/SSIM of albedo renders at
    :data:`HELD_OUT_POSES`, Chamfer distance, normal consistency, mean saturation of the renders."""
    from ..render.renderer import render
    from .image_metrics import psnr, ssim
    from .mesh_metrics import mean_saturation, mesh_distances

    el, az = zip(*HELD_OUT_POSES)
    cams = orbit_cameras(list(el), list(az), distance, fovy_deg, width=resolution)
    a = render(mesh.to("cpu"), cams, mode="albedo", background=1.0)
    b = render(ground_truth.to("cpu"), cams, mode="albedo", background=1.0)
    d = mesh_distances(mesh.to("cpu"), ground_truth.to("cpu"), num_points=num_points)
    return {
        "psnr": float(psnr(a.rgb.clamp(0, 1), b.rgb.clamp(0, 1)).mean()),
        "ssim": float(ssim(a.rgb.clamp(0, 1), b.rgb.clamp(0, 1)).mean()),
        "chamfer": d["chamfer"],
        "normal_consistency": d["normal_consistency"],
        "saturation": mean_saturation(a.rgb, a.alpha),
        "saturation_ground_truth": mean_saturation(b.rgb, b.alpha),
    }
