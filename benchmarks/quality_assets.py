"""Assets of the public quality benchmark (``benchmarks/quality.py``): procedural, deterministic, redistributable.

Every asset is built here from code (no downloads, no third-party meshes), so anyone may regenerate and
redistribute it. Each is a set of *parts* (a triangle mesh + a colour function of the 3D point); the
parts are concatenated, centred and scaled to bounding radius :data:`RADIUS`, unwrapped with xatlas and
given a **UV texture** by evaluating each part's colour function at the 3D point of every texel (so
stripes and checkers are sharp at texture resolution, not vertex resolution).

Shapes (z-up, the Instant3D views look at the object from elevation 0):

===========  ====================================================  =============================
name         shape                                                 texture
===========  ====================================================  =============================
crate        flat-faced box                                        3D checker + border stripe
nut          hexagonal nut (flat faces, genus 1, low-poly)          brass, ring stripes
airplane     fuselage + thin wings and tail                        stripes, coloured wings
insect       round body + six thin legs + antennae                 spots
duck         smooth organic toy (ellipsoid body, head, beak)       yellow gradient, orange beak
pebble       smooth noise-displaced sphere                         smooth noise colours
torus_knot   (2, 3) torus-knot tube                                stripes along z
rings        three fused tori (genus 3)                            checker
===========  ====================================================  =============================

The coarse version (:func:`make_coarse_textured`) follows issue #11: decimation to 25 % of the faces
(fast-simplification), a fresh UV atlas whose texture is the ground-truth pattern box-downsampled 8x
and desaturated to 60 % (HSV saturation x 0.6, value kept), then 1 % RMS vertex jitter (N(0, 0.01 *
radius) along the vertex normals, seeded).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as Fn

from magicboost_core.geometry import primitives as P
from magicboost_core.geometry.mesh import Mesh
from magicboost_core.refine.representation import subdivide_midpoint

__all__ = ["RADIUS", "ASSET_NAMES", "Asset", "make_asset", "make_coarse_textured", "desaturate", "box_downsample"]

RADIUS = 0.55
TEXTURE_RESOLUTION = 512
ColorFn = Callable[[torch.Tensor], torch.Tensor]  # points (N, 3) -> colours (N, 3) in [0, 1]


@dataclass
class Asset:
    """A benchmark asset: the textured ground truth and what is needed to colour a degraded copy.

    ``mesh``: textured Mesh (uvs, uv_faces, texture (R, R, 3)), bounding radius :data:`RADIUS`.
    ``face_part``: (F,) int64 part index of each face; ``colors``: one colour function per part, in the
    final (scaled) frame.
    """

    name: str
    mesh: Mesh
    face_part: torch.Tensor
    colors: list


# ----------------------------------------------------------------------------------------------------
# colour functions of the 3D point
def _rgb(*c) -> torch.Tensor:
    return torch.tensor(c, dtype=torch.float32)


def solid(c) -> ColorFn:
    return lambda p: _rgb(*c).expand(p.shape[0], 3)


def stripes(axis, period, c0, c1) -> ColorFn:
    a = torch.nn.functional.normalize(torch.tensor(axis, dtype=torch.float32), dim=0)
    return lambda p: torch.where(((p @ a) / period).floor().long()[:, None] % 2 == 0, _rgb(*c0), _rgb(*c1))


def checker(size, c0, c1) -> ColorFn:
    return lambda p: torch.where(((p / size).floor().long().sum(-1) % 2 == 0)[:, None], _rgb(*c0), _rgb(*c1))


def gradient(axis, lo, hi, c0, c1) -> ColorFn:
    a = torch.nn.functional.normalize(torch.tensor(axis, dtype=torch.float32), dim=0)
    return lambda p: torch.lerp(_rgb(*c0), _rgb(*c1), ((p @ a - lo) / (hi - lo)).clamp(0, 1)[:, None])


def spots(freq, c_spot, c_base) -> ColorFn:
    def f(p):
        d = torch.cos(p[:, 0] * freq) * torch.cos(p[:, 1] * freq) * torch.cos(p[:, 2] * freq + 0.7)
        return torch.where((d > 0.35)[:, None], _rgb(*c_spot), _rgb(*c_base))
    return f


def smooth_noise(seed, c0, c1, c2) -> ColorFn:
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(6, 3, generator=g) * 6.0
    ph = torch.rand(6, generator=g) * 2 * math.pi

    def f(p):
        w = torch.sin(p @ k.T + ph)
        t1 = (w[:, :3].mean(-1) * 1.2 * 0.5 + 0.5).clamp(0, 1)[:, None]
        t2 = (w[:, 3:].mean(-1) * 1.2 * 0.5 + 0.5).clamp(0, 1)[:, None]
        return torch.lerp(torch.lerp(_rgb(*c0), _rgb(*c1), t1), _rgb(*c2), 0.6 * t2)
    return f


# ----------------------------------------------------------------------------------------------------
# geometry builders (all return (vertices (V, 3) float32, faces (F, 3) int64), counter-clockwise outward)
def _grid_faces(rows: int, cols: int, wrap_rows: bool) -> torch.Tensor:
    """Quads of a (rows, cols) vertex grid closed around the columns (and the rows when ``wrap_rows``)."""
    faces = []
    last = rows if wrap_rows else rows - 1
    for i in range(last):
        for j in range(cols):
            a, b = i * cols + j, i * cols + (j + 1) % cols
            c, d = ((i + 1) % rows) * cols + j, ((i + 1) % rows) * cols + (j + 1) % cols
            faces += [(a, b, d), (a, d, c)]
    return torch.tensor(faces, dtype=torch.int64)


def _cap(faces: list, centre: int, ring: list, flip: bool) -> None:
    for j in range(len(ring)):
        a, b = ring[j], ring[(j + 1) % len(ring)]
        faces.append((centre, b, a) if flip else (centre, a, b))


def tube(path: torch.Tensor, radius, sections: int = 16, closed: bool = False):
    """A tube of ``radius`` (scalar or (N,)) around the polyline ``path`` (N, 3); capped unless ``closed``."""
    path = path.double()
    n = path.shape[0]
    r = torch.as_tensor(radius, dtype=torch.float64).expand(n)
    tang = torch.roll(path, -1, 0) - torch.roll(path, 1, 0) if closed else torch.gradient(path, dim=0)[0]
    tang = Fn.normalize(tang, dim=-1)
    ref = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(n, 3)
    ref = torch.where((tang @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)).abs()[:, None] > 0.9,
                      torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).expand(n, 3), ref)
    u = Fn.normalize(torch.cross(tang, ref, dim=-1), dim=-1)
    w = torch.cross(tang, u, dim=-1)
    ang = torch.arange(sections, dtype=torch.float64) * 2 * math.pi / sections
    ring = path[:, None] + r[:, None, None] * (ang.cos()[None, :, None] * u[:, None] + ang.sin()[None, :, None] * w[:, None])
    v = ring.reshape(-1, 3)
    faces = _grid_faces(n, sections, wrap_rows=closed).tolist()
    if not closed:
        v = torch.cat([v, path[:1], path[-1:]])
        _cap(faces, n * sections, list(range(sections)), flip=True)
        _cap(faces, n * sections + 1, list(range((n - 1) * sections, n * sections)), flip=False)
    return _oriented(v.float(), torch.tensor(faces, dtype=torch.int64), path.float().mean(0) if closed else None)


def _oriented(v: torch.Tensor, f: torch.Tensor, centre=None):
    """Flip all faces when the enclosed signed volume is negative (builders share one winding)."""
    v0, v1, v2 = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    vol = float((v0 * torch.cross(v1, v2, dim=-1)).sum())
    return (v, f) if vol >= 0 else (v, f[:, [0, 2, 1]])


def lathe(profile, sections: int = 32, axis: str = "z"):
    """Surface of revolution of ``profile`` [(radius, height), ...] (bottom to top), both ends capped."""
    rows = []
    for rad, h in profile:
        a = torch.arange(sections, dtype=torch.float64) * 2 * math.pi / sections
        rows.append(torch.stack([rad * a.cos(), rad * a.sin(), torch.full_like(a, h)], -1))
    v = torch.cat(rows)
    n = len(profile)
    faces = _grid_faces(n, sections, wrap_rows=False).tolist()
    v = torch.cat([v, torch.tensor([[0, 0, profile[0][1]], [0, 0, profile[-1][1]]], dtype=torch.float64)])
    _cap(faces, n * sections, list(range(sections)), flip=True)
    _cap(faces, n * sections + 1, list(range((n - 1) * sections, n * sections)), flip=False)
    if axis == "x":
        v = v[:, [2, 0, 1]]
    return _oriented(v.float(), torch.tensor(faces, dtype=torch.int64))


def ellipsoid(radii, centre=(0, 0, 0), subdivisions: int = 3):
    m = P.icosphere(subdivisions=subdivisions, radius=1.0)
    return m.vertices * torch.tensor(radii) + torch.tensor(centre, dtype=torch.float32), m.faces


def flat_box(size, centre=(0, 0, 0), subdivisions: int = 3):
    """A box split into a regular grid of flat triangles (midpoint subdivision keeps the faces planar)."""
    m = P.box(size)
    for _ in range(subdivisions):
        m = subdivide_midpoint(m)
    return m.vertices + torch.tensor(centre, dtype=torch.float32), m.faces


def hex_nut(outer: float, inner: float, height: float, subdivisions: int = 2):
    """A hexagonal prism with a hexagonal hole (genus 1), flat-faced, subdivided for decimation."""
    a = torch.arange(6, dtype=torch.float64) * math.pi / 3
    rings = [torch.stack([r * a.cos(), r * a.sin(), torch.full_like(a, z)], -1)
             for r, z in ((outer, -height / 2), (outer, height / 2), (inner, height / 2), (inner, -height / 2))]
    v = torch.cat(rings)  # 4 rings of 6: outer bottom, outer top, inner top, inner bottom
    f = _grid_faces(4, 6, wrap_rows=True)
    m = Mesh(vertices=v.float(), faces=f)
    for _ in range(subdivisions):
        m = subdivide_midpoint(m)
    return _oriented(m.vertices, m.faces)


def torus_knot_path(p: int = 2, q: int = 3, n: int = 240):
    t = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
    r = 2 + torch.cos(q * t)
    return torch.stack([r * torch.cos(p * t), r * torch.sin(p * t), -torch.sin(q * t)], -1) / 3.0


def _rotate_z(v: torch.Tensor, deg: float) -> torch.Tensor:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return v @ torch.tensor([[c, s, 0], [-s, c, 0], [0, 0, 1.0]])


# ----------------------------------------------------------------------------------------------------
def _parts(name: str) -> list:
    """[(vertices, faces, colour_fn), ...] of asset ``name`` in a rough unit frame (rescaled later)."""
    if name == "crate":
        v, f = flat_box((1.0, 0.75, 0.6), subdivisions=3)
        chk = checker(0.25, (0.55, 0.33, 0.15), (0.85, 0.62, 0.3))
        band = stripes((0, 0, 1), 0.1, (0.2, 0.35, 0.75), (0.2, 0.35, 0.75))

        def crate(p):
            return torch.where((p[:, 2].abs() > 0.22)[:, None], band(p), chk(p))
        return [(v, f, crate)]
    if name == "nut":
        v, f = hex_nut(0.5, 0.25, 0.3, subdivisions=2)
        return [(v, f, stripes((0, 0, 1), 0.075, (0.78, 0.62, 0.2), (0.55, 0.4, 0.12)))]
    if name == "airplane":
        body = lathe([(0.001, -0.5), (0.05, -0.47), (0.08, -0.35), (0.09, 0.0), (0.08, 0.3), (0.05, 0.45),
                      (0.001, 0.5)], sections=24, axis="x")
        wing = flat_box((0.22, 1.0, 0.025), centre=(0.02, 0, 0), subdivisions=3)
        tail = flat_box((0.12, 0.36, 0.02), centre=(-0.42, 0, 0.02), subdivisions=2)
        fin = flat_box((0.12, 0.02, 0.18), centre=(-0.43, 0, 0.1), subdivisions=2)
        return [(*body, stripes((1, 0, 0), 0.08, (0.92, 0.92, 0.95), (0.8, 0.1, 0.1))),
                (*wing, stripes((0, 1, 0), 0.1, (0.15, 0.3, 0.8), (0.95, 0.8, 0.1))),
                (*tail, solid((0.15, 0.3, 0.8))), (*fin, solid((0.8, 0.1, 0.1)))]
    if name == "insect":
        parts = [(*ellipsoid((0.28, 0.16, 0.12), (-0.12, 0, 0.05)), spots(30.0, (0.1, 0.1, 0.1), (0.85, 0.15, 0.1))),
                 (*ellipsoid((0.1, 0.1, 0.09), (0.24, 0, 0.07), 2), solid((0.1, 0.1, 0.1)))]
        for side in (-1.0, 1.0):
            for x in (-0.2, -0.05, 0.1):
                t = torch.linspace(0, 1, 12, dtype=torch.float64)[:, None]
                knee = torch.tensor([x, side * 0.3, 0.12], dtype=torch.float64)
                start = torch.tensor([x, side * 0.08, 0.04], dtype=torch.float64)
                foot = torch.tensor([x + 0.06 * (1 if x > 0 else -1), side * 0.42, -0.25], dtype=torch.float64)
                path = torch.where(t < 0.5, start + (knee - start) * (t * 2), knee + (foot - knee) * (t * 2 - 1))
                parts.append((*tube(path, 0.016, sections=8), solid((0.15, 0.12, 0.1))))
            a = torch.linspace(0, 1, 10, dtype=torch.float64)[:, None]
            ant = torch.tensor([0.3, side * 0.04, 0.12], dtype=torch.float64) + a * torch.tensor(
                [0.2, side * 0.14, 0.22], dtype=torch.float64)
            parts.append((*tube(ant, 0.01, sections=6), solid((0.15, 0.12, 0.1))))
        return parts
    if name == "duck":
        return [(*ellipsoid((0.42, 0.3, 0.25), (0, 0, -0.12), 4),
                 gradient((0, 0, 1), -0.35, 0.1, (0.95, 0.7, 0.05), (1.0, 0.92, 0.3))),
                (*ellipsoid((0.19, 0.18, 0.18), (0.25, 0, 0.22), 3), solid((1.0, 0.9, 0.25))),
                (*ellipsoid((0.14, 0.07, 0.035), (0.45, 0, 0.19), 2), solid((0.95, 0.45, 0.05))),
                (*ellipsoid((0.03, 0.03, 0.03), (0.38, 0.11, 0.29), 1), solid((0.05, 0.05, 0.05))),
                (*ellipsoid((0.03, 0.03, 0.03), (0.38, -0.11, 0.29), 1), solid((0.05, 0.05, 0.05)))]
    if name == "pebble":
        m = P.icosphere(subdivisions=4, radius=1.0)
        d = m.vertices
        g = torch.Generator().manual_seed(11)
        k = torch.randn(5, 3, generator=g) * 1.8
        ph = torch.rand(5, generator=g) * 2 * math.pi
        r = 0.45 * (1 + 0.12 * torch.sin(d @ k.T + ph).sum(-1))
        v = d * r[:, None] * torch.tensor([1.2, 0.9, 0.75])
        return [(v, m.faces, smooth_noise(5, (0.2, 0.45, 0.35), (0.85, 0.8, 0.6), (0.6, 0.2, 0.35)))]
    if name == "torus_knot":
        v, f = tube(torus_knot_path(), 0.11, sections=14, closed=True)
        return [(v, f, stripes((0.3, 0.2, 1.0), 0.09, (0.1, 0.55, 0.9), (0.98, 0.95, 0.9)))]
    if name == "rings":
        parts = []
        for cx in (-0.5, 0.0, 0.5):
            t = P.torus(major_radius=0.3, minor_radius=0.09, n_major=48, n_minor=16)
            v = t.vertices[:, [0, 2, 1]] * torch.tensor([1.0, -1.0, 1.0]) + torch.tensor([cx, 0.0, 0.0])
            parts.append((v, t.faces, checker(0.12, (0.1, 0.1, 0.45), (0.95, 0.85, 0.2))))
        return parts
    raise ValueError(f"unknown benchmark asset {name!r}; choose from {', '.join(ASSET_NAMES)}.")


ASSET_NAMES = ("crate", "nut", "airplane", "insect", "duck", "pebble", "torus_knot", "rings")


def _normalise(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(centred-and-scaled vertices, bbox centre, scale) mapping the bounding radius to :data:`RADIUS`."""
    centre = 0.5 * (v.min(0).values + v.max(0).values)
    scale = RADIUS / float((v - centre).norm(dim=-1).max())
    return (v - centre) * scale, centre, scale


