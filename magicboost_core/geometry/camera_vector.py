"""The official 10-number camera code fed to the multi-view UNet's camera MLP (reference §2.6).

Layout per view::

    [d0, d1, n0, n1, sin el, sin az, sin dr, cos el, cos az, cos dr]

* ``(d0, d1)`` = (1, 0) for the target view, (0, 1) for anchors.
* ``(n0, n1)`` = (0, 0) here; the UNet adds the condition-strength label (``noise_embed``) into them.
* ``el`` = absolute elevation in radians.
* ``az`` = azimuth relative to anchor 0, **rounded to whole degrees** and wrapped to [-180, 180)
  (``mod`` with the sign of the divisor, as Python's ``%``), in radians.
* ``dr`` = radius minus anchor 0's radius (raw units; refinement passes radius 0 everywhere).
"""
from __future__ import annotations

import torch

__all__ = ["camera_vectors", "relative_azimuth_deg", "condition_strength_labels"]


def _input_device(*values) -> torch.device:
    """The device of the first tensor among ``values`` (CPU when none is a tensor)."""
    for v in values:
        if isinstance(v, torch.Tensor):
            return v.device
    return torch.device("cpu")


def relative_azimuth_deg(azimuth_deg: torch.Tensor, reference_azimuth_deg: float) -> torch.Tensor:
    """((round(a - a0) + 180) mod 360) - 180, elementwise, float64, on ``azimuth_deg``'s device."""
    a = torch.as_tensor(azimuth_deg, dtype=torch.float64, device=_input_device(azimuth_deg))
    return torch.remainder(torch.round(a - float(reference_azimuth_deg)) + 180.0, 360.0) - 180.0


def camera_vectors(
    elevation_deg,
    azimuth_deg,
    radius=None,
    is_target=None,
    reference: tuple[float, float, float] | None = None,
    device=None,
) -> torch.Tensor:
    """Camera codes for a list of views.

    Args:
        elevation_deg, azimuth_deg: (V,) degrees (tensors, sequences or numbers).
        radius: (V,) or None (= zeros, as in refinement).
        is_target: (V,) bool; True marks target views (domain (1,0)); default: view 0 is the target.
        reference: (elevation, azimuth, radius) of anchor 0. Default: the first non-target view.
        device: where the codes are built; default: the device of the first tensor among the angles
            (CPU for plain numbers). Every tensor made here lives there, so GPU cameras give GPU codes.
    Returns: (V, 10) float32 on ``device``.
    """
    dev = torch.device(device) if device is not None else _input_device(elevation_deg, azimuth_deg, radius)
    el = torch.as_tensor(elevation_deg, dtype=torch.float64, device=dev).reshape(-1)
    az = torch.as_tensor(azimuth_deg, dtype=torch.float64, device=dev).reshape(-1)
    v = el.numel()
    if az.numel() != v:
        raise ValueError(f"camera_vectors: {v} elevations but {az.numel()} azimuths.")
    r = (torch.zeros(v, dtype=torch.float64, device=dev) if radius is None
         else torch.as_tensor(radius, dtype=torch.float64, device=dev).reshape(-1))
    if r.numel() == 1 and v > 1:
        r = r.expand(v)
    if is_target is None:
        is_target = torch.zeros(v, dtype=torch.bool, device=dev)
        is_target[0] = True
    is_target = torch.as_tensor(is_target, dtype=torch.bool, device=dev).reshape(-1)
    if reference is None:
        anchors = (~is_target).nonzero().flatten()
        if anchors.numel() == 0:
            raise ValueError("camera_vectors: no anchor view to measure relative azimuth from; pass reference=.")
        i0 = int(anchors[0])
        reference = (float(el[i0]), float(az[i0]), float(r[i0]))
    _, a0, r0 = reference
    # Match the official float32 arithmetic: angles converted to radians in float32.
    el_rad = torch.deg2rad(el.float())
    az_rad = torch.deg2rad(relative_azimuth_deg(az, a0).float())
    dr = (r - r0).float()
    dom = torch.stack([is_target.float(), (~is_target).float()], dim=-1)
    zeros = torch.zeros(v, 2, device=dev)
    return torch.cat(
        [dom, zeros, torch.stack([el_rad.sin(), az_rad.sin(), dr.sin(), el_rad.cos(), az_rad.cos(), dr.cos()], -1)],
        dim=-1,
    )


def condition_strength_labels(num_anchors: int, strength_tex: float = 0.0, strength_geo: float = 0.0,
                              per_anchor: torch.Tensor | None = None, device=None) -> torch.Tensor:
    """``noise_embed`` rows for one group (frame 0 = target, then anchors): (1 + A, 2) float32.

    The target and anchor 0 get (0, 0); anchors 1..A-1 get ``(500 (1 - s_tex), 0.5 (1 - s_geo))``
    (reference §2.7; the refine configs use s = 0, i.e. (500, 0.5)).  ``per_anchor`` (A-1, 2) overrides
    the strengths (columns tex, geo) per side anchor. ``device``: where the labels live (default: that of
    ``per_anchor`` when it is a tensor, else the CPU).
    """
    dev = torch.device(device) if device is not None else _input_device(per_anchor)
    lab = torch.zeros(1 + num_anchors, 2, device=dev)
    if num_anchors > 1:
        if per_anchor is None:
            s = torch.tensor([[strength_tex, strength_geo]], device=dev).expand(num_anchors - 1, 2)
        else:
            s = torch.as_tensor(per_anchor, dtype=torch.float32, device=dev).reshape(num_anchors - 1, 2)
        lab[2:, 0] = 500.0 * (1.0 - s[:, 0])
        lab[2:, 1] = 0.5 * (1.0 - s[:, 1])
    return lab
