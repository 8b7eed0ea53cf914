"""render(): outputs, modes, colour sources, orientation, gradients into overrides, bad input."""
import math

import pytest
import torch
from test_render_common import sphere_mesh, textured_sphere

from magicboost_core.geometry import Mesh, orbit_cameras
from magicboost_core.render import RenderError, RenderOutput, render


CAMS = orbit_cameras([0, 20], [0, 135], 2.0, fovy_deg=40, width=48)


def centre(x):
    return x[:, 24, 24]


def test_outputs_shapes_and_geometry():
    mesh = sphere_mesh(3, radius=0.5)
    out = render(mesh, CAMS, background=0.25)
    assert isinstance(out, RenderOutput)
    for name, c in (("rgb", 3), ("alpha", 1), ("depth", 1), ("normal", 3), ("rast", 4)):
        t = getattr(out, name)
        assert t.shape == (2, 48, 48, c) and t.dtype == torch.float32 and torch.isfinite(t).all(), name
    mask = out.mask[..., 0]
    assert 0.1 < mask.float().mean() < 0.5
    assert torch.all(out.rgb[~mask & (out.alpha[..., 0] == 0)] == 0.25)  # background
    assert out.alpha.min() >= 0 and out.alpha.max() <= 1 + 1e-6
    # depth: camera distance minus radius at the centre, 0 where empty
    assert torch.allclose(centre(out.depth)[:, 0], torch.full((2,), 1.5), atol=0.01)
    assert torch.all(out.depth[~mask] == 0) and torch.all(out.normal[~mask] == 0)
    # world-space unit normals; at the centre they point at the camera
    assert torch.allclose(out.normal[mask].norm(dim=-1), torch.ones(int(mask.sum())), atol=1e-4)
    to_cam = CAMS.position / CAMS.position.norm(dim=-1, keepdim=True)
    assert torch.allclose(centre(out.normal), to_cam, atol=0.05)  # pixel 24 is half a pixel off-centre
    # vertex colours (= position-based) at the centre pixel
    assert torch.allclose(centre(out.rgb), to_cam * 0.5 + 0.5, atol=0.03)


def test_modes():
    mesh = sphere_mesh(3, radius=0.5, colors=False)
    alb = render(mesh, CAMS, mode="albedo", antialias=False)
    assert torch.allclose(alb.rgb[alb.mask[..., 0]], torch.full((1,), 0.7))  # default grey
    shd = render(mesh, CAMS, mode="shaded", ambient=0.2, antialias=False)
    # light from the camera: the centre faces it fully, the rim is darker but >= ambient * albedo
    assert torch.allclose(centre(shd.rgb), torch.full((2, 3), 0.7), atol=0.01)
    m = shd.mask[..., 0]
    assert shd.rgb[m].min() >= 0.2 * 0.7 - 1e-5 and shd.rgb[m].min() < 0.35
    nrm = render(mesh, CAMS, mode="normal", antialias=False)
    assert torch.allclose(nrm.rgb[m], (nrm.normal[m] + 1) / 2)
    # a directional light from behind leaves only the ambient term at the centre
    back = render(mesh, CAMS[0], mode="shaded", ambient=0.2, light_dir=-CAMS.position[0], antialias=False)
    assert torch.allclose(back.rgb[0, 24, 24], torch.full((3,), 0.14), atol=1e-4)
    # a point light at the camera equals the default headlight near the centre
    pt = render(mesh, CAMS, mode="shaded", ambient=0.2, light_pos=CAMS.position, antialias=False)
    assert torch.allclose(centre(pt.rgb), centre(shd.rgb), atol=1e-3)


