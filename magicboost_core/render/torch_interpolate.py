"""Pure-PyTorch attribute interpolation (the ``"torch"`` backend of :func:`~.ops.interpolate`).

``out = u * a0 + v * a1 + (1 - u - v) * a2`` with (u, v) read from ``rast`` and a_i the attributes
of the pixel's triangle; 0 where no triangle covers the pixel. Autograd gives gradients to the
attributes and to ``rast`` (whose u, v carry gradients back to the clip positions when ``rast``
came from either backend's rasterize). Work is done on covered pixels only, with ``index_select``
gathers (their backward is a fast ``index_add``).
"""
from __future__ import annotations

import torch

__all__ = ["interpolate_torch"]


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
    V, C = attr.shape[1], attr.shape[2]
    N = B * H * W
    r = rast.reshape(N, 4)
    flat = torch.nonzero(r[:, 3].detach() > 0).squeeze(1)
    corners = tri.index_select(0, r[:, 3].detach().index_select(0, flat).long() - 1)  # (P, 3)
    if attr.shape[0] == 1:
        idx = corners.reshape(-1)
    else:
        b = torch.div(flat, H * W, rounding_mode="floor")
        idx = (corners + (b * V)[:, None]).reshape(-1)
    a = attr.reshape(-1, C).index_select(0, idx).view(-1, 3, C)
    a0, a1, a2 = a.unbind(1)
    d0, d1 = a0 - a2, a1 - a2
    uv = r.index_select(0, flat)
    vals = a2 + uv[:, 0:1] * d0 + uv[:, 1:2] * d1
    out = vals.new_zeros(N, C).index_put((flat,), vals).view(B, H, W, C)
    out_da = None
    if rast_db is not None:
        db = rast_db.reshape(N, 4).index_select(0, flat)
        dx = d0 * db[:, 0:1] + d1 * db[:, 2:3]
        dy = d0 * db[:, 1:2] + d1 * db[:, 3:4]
        da = torch.stack([dx, dy], -1).reshape(-1, 2 * C)
        out_da = da.new_zeros(N, 2 * C).index_put((flat,), da).view(B, H, W, 2 * C)
    return out, out_da
