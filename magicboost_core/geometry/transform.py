"""Rigid/similarity transforms of meshes: normalisation, axis changes and the InstantMesh z-flip.

World: the pack's z-up frame with the object's front facing +x (camera at azimuth 0 sits on +x and
looks at the origin; see :mod:`.camera`). All functions return new meshes (inputs untouched), keep
colours/UVs/texture, and carry vertex normals along correctly (rotated, mirrored or kept).
Computations run in float64 and are cast back to float32.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from .mesh import Mesh, MeshError

__all__ = ["Normalization", "bounding_sphere", "normalize_to_unit_sphere", "axes_rotation", "change_axes", "flip_z"]


def _as_points(points) -> torch.Tensor:
    p = torch.as_tensor(points)
    if not p.is_floating_point():
        p = p.float()
    if p.shape[-1] != 3:
        raise ValueError(f"points must have shape (..., 3); got {tuple(p.shape)}.")
    return p


@dataclass(frozen=True)
class Normalization:
    """A similarity ``p' = (R @ p - center) * scale`` and its inverse ``p = R^T @ (p' / scale + center)``.

    Attributes: center: (3,) float64 tensor (in the rotated original frame); scale: float > 0; rotation:
    (3, 3) float64 proper rotation ``R``, or None for none (the identity).
    Keep it with a refined mesh to put the result back where the input was (:meth:`invert`).
    """

    center: torch.Tensor
    scale: float
    rotation: torch.Tensor | None = None

    def __post_init__(self):
        c = torch.as_tensor(self.center, dtype=torch.float64).reshape(-1)
        if c.shape != (3,) or not torch.isfinite(c).all():
            raise ValueError(f"Normalization.center must be 3 finite numbers; got {self.center!r}.")
        s = float(self.scale)
        if not (s > 0 and s < float("inf")):
            raise ValueError(f"Normalization.scale must be a positive finite number; got {self.scale!r}.")
        object.__setattr__(self, "center", c)
        object.__setattr__(self, "scale", s)
        if self.rotation is not None:
            R = torch.as_tensor(self.rotation, dtype=torch.float64)
            if R.shape != (3, 3) or not torch.isfinite(R).all():
                raise ValueError(f"Normalization.rotation must be a 3 x 3 matrix; got {self.rotation!r}.")
            object.__setattr__(self, "rotation", R)

    def apply_points(self, points) -> torch.Tensor:
        """(..., 3) points -> normalised points (dtype/device of the input)."""
        p = _as_points(points)
        q = p.double() if self.rotation is None else p.double() @ self.rotation.to(p.device).T
        return ((q - self.center.to(p.device)) * self.scale).to(p.dtype)

    def invert_points(self, points) -> torch.Tensor:
        """(..., 3) normalised points -> original frame."""
        p = _as_points(points)
        q = p.double() / self.scale + self.center.to(p.device)
        return (q if self.rotation is None else q @ self.rotation.to(p.device)).to(p.dtype)

    def _normals(self, mesh: Mesh, inverse: bool) -> torch.Tensor | None:
        """Vertex normals after the map: rotated; unchanged by the translation and uniform scale."""
        n = mesh.vertex_normals
        if n is None or self.rotation is None:
            return n
        R = self.rotation.to(n.device)
        return (n.double() @ (R if inverse else R.T)).to(n.dtype)

    def apply(self, mesh: Mesh) -> Mesh:
        """Normalise a mesh (normals rotated with it)."""
        return mesh.replace(vertices=self.apply_points(mesh.vertices), vertex_normals=self._normals(mesh, False))

    def invert(self, mesh: Mesh) -> Mesh:
        """Undo :meth:`apply` on a (possibly refined) mesh."""
        return mesh.replace(vertices=self.invert_points(mesh.vertices), vertex_normals=self._normals(mesh, True))

    def to_dict(self) -> dict:
        d = {"center": self.center.tolist(), "scale": self.scale}
        if self.rotation is not None:
            d["rotation"] = self.rotation.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        rotation = d.get("rotation")
        return cls(center=torch.tensor(d["center"], dtype=torch.float64), scale=float(d["scale"]),
                   rotation=None if rotation is None else torch.tensor(rotation, dtype=torch.float64))


def bounding_sphere(points: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(centre (3,), radius) of (N, 3) ``points``: the centre of their axis-aligned bounding box (dtype and
    device of the input; pass float64 points for float64 precision) and the largest distance from it."""
    center = 0.5 * (points.min(0).values + points.max(0).values)
    return center, float((points - center).norm(dim=-1).max())


