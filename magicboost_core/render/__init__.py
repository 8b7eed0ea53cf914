"""Differentiable rasterizer: nvdiffrast-style primitives with a pure-PyTorch and an nvdiffrast backend.

* Primitives (:mod:`.ops`): :func:`rasterize`, :func:`interpolate` (+ :func:`interpolate_da`),
  :func:`texture`, :func:`antialias` -- nvdiffrast formats, image row 0 = top.
* :func:`render` (:mod:`.renderer`): Mesh + Cameras -> :class:`RenderOutput` (rgb, alpha, depth, normal).
* Baking (:mod:`.bake`): :func:`bake_vertex_colors_to_texture`, :func:`bake_views_to_texture`.
* :func:`get_backend`: "auto" | "torch" | "nvdiffrast" (env ``MAGICBOOST_RENDER_BACKEND``).
"""
from .backend import get_backend, nvdiffrast_available
from .bake import bake_vertex_colors_to_texture, bake_views_to_texture
from .errors import RenderBackendError, RenderError
from .ops import antialias, interpolate, interpolate_da, rasterize, texture
from .renderer import RenderOutput, render

__all__ = [
    "rasterize", "interpolate", "interpolate_da", "texture", "antialias", "render", "RenderOutput",
    "bake_vertex_colors_to_texture", "bake_views_to_texture", "get_backend", "nvdiffrast_available",
    "RenderError", "RenderBackendError",
]
