"""rasterize(): coverage, barycentrics, depth test, clipping, chunking, bad input."""
import math

import pytest
import torch
from test_render_common import BACKENDS, clip_tri, icosphere

from magicboost_core.geometry import orbit_cameras
from magicboost_core.geometry.camera import perspective
from magicboost_core.render import RenderError, rasterize


TRI = torch.tensor([[0, 1, 2]])


def pixel_centres(H, W):
    """(H, W, 2) NDC centres, row 0 = top."""
    xs = (2 * torch.arange(W, dtype=torch.float64) + 1) / W - 1
    ys = 1 - (2 * torch.arange(H, dtype=torch.float64) + 1) / H
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)


def analytic_bary(pos, H, W):
    """Perspective-correct barycentrics of one triangle (3, 4) at every pixel centre: (H, W, 3), float64."""
    M = pos[:, [0, 1, 3]].double().T  # columns = (x, y, w) of each vertex
    p = pixel_centres(H, W)
    rhs = torch.cat([p, torch.ones(H, W, 1, dtype=torch.float64)], -1)
    lam = torch.linalg.solve(M, rhs.reshape(-1, 3).T).T.reshape(H, W, 3)
    return lam / lam.sum(-1, keepdim=True)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_single_triangle_coverage_and_barycentrics(backend, device):
    # A perspective triangle (different w per vertex) away from pixel-centre ties.
    pos = clip_tri((-0.61, -0.53, 0.2, 1.0), (1.1, -0.9, 0.5, 1.5), (0.05, 1.3, 0.9, 2.0))
    H, W = 24, 20
    rast, _ = rasterize(pos.to(device), TRI.to(device), (H, W), backend=backend)
    rast = rast.cpu()
    bary = analytic_bary(pos[0], H, W)
    inside = (bary >= 0).all(-1)
    assert inside.sum() > 50
    assert torch.equal(rast[0, ..., 3] > 0, inside)
    assert torch.all(rast[0, ..., 3][inside] == 1)
    assert torch.allclose(rast[0, ..., 0][inside].double(), bary[..., 0][inside], atol=1e-5)
    assert torch.allclose(rast[0, ..., 1][inside].double(), bary[..., 1][inside], atol=1e-5)
    # z/w is the perspective-correct clip z over clip w.
    z = (bary * pos[0, :, 2].double()).sum(-1) / (bary * pos[0, :, 3].double()).sum(-1)
    assert torch.allclose(rast[0, ..., 2][inside].double(), z[inside], atol=1e-5)
    assert torch.all(rast[0][~inside] == 0)


def test_row_zero_is_top():
    pos = clip_tri((-0.5, 0.2, 0, 1), (0.5, 0.2, 0, 1), (0.0, 0.9, 0, 1))  # upper half of NDC
    rast, _ = rasterize(pos, TRI, (16, 16))
    rows = torch.nonzero(rast[0, ..., 3] > 0)[:, 0]
    assert rows.max() < 8  # only the top half of the image
    # Apex (NDC y = 0.9) near row 0: the narrowest covered row is the top-most one.
    counts = (rast[0, ..., 3] > 0).sum(1)
    assert counts[rows.min()] <= counts[rows.max()]


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("near_first", [True, False])
def test_depth_ordering(backend, device, near_first):
    near = [(-0.8, -0.8, -0.5, 1), (0.8, -0.8, -0.5, 1), (0.0, 0.8, -0.5, 1)]
    far = [(-0.9, 0.7, 0.5, 1), (0.0, -0.9, 0.5, 1), (0.9, 0.7, 0.5, 1)]
    verts = near + far if near_first else far + near
    pos = torch.tensor(verts, dtype=torch.float32)[None].to(device)
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], device=device)
    rast, _ = rasterize(pos, tri, (32, 32), backend=backend)
    near_id = 1 if near_first else 2
    far_id = 3 - near_id
    ids = rast[0, ..., 3].cpu()
    bary_near = analytic_bary(torch.tensor(near, dtype=torch.float32), 32, 32)
    in_near = (bary_near >= 0).all(-1)
    assert torch.all(ids[in_near] == near_id)
    assert (ids == far_id).sum() > 0  # the far triangle shows around the near one
    assert torch.allclose(rast[0, ..., 2].cpu()[in_near], torch.full_like(ids[in_near], -0.5))


