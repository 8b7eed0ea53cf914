"""Small deterministic meshes for tests, demos and synthetic training data.

All are centred at the origin in the pack's z-up world, float32 vertices, int64 faces, counter-clockwise
(outward normals), watertight unless stated otherwise (``textured_quad`` is an open square).

``colors`` (every builder) may be ``None`` (no vertex colours), ``"position"`` (RGB = the vertex position
rescaled per axis to [0, 1]: smooth and deterministic, handy to see orientation), an RGB/RGBA tuple
in [0, 1] (uniform) or a (V, 3|4) tensor.
"""
from __future__ import annotations

import math

import torch

from .mesh import Mesh, MeshError

__all__ = ["uv_sphere", "icosphere", "box", "cylinder", "torus", "textured_quad", "checker_texture"]


def _colors(colors, vertices: torch.Tensor):
    if colors is None:
        return None
    if isinstance(colors, str):
        if colors != "position":
            raise MeshError(f"colors={colors!r}: use None, 'position', an RGB(A) tuple or a (V, 3|4) tensor.")
        lo, hi = vertices.min(0).values, vertices.max(0).values
        return ((vertices - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
    c = torch.as_tensor(colors, dtype=torch.float32)
    if c.ndim == 1:
        if c.shape[0] not in (3, 4):
            raise MeshError(f"a uniform colour needs 3 or 4 values; got {c.shape[0]}.")
        return c.expand(vertices.shape[0], -1).clone()
    return c


def _orient_outward(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """For a convex shape around the origin: flip faces whose normal points toward the centre."""
    v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
    n = torch.cross(v1 - v0, v2 - v0, dim=-1)
    inward = (n * (v0 + v1 + v2)).sum(-1) < 0
    faces = faces.clone()
    faces[inward] = faces[inward][:, [0, 2, 1]]
    return faces


def checker_texture(size: int = 8, squares: int = 4, channels: int = 3) -> torch.Tensor:
    """(size, size, channels) float32 checkerboard with a colour ramp, every value a multiple of 1/255
    (so it survives an 8-bit PNG exactly). Row 0 = top."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cell = max(1, size // max(1, squares))
    check = ((x // cell + y // cell) % 2).float()
    r = torch.round(x.float() / max(1, size - 1) * 255)
    g = torch.round(y.float() / max(1, size - 1) * 255)
    b = torch.round(64 + 128 * check)
    chans = [r, g, b] + ([torch.round(255 - 100 * check)] if channels == 4 else [])
    return torch.stack(chans, -1) / 255.0


def uv_sphere(n_lat: int = 16, n_lon: int = 32, radius: float = 0.5, colors=None, uv: bool = False,
              texture: torch.Tensor | None = None) -> Mesh:
    """Latitude/longitude sphere: 2 poles + (n_lat - 1) rings of n_lon vertices, watertight.

    With ``uv=True`` (implied by ``texture``) it carries an equirectangular UV map with a seam at
    azimuth 0 (``uvs`` (n_lat+1)*(n_lon+1), separate ``uv_faces``): u = azimuth / 360 deg (from +x toward
    +y), v = 1 at the north pole (+z). Geometry stays watertight.
    """
    if n_lat < 2 or n_lon < 3:
        raise MeshError(f"uv_sphere needs n_lat >= 2 and n_lon >= 3; got {n_lat}, {n_lon}.")
    if radius <= 0:
        raise MeshError(f"radius must be > 0; got {radius}.")
    th = torch.arange(1, n_lat, dtype=torch.float64) * math.pi / n_lat
    ph = torch.arange(n_lon, dtype=torch.float64) * 2 * math.pi / n_lon
    T, P = torch.meshgrid(th, ph, indexing="ij")
    ring = torch.stack([T.sin() * P.cos(), T.sin() * P.sin(), T.cos()], -1).reshape(-1, 3)
    verts = torch.cat([torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64), ring,
                      torch.tensor([[0.0, 0.0, -1.0]], dtype=torch.float64)]) * radius
    north, south = 0, verts.shape[0] - 1
    vid = lambda i, j: 1 + (i - 1) * n_lon + (j % n_lon)  # noqa: E731  ring i in 1..n_lat-1
    tid = lambda i, j: i * (n_lon + 1) + j  # noqa: E731  uv grid row i in 0..n_lat, column j in 0..n_lon
    faces, uvf = [], []
    for j in range(n_lon):
        faces.append((north, vid(1, j), vid(1, j + 1)))
        uvf.append((tid(0, j), tid(1, j), tid(1, j + 1)))
    for i in range(1, n_lat - 1):
        for j in range(n_lon):
            a, b, c, d = vid(i, j), vid(i, j + 1), vid(i + 1, j), vid(i + 1, j + 1)
            ta, tb, tc, td = tid(i, j), tid(i, j + 1), tid(i + 1, j), tid(i + 1, j + 1)
            faces += [(a, c, d), (a, d, b)]
            uvf += [(ta, tc, td), (ta, td, tb)]
    for j in range(n_lon):
        faces.append((south, vid(n_lat - 1, j + 1), vid(n_lat - 1, j)))
        uvf.append((tid(n_lat, j), tid(n_lat - 1, j + 1), tid(n_lat - 1, j)))
    verts = verts.float()
    kw = {}
    if uv or texture is not None:
        uu, vv = torch.meshgrid(torch.arange(n_lat + 1) / n_lat, torch.arange(n_lon + 1) / n_lon, indexing="ij")
        kw = dict(uvs=torch.stack([vv, 1.0 - uu], -1).reshape(-1, 2).float(),
                  uv_faces=torch.tensor(uvf, dtype=torch.int64), texture=texture)
    return Mesh(vertices=verts, faces=torch.tensor(faces, dtype=torch.int64),
                vertex_colors=_colors(colors, verts), **kw)


_ICO_FACES = [
    (0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6),
    (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10),
    (8, 6, 7), (9, 8, 1),
]


def icosphere(subdivisions: int = 2, radius: float = 0.5, colors=None) -> Mesh:
    """Subdivided icosahedron projected on a sphere: 10*4^s + 2 vertices, 20*4^s faces, watertight."""
    if subdivisions < 0 or subdivisions > 7:
        raise MeshError(f"icosphere subdivisions must lie in 0..7; got {subdivisions}.")
    if radius <= 0:
        raise MeshError(f"radius must be > 0; got {radius}.")
    t = (1.0 + 5 ** 0.5) / 2
    verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
             (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    verts = [tuple(c / math.sqrt(1 + t * t) for c in v) for v in verts]
    faces = list(_ICO_FACES)
    for _ in range(subdivisions):
        cache: dict[tuple[int, int], int] = {}

        def mid(a: int, b: int) -> int:
            key = (a, b) if a < b else (b, a)
            if key not in cache:
                p = [(verts[a][k] + verts[b][k]) / 2 for k in range(3)]
                n = math.sqrt(sum(c * c for c in p))
                verts.append(tuple(c / n for c in p))
                cache[key] = len(verts) - 1
            return cache[key]

        new = []
        for a, b, c in faces:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new
    v = torch.tensor(verts, dtype=torch.float64) * radius
    f = _orient_outward(v, torch.tensor(faces, dtype=torch.int64))
    v = v.float()
    return Mesh(vertices=v, faces=f, vertex_colors=_colors(colors, v))


def box(size=1.0, colors=None) -> Mesh:
    """Axis-aligned box with edge lengths ``size`` (scalar or (sx, sy, sz)): 8 vertices, 12 faces."""
    s = torch.as_tensor(size, dtype=torch.float64).expand(3)
    if (s <= 0).any():
        raise MeshError(f"box size must be > 0; got {s.tolist()}.")
    corners = torch.tensor([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)],
                           dtype=torch.float64) * s
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = torch.tensor([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))], dtype=torch.int64)
    faces = _orient_outward(corners, faces)
    v = corners.float()
    return Mesh(vertices=v, faces=faces, vertex_colors=_colors(colors, v))


def cylinder(radius: float = 0.5, height: float = 1.0, segments: int = 32, colors=None) -> Mesh:
    """Closed cylinder along z from -height/2 to +height/2 with capped ends (cap centres as vertices)."""
    if segments < 3 or radius <= 0 or height <= 0:
        raise MeshError(f"cylinder needs segments >= 3, radius > 0, height > 0; got {segments}, {radius}, {height}.")
    a = torch.arange(segments, dtype=torch.float64) * 2 * math.pi / segments
    ring = torch.stack([radius * a.cos(), radius * a.sin()], -1)
    h = height / 2
    bottom = torch.cat([ring, torch.full((segments, 1), -h, dtype=torch.float64)], 1)
    top = torch.cat([ring, torch.full((segments, 1), h, dtype=torch.float64)], 1)
    v = torch.cat([bottom, top, torch.tensor([[0, 0, -h], [0, 0, h]], dtype=torch.float64)])
    cb, ct = 2 * segments, 2 * segments + 1
    faces = []
    for j in range(segments):
        k = (j + 1) % segments
        faces += [(j, k, segments + k), (j, segments + k, segments + j), (cb, k, j), (ct, segments + j, segments + k)]
    f = torch.tensor(faces, dtype=torch.int64)
    v = v.float()
    return Mesh(vertices=v, faces=f, vertex_colors=_colors(colors, v))


def torus(major_radius: float = 0.35, minor_radius: float = 0.15, n_major: int = 32, n_minor: int = 16,
          colors=None) -> Mesh:
    """Torus around the z axis (genus 1, watertight): n_major * n_minor vertices."""
    if n_major < 3 or n_minor < 3 or not 0 < minor_radius < major_radius:
        raise MeshError("torus needs n_major, n_minor >= 3 and 0 < minor_radius < major_radius; got "
                        f"{n_major}, {n_minor}, {minor_radius}, {major_radius}.")
    phi = torch.arange(n_major, dtype=torch.float64) * 2 * math.pi / n_major
    theta = torch.arange(n_minor, dtype=torch.float64) * 2 * math.pi / n_minor
    P, T = torch.meshgrid(phi, theta, indexing="ij")
    rr = major_radius + minor_radius * T.cos()
    v = torch.stack([rr * P.cos(), rr * P.sin(), minor_radius * T.sin()], -1).reshape(-1, 3)
    idx = lambda i, j: (i % n_major) * n_minor + (j % n_minor)  # noqa: E731
    faces = []
    for i in range(n_major):
        for j in range(n_minor):
            p00, p10, p11, p01 = idx(i, j), idx(i + 1, j), idx(i + 1, j + 1), idx(i, j + 1)
            faces += [(p00, p10, p11), (p00, p11, p01)]
    v = v.float()
    return Mesh(vertices=v, faces=torch.tensor(faces, dtype=torch.int64), vertex_colors=_colors(colors, v))


def textured_quad(size: float = 1.0, texture: torch.Tensor | None = None, colors=None) -> Mesh:
    """Open square in the z = 0 plane facing +z: 4 vertices, 2 faces, UV (0,0) at (-x,-y) corner.

    ``texture`` defaults to an 8x8 :func:`checker_texture` (PNG-exact values).
    """
    h = size / 2
    v = torch.tensor([[-h, -h, 0.0], [h, -h, 0.0], [h, h, 0.0], [-h, h, 0.0]])
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    tex = checker_texture(8) if texture is None else texture
    return Mesh(vertices=v, faces=f, uvs=uv, uv_faces=f.clone(), texture=tex, vertex_colors=_colors(colors, v))
