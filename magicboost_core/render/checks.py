"""Input validation shared by the render primitives: clear errors instead of crashes deep inside."""
from __future__ import annotations

import torch

from .errors import RenderError

__all__ = ["check_pos", "check_tri", "check_resolution", "check_rast", "check_finite", "check_attr"]

_FLOATS = (torch.float32, torch.float64)


def _is_tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise RenderError(f"`{name}` must be a torch.Tensor; got {type(x).__name__}.")
    return x


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise when ``x`` holds NaN or infinity (one reduction; a device sync on GPU)."""
    if x.numel() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise RenderError(f"`{name}` contains {bad} NaN or infinite values; check the inputs that produced it.")


def check_pos(pos, name: str = "pos") -> torch.Tensor:
    """Clip-space positions (B, V, 4) float32/float64, finite."""
    pos = _is_tensor(pos, name)
    if pos.ndim != 3 or pos.shape[-1] != 4:
        raise RenderError(
            f"`{name}` must be clip-space positions of shape (B, V, 4); got {tuple(pos.shape)}. "
            "Use Cameras.world_to_clip(vertices) to make them."
        )
    if pos.dtype not in _FLOATS:
        raise RenderError(f"`{name}` must be float32 (or float64 on the torch backend); got {pos.dtype}.")
    if pos.shape[1] == 0:
        raise RenderError(f"`{name}` has no vertices.")
    check_finite(pos, name)
    return pos


def check_tri(tri, num_vertices: int, name: str = "tri") -> torch.Tensor:
    """Triangles (F, 3) integer indices into [0, num_vertices)."""
    tri = _is_tensor(tri, name)
    if tri.ndim != 2 or tri.shape[1] != 3:
        raise RenderError(f"`{name}` must be triangles of shape (F, 3); got {tuple(tri.shape)}.")
    if tri.is_floating_point() or tri.dtype == torch.bool or tri.is_complex():
        raise RenderError(f"`{name}` must hold integer vertex indices (int32/int64); got {tri.dtype}.")
    if tri.shape[0] == 0:
        raise RenderError(f"`{name}` has no triangles; nothing to render.")
    lo, hi = int(tri.min()), int(tri.max())
    if lo < 0 or hi >= num_vertices:
        raise RenderError(
            f"`{name}` indexes vertices {lo}..{hi}, outside [0, {num_vertices - 1}]; "
            "faces and positions do not belong together."
        )
    return tri


def check_resolution(resolution, allow_int: bool = False) -> tuple[int, int]:
    """(H, W) positive ints; with ``allow_int`` a single int means a square size."""
    if allow_int and isinstance(resolution, int):
        resolution = (resolution, resolution)
    try:
        h, w = (int(r) for r in resolution)
    except (TypeError, ValueError):
        expected = "an int or (H, W)" if allow_int else "a pair (H, W) of ints"
        raise RenderError(f"`resolution` must be {expected}; got {resolution!r}.") from None
    if h < 1 or w < 1:
        raise RenderError(f"`resolution` must be positive; got {(h, w)}.")
    return h, w


def check_rast(rast, name: str = "rast") -> torch.Tensor:
    """Rasterizer output (B, H, W, 4)."""
    rast = _is_tensor(rast, name)
    if rast.ndim != 4 or rast.shape[-1] != 4 or rast.dtype not in _FLOATS:
        raise RenderError(
            f"`{name}` must be the (B, H, W, 4) float output of rasterize(); got {tuple(rast.shape)} {rast.dtype}."
        )
    return rast


def check_attr(attr, batch: int, name: str = "attr") -> torch.Tensor:
    """Vertex attributes (B|1, V, C) or (V, C), returned as (B|1, V, C)."""
    attr = _is_tensor(attr, name)
    if attr.ndim == 2:
        attr = attr[None]
    if attr.ndim != 3:
        raise RenderError(f"`{name}` must have shape (B, V, C) or (V, C); got {tuple(attr.shape)}.")
    if attr.dtype not in _FLOATS:
        raise RenderError(f"`{name}` must be a float tensor; got {attr.dtype}.")
    if attr.shape[0] not in (1, batch):
        raise RenderError(f"`{name}` has batch {attr.shape[0]} but the raster has batch {batch}; use 1 or {batch}.")
    return attr
