"""Thin adapters from the pack's conventions to nvdiffrast (the ``"nvdiffrast"`` backend).

nvdiffrast puts image row 0 at NDC y = -1 (bottom). The pack wants row 0 = top, so positions are
mirrored in y (``pos * (1, -1, 1, 1)``) before rasterizing and antialiasing; then rows, ``rast_db``
(whose Y is nvdiffrast's row index) and pixel centres all match the torch backend. The mirror is a
torch op, so gradients still reach the caller's ``pos``. Inputs were validated by :mod:`.ops`.
"""
from __future__ import annotations

import torch

from .backend import _import_nvdiffrast, nvdiffrast_context

__all__ = ["rasterize_nvdr", "interpolate_nvdr", "texture_nvdr", "antialias_nvdr"]

_FLIP = (1.0, -1.0, 1.0, 1.0)


def _flip_y(pos: torch.Tensor) -> torch.Tensor:
    return (pos.float() * pos.new_tensor(_FLIP, dtype=torch.float32)).contiguous()


def rasterize_nvdr(pos, tri, resolution, with_db: bool = False):
    dr = _import_nvdiffrast()
    ctx = nvdiffrast_context(pos.device)
    rast, db = dr.rasterize(ctx, _flip_y(pos), tri.int().contiguous(), tuple(resolution), grad_db=with_db)
    return rast, (db if with_db else None)


def interpolate_nvdr(attr, rast, tri, rast_db=None):
    dr = _import_nvdiffrast()
    attr = attr.float().contiguous()
    tri = tri.int().contiguous()
    if rast_db is not None:
        out, da = dr.interpolate(attr, rast.float().contiguous(), tri, rast_db.float().contiguous(), diff_attrs="all")
        return out, da
    out, _ = dr.interpolate(attr, rast.float().contiguous(), tri)
    return out, None


def texture_nvdr(tex, uv, uv_da=None, filter_mode="linear", boundary="clamp", max_mip_level=None, mip_level_bias=None):
    dr = _import_nvdiffrast()
    kw = {}
    if filter_mode != "linear":
        kw["uv_da"] = None if uv_da is None else uv_da.float().contiguous()
        kw["mip_level_bias"] = None if mip_level_bias is None else mip_level_bias.float().contiguous()
        kw["max_mip_level"] = max_mip_level
    return dr.texture(tex.float().contiguous(), uv.float().contiguous(), filter_mode=filter_mode,
                      boundary_mode=boundary, **kw)


def antialias_nvdr(color, rast, pos, tri):
    dr = _import_nvdiffrast()
    return dr.antialias(color.float().contiguous(), rast.float().contiguous(), _flip_y(pos), tri.int().contiguous())
