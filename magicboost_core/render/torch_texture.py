"""Pure-PyTorch texture sampling (the ``"torch"`` backend of :func:`~.ops.texture`).

Convention (nvdiffrast's): ``uv = (0, 0)`` is the outer corner of the **first texel in memory**
(texture row 0, column 0); u runs along columns (width), v along rows (height); texel (r, c) has its
centre at ``((c + 0.5) / Wt, (r + 0.5) / Ht)``. Mesh UVs are v-up with texture row 0 at the top,
so callers sampling a :class:`~magicboost_core.geometry.Mesh` texture pass ``v_tex = 1 - v_mesh``.

Filtering: bilinear; ``"linear-mipmap-linear"`` adds a box-filtered mip pyramid (each level halves
each dimension, rounding down, until 1x1 or ``max_mip_level``) and trilinear blending between the two
levels around ``lod = log2(major axis of the pixel footprint in texels) + bias`` (nvdiffrast's rule).
Boundary ``"clamp"`` clamps to the edge texels' centres, ``"wrap"`` repeats the texture. Differentiable with respect to
``tex`` and ``uv``; the level of detail itself carries no gradient (nvdiffrast also differentiates
through it; this backend does not).
"""
from __future__ import annotations

import torch
import torch.nn.functional as Fn

__all__ = ["texture_torch", "build_mip_pyramid", "estimate_uv_da"]


def build_mip_pyramid(tex: torch.Tensor, max_mip_level: int | None = None) -> list[torch.Tensor]:
    """[(Bt, Hl, Wl, C)] box-filtered levels, level 0 = ``tex``; differentiable."""
    levels = [tex]
    cur = tex.permute(0, 3, 1, 2)
    while (cur.shape[-2] > 1 or cur.shape[-1] > 1) and (max_mip_level is None or len(levels) <= max_mip_level):
        kh, kw = (2 if cur.shape[-2] > 1 else 1), (2 if cur.shape[-1] > 1 else 1)
        cur = Fn.avg_pool2d(cur, (kh, kw), stride=(kh, kw))
        levels.append(cur.permute(0, 2, 3, 1))
    return levels