def test_watertight_shared_edges_through_pixel_centres():
    # Full-screen quad split along the diagonal x = y, which passes through pixel centres.
    pos = torch.tensor([[-1, -1, 0, 1], [1, -1, 0, 1], [1, 1, 0, 1], [-1, 1, 0, 1]], dtype=torch.float32)[None]
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]])
    rast, _ = rasterize(pos, tri, (16, 16))
    assert torch.all(rast[0, ..., 3] > 0)
    # A fan of 12 triangles around the centre: no holes inside the disk.
    ang = torch.arange(12) * (2 * math.pi / 12)
    ring = torch.stack([0.9 * ang.cos(), 0.9 * ang.sin(), torch.zeros(12), torch.ones(12)], -1)
    pos = torch.cat([torch.tensor([[0.0, 0.0, 0.0, 1.0]]), ring])[None]
    tri = torch.tensor([[0, 1 + i, 1 + (i + 1) % 12] for i in range(12)])
    rast, _ = rasterize(pos, tri, (33, 33))
    r = pixel_centres(33, 33).norm(dim=-1)
    assert torch.all(rast[0, ..., 3][r < 0.9 * math.cos(math.pi / 12) - 0.01] > 0)


def test_chunking_and_tiers_match():
    v, f = icosphere(2, 0.6)
    cams = orbit_cameras([10, -20], [30, 200], 1.8, width=40)
    pos = cams.world_to_clip(v)
    # add two screen-filling triangles behind the sphere (they take the large-box path)
    big = torch.tensor([[-3, -3, 0.99, 1], [3, -3, 0.99, 1], [0, 3, 0.99, 1]], dtype=torch.float32)
    pos = torch.cat([pos, big[None].expand(2, -1, -1)], 1)
    n = v.shape[0]
    tri = torch.cat([f, torch.tensor([[n, n + 1, n + 2]])])
    ref, _ = rasterize(pos, tri, (40, 40))
    for budget in (5, 64, 1000):
        out, _ = rasterize(pos, tri, (40, 40), pair_budget=budget)
        assert torch.equal(out, ref)
    assert torch.all(ref[..., 3] > 0)


def test_batch_matches_single_views():
    v, f = icosphere(2, 0.6)
    cams = orbit_cameras([0, 30, -10], [0, 120, 250], 2.0, width=24)
    pos = cams.world_to_clip(v)
    batch, _ = rasterize(pos, f, (24, 24))
    for i in range(3):
        one, _ = rasterize(pos[i:i + 1], f, (24, 24))
        assert torch.equal(batch[i], one[0])


def test_rast_db_matches_finite_differences():
    pos = clip_tri((-0.9, -0.8, 0.1, 1.0), (2.0, -1.6, 0.3, 2.0), (0.2, 2.7, 0.5, 3.0))
    rast, db = rasterize(pos, TRI, (64, 64), with_db=True)
    u, v = rast[0, ..., 0].double(), rast[0, ..., 1].double()
    r, c = 30, 20
    assert rast[0, r - 1:r + 2, c - 1:c + 2, 3].min() > 0
    du_dx = (u[r, c + 1] - u[r, c - 1]) / 2
    du_dy = (u[r + 1, c] - u[r - 1, c]) / 2
    dv_dx = (v[r, c + 1] - v[r, c - 1]) / 2
    dv_dy = (v[r + 1, c] - v[r - 1, c]) / 2
    ref = torch.stack([du_dx, du_dy, dv_dx, dv_dy]).float()
    assert torch.allclose(db[0, r, c], ref, rtol=2e-3, atol=1e-6)


