"""Procedural textured objects for training the demo multi-view model.

Every object is a composition of 1-3 primitives (icosphere, UV sphere, box, cylinder, torus) with a
random anisotropic scale, rotation and placement, coloured by one of a few patterns (solid, gradient,
stripes, checkers, smooth noise) applied as vertex colours or per-face colours. Everything is drawn
from a ``torch.Generator`` seeded with the object's integer seed, so ``make_object(seed)`` returns the
same mesh on every machine.

World: z-up (see :mod:`magicboost_core.geometry.camera`); the object is centred at the origin and fits
inside a sphere of radius ``ProceduralConfig.fit_radius`` so that the Instant3D cameras (distance 1.5,
fovy 49.134 deg) see all of it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..geometry.mesh import Mesh

__all__ = ["ProceduralConfig", "PATTERNS", "PRIMITIVES", "make_object", "random_rotation", "pattern_colors"]

PRIMITIVES = ("icosphere", "uv_sphere", "box", "cylinder", "torus")
PATTERNS = ("solid", "gradient", "stripes", "checkers", "noise")


@dataclass(frozen=True)
class ProceduralConfig:
    """Knobs of the object generator (all sizes in world units)."""

    max_parts: int = 3
    """An object is 1 .. max_parts primitives."""
    fit_radius: float = 0.55
    """The object is scaled into a sphere of this radius around the origin."""
    min_scale: float = 0.45
    max_scale: float = 1.0
    """Per-axis scale of each primitive, uniform in [min_scale, max_scale]."""
    face_color_prob: float = 0.3
    """Probability that a part's pattern is sampled per face (flat triangles) rather than per vertex."""


def _primitive(name: str) -> Mesh:
    """A unit-sized primitive from :mod:`magicboost_core.geometry.primitives` (no colours)."""
    from ..geometry import primitives as P

    if name == "icosphere":
        return P.icosphere(subdivisions=2)
    if name == "uv_sphere":
        return P.uv_sphere(n_lat=12, n_lon=24)
    if name == "box":
        return P.box(1.0)
    if name == "cylinder":
        return P.cylinder(segments=24)
    if name == "torus":
        return P.torus(major_radius=0.35, minor_radius=0.15, n_major=24, n_minor=12)
    raise ValueError(f"Unknown primitive {name!r}; choose one of {PRIMITIVES}.")


def random_rotation(g: torch.Generator) -> torch.Tensor:
    """A uniformly random rotation matrix (3, 3) float32 (from a random unit quaternion)."""
    q = torch.randn(4, generator=g, dtype=torch.float64)
    q = q / q.norm()
    w, x, y, z = q.tolist()
    return torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ],
        dtype=torch.float32,
    )


def _rand(g, lo=0.0, hi=1.0, shape=()) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def _random_color(g: torch.Generator) -> torch.Tensor:
    """A saturated-ish random RGB colour (3,) in [0, 1] (HSV with s, v away from 0)."""
    h, s, v = float(_rand(g)), float(_rand(g, 0.35, 1.0)), float(_rand(g, 0.35, 0.95))
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return torch.tensor(rgb, dtype=torch.float32)


def pattern_colors(points: torch.Tensor, pattern: str, g: torch.Generator) -> torch.Tensor:
    """Colours (N, 3) in [0, 1] of a pattern evaluated at object-space ``points`` (N, 3)."""
    c0, c1 = _random_color(g), _random_color(g)
    axis = torch.randn(3, generator=g)
    axis = axis / axis.norm().clamp_min(1e-6)
    s = points @ axis  # (N,) roughly in [-1, 1]
    if pattern == "solid":
        w = torch.zeros_like(s)
    elif pattern == "gradient":
        w = (s * 0.5 + 0.5).clamp(0, 1)
    elif pattern == "stripes":
        freq = float(_rand(g, 2.0, 5.0))
        w = (torch.sin(s * freq * math.pi) > 0).float()
    elif pattern == "checkers":
        freq = float(_rand(g, 2.0, 4.0))
        r = random_rotation(g)
        q = torch.floor((points @ r.T) * freq).long().sum(-1)
        w = (q % 2).float()
    elif pattern == "noise":
        # Smooth noise: a sum of 4 random sinusoids, squashed to [0, 1].
        k = torch.randn(4, 3, generator=g) * 3.0
        ph = _rand(g, 0, 2 * math.pi, (4,))
        w = torch.sin(points @ k.T + ph).mean(-1)
        w = (w * 1.5 * 0.5 + 0.5).clamp(0, 1)
    else:
        raise ValueError(f"Unknown pattern {pattern!r}; choose one of {PATTERNS}.")
    return c0 * (1 - w[:, None]) + c1 * w[:, None]


def _unit(mesh: Mesh) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertices centred and scaled to bounding radius 1, and faces."""
    v = mesh.vertices.float()
    v = v - 0.5 * (v.min(0).values + v.max(0).values)
    v = v / v.norm(dim=-1).max().clamp_min(1e-8)
    return v, mesh.faces.long()


def make_object(seed: int, config: ProceduralConfig = ProceduralConfig()) -> Mesh:
    """One procedural object with vertex colours, deterministic in ``seed``.

    Returns a :class:`Mesh` (vertices (V, 3) float32 centred at the origin within radius
    ``config.fit_radius``; vertex_colors (V, 3) in [0, 1]). Per-face colouring duplicates vertices so
    each triangle is flat-coloured.
    """
    g = torch.Generator().manual_seed(int(seed))
    n_parts = 1 + int(torch.randint(0, config.max_parts, (), generator=g))
    verts, faces, cols = [], [], []
    offset = 0
    for k in range(n_parts):
        name = PRIMITIVES[int(torch.randint(0, len(PRIMITIVES), (), generator=g))]
        v, f = _unit(_primitive(name))
        scale = _rand(g, config.min_scale, config.max_scale, (3,))
        rot = random_rotation(g)
        shift = torch.zeros(3) if k == 0 else torch.randn(3, generator=g) * 0.35
        v_obj = (v * scale) @ rot.T + shift
        pattern = PATTERNS[int(torch.randint(0, len(PATTERNS), (), generator=g))]
        per_face = bool(_rand(g) < config.face_color_prob)
        if per_face:
            v_obj = v_obj[f].reshape(-1, 3)
            f = torch.arange(v_obj.shape[0]).reshape(-1, 3)
            centres = v_obj.reshape(-1, 3, 3).mean(1)
            c = pattern_colors(centres, pattern, g).repeat_interleave(3, dim=0)
        else:
            c = pattern_colors(v_obj, pattern, g)
        verts.append(v_obj)
        faces.append(f + offset)
        cols.append(c)
        offset += v_obj.shape[0]
    v = torch.cat(verts)
    v = v - 0.5 * (v.min(0).values + v.max(0).values)
    v = v * (config.fit_radius / v.norm(dim=-1).max().clamp_min(1e-8))
    return Mesh(vertices=v.contiguous(), faces=torch.cat(faces).contiguous(), vertex_colors=torch.cat(cols).clamp(0, 1))
