"""Write refinement results: meshes (GLB, OBJ+MTL+PNG), a before/after turntable grid, metrics JSON.

Meshes are written in the caller's frame (the loop already mapped them back) through
:func:`~magicboost_core.geometry.mesh_io.save_mesh` (GLB y-up on disk, OBJ raw). Nothing is ever
overwritten: :func:`fresh_path` picks ``name_1.glb``, ``name_2.glb`` ... when a name is taken
(``overwrite="error"`` raises instead).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..geometry.camera import orbit_cameras
from ..geometry.mesh import Mesh

__all__ = ["fresh_path", "export_mesh", "turntable_grid", "save_turntable", "write_metrics", "ExportExistsError"]


class ExportExistsError(FileExistsError):
    """An output file exists and the export was asked not to pick a fresh name."""


def _companions(path: Path) -> list[Path]:
    if path.suffix.lower() == ".obj":
        return [path, path.with_suffix(".mtl"), path.with_suffix(".png")]
    if path.suffix.lower() == ".ply":
        return [path, path.with_suffix(".png")]
    return [path]


def fresh_path(path, on_exists: str = "rename") -> Path:
    """``path`` if it and its companions are free, else ``stem_1``, ``stem_2``... (``on_exists='error'`` raises)."""
    path = Path(path)
    if not any(p.exists() for p in _companions(path)):
        return path
    if on_exists == "error":
        raise ExportExistsError(f"'{path}' already exists; choose another name or folder (nothing was overwritten).")
    for i in range(1, 10000):
        cand = path.with_name(f"{path.stem}_{i}{path.suffix}")
        if not any(p.exists() for p in _companions(cand)):
            return cand
    raise ExportExistsError(f"no free file name next to '{path}'.")


def export_mesh(mesh: Mesh, path, on_exists: str = "rename") -> Path:
    """Save ``mesh`` to a fresh path with **one colour source**: its UV texture when it has one (what the
    renderer shows; vertex colours are then dropped, since viewers would multiply the two), else its
    vertex colours."""
    from ..geometry.mesh_io import save_mesh

    m = mesh.replace(vertex_colors=None) if (mesh.has_texture and mesh.vertex_colors is not None) else mesh
    path = fresh_path(path, on_exists)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_mesh(m, path, overwrite=False)


@torch.no_grad()
def turntable_grid(meshes: list[Mesh], azimuths=None, elevation: float = 15.0, distance: float = 1.5,
                   fovy_deg: float = 49.134, resolution: int = 128, modes=("shaded", "albedo")) -> torch.Tensor:
    """(rows * R, len(azimuths) * R, 3) float image: for each mesh, one row per render mode.

    ``meshes`` share one frame (e.g. coarse and refined, both in the caller's frame, centred).
    """
    from ..render.renderer import render

    az = list(azimuths) if azimuths is not None else [i * 45.0 for i in range(8)]
    cams = orbit_cameras([elevation] * len(az), az, distance, fovy_deg, width=resolution)
    rows = []
    for m in meshes:
        m = m.to("cpu")
        for mode in modes:
            out = render(m, cams, mode=mode, background=1.0)
            rows.append(torch.cat(list(out.rgb.clamp(0, 1)), dim=1))
    return torch.cat(rows, dim=0)


def save_turntable(meshes: list[Mesh], path, on_exists: str = "rename", **kw) -> Path:
    """Write :func:`turntable_grid` as an 8-bit PNG at a fresh path."""
    from PIL import Image

    img = turntable_grid(meshes, **kw)
    path = fresh_path(path, on_exists)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((img.numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)).save(path)
    return path


def write_metrics(metrics: dict, path, on_exists: str = "rename") -> Path:
    path = fresh_path(path, on_exists)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float) + "\n")
    return path
