"""Inverse rendering through render(): silhouette fitting of vertex offsets, and texture fitting."""
import torch
from test_render_common import icosphere, textured_sphere

from magicboost_core.geometry import Mesh, orbit_cameras
from magicboost_core.render import render


VIEWS = orbit_cameras([0, 0, 0, 0, 45, -45, 30, -30], [0, 90, 180, 270, 45, 135, 225, 315], 2.2, fovy_deg=40,
                      width=64)


def uniform_laplacian(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(V, 3) vertex minus the mean of its neighbours."""
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = torch.cat([e, e.flip(1)])
    n = verts.shape[0]
    acc = torch.zeros_like(verts).index_add(0, e[:, 0], verts[e[:, 1]])
    deg = torch.zeros(n).index_add(0, e[:, 0], torch.ones(e.shape[0]))
    return verts - acc / deg[:, None]


def test_fit_sphere_to_ellipsoid_silhouettes():
    torch.manual_seed(0)
    v, f = icosphere(3, 0.5)
    target_mesh = Mesh(v * torch.tensor([1.3, 0.8, 0.75]) + torch.tensor([0.05, -0.05, 0.03]), f)
    with torch.no_grad():
        target = render(target_mesh, VIEWS).alpha
    mesh = Mesh(v, f)
    offset = torch.zeros_like(v, requires_grad=True)
    opt = torch.optim.Adam([offset], lr=0.01)
    for _ in range(100):
        verts = v + offset
        alpha = render(mesh, VIEWS, vertices=verts).alpha
        loss = (alpha - target).abs().mean() + 2.0 * uniform_laplacian(verts, f).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        got = render(mesh, VIEWS, vertices=v + offset, antialias=False).alpha > 0.5
        ref = target > 0.5
        iou = (got & ref).sum() / (got | ref).sum()
    print(f"IoU {float(iou):.4f}")
    assert iou > 0.95, f"IoU {float(iou):.4f}"


def test_fit_texture_to_target_renders():
    torch.manual_seed(0)
    target_mesh = textured_sphere(12, 24, tex_size=32)
    with torch.no_grad():
        target = render(target_mesh, VIEWS, mode="albedo").rgb
    tex = torch.full_like(target_mesh.texture, 0.5, requires_grad=True)
    opt = torch.optim.Adam([tex], lr=0.05)
    for _ in range(60):
        rgb = render(target_mesh, VIEWS, mode="albedo", texture=tex).rgb
        loss = (rgb - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            tex.clamp_(0, 1)
    with torch.no_grad():
        rgb = render(target_mesh, VIEWS, mode="albedo", texture=tex).rgb
        mse = (rgb - target).pow(2).mean()
        psnr = 10 * torch.log10(1 / mse)
    print(f"PSNR {float(psnr):.2f} dB")
    assert psnr > 30, f"PSNR {float(psnr):.2f} dB"