def test_clipping_triangle_crossing_the_camera_plane():
    """A triangle reaching behind the camera shows exactly its part in front of the near plane."""
    near, far = 0.1, 10.0
    P = perspective(torch.tensor([60.0]), 1.0, near, far)[0].double()
    cam = torch.tensor([[-1.0, -0.6, -3.0], [1.2, -0.5, -2.0], [0.1, 0.4, 1.5]], dtype=torch.float64)  # last behind
    clip = torch.cat([cam, torch.ones(3, 1, dtype=torch.float64)], -1) @ P.T
    H = W = 32
    rast, _ = rasterize(clip.float()[None], TRI, (H, W))
    # Ray casting in camera space (Moller-Trumbore), hits with depth in [near, far].
    f = 1 / math.tan(math.radians(30))
    p = pixel_centres(H, W)
    d = torch.stack([p[..., 0] / f, p[..., 1] / f, -torch.ones(H, W, dtype=torch.float64)], -1)
    e1, e2 = cam[1] - cam[0], cam[2] - cam[0]
    pv = torch.cross(d, e2.expand_as(d), dim=-1)
    det = (pv * e1).sum(-1)
    tv = -cam[0]
    uu = (pv * tv).sum(-1) / det
    qv = torch.cross(tv.expand_as(d), e1.expand_as(d), dim=-1)
    vv = (qv * d).sum(-1) / det
    t = (qv * e2).sum(-1) / det  # depth along -z (d has z = -1)
    hit = (uu >= 0) & (vv >= 0) & (uu + vv <= 1) & (t >= near) & (t <= far)
    assert hit.sum() > 20
    got = rast[0, ..., 3] > 0
    assert (got != hit).sum() <= 2  # at most a couple of pixel centres within rounding of an edge
    assert torch.isfinite(rast).all()


def test_behind_camera_and_degenerate_triangles_are_skipped():
    behind = clip_tri((-0.5, -0.5, 0, -1), (0.5, -0.5, 0, -1), (0, 0.5, 0, -1))
    rast, _ = rasterize(behind, TRI, (8, 8))
    assert torch.all(rast == 0)
    pos = torch.tensor([[-0.5, -0.5, 0, 1], [0.5, 0.5, 0, 1], [0.0, 0.0, 0, 1], [0.9, 0.9, 0, 1]],
                       dtype=torch.float32)[None]
    tri = torch.tensor([[0, 1, 2], [0, 0, 3], [1, 3, 3]])  # collinear, and two with repeated vertices
    rast, db = rasterize(pos, tri, (16, 16), with_db=True)
    assert torch.all(rast == 0) and torch.isfinite(db).all()


def test_bad_input_errors():
    good = clip_tri((-0.5, -0.5, 0, 1), (0.5, -0.5, 0, 1), (0, 0.5, 0, 1))
    nan = good.clone()
    nan[0, 1, 0] = float("nan")
    with pytest.raises(RenderError, match="`pos` contains 1 NaN"):
        rasterize(nan, TRI, (8, 8))
    with pytest.raises(RenderError, match=r"\(B, V, 4\)"):
        rasterize(good[0], TRI, (8, 8))
    with pytest.raises(RenderError, match="float32"):
        rasterize(good.half(), TRI, (8, 8))
    with pytest.raises(RenderError, match="integer"):
        rasterize(good, TRI.float(), (8, 8))
    with pytest.raises(RenderError, match=r"outside \[0, 2\]"):
        rasterize(good, torch.tensor([[0, 1, 3]]), (8, 8))
    with pytest.raises(RenderError, match=r"\(F, 3\)"):
        rasterize(good, torch.tensor([0, 1, 2]), (8, 8))
    with pytest.raises(RenderError, match="resolution"):
        rasterize(good, TRI, (0, 8))
    with pytest.raises(RenderError, match="resolution"):
        rasterize(good, TRI, 8)
    with pytest.raises(RenderError, match="torch.Tensor"):
        rasterize(good.numpy(), TRI, (8, 8))
