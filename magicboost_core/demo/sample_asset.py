"""The shipped sample asset, its "coarse" degradation, and three procedural test objects.

Everything is procedural and deterministic (integer seeds, no downloads):

* :func:`make_sample_asset` — a vertex-coloured toy (striped body, gradient head, cone hat, arms,
  checkered plinth), z-up, centred, bounding radius < 0.56 (inside the Instant3D cameras' view).
  ``python -m magicboost_core.demo.sample_asset`` writes it to ``magicboost_core/assets/sample/toy.glb``.
* :func:`make_coarse` — what a fast coarse generator might output for it: decimated
  (fast-simplification), vertices jittered, colours blurred over the surface and dulled toward grey.
* :func:`procedural_objects` — three more objects (mushroom, lollipop, pawn) built from shapes and
  patterns that the demo model's procedural training set does not use (capsules, cones, flattened
  spheres; dots and spirals), for the acceptance checks and the ablation.
* :func:`render_views` — the condition views of a ground truth (albedo renders at a preset's poses).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..geometry.mesh import Mesh

__all__ = ["SAMPLE_PATH", "make_sample_asset", "load_sample_asset", "make_coarse", "procedural_objects",
           "render_views"]

SAMPLE_PATH = Path(__file__).resolve().parents[1] / "assets" / "sample" / "toy.glb"


def _part(tm, colors_fn, transform=None) -> Mesh:
    """A trimesh primitive (optionally transformed) coloured per vertex by ``colors_fn(points (V,3)) -> (V,3)``."""
    if transform is not None:
        tm = tm.copy()
        tm.apply_transform(transform)
    v = torch.tensor(np.asarray(tm.vertices), dtype=torch.float32)
    f = torch.tensor(np.asarray(tm.faces), dtype=torch.int64)
    c = torch.as_tensor(colors_fn(v), dtype=torch.float32).clamp(0, 1)
    return Mesh(vertices=v, faces=f, vertex_colors=c)


def _concat(parts: list[Mesh]) -> Mesh:
    vs, fs, cs, n = [], [], [], 0
    for p in parts:
        vs.append(p.vertices)
        fs.append(p.faces + n)
        cs.append(p.vertex_colors[:, :3])
        n += p.num_vertices
    return Mesh(vertices=torch.cat(vs), faces=torch.cat(fs), vertex_colors=torch.cat(cs))


def _solid(rgb):
    return lambda v: torch.tensor(rgb, dtype=torch.float32).expand(v.shape[0], 3)


def _subdivided(tm, times: int):
    import trimesh

    for _ in range(times):
        v, f = trimesh.remesh.subdivide(tm.vertices, tm.faces)
        tm = trimesh.Trimesh(v, f, process=False)
    return tm


def _translate(x, y, z):
    t = np.eye(4)
    t[:3, 3] = (x, y, z)
    return t


def _scale(sx, sy, sz, then=None):
    t = np.diag([sx, sy, sz, 1.0])
    return t if then is None else then @ t


def make_sample_asset() -> Mesh:
    """The toy (about 9k vertices, vertex colours)."""
    import trimesh.creation as C

    red, white = torch.tensor([0.85, 0.15, 0.12]), torch.tensor([0.95, 0.95, 0.92])

    def stripes(v):
        k = ((v[:, 2] + 0.12) / 0.09).floor().long() % 2
        return torch.where(k[:, None] == 0, red, white)

    def head(v):
        t = ((v[:, 0] + 0.17) / 0.34).clamp(0, 1)[:, None]
        return (1 - t) * torch.tensor([1.0, 0.85, 0.1]) + t * torch.tensor([1.0, 0.45, 0.05])

    def checker(v):
        k = ((v[:, 0] / 0.1).floor() + (v[:, 1] / 0.1).floor()).long() % 2
        return torch.where(k[:, None] == 0, torch.tensor([0.45, 0.25, 0.1]), torch.tensor([0.95, 0.65, 0.25]))

    parts = [
        _part(C.icosphere(subdivisions=4, radius=0.26), stripes, _translate(0, 0, -0.1)),
        _part(C.icosphere(subdivisions=3, radius=0.16), head, _translate(0, 0, 0.24)),
        _part(C.cone(radius=0.13, height=0.16, sections=32), _solid([0.1, 0.6, 0.25]), _translate(0, 0, 0.36)),
        _part(C.cylinder(radius=0.045, height=0.72, sections=20), _solid([0.15, 0.3, 0.85]),
              _translate(0, 0, -0.05) @ np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]])),
        _part(_subdivided(C.box(extents=(0.4, 0.4, 0.08)), 3), checker, _translate(0, 0, -0.42)),
    ]
    return _concat(parts)


def load_sample_asset() -> Mesh:
    """The shipped GLB (falls back to building it when the file is missing)."""
    if SAMPLE_PATH.exists():
        from ..geometry.mesh_io import load_mesh

        return load_mesh(SAMPLE_PATH)
    return make_sample_asset()


def _blur_vertex_colors(colors: torch.Tensor, faces: torch.Tensor, iterations: int) -> torch.Tensor:
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], 0)
    e = torch.cat([e, e.flip(1)], 0)
    deg = torch.bincount(e[:, 0], minlength=colors.shape[0]).float().clamp_min(1)[:, None]
    c = colors
    for _ in range(iterations):
        c = 0.5 * c + 0.5 * torch.zeros_like(c).index_add(0, e[:, 0], c[e[:, 1]]) / deg
    return c


def make_coarse(mesh: Mesh, target_reduction: float = 0.8, jitter: float = 0.012, blur_iterations: int = 4,
                dull: float = 0.45, seed: int = 0) -> Mesh:
    """Degrade ``mesh`` (vertex-coloured or textured) into a plausible coarse-generator output.

    Decimate by ``target_reduction`` (fraction of faces removed), re-colour the new vertices from the
    nearest original vertex, blur the colours ``blur_iterations`` times over the edges, mix them
    ``dull`` of the way toward their mean grey (lower saturation and contrast), and jitter vertices
    along their normals by N(0, jitter) world units.
    """
    import fast_simplification

    from ..eval.mesh_metrics import nearest_neighbors

    pts, fcs = fast_simplification.simplify(mesh.vertices.numpy().astype(np.float32),
                                            mesh.faces.numpy().astype(np.int64), target_reduction=target_reduction)
    v = torch.tensor(pts, dtype=torch.float32)
    f = torch.tensor(fcs, dtype=torch.int64)
    if mesh.vertex_colors is not None:
        src = mesh.vertex_colors[:, :3]
    elif mesh.has_texture:
        from ..refine.representation import texture_from_uvs_at_vertices

        src = texture_from_uvs_at_vertices(mesh)
    else:
        src = torch.full_like(mesh.vertices, 0.6)
    _, idx = nearest_neighbors(v, mesh.vertices)
    c = _blur_vertex_colors(src[idx], f, blur_iterations)
    grey = c.mean(-1, keepdim=True)
    c = (1 - dull) * c + dull * (0.5 * grey + 0.5 * grey.mean())
    g = torch.Generator().manual_seed(int(seed))
    coarse = Mesh(vertices=v, faces=f, vertex_colors=c.clamp(0, 1))
    n = coarse.compute_vertex_normals()
    v = v + n * torch.randn(v.shape[0], 1, generator=g) * jitter
    return coarse.replace(vertices=v)


def procedural_objects() -> list[tuple[str, Mesh]]:
    """Three evaluation objects (name, vertex-coloured Mesh) not drawn from the training generator."""
    import trimesh.creation as C

    def dots(v):
        d = torch.stack([torch.cos(v[:, 1] * 40) * torch.cos(v[:, 0] * 40)], -1)
        return torch.where(d > 0.6, torch.tensor([0.97, 0.95, 0.9]), torch.tensor([0.8, 0.1, 0.1]))

    def spiral(v):
        ang = torch.atan2(v[:, 2] - 0.15, v[:, 1])
        r = ((v[:, 1]) ** 2 + (v[:, 2] - 0.15) ** 2).sqrt()
        k = torch.sin(3 * ang + r * 40) > 0
        return torch.where(k[:, None], torch.tensor([0.95, 0.2, 0.6]), torch.tensor([0.2, 0.85, 0.9]))

    def gradient_z(v):
        t = ((v[:, 2] + 0.45) / 0.9).clamp(0, 1)[:, None]
        return (1 - t) * torch.tensor([0.1, 0.1, 0.35]) + t * torch.tensor([0.7, 0.8, 1.0])

    mushroom = _concat([
        _part(C.icosphere(subdivisions=4, radius=0.4), dots, _scale(1.0, 1.0, 0.55, _translate(0, 0, 0.12))),
        _part(C.capsule(height=0.4, radius=0.1, count=[24, 24]), _solid([0.93, 0.88, 0.75]), _translate(0, 0, -0.2)),
    ])
    lollipop = _concat([
        _part(C.icosphere(subdivisions=4, radius=0.25), spiral, _scale(0.45, 1.0, 1.0, _translate(0, 0, 0.15))),
        _part(C.cylinder(radius=0.025, height=0.5, sections=16), _solid([0.95, 0.95, 0.95]), _translate(0, 0, -0.3)),
    ])
    pawn = _concat([
        _part(C.capsule(height=0.35, radius=0.17, count=[32, 32]), gradient_z, _translate(0, 0, -0.15)),
        _part(C.icosphere(subdivisions=3, radius=0.13), gradient_z, _translate(0, 0, 0.26)),
        _part(_subdivided(C.cylinder(radius=0.3, height=0.08, sections=40), 2), _solid([0.2, 0.15, 0.45]),
              _translate(0, 0, -0.44)),
    ])
    return [("mushroom", mushroom), ("lollipop", lollipop), ("pawn", pawn)]


@torch.no_grad()
def render_views(mesh: Mesh, preset, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The condition views of ``mesh`` at ``preset``'s poses: albedo renders on white, (rgb (A, R, R, 3),
    alpha (A, R, R, 1)) in [0, 1] with R = ``resolution``."""
    from ..render.renderer import render

    out = render(mesh, preset.cameras(resolution), mode="albedo", background=1.0)
    return out.rgb.clamp(0, 1), out.alpha.clamp(0, 1)


def main(argv=None) -> int:
    import argparse

    from ..geometry.mesh_io import save_mesh

    p = argparse.ArgumentParser(description="Write the shipped sample asset GLB.")
    p.add_argument("--out", default=str(SAMPLE_PATH))
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    mesh = make_sample_asset()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    path = save_mesh(mesh, a.out, overwrite=a.overwrite)
    r = float(mesh.vertices.norm(dim=1).max())
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB, V={mesh.num_vertices}, F={mesh.num_faces}, radius {r:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
