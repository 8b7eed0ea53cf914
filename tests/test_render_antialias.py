"""antialias(): silhouette blending and position gradients of the right sign."""
import pytest
import torch
from test_render_common import BACKENDS, clip_tri

from magicboost_core.render import RenderError, antialias, rasterize


TRI = torch.tensor([[0, 1, 2]])
VERTS = ((-0.63, -0.52, 0.0, 1.0), (0.71, -0.37, 0.0, 1.0), (-0.05, 0.66, 0.0, 1.0))
H = W = 32


def coverage(pos, backend="torch", tri=TRI):
    rast, _ = rasterize(pos, tri, (H, W), backend=backend)
    mask = (rast[..., 3:4] > 0).float()
    return antialias(mask, rast, pos, tri, backend=backend), mask


def ndc_area_in_pixels(pos):
    p = pos[0, :, :2].double()
    a = 0.5 * abs(float((p[1, 0] - p[0, 0]) * (p[2, 1] - p[0, 1]) - (p[1, 1] - p[0, 1]) * (p[2, 0] - p[0, 0])))
    return a * (W / 2) * (H / 2)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_moving_a_silhouette_vertex_outward_increases_coverage(backend, device):
    pos = clip_tri(*VERTS).to(device).requires_grad_(True)
    aa, mask = coverage(pos, backend)
    assert not torch.equal(aa, mask)  # edge pixels were blended
    aa.sum().backward()
    g = pos.grad[0, :, :2].cpu().double()
    p = pos.detach()[0, :, :2].cpu().double()
    centroid = p.mean(0)
    for i in range(3):
        outward = p[i] - centroid
        assert float((g[i] * outward).sum()) > 0, f"vertex {i}: gradient points inward"
    # compare with the analytic gradient of the triangle's pixel area
    area_grad = torch.zeros(3, 2, dtype=torch.float64)
    for i in range(3):
        a, b = p[(i + 1) % 3], p[(i + 2) % 3]
        n = torch.tensor([-(b - a)[1], (b - a)[0]])  # normal of the opposite edge
        if float((n * (p[i] - a)).sum()) < 0:
            n = -n
        area_grad[i] = n / 2 * (W / 2) * (H / 2)
    cos = torch.nn.functional.cosine_similarity(g.flatten(), area_grad.flatten(), dim=0)
    assert cos > 0.9
    assert 0.6 < g.norm() / area_grad.norm() < 1.4


def test_antialiased_coverage_tracks_true_area():
    errs_aa, errs_hard = [], []
    for shift in torch.linspace(0, 1 / W, 5):
        pos = clip_tri(*VERTS).clone()
        pos[0, :, 0] += shift
        pos[0, 2, 1] += 0.7 * shift
        aa, mask = coverage(pos)
        area = ndc_area_in_pixels(pos)
        errs_aa.append(abs(float(aa.sum()) - area))
        errs_hard.append(abs(float(mask.sum()) - area))
    assert max(errs_aa) < 0.02 * ndc_area_in_pixels(clip_tri(*VERTS))
    assert sum(errs_aa) < sum(errs_hard)


def test_interior_edges_are_not_blended_and_occluders_are():
    # Two coplanar triangles sharing an edge, coloured differently: their common edge is no silhouette.
    pos = torch.tensor([[-0.8, -0.8, 0, 1], [0.8, -0.8, 0, 1], [0.8, 0.8, 0, 1], [-0.8, 0.8, 0, 1]],
                       dtype=torch.float32)[None]
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]])
    rast, _ = rasterize(pos, tri, (H, W))
    color = torch.stack([(rast[..., 3] == 1).float(), (rast[..., 3] == 2).float()], -1)
    out = antialias(color, rast, pos, tri)
    inner = (rast[..., 3] > 0)
    inner[:, :, :] &= torch.nn.functional.max_pool2d((rast[..., 3] == 0).float()[:, None], 3, 1, 1)[:, 0] == 0
    assert torch.equal(out[inner], color[inner])
    # A small triangle in front of the quad: its silhouette is blended.
    front = torch.tensor([[-0.3, -0.3, -0.5, 1], [0.35, -0.25, -0.5, 1], [0.0, 0.4, -0.5, 1]])[None]
    pos2 = torch.cat([pos, front], 1)
    tri2 = torch.cat([tri, torch.tensor([[4, 5, 6]])])
    rast2, _ = rasterize(pos2, tri2, (H, W))
    col2 = (rast2[..., 3:4] == 3).float()
    out2 = antialias(col2, rast2, pos2, tri2)
    changed = (out2 != col2)[..., 0]
    assert changed.sum() > 10
    assert torch.all(rast2[..., 3][changed] > 0)  # only pixels over the quad, around the small triangle


def test_bad_input_errors():
    pos = clip_tri(*VERTS)
    rast, _ = rasterize(pos, TRI, (H, W))
    with pytest.raises(RenderError, match="color"):
        antialias(torch.rand(1, H, W + 1, 3), rast, pos, TRI)
    with pytest.raises(RenderError, match="batch"):
        antialias(torch.rand(1, H, W, 3), rast, pos.expand(2, -1, -1), TRI)
    nan = pos.clone()
    nan[0, 0, 0] = float("nan")
    with pytest.raises(RenderError, match="NaN"):
        antialias(torch.rand(1, H, W, 3), rast, nan, TRI)