def estimate_uv_da(uv: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 4) = (du/dX, du/dY, dv/dX, dv/dY) from finite differences of the uv image.

    Uses the smaller of the forward and backward difference at each pixel so that jumps at
    silhouettes and UV seams do not select overly blurry mip levels. No gradient.
    """
    uv = uv.detach()

    def axis_diff(dim: int) -> torch.Tensor:
        fwd = uv.diff(dim=dim)
        zeros = torch.zeros_like(uv.narrow(dim, 0, 1))
        big = torch.full_like(zeros, float("inf"))
        forward = torch.cat([fwd, big], dim)
        backward = torch.cat([big, fwd], dim)
        pick_f = forward.abs().sum(-1, keepdim=True) <= backward.abs().sum(-1, keepdim=True)
        d = torch.where(pick_f, forward, backward)
        return torch.where(torch.isfinite(d), d, zeros)

    dX = axis_diff(2)
    dY = axis_diff(1)
    return torch.stack([dX[..., 0], dY[..., 0], dX[..., 1], dY[..., 1]], -1)


def _sample_bilinear(tex: torch.Tensor, uv: torch.Tensor, bidx: torch.Tensor, boundary: str) -> torch.Tensor:
    """Bilinear fetch. tex (Bt, Ht, Wt, C); uv (N, 2); bidx (N,) batch of each sample. -> (N, C)."""
    Bt, Ht, Wt, C = tex.shape
    x = uv[:, 0] * Wt - 0.5
    y = uv[:, 1] * Ht - 0.5
    x0f, y0f = torch.floor(x.detach()), torch.floor(y.detach())
    fx, fy = (x - x0f)[:, None], (y - y0f)[:, None]
    x0, y0 = x0f.long(), y0f.long()
    x1, y1 = x0 + 1, y0 + 1
    if boundary == "wrap":
        x0, x1, y0, y1 = x0.remainder(Wt), x1.remainder(Wt), y0.remainder(Ht), y1.remainder(Ht)
    else:
        x0, x1 = x0.clamp(0, Wt - 1), x1.clamp(0, Wt - 1)
        y0, y1 = y0.clamp(0, Ht - 1), y1.clamp(0, Ht - 1)
    flat = tex.reshape(Bt * Ht * Wt, C)
    base = (bidx * Ht if Bt > 1 else torch.zeros_like(bidx))
    r0, r1 = (base + y0) * Wt, (base + y1) * Wt
    idx = torch.stack([r0 + x0, r0 + x1, r1 + x0, r1 + x1], 1)  # (N, 4)
    t = flat[idx.reshape(-1)].reshape(-1, 4, C)
    top = t[:, 0] + fx * (t[:, 1] - t[:, 0])
    bot = t[:, 2] + fx * (t[:, 3] - t[:, 2])
    return top + fy * (bot - top)


def texture_torch(tex: torch.Tensor, uv: torch.Tensor, uv_da: torch.Tensor | None = None,
                  filter_mode: str = "linear", boundary: str = "clamp", max_mip_level: int | None = None,
                  mip_level_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Sample ``tex`` (Bt, Ht, Wt, C), Bt in {1, B}, at ``uv`` (B, H, W, 2) -> (B, H, W, C).

    ``uv_da`` (B, H, W, 4) is required for ``"linear-mipmap-linear"`` unless ``mip_level_bias``
    (B, H, W) gives the level directly (callers estimate it with :func:`estimate_uv_da`).
    """
    B, H, W, _ = uv.shape
    N = B * H * W
    uvf = uv.reshape(N, 2)
    bidx = torch.arange(B, device=uv.device).repeat_interleave(H * W)
    if filter_mode == "linear":
        return _sample_bilinear(tex, uvf, bidx, boundary).reshape(B, H, W, -1)

    levels = build_mip_pyramid(tex, max_mip_level)
    L = len(levels)
    Ht, Wt = tex.shape[1], tex.shape[2]
    with torch.no_grad():
        if uv_da is not None:
            # Footprint of a pixel in texels: the Jacobian J = [[ds/dX, ds/dY], [dt/dX, dt/dY]]; the
            # level is log2 of its major axis (largest singular value), as in nvdiffrast.
            d = uv_da.detach().reshape(N, 4).to(torch.float64)
            sx, sy, tx, ty = d[:, 0] * Wt, d[:, 1] * Wt, d[:, 2] * Ht, d[:, 3] * Ht
            a, b, c = sx * sx + tx * tx, sy * sy + ty * ty, sx * sy + tx * ty
            major2 = 0.5 * (a + b) + torch.sqrt(0.25 * (a - b) ** 2 + c * c)
            lod = (0.5 * torch.log2(major2.clamp_min(1e-30))).to(uv.dtype)
        else:
            lod = torch.zeros(N, device=uv.device, dtype=uv.dtype)
        if mip_level_bias is not None:
            lod = lod + mip_level_bias.detach().reshape(N).to(lod.dtype)
        lod = lod.clamp(0, L - 1)
        l0 = lod.floor().long()
        frac = (lod - l0).to(uv.dtype)
        l1 = (l0 + 1).clamp_max(L - 1)
    out = None
    for lev in range(L):
        use0, use1 = l0 == lev, (l1 == lev) & (frac > 0) & (l1 != l0)
        if not bool((use0 | use1).any()):
            continue
        w = torch.where(use0, 1 - frac, torch.zeros_like(frac)) + torch.where(use1, frac, torch.zeros_like(frac))
        sel = torch.nonzero(use0 | use1).squeeze(1)
        vals = _sample_bilinear(levels[lev], uvf[sel], bidx[sel], boundary) * w[sel, None]
        contrib = vals.new_zeros(N, vals.shape[-1]).index_put((sel,), vals)
        out = contrib if out is None else out + contrib
    return out.reshape(B, H, W, -1)