def normalize_to_unit_sphere(mesh: Mesh, radius: float = 1.0) -> tuple[Mesh, Normalization]:
    """Centre the mesh on its bounding-box centre and scale it so the farthest vertex lies at ``radius``.

    Returns ``(normalised_mesh, normalization)``; ``normalization.invert(normalised_mesh)`` gives the
    input back (to float32 rounding). The official Magic-Boost scenes fit objects in a sphere of radius
    ~0.5-1 around the origin (cameras at distance 1.5 / 4.0 per preset).
    Raises MeshError when all vertices coincide (nothing to scale).
    """
    if not radius > 0:
        raise ValueError(f"radius must be > 0; got {radius}.")
    center, extent = bounding_sphere(mesh.vertices.detach().double())
    if extent <= 0.0 or extent < 1e-12 * max(1.0, float(center.abs().max())):
        raise MeshError("Cannot normalise: all vertices are at the same point (a degenerate mesh has no size).")
    if extent < 1e-6:
        warnings.warn(f"normalize_to_unit_sphere: the mesh is tiny (extent {extent:.3g}); precision may suffer.",
                      stacklevel=2)
    norm = Normalization(center=center.cpu(), scale=radius / extent)
    return norm.apply(mesh), norm


_AXIS = {"x": 0, "y": 1, "z": 2}


def _axis_vector(spec: str, what: str) -> torch.Tensor:
    s = str(spec).strip().lower()
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    if s not in _AXIS:
        raise ValueError(f"{what} must be one of +x, -x, +y, -y, +z, -z; got {spec!r}.")
    v = torch.zeros(3, dtype=torch.float64)
    v[_AXIS[s]] = sign
    return v


def axes_rotation(up: str = "+z", forward: str = "+x") -> torch.Tensor:
    """(3, 3) float64 rotation taking a model whose up axis is ``up`` and whose front faces ``forward``
    into the pack's frame (up -> +z, front -> +x). Proper rotation (det +1), so winding is kept.

    Examples: glTF/Blender y-up, front +z: ``axes_rotation("+y", "+z")``; already ours: identity.
    """
    u = _axis_vector(up, "up")
    f = _axis_vector(forward, "forward")
    if abs(float(u @ f)) > 0.5:
        raise ValueError(f"up ({up}) and forward ({forward}) must be different axes (perpendicular).")
    return torch.stack([f, torch.linalg.cross(u, f), u])  # rows: f -> x, (u x f) -> y, u -> z


def change_axes(mesh: Mesh, up: str = "+z", forward: str = "+x", inverse: bool = False) -> Mesh:
    """Rotate a mesh from a source convention (``up``, ``forward``: "+x", "-y", ...) to the pack's
    z-up / +x-front world; ``inverse=True`` goes back from ours to the source convention."""
    R = axes_rotation(up, forward)
    return Normalization(torch.zeros(3, dtype=torch.float64), 1.0, R.T if inverse else R).apply(mesh)


def flip_z(mesh: Mesh) -> Mesh:
    """The InstantMesh z-flip: ``v -> v * diag(1, 1, -1)``, its own inverse.

    A reflection (det -1) mirrors the shape, which would turn every face inside out; the winding of
    ``faces`` and ``uv_faces`` is therefore reversed (corners 1 and 2 swapped) so normals keep pointing
    outward. Vertex normals are mirrored too. UVs and the texture are unchanged (each face keeps its
    texels), so the texture appears mirrored with the geometry as it should.
    """
    flip = torch.tensor([1.0, 1.0, -1.0], dtype=mesh.vertices.dtype, device=mesh.vertices.device)
    faces = mesh.faces[:, [0, 2, 1]]
    uv_faces = None if mesh.uv_faces is None else mesh.uv_faces[:, [0, 2, 1]]
    normals = None if mesh.vertex_normals is None else mesh.vertex_normals * flip
    return mesh.replace(vertices=mesh.vertices * flip, faces=faces, uv_faces=uv_faces, vertex_normals=normals)
