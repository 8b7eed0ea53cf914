"""One colour source per refined mesh and per GLB: never a texture and COLOR_0 together (issue #11).

glTF viewers multiply a baseColorTexture by COLOR_0; this pack's renderer shows the texture alone. A
textured input refined in vertex-colour mode used to come back with its old texture *and* the new
vertex colours (viewers showed old x new; trimesh showed no change at all).
"""
import json
import struct

import pytest
import torch

from magicboost_core.geometry.mesh_io import load_mesh, save_mesh
from magicboost_core.geometry.presets import get_preset
from magicboost_core.geometry.primitives import checker_texture, uv_sphere
from magicboost_core.refine.config import RefineConfig
from magicboost_core.refine.export import export_mesh
from magicboost_core.refine.loop import refine_mesh
from magicboost_core.refine.representation import prepare_colors
from magicboost_core.render.renderer import render

from toy_guidance import Cond, ToyGuidance  # tests/ is on sys.path under pytest


def glb_json(path) -> dict:
    data = open(path, "rb").read()
    length = struct.unpack("<I", data[12:16])[0]
    return json.loads(data[20:20 + length])


def colour_sources(path) -> set:
    """{'texture', 'COLOR_0'} present on the GLB's primitives."""
    doc = glb_json(path)
    found = set()
    for mesh in doc["meshes"]:
        for prim in mesh["primitives"]:
            if "COLOR_0" in prim["attributes"]:
                found.add("COLOR_0")
            mat = doc.get("materials", [])[prim["material"]] if "material" in prim else {}
            if "baseColorTexture" in mat.get("pbrMetallicRoughness", {}):
                found.add("texture")
    return found


def textured_sphere_with_colours():
    return uv_sphere(8, 16, radius=0.4, texture=checker_texture(16, squares=4), colors="position")


def test_glb_writer_keeps_only_the_texture(tmp_path):
    m = textured_sphere_with_colours()
    assert colour_sources(save_mesh(m, tmp_path / "both.glb")) == {"texture"}
    assert colour_sources(save_mesh(m.replace(texture=None, uvs=None, uv_faces=None), tmp_path / "vc.glb")) == {"COLOR_0"}
    assert colour_sources(export_mesh(m, tmp_path / "export.glb")) == {"texture"}
    plain = m.replace(texture=None, uvs=None, uv_faces=None)
    assert colour_sources(export_mesh(plain, tmp_path / "export_vc.glb")) == {"COLOR_0"}


def test_prepare_colors_leaves_one_source():
    m = textured_sphere_with_colours()
    vc = prepare_colors(m, "vertex_colors", 32)
    assert vc.vertex_colors is not None and vc.texture is None
    tex = prepare_colors(m, "texture", 32)
    assert tex.texture is not None and tex.vertex_colors is None
    untextured = m.replace(texture=None, uvs=None, uv_faces=None)
    baked = prepare_colors(untextured, "texture", 32)
    assert baked.texture is not None and baked.vertex_colors is None


@pytest.mark.parametrize("mode", ["vertex_colors", "texture"])
def test_textured_input_refined_and_exported_with_one_colour_source(tmp_path, mode):
    mesh = textured_sphere_with_colours()
    p = get_preset("instant3d")
    views = render(mesh, p.cameras(32), mode="albedo", background=1.0)

    cond = Cond(views.rgb, views.alpha, list(p.elevations), list(p.azimuths))

    cfg = RefineConfig(steps=2, render_resolution=32, batch_size=2, texture_resolution=32, color_mode=mode,
                       preview_resolution=16)
    result = refine_mesh(None, cond, mesh, cfg, guidance=ToyGuidance(16))
    expect = {"vertex_colors": {"COLOR_0"}, "texture": {"texture"}}[mode]
    assert (result.mesh.texture is None) == (mode == "vertex_colors")
    assert (result.mesh.vertex_colors is None) == (mode == "texture")
    assert colour_sources(export_mesh(result.mesh, tmp_path / "refined.glb")) == expect
    back = load_mesh(tmp_path / "refined.glb")
    assert (back.texture is None) == (mode == "vertex_colors")
