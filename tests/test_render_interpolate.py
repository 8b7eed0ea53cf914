"""interpolate(): values, broadcasting, derivatives, gradients w.r.t. attributes and positions."""
import pytest
import torch
from test_render_common import BACKENDS

from magicboost_core.render import RenderError, interpolate, interpolate_da, rasterize


POS = torch.tensor([[-0.83, -0.71, 0.1, 1.0], [0.92, -0.58, 0.2, 1.3], [0.11, 0.87, 0.3, 1.1],
                    [0.95, 0.9, 0.4, 1.6]], dtype=torch.float64)[None]
TRI = torch.tensor([[0, 1, 2], [1, 3, 2]])


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_interpolate_reproduces_linear_attributes(backend, device):
    """Interpolating clip-space x, y, w and dividing recovers each pixel centre (perspective-correct)."""
    pos = POS.float().to(device)
    rast, _ = rasterize(pos, TRI.to(device), (16, 16), backend=backend)
    out = interpolate(pos[0], rast, TRI.to(device), backend=backend).cpu()
    mask = rast[0, ..., 3].cpu() > 0
    xs = (2 * torch.arange(16) + 1) / 16 - 1
    ndc_x = out[0, ..., 0] / out[0, ..., 3]
    ndc_y = out[0, ..., 1] / out[0, ..., 3]
    assert torch.allclose(ndc_x[mask], xs.expand(16, 16)[mask], atol=1e-5)
    assert torch.allclose(ndc_y[mask], (-xs)[:, None].expand(16, 16)[mask], atol=1e-5)
    assert torch.all(out[0][~mask] == 0)


def test_attribute_batch_and_separate_index_arrays():
    rast, _ = rasterize(POS.float().expand(2, -1, -1), TRI, (8, 8))
    attr = torch.rand(2, 4, 3)
    out = interpolate(attr, rast, TRI)
    assert out.shape == (2, 8, 8, 3)
    assert torch.allclose(out[1], interpolate(attr[1], rast[1:], TRI)[0])
    # An index array with the same triangle order into another attribute list (uv seams).
    uv = torch.rand(6, 2)
    uv_faces = torch.tensor([[3, 4, 5], [0, 1, 2]])
    got = interpolate(uv, rast, uv_faces)
    tid = rast[0, 4, 4, 3].long() - 1
    u, v = rast[0, 4, 4, 0], rast[0, 4, 4, 1]
    a = uv[uv_faces[tid]]
    assert torch.allclose(got[0, 4, 4], u * a[0] + v * a[1] + (1 - u - v) * a[2])


def test_gradcheck_attributes_and_positions():
    torch.manual_seed(0)
    attr = torch.rand(4, 2, dtype=torch.float64, requires_grad=True)

    def f_attr(a):
        rast, _ = rasterize(POS, TRI, (6, 6))
        return interpolate(a, rast, TRI)

    assert torch.autograd.gradcheck(f_attr, (attr,), eps=1e-6, atol=1e-6)

    pos = POS.clone().requires_grad_(True)
    a = attr.detach()

    def f_pos(p):  # coverage is constant under the tiny perturbations: interior pixels only
        rast, _ = rasterize(p, TRI, (6, 6))
        return interpolate(a, rast, TRI)

    assert torch.autograd.gradcheck(f_pos, (pos,), eps=1e-6, atol=1e-5)
    # the rasterizer's own depth channel is differentiable too
    assert torch.autograd.gradcheck(lambda p: rasterize(p, TRI, (6, 6))[0][..., :3], (pos,), eps=1e-6, atol=1e-5)


def test_screen_derivatives():
    pos = POS.float()
    rast, db = rasterize(pos, TRI, (32, 32), with_db=True)
    attr = torch.tensor([[0.0, 1.0], [1.0, 0.5], [0.3, 0.0], [0.7, 0.9]])
    out, da = interpolate_da(attr, rast, TRI, db)
    assert da.shape == (1, 32, 32, 4)
    r, c = 16, 12
    assert rast[0, r - 1:r + 2, c - 1:c + 2, 3].unique().numel() == 1
    fd_x = (out[0, r, c + 1] - out[0, r, c - 1]) / 2
    fd_y = (out[0, r + 1, c] - out[0, r - 1, c]) / 2
    assert torch.allclose(da[0, r, c, 0::2], fd_x, atol=2e-3)
    assert torch.allclose(da[0, r, c, 1::2], fd_y, atol=2e-3)


def test_bad_input_errors():
    rast, _ = rasterize(POS.float(), TRI, (8, 8))
    with pytest.raises(RenderError, match="attr"):
        interpolate(torch.rand(4), rast, TRI)
    with pytest.raises(RenderError, match="batch 3"):
        interpolate(torch.rand(3, 4, 2), rast, TRI)
    with pytest.raises(RenderError, match="outside"):
        interpolate(torch.rand(3, 2), rast, TRI)
    with pytest.raises(RenderError, match="rast"):
        interpolate(torch.rand(4, 2), rast[..., :3], TRI)
    with pytest.raises(RenderError, match="rast_db"):
        interpolate_da(torch.rand(4, 2), rast, TRI, torch.zeros(1, 8, 8, 2))


def test_gradcheck_triangle_crossing_the_camera_plane():
    """The homogeneous (clipped) path is differentiable too."""
    pos = torch.tensor([[[-0.6, -0.5, 0.1, 1.0], [0.8, -0.4, 0.3, 1.5], [0.1, 0.9, -0.8, -0.5]]],
                       dtype=torch.float64, requires_grad=True)
    tri = torch.tensor([[0, 1, 2]])
    attr = torch.rand(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert (rasterize(pos, tri, (8, 8))[0][..., 3] > 0).sum() > 10
    fn = lambda p: interpolate(attr, rasterize(p, tri, (8, 8))[0], tri)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (pos,), eps=1e-6, atol=1e-5)
