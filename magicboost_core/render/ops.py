"""The four differentiable render primitives, in the style of nvdiffrast, behind one API.

Conventions, shared by both backends:

* ``pos`` (B, V, 4): OpenGL clip-space vertex positions (``Cameras.world_to_clip``), float32
  (float64 accepted by the torch backend, e.g. for gradcheck).
* ``tri`` (F, 3): int32/int64 vertex indices.
* ``rast`` (B, H, W, 4) = (u, v, z/w, triangle_id + 1); 0 everywhere a pixel is empty. (u, v) are
  perspective-correct barycentrics: an attribute is ``u * a0 + v * a1 + (1 - u - v) * a2``.
* Image **row 0 is the top** of the image (NDC y = +1); pixel (r, c) has its centre at NDC
  ``((2c + 1) / W - 1, 1 - (2r + 1) / H)``, i.e. at (i + 0.5) / size as in nvdiffrast.
* ``rast_db`` (B, H, W, 4) = (du/dX, du/dY, dv/dX, dv/dY), X = column (right), Y = row (down).
* Texture coordinates follow nvdiffrast: uv = (0, 0) is the corner of the first texel in memory.

Backends: ``backend="auto" | "torch" | "nvdiffrast"`` (see :mod:`.backend`). Results of one backend
can be fed to the other's primitives (same formats). Bad input raises :class:`~.errors.RenderError`.
"""
from __future__ import annotations

import torch

from .backend import get_backend
from .checks import check_attr, check_finite, check_pos, check_rast, check_resolution, check_tri
from .errors import RenderError
from .torch_antialias import antialias_torch
from .torch_interpolate import interpolate_torch
from .torch_raster import DEFAULT_PAIR_BUDGET, rasterize_torch
from .torch_texture import estimate_uv_da, texture_torch

__all__ = ["rasterize", "interpolate", "interpolate_da", "texture", "antialias", "FILTER_MODES", "BOUNDARY_MODES"]

FILTER_MODES = ("linear", "linear-mipmap-linear")
BOUNDARY_MODES = ("clamp", "wrap")


def rasterize(pos: torch.Tensor, tri: torch.Tensor, resolution, backend: str = "auto", with_db: bool = False,
              pair_budget: int = DEFAULT_PAIR_BUDGET):
    """Rasterize triangles into a (u, v, z/w, id + 1) buffer.

    Args:
        pos: (B, V, 4) clip-space positions (float32; float64 on the torch backend).
        tri: (F, 3) int32/int64 vertex indices.
        resolution: (H, W) output size.
        backend: "auto", "torch" or "nvdiffrast".
        with_db: also return ``rast_db`` (needed for mip-mapped texturing).
        pair_budget: torch backend only: max candidate (face, pixel) pairs per chunk (memory bound;
            the default keeps the working set around 100 MB).
    Returns:
        ``(rast (B, H, W, 4), rast_db (B, H, W, 4) or None)``; row 0 = top. u, v, z/w are
        differentiable with respect to ``pos`` (both backends).
    Clipping: triangles are clipped against the near and far planes per pixel (a triangle partly
    behind the camera shows its visible part); zero-area triangles are skipped.
    """
    pos = check_pos(pos)
    tri = check_tri(tri, pos.shape[1])
    H, W = check_resolution(resolution)
    name = get_backend(backend, pos.device)
    if name == "nvdiffrast":
        from .nvdiffrast_ops import rasterize_nvdr

        return rasterize_nvdr(pos, tri, (H, W), with_db)
    return rasterize_torch(pos, tri.long(), (H, W), with_db=with_db, pair_budget=int(pair_budget))


