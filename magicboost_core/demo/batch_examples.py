"""Tiny example assets and a manifest for trying ``magicboost batch`` (tests and ``benchmarks/batch.py``).

Each asset: a procedural ground truth (icosphere, torus, box, cylinder — vertex colours by
position, varied size), its coarse copy (``sample_asset.make_coarse``: decimated, jittered,
blurred and dulled colours) and the four Instant3D views rendered from the ground truth, saved as
RGBA PNGs (``grid=True``: one 2x2 grid image instead).

    python -m magicboost_core.demo.batch_examples OUT_DIR [--count 8] [--resolution 32]
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

__all__ = ["write_example_assets", "example_mesh"]

_SHAPES = ("icosphere", "torus", "box", "cylinder")


def example_mesh(index: int):
    """The ground-truth mesh of example asset ``index`` (z-up, centred, radius ~0.3-0.45)."""
    from ..geometry import primitives as P

    shape = _SHAPES[index % len(_SHAPES)]
    scale = 0.8 + 0.05 * (index // len(_SHAPES) % 4)
    if shape == "icosphere":
        mesh = P.icosphere(3, 0.4, colors="position")
    elif shape == "torus":
        mesh = P.torus(0.3, 0.12, 32, 16, colors="position")
    elif shape == "box":
        mesh = P.icosphere(2, 0.4, colors="position").replace(
            vertices=P.icosphere(2, 0.4).vertices.clamp(-0.28, 0.28) * 1.2)
    else:
        mesh = P.cylinder(0.3, 0.6, 32, colors="position")
    return mesh.replace(vertices=mesh.vertices * scale)


def _save_png(rgba: torch.Tensor, path: Path) -> None:
    from PIL import Image

    Image.fromarray((rgba.numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8), mode="RGBA").save(path)


@torch.no_grad()
def write_example_assets(folder, count: int = 2, resolution: int = 32, grid: bool = False,
                         ground_truth: bool = True, config: dict | None = None) -> Path:
    """Write ``count`` example assets and ``manifest.jsonl`` into ``folder``; returns the manifest path.

    ``config``: RefineConfig overrides put on every row (e.g. ``{"steps": 6, "render_resolution": 32}``).
    """
    from ..geometry.mesh_io import save_mesh
    from ..geometry.presets import get_preset
    from ..images import tile_grid
    from .sample_asset import make_coarse, render_views

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    preset = get_preset("instant3d")
    lines = []
    for i in range(count):
        name = f"asset{i:02d}"
        gt = example_mesh(i)
        coarse = make_coarse(gt, target_reduction=0.5, jitter=0.01, blur_iterations=2, seed=i)
        rgba = torch.cat(render_views(gt, preset, resolution), -1)
        save_mesh(coarse, folder / f"{name}_coarse.glb", overwrite=True)
        row = {"id": name, "mesh": f"{name}_coarse.glb", "preset": "instant3d"}
        if grid:
            _save_png(tile_grid(rgba, *preset.grid)[0], folder / f"{name}_grid.png")
            row["views"] = [f"{name}_grid.png"]
        else:
            for a in range(preset.num_views):
                _save_png(rgba[a], folder / f"{name}_view{a}.png")
            row["views"] = [f"{name}_view{a}.png" for a in range(preset.num_views)]
        if ground_truth:
            save_mesh(gt, folder / f"{name}_gt.glb", overwrite=True)
            row["ground_truth"] = f"{name}_gt.glb"
        if config:
            row["config"] = config
        lines.append(json.dumps(row))
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="write tiny example assets and a manifest for magicboost batch")
    p.add_argument("out")
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--grid", action="store_true", help="one 2x2 grid image per asset instead of four files")
    args = p.parse_args(argv)
    print(write_example_assets(args.out, args.count, args.resolution, grid=args.grid))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
