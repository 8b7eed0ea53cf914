"""Regenerate the tiny input files of the shipped workflows (run from the repo root).

``PYTHONPATH=. python workflows/inputs/make_inputs.py``

* ``coarse_sphere.glb``: an icosphere of radius 0.5 (642 vertices) whose vertex colours encode the
  z-up world normal (``0.5 + 0.5 * n``), stored y-up as glTF requires.
* ``instant3d/0..3.png``: 128 px RGBA views of that coloured sphere from the Instant3D preset poses
  (ray-traced analytically, transparent background).
* ``instantmesh_grid.png``: a 3 x 2 grid (Zero123++ layout) of 128 px RGB views on white from the
  InstantMesh preset poses.
"""
from __future__ import annotations

import pathlib

import numpy as np
import torch
from PIL import Image

from magicboost_core.geometry.camera import ZUP_TO_YUP, orbit_cameras
from magicboost_core.geometry.presets import get_preset

HERE = pathlib.Path(__file__).resolve().parent
RADIUS = 0.5


def color_of(normals: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * normals


def trace_views(preset_name: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, size, size, 3) colours and (A, size, size) alpha of the sphere seen from the preset's cameras."""
    p = get_preset(preset_name)
    cams = orbit_cameras(p.elevations, p.azimuths, p.distance, p.fovy_deg, width=size)
    c2w = cams.c2w.double().numpy()
    f = (size / 2) / np.tan(np.radians(p.fovy_deg) / 2)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    d_cam = np.stack([(xs - size / 2) / f, -(ys - size / 2) / f, -np.ones_like(xs)], -1)
    rgbs, alphas = [], []
    for m in c2w:
        d = d_cam @ m[:3, :3].T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        o = m[:3, 3]
        b = d @ o
        disc = b * b - (o @ o - RADIUS ** 2)
        hit = disc > 0
        t = -b - np.sqrt(np.clip(disc, 0, None))
        n = (o + t[..., None] * d) / RADIUS
        rgbs.append(np.where(hit[..., None], color_of(n), 1.0))
        alphas.append(hit.astype(np.float64))
    return np.stack(rgbs), np.stack(alphas)


def main() -> None:
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=RADIUS)
    n_zup = sphere.vertices / RADIUS
    colors = (np.clip(color_of(n_zup), 0, 1) * 255).round().astype(np.uint8)
    verts_yup = sphere.vertices @ ZUP_TO_YUP.numpy().T
    out = trimesh.Trimesh(verts_yup, sphere.faces, vertex_colors=colors, process=False)
    (HERE / "coarse_sphere.glb").write_bytes(out.export(file_type="glb"))

    rgb, alpha = trace_views("instant3d", 128)
    (HERE / "instant3d").mkdir(exist_ok=True)
    for i in range(len(rgb)):
        rgba = np.concatenate([rgb[i], alpha[i][..., None]], -1)
        Image.fromarray((rgba * 255).round().astype(np.uint8), "RGBA").save(HERE / "instant3d" / f"{i}.png",
                                                                             optimize=True)
    rgb, alpha = trace_views("instantmesh", 128)
    grid = rgb.reshape(3, 2, 128, 128, 3).transpose(0, 2, 1, 3, 4).reshape(3 * 128, 2 * 128, 3)
    Image.fromarray((grid * 255).round().astype(np.uint8), "RGB").save(HERE / "instantmesh_grid.png", optimize=True)
    _ = torch  # torch is imported for the camera helpers


if __name__ == "__main__":
    main()
