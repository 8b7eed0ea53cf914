"""The pack's one triangle-mesh type.

A :class:`Mesh` holds torch tensors (CPU or GPU) and validates itself on construction, so every
function downstream can trust the shapes below.

Shapes and conventions:

* ``vertices``      (V, 3) float32, world units, z-up (see :mod:`.camera`).
* ``faces``         (F, 3) int64, counter-clockwise seen from outside, 0-based vertex indices.
* ``vertex_colors`` (V, 3) or (V, 4) float32 in [0, 1] (RGB[A]), optional.
* ``uvs``           (T, 2) float32 texture coordinates, u right, **v up** (glTF/OBJ-style origin at the
  bottom-left of the texture image), optional.
* ``uv_faces``      (F, 3) int64 indices into ``uvs`` (UV seams: a vertex may have several UVs).
  Required when ``uvs`` is given; when ``uvs`` has exactly V rows and no ``uv_faces`` is given, the
  faces are reused.
* ``texture``       (H, W, 3|4) float32 in [0, 1], row 0 = top of the image, optional.
* ``vertex_normals`` (V, 3) float32 unit normals, optional (computed on demand otherwise).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from ..validate import readable_error

__all__ = ["Mesh", "MeshError", "degenerate_faces"]


@readable_error
class MeshError(ValueError):
    """A mesh is malformed; the message names the problem and how to fix it."""


def _float(t, name) -> torch.Tensor:
    t = torch.as_tensor(t)
    if not t.is_floating_point():
        t = t.float()
    elif t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    if t.dtype == torch.float64:
        t = t.float()
    return t


def _index(t, name) -> torch.Tensor:
    t = torch.as_tensor(t)
    if t.is_floating_point():
        if not torch.equal(t, t.round()):
            raise MeshError(f"Mesh.{name} must hold integer indices; got non-integral floats.")
    return t.long()


def degenerate_faces(vertices: torch.Tensor, faces: torch.Tensor, rel_eps: float = 1e-12) -> torch.Tensor:
    """(F,) bool: faces whose area is ~0 (corners coincide or lie on a line), relative to the mesh's size.

    vertices (V, 3) float, faces (F, 3) long.
    """
    v = vertices.detach().double()
    a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    area2 = torch.linalg.cross(b - a, c - a, dim=-1).norm(dim=-1)
    extent = float((v.max(0).values - v.min(0).values).norm()) if v.shape[0] else 0.0
    return area2 <= rel_eps * max(extent, 1e-30) ** 2


def _refuse_all_degenerate(vertices: torch.Tensor, faces: torch.Tensor) -> None:
    if not bool(degenerate_faces(vertices, faces[:64]).all()):  # cheap: almost always decided by the first faces
        return
    if bool(degenerate_faces(vertices, faces).all()):
        raise MeshError(f"All {faces.shape[0]} faces of the mesh have zero area (their corners coincide or lie on a "
                        "line), so it has no surface to render or refine. Repair or re-export the mesh (e.g. remove "
                        "degenerate faces in Blender: Mesh > Clean Up > Degenerate Dissolve).")


def _checked_geometry(vertices, faces) -> tuple[torch.Tensor, torch.Tensor]:
    """``(vertices (V, 3) float32, faces (F, 3) int64 on the vertices' device)``, or :class:`MeshError`
    (wrong shapes, no vertices or faces, non-finite coordinates, indices outside the vertex list)."""
    v = _float(vertices, "vertices")
    if v.ndim != 2 or v.shape[1] != 3:
        raise MeshError(f"Mesh.vertices must have shape (V, 3); got {tuple(v.shape)}.")
    if v.shape[0] == 0:
        raise MeshError("The mesh has no vertices. Load a non-empty mesh.")
    if not torch.isfinite(v).all():
        bad = int((~torch.isfinite(v)).any(-1).sum())
        raise MeshError(f"The mesh has {bad} vertices with NaN or infinite coordinates; clean or repair it first.")
    f = _index(faces, "faces")
    if f.ndim != 2 or f.shape[1] != 3:
        raise MeshError(
            f"Mesh.faces must have shape (F, 3) (triangles); got {tuple(f.shape)}. "
            "Triangulate polygons first (trimesh does this on load)."
        )
    if f.shape[0] == 0:
        raise MeshError(
            "The mesh has no faces (a point cloud?). Magic-Boost refines surfaces: give a triangle mesh."
        )
    if int(f.min()) < 0 or int(f.max()) >= v.shape[0]:
        raise MeshError(
            f"Mesh.faces index vertices outside [0, {v.shape[0] - 1}] (found {int(f.min())}..{int(f.max())}); "
            "the face list does not belong to this vertex list."
        )
    return v, f.to(v.device)


def _checked_colors(colors, v: torch.Tensor) -> torch.Tensor:
    """(V, 3|4) float32 vertex colours in [0, 1] on ``v``'s device (NaN -> 0); ``v`` (V, 3)."""
    c = _float(colors, "vertex_colors").to(v.device)
    if c.ndim != 2 or c.shape[0] != v.shape[0] or c.shape[1] not in (3, 4):
        raise MeshError(
            f"Mesh.vertex_colors must have shape ({v.shape[0]}, 3|4); got {tuple(c.shape)}."
        )
    if c.numel() and float(c.max()) > 1.0 + 1e-6:
        raise MeshError("Mesh.vertex_colors must be floats in [0, 1]; got values above 1 (divide by 255?).")
    return torch.nan_to_num(c).clamp(0, 1)


def _checked_uvs(uvs, uv_faces, v: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(uvs (T, 2) float32, uv_faces (F, 3) int64)`` on ``v``'s device; without ``uv_faces`` the uvs
    must have one row per vertex (V) and the faces ``f`` (F, 3) are reused."""
    uv = _float(uvs, "uvs").to(v.device)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise MeshError(f"Mesh.uvs must have shape (T, 2); got {tuple(uv.shape)}.")
    if not torch.isfinite(uv).all():
        bad = int((~torch.isfinite(uv)).any(-1).sum())
        raise MeshError(f"{bad} of the mesh's {uv.shape[0]} texture coordinates (uvs) are NaN or infinite; "
                        "re-export the mesh with valid UVs, or drop its UVs so they are unwrapped again.")
    uf = uv_faces
    if uf is None:
        if uv.shape[0] != v.shape[0]:
            raise MeshError(
                f"Mesh.uvs has {uv.shape[0]} rows but there are {v.shape[0]} vertices and no uv_faces; "
                "pass uv_faces (F, 3) that index into uvs."
            )
        uf = f
    uf = _index(uf, "uv_faces").to(v.device)
    if uf.shape != f.shape:
        raise MeshError(f"Mesh.uv_faces must have the faces' shape {tuple(f.shape)}; got {tuple(uf.shape)}.")
    if int(uf.min()) < 0 or int(uf.max()) >= uv.shape[0]:
        raise MeshError(f"Mesh.uv_faces index outside the {uv.shape[0]} uvs.")
    return uv, uf


def _checked_texture(texture, device, has_uvs: bool) -> torch.Tensor:
    """(H, W, 3|4) float32 texture in [0, 1] on ``device`` (uint8 scaled by 1/255, NaN -> 0)."""
    tex = torch.as_tensor(texture)
    if tex.dtype == torch.uint8:
        tex = tex.float() / 255.0
    tex = _float(tex, "texture").to(device)
    if tex.ndim != 3 or tex.shape[2] not in (3, 4) or min(tex.shape[:2]) < 1:
        raise MeshError(f"Mesh.texture must have shape (H, W, 3|4); got {tuple(tex.shape)}.")
    if not has_uvs:
        raise MeshError("Mesh.texture given without uvs: a texture needs texture coordinates.")
    return torch.nan_to_num(tex).clamp(0, 1)


@dataclass(eq=False)
class Mesh:
    vertices: torch.Tensor
    faces: torch.Tensor
    vertex_colors: torch.Tensor | None = None
    uvs: torch.Tensor | None = None
    uv_faces: torch.Tensor | None = None
    texture: torch.Tensor | None = None
    vertex_normals: torch.Tensor | None = None

    def __post_init__(self):
        v, f = _checked_geometry(self.vertices, self.faces)
        self.vertices, self.faces = v, f
        _refuse_all_degenerate(v, self.faces)
        if self.vertex_colors is not None:
            self.vertex_colors = _checked_colors(self.vertex_colors, v)
        if self.uvs is not None:
            self.uvs, self.uv_faces = _checked_uvs(self.uvs, self.uv_faces, v, f)
        elif self.uv_faces is not None:
            raise MeshError("Mesh.uv_faces given without uvs.")
        if self.texture is not None:
            self.texture = _checked_texture(self.texture, v.device, self.uvs is not None)
        if self.vertex_normals is not None:
            n = _float(self.vertex_normals, "vertex_normals").to(v.device)
            if n.shape != v.shape:
                raise MeshError(f"Mesh.vertex_normals must have shape {tuple(v.shape)}; got {tuple(n.shape)}.")
            self.vertex_normals = n

    # ---------------------------------------------------------------------------------------------
    @property
    def num_vertices(self) -> int:
        return self.vertices.shape[0]

    @property
    def num_faces(self) -> int:
        return self.faces.shape[0]

    @property
    def has_texture(self) -> bool:
        return self.texture is not None and self.uvs is not None

    @property
    def device(self) -> torch.device:
        return self.vertices.device

    def to(self, device) -> "Mesh":
        kw = {f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device)) for f in fields(self)}
        return Mesh(**kw)

    def detach(self) -> "Mesh":
        kw = {f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).detach()) for f in fields(self)}
        return Mesh(**kw)

    def clone(self) -> "Mesh":
        kw = {f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).clone()) for f in fields(self)}
        return Mesh(**kw)

    def replace(self, **changes) -> "Mesh":
        """A new validated mesh with some fields replaced (e.g. new vertices after refinement)."""
        if "vertices" in changes and "vertex_normals" not in changes:
            changes["vertex_normals"] = None
        return replace(self, **changes)

    # ---------------------------------------------------------------------------------------------
    def face_normals(self, normalize: bool = True) -> torch.Tensor:
        """(F, 3) face normals (right-hand rule over the face's vertex order); differentiable."""
        v0, v1, v2 = (self.vertices[self.faces[:, i]] for i in range(3))
        n = torch.cross(v1 - v0, v2 - v0, dim=-1)
        return torch.nn.functional.normalize(n, dim=-1, eps=1e-20) if normalize else n

    def compute_vertex_normals(self) -> torch.Tensor:
        """(V, 3) area-weighted unit vertex normals; differentiable with respect to vertices."""
        fn = self.face_normals(normalize=False)
        n = torch.zeros_like(self.vertices)
        for i in range(3):
            n = n.index_add(0, self.faces[:, i], fn)
        return torch.nn.functional.normalize(n, dim=-1, eps=1e-20)

    def normals(self) -> torch.Tensor:
        return self.vertex_normals if self.vertex_normals is not None else self.compute_vertex_normals()

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vertices.min(0).values, self.vertices.max(0).values

    def __repr__(self) -> str:
        extras = [n for n in ("vertex_colors", "uvs", "texture") if getattr(self, n) is not None]
        return f"Mesh(V={self.num_vertices}, F={self.num_faces}{', ' + ', '.join(extras) if extras else ''})"