def bake_pattern(mesh: Mesh, face_part: torch.Tensor, colors: list, resolution: int,
                 points_of_vertices: torch.Tensor | None = None) -> torch.Tensor:
    """(R, R, 3) texture of ``mesh`` (with uvs): each texel coloured by its part's colour function at its
    3D point (``points_of_vertices`` (V, 3) overrides where the points are taken, e.g. before a jitter)."""
    from magicboost_core.render.bake import dilate_texture, push_pull_fill, uv_raster
    from magicboost_core.render.ops import interpolate

    rast = uv_raster(mesh, resolution)
    pos_src = mesh.vertices if points_of_vertices is None else points_of_vertices
    pts = interpolate(pos_src.contiguous(), rast, mesh.faces)[0].reshape(-1, 3)
    fid = rast[0, ..., 3].reshape(-1).long() - 1
    covered = fid >= 0
    col = torch.zeros(pts.shape[0], 3)
    part = torch.where(covered, face_part[fid.clamp_min(0)], torch.full_like(fid, -1))
    for i, fn in enumerate(colors):
        sel = part == i
        if bool(sel.any()):
            col[sel] = fn(pts[sel]).float()
    tex, grown = dilate_texture(col.view(resolution, resolution, 3), covered.view(resolution, resolution), 4)
    return push_pull_fill(tex, grown).clamp(0, 1)


