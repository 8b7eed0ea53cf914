"""Backend selection, and torch-vs-nvdiffrast parity (skipped without CUDA + nvdiffrast)."""
import logging

import pytest
import torch
from test_render_common import sphere_mesh, textured_sphere

from magicboost_core.geometry import orbit_cameras
from magicboost_core.render import (RenderBackendError, antialias, get_backend, interpolate, nvdiffrast_available,
                                    rasterize, render, texture)
from magicboost_core.render import backend as backend_mod


needs_nvdr = pytest.mark.skipif(not nvdiffrast_available(), reason="nvdiffrast/CUDA not available")


@pytest.fixture
def fresh_log(monkeypatch):
    monkeypatch.setattr(backend_mod, "_logged", set())
    monkeypatch.delenv(backend_mod.ENV_VAR, raising=False)


def test_auto_is_torch_on_cpu_and_logged_once(fresh_log, caplog):
    with caplog.at_level(logging.INFO, logger="magicboost"):
        assert get_backend("auto", "cpu") == "torch"
        assert get_backend(None) == "torch"
        assert get_backend("torch", torch.device("cpu")) == "torch"
    msgs = [r.getMessage() for r in caplog.records if r.name == "magicboost"]
    assert len(msgs) == 1 and "torch backend" in msgs[0]


def test_forcing_nvdiffrast_on_cpu_is_a_clear_error(fresh_log):
    with pytest.raises(RenderBackendError, match="needs CUDA tensors"):
        get_backend("nvdiffrast", "cpu")
    pos = torch.tensor([[[-0.5, -0.5, 0, 1], [0.5, -0.5, 0, 1], [0, 0.5, 0, 1]]])
    with pytest.raises(RenderBackendError, match="backend='torch'"):
        rasterize(pos, torch.tensor([[0, 1, 2]]), (4, 4), backend="nvdiffrast")
    with pytest.raises(RenderBackendError, match="Unknown render backend"):
        get_backend("opengl")


def test_environment_variable(fresh_log, monkeypatch):
    monkeypatch.setenv(backend_mod.ENV_VAR, "torch")
    assert get_backend("auto", "cpu") == "torch"
    monkeypatch.setenv(backend_mod.ENV_VAR, "nvdiffrast")
    with pytest.raises(RenderBackendError, match="CUDA"):
        get_backend("auto", "cpu")
    assert get_backend("torch", "cpu") == "torch"  # an explicit argument wins over the variable
    monkeypatch.setenv(backend_mod.ENV_VAR, "vulkan")
    with pytest.raises(RenderBackendError, match="MAGICBOOST_RENDER_BACKEND"):
        get_backend("auto", "cpu")


@pytest.mark.skipif(nvdiffrast_available() or not torch.cuda.is_available(), reason="needs CUDA without nvdiffrast")
def test_forcing_missing_nvdiffrast_on_cuda(fresh_log):
    with pytest.raises(RenderBackendError, match="import nvdiffrast.torch"):
        get_backend("nvdiffrast", "cuda")


# ---- parity (runs on a GPU with nvdiffrast) ---------------------------------------------------------

def _interior(mask: torch.Tensor, r: int = 1) -> torch.Tensor:
    """Pixels whose (2r+1)^2 neighbourhood is all inside ``mask`` (B, H, W) bool."""
    pooled = torch.nn.functional.max_pool2d((~mask).float()[:, None], 2 * r + 1, 1, r)[:, 0]
    return mask & (pooled == 0)


@needs_nvdr
def test_parity_primitives():
    mesh = sphere_mesh(3, 0.5).to("cuda")
    cams = orbit_cameras([0, 30, -20], [10, 140, 260], 2.0, fovy_deg=40, width=64).to("cuda")
    pos = cams.world_to_clip(mesh.vertices)
    r_t, db_t = rasterize(pos, mesh.faces, (64, 64), backend="torch", with_db=True)
    r_n, db_n = rasterize(pos, mesh.faces, (64, 64), backend="nvdiffrast", with_db=True)
    same = r_t[..., 3] == r_n[..., 3]
    assert same.float().mean() > 0.98  # ids differ only where a pixel centre grazes an edge
    both = same & (r_t[..., 3] > 0)
    assert torch.allclose(r_t[both][:, :3], r_n[both][:, :3], atol=1e-4)
    assert torch.allclose(db_t[both], db_n[both], atol=1e-3)
    col_t = interpolate(mesh.vertex_colors, r_t, mesh.faces, backend="torch")
    col_n = interpolate(mesh.vertex_colors, r_t, mesh.faces, backend="nvdiffrast")
    assert torch.allclose(col_t, col_n, atol=1e-5)
    uv = torch.rand(3, 16, 16, 2, device="cuda")
    tex = torch.rand(32, 32, 3, device="cuda")
    for boundary in ("clamp", "wrap"):
        assert torch.allclose(texture(tex, uv, boundary=boundary, backend="torch"),
                              texture(tex, uv, boundary=boundary, backend="nvdiffrast"), atol=1e-5)
    # antialias: both blend the same silhouettes with the same sign of position gradient
    alpha = (r_n[..., 3:4] > 0).float()
    grads = {}
    for name in ("torch", "nvdiffrast"):
        p = pos.clone().requires_grad_(True)
        antialias(alpha, r_n, p, mesh.faces, backend=name).sum().backward()
        grads[name] = p.grad
    radial = pos[..., :2] / pos[..., 3:4]  # the sphere is centred on screen: outward = radial in NDC
    for g in grads.values():
        outward = (g[..., :2] * radial).sum()
        assert outward > 0
    cos = torch.nn.functional.cosine_similarity(grads["torch"].flatten(), grads["nvdiffrast"].flatten(), dim=0)
    assert cos > 0.5  # same silhouettes, similar (not identical) coverage model


@needs_nvdr
@pytest.mark.parametrize("filter_mode", ["linear", "linear-mipmap-linear"])
def test_parity_textured_render(filter_mode):
    mesh = textured_sphere(16, 32, tex_size=64).to("cuda")
    cams = orbit_cameras([0, 25, -30, 60], [0, 100, 200, 300], 2.0, fovy_deg=40, width=128).to("cuda")
    out_t = render(mesh, cams, mode="shaded", backend="torch", texture_filter=filter_mode)
    out_n = render(mesh, cams, mode="shaded", backend="nvdiffrast", texture_filter=filter_mode)
    keep = _interior(out_t.mask[..., 0] & out_n.mask[..., 0], 2)
    assert keep.float().mean() > 0.1
    diff = (out_t.rgb - out_n.rgb).abs().amax(-1)[keep]
    assert diff.max() <= 1 / 255, f"max |torch - nvdiffrast| = {float(diff.max()):.5f}"
    assert torch.allclose(out_t.depth[keep], out_n.depth[keep], atol=1e-4)
    assert torch.allclose(out_t.normal[keep], out_n.normal[keep], atol=1e-4)