def quad_mesh(**kw):
    # A unit quad in the y-z plane facing +x (towards an azimuth-0 camera), uv (0, 0) at the bottom left.
    v = torch.tensor([[0, -0.5, -0.5], [0, 0.5, -0.5], [0, 0.5, 0.5], [0, -0.5, 0.5]], dtype=torch.float32)
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uv = torch.tensor([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=torch.float32)
    return Mesh(v, f, uvs=uv, **kw)


def test_texture_orientation_end_to_end():
    tex = torch.zeros(8, 8, 3)
    tex[:4, :, 0] = 1  # top half red (row 0 = top)
    tex[4:, :, 2] = 1  # bottom half blue
    tex[:, :4, 1] = 1  # left half green
    cam = orbit_cameras(0, 0, 2.0, fovy_deg=40, width=32)
    out = render(quad_mesh(texture=tex), cam, antialias=False, texture_filter="linear")
    img = out.rgb[0]
    assert img[10, 16, 0] > 0.9 and img[10, 16, 2] < 0.1  # upper part of the image is red
    assert img[22, 16, 2] > 0.9 and img[22, 16, 0] < 0.1  # lower part blue
    # camera right = +y for azimuth 0; uv u runs along +y on the quad, so texture column 0 is image-left
    assert img[16, 10, 1] > 0.9 and img[16, 22, 1] < 0.1


def test_colour_source_priority():
    tex = torch.full((4, 4, 3), 0.2)
    vc = torch.full((4, 3), 0.9)
    cam = orbit_cameras(0, 0, 2.0, fovy_deg=40, width=16)
    mesh = quad_mesh(texture=tex, vertex_colors=vc)
    pick = lambda **kw: float(render(mesh, cam, antialias=False, **kw).rgb[0, 8, 8, 0])  # noqa: E731
    assert math.isclose(pick(), 0.2, abs_tol=1e-5)  # mesh texture before mesh vertex colours
    assert math.isclose(pick(vertex_colors=torch.full((4, 3), 0.4)), 0.4, abs_tol=1e-5)
    assert math.isclose(pick(texture=torch.full((2, 2, 4), 0.6)), 0.6, abs_tol=1e-5)
    assert math.isclose(float(render(quad_mesh(vertex_colors=vc), cam).rgb[0, 8, 8, 0]), 0.9, abs_tol=1e-5)


def test_gradients_flow_into_overrides():
    mesh = textured_sphere(8, 16, tex_size=16)
    verts = mesh.vertices.clone().requires_grad_(True)
    tex = mesh.texture.clone().requires_grad_(True)
    out = render(mesh, CAMS, mode="shaded", vertices=verts, texture=tex)
    (out.rgb.mean() + out.alpha.mean() + out.depth.mean()).backward()
    assert verts.grad.abs().sum() > 0 and torch.isfinite(verts.grad).all()
    assert tex.grad.abs().sum() > 0 and torch.isfinite(tex.grad).all()
    vc = torch.rand(mesh.num_vertices, 3, requires_grad=True)
    render(mesh.replace(texture=None, uvs=None, uv_faces=None), CAMS, vertex_colors=vc).rgb.sum().backward()
    assert vc.grad.abs().sum() > 0


def test_uv_seams_render_cleanly():
    mesh = textured_sphere(12, 24)
    cams = orbit_cameras([0, 0, 60], [0, 180, 90], 2.0, fovy_deg=40, width=48)  # az 0 looks at the u = 0/1 seam
    out = render(mesh, cams, antialias=False, texture_filter="linear")
    m = out.mask[..., 0]
    lo, hi = mesh.texture.amin((0, 1)), mesh.texture.amax((0, 1))
    assert torch.all(out.rgb[m] >= lo - 1e-5) and torch.all(out.rgb[m] <= hi + 1e-5)
    # along the seam column the colour varies smoothly (no jump to the far side of the texture)
    col = out.rgb[0, 10:38, 24]
    assert (col[1:] - col[:-1]).abs().max() < 0.35


def test_camera_inside_mesh_and_background_image():
    mesh = sphere_mesh(2, radius=0.5)
    cams = orbit_cameras(0, [0, 90], 0.2, fovy_deg=60, width=16)  # inside: triangles cross the camera plane
    bg = torch.rand(1, 16, 16, 3)
    verts = mesh.vertices.clone().requires_grad_(True)
    out = render(mesh, cams, mode="shaded", vertices=verts, background=bg)
    assert torch.isfinite(out.rgb).all() and out.mask.all()
    out.rgb.sum().backward()
    assert torch.isfinite(verts.grad).all() and verts.grad.abs().sum() > 0
    far = orbit_cameras(0, 0, 30.0, fovy_deg=1, width=16)
    out = render(mesh, far, background=bg)
    assert torch.isfinite(out.rgb).all()


def test_degenerate_faces_give_no_nan():
    mesh = sphere_mesh(2, radius=0.5)
    f = torch.cat([mesh.faces, torch.tensor([[0, 0, 1], [2, 3, 3], [4, 4, 4]])])  # zero-area faces
    bad = Mesh(mesh.vertices, f, vertex_colors=mesh.vertex_colors)
    verts = bad.vertices.clone().requires_grad_(True)
    out = render(bad, CAMS, mode="shaded", vertices=verts)
    ref = render(mesh, CAMS, mode="shaded")
    assert torch.allclose(out.rgb, ref.rgb, atol=1e-6)
    (out.rgb.sum() + out.normal.sum()).backward()
    assert torch.isfinite(verts.grad).all()


def test_bad_input_errors():
    mesh = sphere_mesh(1)
    with pytest.raises(RenderError, match="mode"):
        render(mesh, CAMS, mode="phong")
    with pytest.raises(RenderError, match="unwrap_uv"):
        render(mesh, CAMS, texture=torch.rand(4, 4, 3))
    with pytest.raises(RenderError, match="vertices"):
        render(mesh, CAMS, vertices=torch.rand(5, 3))
    with pytest.raises(RenderError, match="vertex_colors"):
        render(mesh, CAMS, vertex_colors=torch.rand(5, 3))
    with pytest.raises(RenderError, match="light_dir"):
        render(mesh, CAMS, mode="shaded", light_dir=torch.rand(3, 3))
    with pytest.raises(RenderError, match="background"):
        render(mesh, CAMS, background=torch.rand(2, 2))
    with pytest.raises(RenderError, match="Cameras"):
        render(mesh, None)
    bad = mesh.vertices.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(RenderError, match="NaN"):
        render(mesh, CAMS, vertices=bad)
