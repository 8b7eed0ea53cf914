"""texture(): conventions, filtering, mip-mapping, gradients."""
import pytest
import torch
from test_render_common import BACKENDS

from magicboost_core.render import RenderError, texture



def texel_centre_uv(H, W):
    ys, xs = torch.meshgrid((torch.arange(H) + 0.5) / H, (torch.arange(W) + 0.5) / W, indexing="ij")
    return torch.stack([xs, ys], -1)[None]


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_uv_convention_first_texel_in_memory(backend, device):
    tex = torch.arange(12, dtype=torch.float32).reshape(3, 4, 1).to(device)
    out = texture(tex, texel_centre_uv(3, 4).to(device), backend=backend).cpu()
    assert torch.allclose(out[0], tex.cpu())  # texel centres return the texels; uv (0, 0) side = row 0, col 0
    uv = torch.tensor([[[[0.0, 0.0], [1.0, 1.0], [0.25, 1 / 6]]]], device=device)
    got = texture(tex, uv, boundary="clamp", backend=backend).cpu().flatten()
    assert torch.allclose(got, torch.tensor([0.0, 11.0, 0.5]))  # (0.25, 1/6): halfway between texels 0 and 1 of row 0
    wrap = texture(tex, uv[:, :, :1], boundary="wrap", backend=backend).cpu().flatten()
    assert torch.allclose(wrap, torch.tensor([(0 + 3 + 8 + 11) / 4.0]))


def test_batch_broadcast():
    tex = torch.rand(2, 5, 6, 3)
    uv = torch.rand(2, 4, 4, 2)
    out = texture(tex, uv)
    assert out.shape == (2, 4, 4, 3)
    assert torch.allclose(out[1], texture(tex[1], uv[1:])[0])
    shared = texture(tex[0], uv)
    assert torch.allclose(shared[1], texture(tex[0], uv[1:])[0])


@pytest.mark.parametrize("boundary", ["clamp", "wrap"])
def test_gradcheck_tex_and_uv(boundary):
    torch.manual_seed(0)
    tex = torch.rand(1, 5, 4, 2, dtype=torch.float64, requires_grad=True)
    uv = (torch.rand(1, 3, 3, 2, dtype=torch.float64) * 1.2 - 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t, u: texture(t, u, boundary=boundary), (tex, uv), eps=1e-6, atol=1e-6)


def test_gradcheck_mipmap_tex_and_uv():
    torch.manual_seed(1)
    tex = torch.rand(1, 8, 8, 1, dtype=torch.float64, requires_grad=True)
    uv = torch.rand(1, 4, 4, 2, dtype=torch.float64, requires_grad=True)
    uv_da = torch.full((1, 4, 4, 4), 0.3, dtype=torch.float64)  # ~2.4 texels per pixel: between levels 1 and 2
    fn = lambda t, u: texture(t, u, filter_mode="linear-mipmap-linear", uv_da=uv_da)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (tex, uv), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_mipmap_equals_bilinear_when_magnifying(backend, device):
    torch.manual_seed(0)
    tex = torch.rand(8, 8, 3, device=device)
    uv = texel_centre_uv(32, 32).to(device) * 0.9 + 0.05  # 32 px over 8 texels: magnified
    lin = texture(tex, uv, backend=backend)
    mip = texture(tex, uv, filter_mode="linear-mipmap-linear", backend=backend)
    assert torch.allclose(lin, mip, atol=1e-5)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_mipmap_filters_when_minifying(backend, device):
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    checker = ((xx + yy) % 2).float()[..., None].to(device)
    uv = texel_centre_uv(8, 8).to(device) + 0.3 / 64  # off texel centres: bilinear aliases
    lin = texture(checker, uv, backend=backend)
    mip = texture(checker, uv, filter_mode="linear-mipmap-linear", backend=backend)
    assert (lin - 0.5).abs().max() > 0.1
    assert torch.allclose(mip, torch.full_like(mip, 0.5), atol=0.02)
    # an explicit bias picks the level directly
    lvl = texture(checker, uv, filter_mode="linear-mipmap-linear", mip_level_bias=torch.zeros(1, 8, 8, device=device),
                  uv_da=torch.zeros(1, 8, 8, 4, device=device), backend=backend)
    assert torch.allclose(lvl, lin, atol=1e-6)


def test_bad_input_errors():
    tex, uv = torch.rand(4, 4, 3), torch.rand(1, 2, 2, 2)
    with pytest.raises(RenderError, match="filter_mode"):
        texture(tex, uv, filter_mode="nearest-ish")
    with pytest.raises(RenderError, match="boundary"):
        texture(tex, uv, boundary="mirror")
    with pytest.raises(RenderError, match="`uv`"):
        texture(tex, uv[0])
    with pytest.raises(RenderError, match="`tex`"):
        texture(torch.rand(4, 4), uv)
    with pytest.raises(RenderError, match="batch"):
        texture(torch.rand(3, 4, 4, 3), uv)
    bad = uv.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(RenderError, match="`uv` contains 1 NaN"):
        texture(tex, bad)
    with pytest.raises(RenderError, match="uv_da"):
        texture(tex, uv, filter_mode="linear-mipmap-linear", uv_da=torch.zeros(1, 2, 2, 2))
