"""Texture baking: vertex colours -> texture, views -> texture, padding, errors."""
import pytest
import torch
from test_render_common import sphere_mesh, textured_sphere, uv_sphere

from magicboost_core.geometry import Mesh, orbit_cameras
from magicboost_core.render import RenderError, bake_vertex_colors_to_texture, bake_views_to_texture, render
from magicboost_core.render.bake import uv_raster


CAMS = orbit_cameras([0, 0, 0, 0, 60, -60], [0, 90, 180, 270, 45, 225], 2.0, fovy_deg=40, width=64)


def psnr(a, b):
    return float(10 * torch.log10(1 / (a - b).pow(2).mean()))


def colored_uv_sphere():
    v, f, uv, uf = uv_sphere(16, 32, 0.5)
    return Mesh(v, f, uvs=uv, uv_faces=uf, vertex_colors=v / 0.5 * 0.5 + 0.5)


def test_vertex_colors_baked_texture_renders_like_the_vertex_colours():
    mesh = colored_uv_sphere()
    tex = bake_vertex_colors_to_texture(mesh, 128)
    assert tex.shape == (128, 128, 3) and tex.min() >= 0 and tex.max() <= 1
    ref = render(mesh, CAMS, antialias=False).rgb
    got = render(mesh.replace(texture=tex), CAMS, antialias=False).rgb
    assert psnr(got, ref) > 35


def test_uv_raster_orientation_and_padding():
    # one triangle in the lower-left half of uv space (v up): it lands in the lower-left of the image
    mesh = Mesh(torch.rand(3, 3), torch.tensor([[0, 1, 2]]), uvs=torch.tensor([[0.05, 0.05], [0.5, 0.05], [0.05, 0.5]]),
                vertex_colors=torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]))
    rast = uv_raster(mesh, 16)
    rows = torch.nonzero(rast[0, ..., 3] > 0)[:, 0]
    assert rows.min() >= 8  # texture row 0 = top = v near 1
    tex = bake_vertex_colors_to_texture(mesh, 16, padding=2)
    assert torch.isfinite(tex).all() and (tex.sum(-1) > 0).all()  # no black (unfilled) texels
    covered = rast[0, ..., 3] > 0
    # a texel just outside the chart copies its covered neighbour's colour (bilinear lookups stay clean)
    r, c = int(rows.max()), int(torch.nonzero(covered[rows.max()]).min())
    assert torch.allclose(tex[r + 1, c], tex[r, c], atol=0.15)


def test_views_to_texture_round_trip():
    target = textured_sphere(16, 32, tex_size=64)
    with torch.no_grad():
        out = render(target, CAMS, antialias=False, texture_filter="linear")
    baked = bake_views_to_texture(target, CAMS, out.rgb, out.alpha[..., 0], resolution=64)
    assert baked.shape == (64, 64, 3)
    again = render(target.replace(texture=baked), CAMS, antialias=False, texture_filter="linear").rgb
    assert psnr(again, out.rgb) > 30


def test_views_to_texture_uses_initial_where_unseen():
    target = textured_sphere(16, 32, tex_size=32)
    cam = CAMS[0]
    with torch.no_grad():
        img = render(target, cam, antialias=False).rgb
    init = torch.full((16, 16, 3), 0.25)
    baked = bake_views_to_texture(target, cam, img, None, resolution=32, initial=init)
    # the back of the sphere (u around 0.5 faces azimuth 180) keeps the initial colour
    assert torch.allclose(baked[16, 16], torch.full((3,), 0.25))
    # the front (u = 0 / 1 faces azimuth 0) took the observed colour
    assert not torch.allclose(baked[16, 0], torch.full((3,), 0.25))
    again = render(target.replace(texture=baked), cam, antialias=False).rgb
    assert psnr(again, img) > 20


def test_bake_errors():
    plain = sphere_mesh(1)
    with pytest.raises(RenderError, match="unwrap_uv"):
        bake_vertex_colors_to_texture(plain, 32)
    with pytest.raises(RenderError, match="unwrap_uv"):
        bake_views_to_texture(plain, CAMS, torch.rand(6, 64, 64, 3), None, 32)
    tex_mesh = textured_sphere(4, 8)
    with pytest.raises(RenderError, match="no vertex_colors"):
        bake_vertex_colors_to_texture(tex_mesh, 32)
    with pytest.raises(RenderError, match="images"):
        bake_views_to_texture(tex_mesh, CAMS, torch.rand(5, 64, 64, 3), None, 32)
    with pytest.raises(RenderError, match="masks"):
        bake_views_to_texture(tex_mesh, CAMS, torch.rand(6, 64, 64, 3), torch.rand(6, 32, 32), 32)
    with pytest.raises(RenderError, match="resolution"):
        bake_views_to_texture(tex_mesh, CAMS, torch.rand(6, 64, 64, 3), None, 0)
