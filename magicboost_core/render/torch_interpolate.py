"""Pure-PyTorch attribute interpolation (the ``"torch"`` backend of :func:`~.ops.interpolate`).

``out = u * a0 + v * a1 + (1 - u - v) * a2`` with (u, v) read from ``rast`` and a_i the attributes
of the pixel's triangle; 0 where no triangle covers the pixel. Autograd gives gradients to the
attributes and to ``rast`` (whose u, v carry gradients back to the clip positions when ``rast``
came from either backend's rasterize).
"""
from __future__ import annotations

import torch

__all__ = ["interpolate_torch"]


def _corner_attrs(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor):
    """(B, HW, 3, C) attributes of the three corners of each pixel's triangle (zeros if empty), and mask."""
    B, H, W, _ = rast.shape
    tid = rast[..., 3].detach().reshape(B, H * W).long() - 1
    mask = tid >= 0
    corners = tri[tid.clamp_min(0)]  # (B, HW, 3)
    if attr.shape[0] == 1:
        a = attr[0][corners]  # (B, HW, 3, C)
    else:
        a = torch.gather(attr, 1, corners.reshape(B, -1, 1).expand(-1, -1, attr.shape[-1]))
        a = a.reshape(B, H * W, 3, attr.shape[-1])
    return a, mask


def interpolate_torch(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor, rast_db: torch.Tensor | None = None):
    """Interpolate vertex attributes over the raster.

    Args:
        attr: (1|B, V, C) float. rast: (B, H, W, 4). tri: (F, 3) int64.
        rast_db: optional (B, H, W, 4) barycentric derivatives from rasterize(..., with_db=True).
    Returns:
        ``(out (B, H, W, C), out_da (B, H, W, 2C) or None)``; out_da holds (dA/dX, dA/dY) per
        channel (X = column, Y = row, per pixel) when ``rast_db`` is given.
    """
    B, H, W, _ = rast.shape
    a, mask = _corner_attrs(attr, rast, tri)
    C = a.shape[-1]
    u = rast[..., 0].reshape(B, H * W, 1)
    v = rast[..., 1].reshape(B, H * W, 1)
    a0, a1, a2 = a.unbind(2)
    out = a2 + u * (a0 - a2) + v * (a1 - a2)
    m = mask[..., None].to(out.dtype)
    out = (out * m).reshape(B, H, W, C)
    out_da = None
    if rast_db is not None:
        db = rast_db.reshape(B, H * W, 4)
        d0, d1 = (a0 - a2), (a1 - a2)
        dx = d0 * db[..., 0:1] + d1 * db[..., 2:3]
        dy = d0 * db[..., 1:2] + d1 * db[..., 3:4]
        out_da = (torch.stack([dx, dy], -1) * m[..., None]).reshape(B, H, W, 2 * C)
    return out, out_da
