"""Projection of the condition views onto a UV texture (refine.texture_projection): sharpness where
seen, unseen texels untouched, occluded texels untouched, one colour source on the result."""
import pytest
import torch

from magicboost_core.geometry.camera import orbit_cameras
from magicboost_core.geometry.mesh import Mesh
from magicboost_core.geometry.primitives import checker_texture, uv_sphere
from magicboost_core.refine.texture_projection import ProjectionError, project_views_to_texture
from magicboost_core.render.renderer import render


def quad_facing_x(half: float, x: float = 0.0, uv_box=(0.0, 0.0, 1.0, 1.0)):
    """Square in the plane x = ``x`` facing +x: (vertices (4, 3), faces (2, 3), uvs (4, 2)); uvs span ``uv_box``."""
    v = torch.tensor([[x, -half, -half], [x, half, -half], [x, half, half], [x, -half, half]])
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    u0, v0, u1, v1 = uv_box
    uv = torch.tensor([[u0, v0], [u1, v0], [u1, v1], [u0, v1]])
    return v, f, uv


def camera(res=64):
    return orbit_cameras([0.0], [0.0], 1.5, 49.134, width=res)  # at +x, looking at the origin


def sharpness(img, mask):
    """Mean absolute horizontal + vertical difference of (1, H, W, 3) inside (H, W) bool ``mask``."""
    dx = (img[:, :, 1:] - img[:, :, :-1]).abs().sum(-1)[0]
    dy = (img[:, 1:] - img[:, :-1]).abs().sum(-1)[0]
    return float(dx[mask[:, 1:] & mask[:, :-1]].mean() + dy[mask[1:] & mask[:-1]].mean())


def test_projection_is_as_sharp_as_the_view_where_it_sees():
    v, f, uv = quad_facing_x(0.4)
    detailed = Mesh(vertices=v, faces=f, uvs=uv, texture=checker_texture(256, squares=8))
    cams = camera(64)
    view = render(detailed, cams, mode="albedo", background=1.0, texture_filter="linear")
    blurry = Mesh(vertices=v, faces=f, uvs=uv, texture=torch.full((16, 16, 3), 0.5))
    projected = project_views_to_texture(blurry, cams, view.rgb, view.alpha)
    # the quad spans ~37 view pixels: the texture gets more texels than that, not the 16 of the input
    assert projected.texture.shape[0] >= 64
    # rendered back with plain bilinear lookups (the default trilinear filter blurs any texture finer than
    # the pixels, whoever made it), the view's detail is all there
    again = render(projected, cams, mode="albedo", background=1.0, texture_filter="linear")
    inner = -torch.nn.functional.max_pool2d(-view.alpha[..., 0][None], 7, 1, 3)[0, 0] > 0.99
    assert float((again.rgb - view.rgb).abs()[0][inner].mean()) < 0.03
    assert sharpness(again.rgb, inner) >= 0.9 * sharpness(view.rgb, inner)
    # the old texture (16 px) could not hold this detail at all
    before = render(blurry, cams, mode="albedo", background=1.0, texture_filter="linear")
    assert sharpness(before.rgb, inner) < 0.1 * sharpness(view.rgb, inner)


def test_unseen_texels_keep_the_existing_texture():
    tex = checker_texture(64, squares=8)
    sphere = uv_sphere(16, 32, radius=0.4, texture=tex)
    cams = camera(64)
    red = render(sphere, cams, mode="albedo", background=1.0, texture=torch.tensor([[[0.9, 0.1, 0.1]]]).expand(4, 4, 3))
    out = project_views_to_texture(sphere, cams, red.rgb, red.alpha, texture_resolution=64)
    assert out.texture.shape == tex.shape and out.vertex_colors is None
    # texel centres -> azimuth on the equirectangular map: u = azimuth / 360 (0 = +x, the camera side)
    u = (torch.arange(64) + 0.5) / 64
    az = u * 360.0
    back = (az > 110) & (az < 250)  # facing away from the camera at +x
    front = (az < 40) | (az > 320)
    assert torch.equal(out.texture[:, back], tex[:, back])
    mid_rows = slice(24, 40)  # near the equator, seen frontally
    front_tex = out.texture[mid_rows][:, front]
    assert (front_tex - torch.tensor([0.9, 0.1, 0.1])).abs().max() < 0.05