def _interp_inputs(attr, rast, tri, rast_db):
    rast = check_rast(rast)
    attr = check_attr(attr, rast.shape[0])
    tri = check_tri(tri, attr.shape[1])
    if rast_db is not None and (not isinstance(rast_db, torch.Tensor) or rast_db.shape != rast.shape):
        raise RenderError(f"`rast_db` must have the raster's shape {tuple(rast.shape)}; got "
                          f"{getattr(rast_db, 'shape', type(rast_db).__name__)}.")
    return attr, rast, tri


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Interpolate vertex attributes at every pixel.

    Args:
        attr: (B, V, C) or (V, C) per-vertex attributes (broadcast over the batch).
        rast: (B, H, W, 4) from :func:`rasterize`. tri: (F, 3), the triangles that were rasterized,
            or any (F, 3) index array with the same triangle order (e.g. ``uv_faces`` into ``uvs``).
    Returns:
        (B, H, W, C), 0 where empty. Differentiable with respect to ``attr`` and, through ``rast``,
        the clip positions.
    """
    return interpolate_da(attr, rast, tri, None, backend)[0]


def interpolate_da(attr, rast, tri, rast_db=None, backend: str = "auto"):
    """Like :func:`interpolate`, plus screen-space derivatives when ``rast_db`` is given.

    Returns ``(out (B, H, W, C), out_da (B, H, W, 2C) or None)``; ``out_da`` holds (dA/dX, dA/dY)
    for each channel A (per pixel; X right, Y down).
    """
    attr, rast, tri = _interp_inputs(attr, rast, tri, rast_db)
    name = get_backend(backend, rast.device)
    if name == "nvdiffrast":
        from .nvdiffrast_ops import interpolate_nvdr

        return interpolate_nvdr(attr, rast, tri, rast_db)
    return interpolate_torch(attr.to(rast.dtype), rast, tri.long(), rast_db)


def texture(tex: torch.Tensor, uv: torch.Tensor, filter_mode: str = "linear", boundary: str = "clamp",
            uv_da: torch.Tensor | None = None, max_mip_level: int | None = None,
            mip_level_bias: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """Sample a texture at per-pixel texture coordinates.

    Args:
        tex: (B, Ht, Wt, C) or (Ht, Wt, C) texture (batch 1 broadcasts). Row 0 is the first row in
            memory; uv (0, 0) is its top-left corner (nvdiffrast convention).
        uv: (B, H, W, 2) coordinates, u along columns, v along rows, texel centres at (i + 0.5) / size.
        filter_mode: "linear" (bilinear) or "linear-mipmap-linear" (trilinear over a box mip pyramid).
        boundary: "clamp" (edge texels) or "wrap" (repeat).
        uv_da: (B, H, W, 4) (du/dX, du/dY, dv/dX, dv/dY) for mip level selection; estimated from
            finite differences of ``uv`` when omitted.
        max_mip_level: limit on the pyramid depth. mip_level_bias: (B, H, W) added to the level.
    Returns:
        (B, H, W, C), differentiable with respect to ``tex`` and ``uv``.
    """
    if not isinstance(tex, torch.Tensor) or tex.ndim not in (3, 4) or not tex.is_floating_point():
        raise RenderError(f"`tex` must be a float tensor (B, Ht, Wt, C) or (Ht, Wt, C); got "
                          f"{getattr(tex, 'shape', type(tex).__name__)}.")
    if tex.ndim == 3:
        tex = tex[None]
    if not isinstance(uv, torch.Tensor) or uv.ndim != 4 or uv.shape[-1] != 2 or not uv.is_floating_point():
        raise RenderError(f"`uv` must be a float tensor (B, H, W, 2); got {getattr(uv, 'shape', type(uv).__name__)}.")
    if tex.shape[0] not in (1, uv.shape[0]):
        raise RenderError(f"`tex` batch {tex.shape[0]} does not match `uv` batch {uv.shape[0]} "
                          f"(use 1 or {uv.shape[0]}).")
    if min(tex.shape[1:3]) < 1:
        raise RenderError(f"`tex` is empty: {tuple(tex.shape)}.")
    if filter_mode not in FILTER_MODES:
        raise RenderError(f"filter_mode must be one of {FILTER_MODES}; got {filter_mode!r}.")
    if boundary not in BOUNDARY_MODES:
        raise RenderError(f"boundary must be one of {BOUNDARY_MODES}; got {boundary!r}.")
    check_finite(uv, "uv")
    if uv_da is not None and (not isinstance(uv_da, torch.Tensor) or uv_da.shape != uv.shape[:3] + (4,)):
        raise RenderError(f"`uv_da` must have shape {tuple(uv.shape[:3]) + (4,)}; got "
                          f"{getattr(uv_da, 'shape', type(uv_da).__name__)}.")
    if filter_mode != "linear" and uv_da is None and mip_level_bias is None:
        uv_da = estimate_uv_da(uv)
    name = get_backend(backend, uv.device)
    if name == "nvdiffrast":
        from .nvdiffrast_ops import texture_nvdr

        return texture_nvdr(tex, uv, uv_da, filter_mode, boundary, max_mip_level, mip_level_bias)
    return texture_torch(tex.to(uv.dtype), uv, uv_da, filter_mode, boundary, max_mip_level, mip_level_bias)


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor,
              backend: str = "auto") -> torch.Tensor:
    """Blend colours across silhouette edges so that coverage depends smoothly on ``pos``.

    Args:
        color: (B, H, W, C) shaded image (composite the background in first).
        rast, pos, tri: the raster and the inputs it was made from.
    Returns:
        (B, H, W, C) antialiased colours, differentiable with respect to ``color`` and ``pos``. The torch
        backend uses a 1D approximation of nvdiffrast's analytic antialiasing (see
        :mod:`.torch_antialias`): right sign and scale of position gradients, not bit-identical output.
    """
    rast = check_rast(rast)
    pos = check_pos(pos)
    tri = check_tri(tri, pos.shape[1])
    if not isinstance(color, torch.Tensor) or color.ndim != 4 or color.shape[:3] != rast.shape[:3]:
        raise RenderError(f"`color` must have shape (B, H, W, C) = {tuple(rast.shape[:3])} + (C,); got "
                          f"{getattr(color, 'shape', type(color).__name__)}.")
    if not color.is_floating_point():
        raise RenderError(f"`color` must be a float tensor; got {color.dtype}.")
    if pos.shape[0] != rast.shape[0]:
        raise RenderError(f"`pos` batch {pos.shape[0]} does not match the raster batch {rast.shape[0]}.")
    name = get_backend(backend, color.device)
    if name == "nvdiffrast":
        from .nvdiffrast_ops import antialias_nvdr

        return antialias_nvdr(color, rast, pos, tri)
    return antialias_torch(color, rast, pos, tri.long())
