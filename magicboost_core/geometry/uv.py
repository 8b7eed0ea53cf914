"""Automatic UV unwrapping with xatlas.

``unwrap_uv(mesh)`` gives a mesh a fresh texture atlas without touching its geometry: xatlas returns
its own vertex list (vertices split along chart seams) plus ``vmapping`` (its vertex -> our vertex)
and per-face indices into its UVs. We keep our ``vertices``/``faces`` as they are and store xatlas'
UVs as ``uvs`` (T, 2) with ``uv_faces`` (F, 3) — exactly the per-corner layout our Mesh supports.
UVs are in [0, 1] with v up (our convention); charts are packed for a ``resolution``² texture with
``padding`` texels between them. The old texture (if any) no longer matches and is dropped; re-bake it.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from .mesh import Mesh, MeshError

__all__ = ["unwrap_uv"]


def unwrap_uv(mesh: Mesh, resolution: int = 1024, padding: int = 2) -> Mesh:
    """Return ``mesh`` with new ``uvs``/``uv_faces`` from xatlas (vertices, faces, colours unchanged).

    Args:
        mesh: a triangle mesh (any device; result on the same device).
        resolution: texture size (pixels) the charts are packed for.
        padding: texels between charts (bleeding margin for bilinear sampling / mip-mapping).
    Raises: ImportError naming ``pip install xatlas`` when it is missing; MeshError if xatlas changes
        the face list (it should not).
    """
    try:
        import xatlas
    except ImportError as e:
        raise ImportError("unwrap_uv needs the 'xatlas' package: pip install xatlas") from e
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8 pixels; got {resolution}.")
    v = mesh.vertices.detach().cpu().numpy().astype(np.float32)
    f = mesh.faces.detach().cpu().numpy().astype(np.uint32)
    atlas = xatlas.Atlas()
    atlas.add_mesh(v, f)
    pack = xatlas.PackOptions()
    pack.resolution = int(resolution)
    pack.padding = int(padding)
    pack.bilinear = True
    atlas.generate(xatlas.ChartOptions(), pack)
    vmapping, indices, uvs = atlas[0]
    indices = np.asarray(indices, dtype=np.int64)
    vmapping = np.asarray(vmapping, dtype=np.int64)
    if indices.shape != f.shape or not np.array_equal(vmapping[indices], f.astype(np.int64)):
        raise MeshError("xatlas changed the face list (degenerate faces?); clean the mesh before unwrapping.")
    if mesh.texture is not None:
        warnings.warn("unwrap_uv: the existing texture does not match the new UVs and was dropped; re-bake it.",
                      stacklevel=2)
    dev = mesh.device
    return mesh.replace(uvs=torch.from_numpy(np.asarray(uvs, dtype=np.float32)).to(dev),
                        uv_faces=torch.from_numpy(indices).to(dev), texture=None)