def test_occluded_texels_are_not_painted_with_the_occluder():
    # back square (uv left half) and a small square in front of its centre (uv right half), both facing +x
    vb, fb, uvb = quad_facing_x(0.4, 0.0, (0.0, 0.0, 0.5, 1.0))
    vf, ff, uvf = quad_facing_x(0.12, 0.3, (0.5, 0.0, 1.0, 1.0))
    mesh = Mesh(vertices=torch.cat([vb, vf]), faces=torch.cat([fb, ff + 4]), uvs=torch.cat([uvb, uvf]),
                uv_faces=torch.cat([fb, ff + 4]), texture=torch.full((64, 64, 3), 0.5))
    colours = torch.cat([torch.tensor([[0.1, 0.8, 0.1]]).expand(4, 3), torch.tensor([[0.9, 0.1, 0.1]]).expand(4, 3)])
    cams = camera(96)
    view = render(mesh.replace(vertex_colors=colours), cams, mode="albedo", background=1.0,
                  vertex_colors=colours)
    out = project_views_to_texture(mesh, cams, view.rgb, view.alpha, texture_resolution=64).texture
    back = out[:, :32]
    # back-square texels: u in [0, 0.5] -> y from -0.4 to 0.4, v -> z; the occluder covers |y|, |z| <~ 0.12 * 1.5/1.2
    ys = torch.linspace(-0.4, 0.4, 33)[:-1] + 0.4 / 32
    zs = torch.linspace(0.4, -0.4, 65)[:-1] - 0.4 / 64
    Y, Z = torch.meshgrid(zs, ys, indexing="ij")[1], torch.meshgrid(zs, ys, indexing="ij")[0]
    hidden = (Y.abs() < 0.12) & (Z.abs() < 0.12)
    visible = (Y.abs() > 0.25) | (Z.abs() > 0.25)
    redness = back[..., 0] - back[..., 1]
    assert float(redness[hidden].max()) < 0.05  # never painted red by the occluder
    assert torch.equal(back[hidden], torch.full_like(back[hidden], 0.5))  # unseen: unchanged
    green = torch.tensor([0.1, 0.8, 0.1])
    inner_visible = visible & (Y.abs() < 0.37) & (Z.abs() < 0.37)
    assert (back[inner_visible] - green).abs().max() < 0.05
    front = out[16:48, 40:56]
    assert (front - torch.tensor([0.9, 0.1, 0.1])).abs().max() < 0.05


def test_projection_errors_name_the_problem():
    v, f, uv = quad_facing_x(0.4)
    mesh = Mesh(vertices=v, faces=f, uvs=uv, texture=torch.full((8, 8, 3), 0.5))
    cams = camera(32)
    with pytest.raises(ProjectionError, match="images"):
        project_views_to_texture(mesh, cams, torch.zeros(1, 16, 16, 3), torch.ones(1, 16, 16))
    with pytest.raises(ProjectionError, match="masks"):
        project_views_to_texture(mesh, cams, torch.zeros(1, 32, 32, 3), torch.ones(2, 32, 32))


def test_colour_transfer_corrects_a_dulled_texture_where_no_view_sees():
    true = checker_texture(64, squares=8)
    dull = 0.5 * true + 0.25  # what a coarse generator might give: lower contrast, greyer
    sphere = uv_sphere(16, 32, radius=0.4, texture=dull)
    cams = camera(64)
    view = render(sphere, cams, mode="albedo", background=1.0, texture=true)
    out = project_views_to_texture(sphere, cams, view.rgb, view.alpha, texture_resolution=64, unseen="color_transfer")
    az = (torch.arange(64) + 0.5) / 64 * 360.0
    back = (az > 110) & (az < 250)
    assert (out.texture[:, back] - true[:, back]).abs().mean() < 0.03
    assert (dull[:, back] - true[:, back]).abs().mean() > 0.1
    with pytest.raises(ProjectionError, match="unseen"):
        project_views_to_texture(sphere, cams, view.rgb, view.alpha, unseen="guess")
