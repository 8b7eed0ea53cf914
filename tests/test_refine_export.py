"""Export: GLB/OBJ round trips in the input frame, never overwriting; turntable grid; metrics JSON."""
import json

import pytest
import torch

from magicboost_core.geometry.mesh import Mesh
from magicboost_core.geometry.mesh_convert import split_uv_seams
from magicboost_core.geometry.mesh_io import load_mesh
from magicboost_core.geometry.presets import get_preset
from magicboost_core.refine.config import RefineConfig
from magicboost_core.refine.export import ExportExistsError, export_mesh, fresh_path, save_turntable, write_metrics
from magicboost_core.refine.loop import refine_mesh
from magicboost_core.render.renderer import render

from toy_guidance import Cond, ToyGuidance  # tests/ is on sys.path under pytest

import trimesh


def coloured_sphere(radius=0.4):
    m = trimesh.creation.icosphere(subdivisions=2, radius=radius)
    v = torch.tensor(m.vertices, dtype=torch.float32)
    return Mesh(vertices=v, faces=torch.tensor(m.faces), vertex_colors=(v / (2 * radius) + 0.5).clamp(0, 1))


def test_refined_glb_round_trips_in_the_input_frame(tmp_path):
    mesh = coloured_sphere()
    p = get_preset("instant3d")
    out = render(mesh, p.cameras(32))
    cond = Cond(out.rgb, out.alpha, list(p.elevations), list(p.azimuths))
    moved = mesh.replace(vertices=mesh.vertices * 3 + torch.tensor([2.0, 0.0, 1.0]))
    cfg = RefineConfig(steps=4, render_resolution=32, batch_size=2, texture_resolution=32, preview_resolution=16,
                       align=True,  # the mesh is out of the views' frame: fitted to them, mapped back on export
                       project_views=False)  # keep the 32 px texture (projection would size it to the views)
    r = refine_mesh(None, cond, moved, cfg, guidance=ToyGuidance(16))
    assert r.mesh.has_texture and r.mesh.texture.shape == (32, 32, 3)
    # refinement kept the user's frame: vertices moved at most a little from the input
    assert (r.mesh.vertices - moved.vertices).norm(dim=1).max() < 0.3
    path = export_mesh(r.mesh, tmp_path / "refined.glb")
    back = load_mesh(path)
    split, _ = split_uv_seams(r.mesh)
    assert back.num_vertices == split.num_vertices and back.num_faces == r.mesh.num_faces
    assert back.has_texture and back.texture.shape[:2] == (32, 32)
    assert torch.allclose(back.vertices.min(0).values, r.mesh.vertices.min(0).values, atol=1e-4)
    assert torch.allclose(back.vertices.max(0).values, r.mesh.vertices.max(0).values, atol=1e-4)
    # never overwrite: the second export picks a fresh name
    path2 = export_mesh(r.mesh, tmp_path / "refined.glb")
    assert path2.name == "refined_1.glb" and path.exists()
    obj = export_mesh(r.mesh, tmp_path / "refined.obj")
    assert obj.exists() and obj.with_suffix(".mtl").exists() and obj.with_suffix(".png").exists()
    assert load_mesh(obj).has_texture
    with pytest.raises(ExportExistsError, match="already exists"):
        fresh_path(tmp_path / "refined.obj", on_exists="error")


def test_turntable_and_metrics(tmp_path):
    mesh = coloured_sphere()
    png = save_turntable([mesh, mesh], tmp_path / "grid.png", resolution=16, azimuths=[0, 90, 180])
    from PIL import Image

    assert Image.open(png).size == (3 * 16, 4 * 16)
    js = write_metrics({"psnr": 20.5}, tmp_path / "m.json")
    assert json.loads(js.read_text()) == {"psnr": 20.5}
    assert write_metrics({"a": 1}, tmp_path / "m.json").name == "m_1.json"


def test_refine_cli_rejects_mismatched_views(tmp_path):
    import argparse

    from PIL import Image

    from magicboost_core.refine.cli import _cmd_refine, register

    paths = []
    for i, s in enumerate([32, 32, 32, 48]):
        p = tmp_path / f"{i}.png"
        Image.new("RGBA", (s, s), (255, 0, 0, 255)).save(p)
        paths.append(str(p))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["refine", "mesh.glb", *paths, "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="different sizes"):
        _cmd_refine(args)
    args = parser.parse_args(["refine", "mesh.glb", *paths[:3], "--out", str(tmp_path / "o3")])
    with pytest.raises(ValueError, match="3 view images given; preset 'instant3d' needs 4"):
        _cmd_refine(args)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o3").exists()  # failed runs leave no empty folder


def test_shipped_sample_asset_matches_its_generator():
    from magicboost_core.demo.sample_asset import SAMPLE_PATH, make_coarse, make_sample_asset

    assert SAMPLE_PATH.exists() and SAMPLE_PATH.stat().st_size < 2**20
    shipped, built = load_mesh(SAMPLE_PATH), make_sample_asset()
    assert shipped.num_vertices == built.num_vertices and shipped.num_faces == built.num_faces
    assert torch.allclose(shipped.vertices, built.vertices, atol=1e-5)
    assert (shipped.vertex_colors[:, :3] - built.vertex_colors).abs().max() <= 1 / 255 + 1e-6
    assert shipped.vertices.norm(dim=1).max() < 0.6
    coarse = make_coarse(built)
    assert coarse.num_faces < 0.3 * built.num_faces and coarse.vertex_colors is not None
