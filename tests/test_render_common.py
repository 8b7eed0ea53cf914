"""Shared helpers for the renderer tests (tiny meshes, backend parametrisation). Holds no tests."""
from __future__ import annotations

import math

import pytest
import torch

from magicboost_core.geometry import Mesh, primitives
from magicboost_core.render import nvdiffrast_available

#: Backends that can run here, with the device each needs.
BACKENDS = [pytest.param("torch", "cpu", id="torch")] + [
    pytest.param("nvdiffrast", "cuda", id="nvdiffrast",
                 marks=pytest.mark.skipif(not nvdiffrast_available(), reason="nvdiffrast/CUDA not available"))
]



def icosphere(subdivisions: int = 2, radius: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Icosphere as raw tensors: (V, 3) float32 vertices, (F, 3) int64 faces, counter-clockwise from outside."""
    m = primitives.icosphere(subdivisions, radius)
    return m.vertices, m.faces


def uv_sphere(rows: int = 12, cols: int = 24, radius: float = 1.0):
    """Latitude-longitude sphere with a UV seam: vertices (V, 3), faces (F, 3), uvs (T, 2) v-up, uv_faces (F, 3).

    Poles are on the z axis; u = longitude / 360 deg, v = 1 at the north pole.
    """
    verts, uvs = [], []
    for i in range(rows + 1):
        th = math.pi * i / rows
        for j in range(cols + 1):
            ph = 2 * math.pi * j / cols
            uvs.append([j / cols, 1 - i / rows])
            if j < cols:
                verts.append([radius * math.sin(th) * math.cos(ph), radius * math.sin(th) * math.sin(ph),
                              radius * math.cos(th)])
    faces, uv_faces = [], []
    for i in range(rows):
        for j in range(cols):
            a, b = i * cols + j, i * cols + (j + 1) % cols
            c, d = (i + 1) * cols + j, (i + 1) * cols + (j + 1) % cols
            ta, tb = i * (cols + 1) + j, i * (cols + 1) + j + 1
            tc, td = (i + 1) * (cols + 1) + j, (i + 1) * (cols + 1) + j + 1
            faces += [[a, c, d], [a, d, b]]
            uv_faces += [[ta, tc, td], [ta, td, tb]]
    return (torch.tensor(verts, dtype=torch.float32), torch.tensor(faces), torch.tensor(uvs, dtype=torch.float32),
            torch.tensor(uv_faces))


def sphere_mesh(subdivisions: int = 2, radius: float = 0.5, colors: bool = True) -> Mesh:
    v, f = icosphere(subdivisions, radius)
    return Mesh(v, f, vertex_colors=(v / radius * 0.5 + 0.5) if colors else None)


def textured_sphere(rows: int = 12, cols: int = 24, radius: float = 0.5, tex_size: int = 32) -> Mesh:
    v, f, uv, uf = uv_sphere(rows, cols, radius)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, tex_size), torch.linspace(0, 1, tex_size), indexing="ij")
    tex = torch.stack([xx, yy, 0.5 + 0.5 * torch.sin(6 * math.pi * xx) * torch.cos(4 * math.pi * yy)], -1)
    return Mesh(v, f, uvs=uv, uv_faces=uf, texture=tex)


def clip_tri(*xyzw) -> torch.Tensor:
    """(1, 3, 4) float32 clip positions from three (x, y, z, w) tuples."""
    return torch.tensor([list(p) for p in xyzw], dtype=torch.float32)[None]