def make_asset(name: str, texture_resolution: int = TEXTURE_RESOLUTION) -> Asset:
    """The textured ground truth of asset ``name`` (deterministic; xatlas UVs, radius :data:`RADIUS`)."""
    from magicboost_core.geometry.uv import unwrap_uv

    vs, fs, parts, fns, n = [], [], [], [], 0
    for i, (v, f, fn) in enumerate(_parts(name)):
        v, f = _oriented(v.float(), f)  # every part closed with outward normals
        vs.append(v.float())
        fs.append(f + n)
        parts.append(torch.full((f.shape[0],), i, dtype=torch.int64))
        fns.append(fn)
        n += v.shape[0]
    v, centre, scale = _normalise(torch.cat(vs))
    # Colour functions were written for the unit frame: evaluate them there.
    fns = [(lambda fn: (lambda p: fn(p / scale + centre)))(fn) for fn in fns]
    mesh = unwrap_uv(Mesh(vertices=v, faces=torch.cat(fs)), resolution=texture_resolution)
    face_part = torch.cat(parts)
    tex = bake_pattern(mesh, face_part, fns, texture_resolution)
    return Asset(name=name, mesh=mesh.replace(texture=tex), face_part=face_part, colors=fns)


def desaturate(rgb: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale HSV saturation by ``factor`` keeping the value: c' = max - factor * (max - c). (..., 3)."""
    mx = rgb.max(-1, keepdim=True).values
    return mx - factor * (mx - rgb)


def box_downsample(tex: torch.Tensor, factor: int) -> torch.Tensor:
    """(H, W, C) -> (H / factor, W / factor, C) by averaging factor x factor blocks."""
    return Fn.avg_pool2d(tex.permute(2, 0, 1)[None], factor)[0].permute(1, 2, 0).contiguous()


def make_coarse_textured(asset: Asset, face_fraction: float = 0.25, downsample: int = 8, saturation: float = 0.6,
                         jitter: float = 0.01, seed: int = 0) -> Mesh:
    """The coarse version of ``asset`` (issue #11 protocol): decimated to ``face_fraction`` of the faces,
    texture = ground-truth pattern box-downsampled ``downsample``x and desaturated to ``saturation``,
    vertices moved along their normals by N(0, ``jitter`` * radius) (seeded)."""
    import fast_simplification

    from magicboost_core.eval.mesh_metrics import nearest_neighbors
    from magicboost_core.geometry.uv import unwrap_uv

    gt = asset.mesh
    res = gt.texture.shape[0]
    pts, fcs = fast_simplification.simplify(gt.vertices.numpy().astype(np.float32), gt.faces.numpy().astype(np.int64),
                                            target_reduction=1.0 - face_fraction)
    v = torch.tensor(pts, dtype=torch.float32)
    f = torch.tensor(fcs, dtype=torch.int64)
    centroid = lambda m_v, m_f: m_v[m_f].mean(1)  # noqa: E731
    _, nearest = nearest_neighbors(centroid(v, f), centroid(gt.vertices, gt.faces))
    coarse = unwrap_uv(Mesh(vertices=v, faces=f), resolution=res // downsample)
    tex = bake_pattern(coarse, asset.face_part[nearest], asset.colors, res)
    tex = desaturate(box_downsample(tex, downsample), saturation).clamp(0, 1)
    g = torch.Generator().manual_seed(int(seed))
    n = coarse.compute_vertex_normals()
    v = v + n * torch.randn(v.shape[0], 1, generator=g) * (jitter * RADIUS)
    return coarse.replace(vertices=v, texture=tex)
