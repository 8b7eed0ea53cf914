"""Pure-PyTorch triangle rasterizer (the ``"torch"`` backend of :func:`~.ops.rasterize`).

Output format is nvdiffrast's: ``rast`` (B, H, W, 4) = (u, v, z/w, triangle_id + 1), 0 where no
triangle covers the pixel, with (u, v) the **perspective-correct** barycentrics of vertices 0 and 1
(vertex 2 gets 1 - u - v). Image row 0 is the **top** of the image (NDC y = +1); pixel (row r,
column c) has its centre at NDC ``x = (2c + 1) / W - 1``, ``y = 1 - (2r + 1) / H``.

Every triangle gets three linear edge functions ``e_i(p) = A_i px + B_i py + C_i`` of the NDC pixel
centre ``p`` and a linear depth ``z/w = Za px + Zb py + Zc``; a pixel is covered when all ``e_i >= 0``,
their sum is positive and ``-1 <= z/w <= 1`` (near/far clipping per pixel).

* Triangles with all vertices in front of the near plane (``z >= -w``, ``w > 0``): screen-space edge
  functions of the projected vertices in float32. A shared edge gets exactly negated coefficients in
  its two triangles, so meshes are watertight (a pixel centre on a shared edge goes to one of them
  through the z-test; ties go to the lower face id).
* Triangles crossing the near plane: 2D homogeneous rasterization (Olano & Greer 1997) in float64,
  ``e_i(p) = (h_j x h_k) . (px, py, 1)`` with ``h = (x, y, w)``; the per-pixel near test clips them
  exactly (the visible part is drawn), no triangle splitting needed.
* Skipped: triangles entirely behind the near plane or beyond the far plane, zero-area (degenerate or
  edge-on) triangles. Culling is off: back faces are drawn (as nvdiffrast).

Pass 1 (no autograd) finds the nearest face per pixel. Faces are binned by screen bounding-box size:
boxes of at most 1, 2, 4 or 8 pixel centres per side test all s x s candidates of a face at once
(broadcast, no per-pair coefficient gathers); larger boxes enumerate their (face, pixel) pairs in
chunks of at most ``pair_budget`` pairs, so memory stays bounded for screen-filling triangles. The
z-test is one ``scatter_reduce(amin)`` on int64 keys ``(quantised z/w << 32) | face``.
Pass 2 (autograd) recomputes, for each covered pixel's face, the perspective-correct barycentrics and
z/w from ``pos`` with differentiable ops, so gradients flow from ``rast`` into ``pos`` as with
nvdiffrast's rasterize backward.

Cost: pass 1 is O(B*F + sum of bounding-box areas); pass 2 is O(B*H*W).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["rasterize_torch", "project_vertices", "DEFAULT_PAIR_BUDGET"]

#: Max (face, pixel) candidates processed at once (~60 bytes each).
DEFAULT_PAIR_BUDGET = 1 << 20
_EMPTY_KEY = torch.iinfo(torch.int64).max
_DEPTH_SCALE = float(1 << 29)  # z/w + 1 in [0, 2] -> [0, 2^30): fits int64 after << 32
_W_EPS = 1e-8  # vertices need w > _W_EPS (and z >= -w) to take the screen-space path
_DEGENERATE = 1e-7  # |2 * area| <= _DEGENERATE * (sum of squared edge lengths): zero-area triangle
_MAX_FACES = 1 << 24  # triangle ids are stored as float32 in rast (exact up to 2^24)
_TIERS = (1, 2, 4, 8)


def project_vertices(pos: torch.Tensor):
    """Perspective division. pos (B, V, 4) -> X, Y, Zn (B, V) NDC, front (B, V) bool (in front of near).

    X, Y, Zn are 0 for vertices that are not in front. Differentiable.
    """
    w = pos[..., 3]
    front = (w > _W_EPS) & (pos[..., 2] >= -w)
    inv = torch.where(front, 1.0 / torch.where(front, w, torch.ones_like(w)), torch.zeros_like(w))
    return pos[..., 0] * inv, pos[..., 1] * inv, pos[..., 2] * inv, front


def _screen_setup(X, Y, Z):
    """Edge / depth coefficients of projected triangles. X, Y, Z: (N, 3) -> coef (N, 12), area2 (N,), scale (N,)."""
    X0, X1, X2 = X.unbind(-1)
    Y0, Y1, Y2 = Y.unbind(-1)
    Z0, Z1, Z2 = Z.unbind(-1)
    # Edge i runs from vertex j = i+1 to k = i+2: A = Yj - Yk, B = Xk - Xj, C = Xj Yk - Xk Yj.
    A = torch.stack([Y1 - Y2, Y2 - Y0, Y0 - Y1], -1)
    Bc = torch.stack([X2 - X1, X0 - X2, X1 - X0], -1)
    C = torch.stack([X1 * Y2 - X2 * Y1, X2 * Y0 - X0 * Y2, X0 * Y1 - X1 * Y0], -1)
    ex1, ey1, ex2, ey2 = X1 - X0, Y1 - Y0, X2 - X0, Y2 - Y0
    area2 = ex1 * ey2 - ey1 * ex2
    scale = ex1 * ex1 + ey1 * ey1 + ex2 * ex2 + ey2 * ey2
    safe = torch.where(area2 == 0, torch.ones_like(area2), area2)
    dz1, dz2 = Z1 - Z0, Z2 - Z0
    Za = (A[:, 1] * dz1 + A[:, 2] * dz2) / safe
    Zb = (Bc[:, 1] * dz1 + Bc[:, 2] * dz2) / safe
    Zc = Z0 - Za * X0 - Zb * Y0
    sgn = torch.where(area2 < 0, -1.0, 1.0).to(X.dtype)[:, None]
    coef = torch.cat([A * sgn, Bc * sgn, C * sgn, torch.stack([Za, Zb, Zc], -1)], -1)
    return coef, area2, scale


def homogeneous_setup(cv: torch.Tensor):
    """Homogeneous edge / depth coefficients. cv (N, 3, 4) clip vertices -> coef (N, 12), det (N,), scale (N,).

    coef = (A0, A1, A2, B0, B1, B2, C0, C1, C2, Za, Zb, Zc) with the sign folded so that inside means
    all e_i >= 0 and sum(e_i) > 0. Differentiable.
    """
    h = cv[..., [0, 1, 3]]
    h0, h1, h2 = h.unbind(-2)
    E = torch.stack([torch.cross(h1, h2, dim=-1), torch.cross(h2, h0, dim=-1), torch.cross(h0, h1, dim=-1)], -2)
    det = (h0 * E[:, 0]).sum(-1)
    sgn = torch.where(det < 0, -1.0, 1.0).to(cv.dtype)
    E = E * sgn[:, None, None]
    Z = (cv[..., 2, None] * E).sum(-2) / det.abs().clamp_min(torch.finfo(cv.dtype).tiny)[:, None]
    scale = h.norm(dim=-1).prod(-1)
    coef = torch.cat([E[..., 0], E[..., 1], E[..., 2], Z], -1)
    return coef, det, scale


def _clipped_ranges(cv: torch.Tensor, H: int, W: int):
    """Pixel ranges of triangles clipped against the near plane. cv (N, 3, 4) float64 -> fx/fr bounds (N,) x 4."""
    d = cv[..., 2] + cv[..., 3]
    inside = d >= 0
    pts, ok = [cv[:, i] for i in range(3)], [inside[:, i] for i in range(3)]
    for i, j in ((0, 1), (1, 2), (2, 0)):
        cross = inside[:, i] != inside[:, j]
        den = torch.where(cross, d[:, i] - d[:, j], torch.ones_like(d[:, i]))
        pts.append(cv[:, i] + (d[:, i] / den)[:, None] * (cv[:, j] - cv[:, i]))
        ok.append(cross)
    P, valid = torch.stack(pts, 1), torch.stack(ok, 1)
    w = P[..., 3]
    tiny = (valid & (w <= 1e-12)).any(1)  # unusual projections: fall back to the whole screen
    sw = torch.where(valid & (w > 1e-12), w, torch.ones_like(w))
    fx = (P[..., 0] / sw + 1) * (W / 2) - 0.5
    fr = (1 - P[..., 1] / sw) * (H / 2) - 0.5
    inf = torch.full_like(fx, float("inf"))
    lo_x = torch.where(valid, fx, inf).amin(1)
    hi_x = torch.where(valid, fx, -inf).amax(1)
    lo_r = torch.where(valid, fr, inf).amin(1)
    hi_r = torch.where(valid, fr, -inf).amax(1)
    lo_x = torch.where(tiny, torch.zeros_like(lo_x), lo_x)
    lo_r = torch.where(tiny, torch.zeros_like(lo_r), lo_r)
    hi_x = torch.where(tiny, torch.full_like(hi_x, W - 1.0), hi_x)
    hi_r = torch.where(tiny, torch.full_like(hi_r, H - 1.0), hi_r)
    return lo_x, hi_x, lo_r, hi_r


def _index_ranges(lo_x, hi_x, lo_r, hi_r, H: int, W: int):
    """Continuous pixel-centre bounds -> inclusive int ranges clamped to the image."""
    m = 1e-3  # keep pixel centres lying on a bounding-box side (the edge test decides)
    c0 = torch.ceil(lo_x.clamp(-2, W + 1) - m).to(torch.int64).clamp_min(0)
    c1 = torch.floor(hi_x.clamp(-2, W + 1) + m).to(torch.int64).clamp_max(W - 1)
    r0 = torch.ceil(lo_r.clamp(-2, H + 1) - m).to(torch.int64).clamp_min(0)
    r1 = torch.floor(hi_r.clamp(-2, H + 1) + m).to(torch.int64).clamp_max(H - 1)
    return c0, c1, r0, r1


def _hits(coef, px, py):
    """Coverage and depth of candidates. coef (M, 12) or (M, 1, 12) broadcast with px, py -> (hit, z/w)."""
    c = coef.unbind(-1)
    e0 = c[0] * px + c[3] * py + c[6]
    e1 = c[1] * px + c[4] * py + c[7]
    e2 = c[2] * px + c[5] * py + c[8]
    zw = c[9] * px + c[10] * py + c[11]
    hit = (e0 >= 0) & (e1 >= 0) & (e2 >= 0) & (e0 + e1 + e2 > 0) & (zw >= -1) & (zw <= 1)
    return hit, zw


def _depth_keys(zw: torch.Tensor, fid: torch.Tensor) -> torch.Tensor:
    """int64 keys ordering by depth, then by face id."""
    return (((zw + 1.0) * _DEPTH_SCALE).to(torch.int64) << 32) | fid


class _Boxes(NamedTuple):
    """The K screen triangles that can cover a pixel centre, one per (view, face) instance.

    coef: (K, 12) edge and depth coefficients; c0, r0: (K,) first column / row of the box of pixel
    centres; bw, bh: (K,) its width / height; base: (K,) flat offset of the view's image in
    B * H * W; fid: (K,) face index.
    """

    coef: torch.Tensor
    c0: torch.Tensor
    r0: torch.Tensor
    bw: torch.Tensor
    bh: torch.Tensor
    base: torch.Tensor
    fid: torch.Tensor


@torch.no_grad()
def _visible_faces(pos: torch.Tensor, tri: torch.Tensor, H: int, W: int, pair_budget: int) -> torch.Tensor:
    """Pass 1: (B * H * W,) int64 index of the nearest covering face, -1 where empty.

    pos: (B, V, 4) clip positions; tri: (F, 3) int64 faces.
    """
    B, F = pos.shape[0], tri.shape[0]
    dev = pos.device
    inst, coef, c0, c1, r0, r1 = _candidate_triangles(pos, tri, H, W)
    zbuf = torch.full((B * H * W,), _EMPTY_KEY, dtype=torch.int64, device=dev)
    if inst.numel() == 0:
        return torch.full((B * H * W,), -1, dtype=torch.int64, device=dev)
    boxes = _Boxes(coef, c0, r0, c1 - c0 + 1, r1 - r0 + 1, (inst // F) * (H * W), inst % F)
    size = torch.maximum(boxes.bw, boxes.bh)
    _splat_small_boxes(zbuf, boxes, size, H, W, pair_budget)
    big = torch.nonzero(size > _TIERS[-1]).squeeze(1)
    if big.numel():
        _splat_large_boxes(zbuf, boxes, big, H, W, pair_budget)
    return torch.where(zbuf == _EMPTY_KEY, -1, zbuf & 0xFFFFFFFF)


def _candidate_triangles(pos: torch.Tensor, tri: torch.Tensor, H: int, W: int):
    """``(inst, coef, c0, c1, r0, r1)`` of the (view, face) instances that may cover a pixel centre.

    pos: (B, V, 4) clip positions; tri: (F, 3). ``inst`` (K,) = view * F + face; ``coef`` (K, 12) float32
    edge/depth coefficients; ``c0..c1``, ``r0..r1`` (K,) the inclusive column / row ranges of pixel
    centres in each bounding box. Triangles with all vertices in front are set up in screen space
    (bounding boxes first, setup only for boxes that hold a pixel centre); triangles crossing the near
    plane (rare) get a homogeneous setup in float64 and come last.
    """
    F = tri.shape[0]
    X, Y, Zn, front = project_vertices(pos.float())
    tflat = tri.reshape(-1)
    nfront = front.index_select(1, tflat).view(pos.shape[0], F, 3).sum(-1).reshape(-1)  # (B*F,)

    Xf, Yf = X.index_select(1, tflat).view(-1, 3), Y.index_select(1, tflat).view(-1, 3)
    fx = Xf * (W / 2) + (W / 2 - 0.5)
    fr = Yf * (-H / 2) + (H / 2 - 0.5)
    c0, c1, r0, r1 = _index_ranges(fx.amin(1), fx.amax(1), fr.amin(1), fr.amax(1), H, W)
    inst = torch.nonzero((nfront == 3) & (c1 >= c0) & (r1 >= r0)).squeeze(1)
    Zf = Zn.reshape(-1)[(torch.div(inst, F, rounding_mode="floor") * Zn.shape[1])[:, None] + tri[inst % F]]
    coef, area2, scale = _screen_setup(Xf[inst], Yf[inst], Zf)
    keep = torch.nonzero((area2.abs() > _DEGENERATE * scale) & (Zf.amin(1) <= 1)).squeeze(1)
    inst, coef = inst[keep], coef[keep]
    c0, c1, r0, r1 = c0[inst], c1[inst], r0[inst], r1[inst]

    clip = torch.nonzero((nfront > 0) & (nfront < 3)).squeeze(1)
    if clip.numel():
        b_c, f_c = clip // F, clip % F
        cv = pos.double()[b_c[:, None], tri[f_c]]
        hcoef, det, hscale = homogeneous_setup(cv)
        hc0, hc1, hr0, hr1 = _index_ranges(*_clipped_ranges(cv, H, W), H, W)
        ok = torch.nonzero((det.abs() > 1e-12 * hscale) & (hc1 >= hc0) & (hr1 >= hr0)).squeeze(1)
        inst = torch.cat([inst, clip[ok]])
        coef = torch.cat([coef, hcoef[ok].float()])
        c0, c1, r0, r1 = (torch.cat([a, b[ok]]) for a, b in ((c0, hc0), (c1, hc1), (r0, hr0), (r1, hr1)))
    return inst, coef, c0, c1, r0, r1


def _splat_small_boxes(zbuf: torch.Tensor, boxes: _Boxes, size: torch.Tensor, H: int, W: int,
                       pair_budget: int) -> None:
    """z-test into ``zbuf`` (B * H * W,) int64 keys every box of at most s x s pixel centres
    (s in ``_TIERS``), all s * s candidates of a face at once. ``size`` (K,) = max(bw, bh)."""
    dev = zbuf.device
    sx, sy = 2.0 / W, 2.0 / H
    lo = 0
    for s in _TIERS:
        sel = torch.nonzero((size > lo) & (size <= s)).squeeze(1)
        lo = s
        if sel.numel() == 0:
            continue
        jx = torch.arange(s, device=dev).repeat(s)
        jy = torch.arange(s, device=dev).repeat_interleave(s)
        step = max(1, pair_budget // (s * s))
        for a in range(0, sel.numel(), step):
            idx = sel[a:a + step]
            col = boxes.c0[idx, None] + jx
            row = boxes.r0[idx, None] + jy
            valid = (jx < boxes.bw[idx, None]) & (jy < boxes.bh[idx, None])
            px = col.to(torch.float32) * sx + (sx * 0.5 - 1.0)
            py = (1.0 - sy * 0.5) - row.to(torch.float32) * sy
            hit, zw = _hits(boxes.coef[idx, None, :], px, py)
            hit &= valid
            fi, ci = torch.nonzero(hit, as_tuple=True)
            g = idx[fi]
            pix = boxes.base[g] + row[fi, ci] * W + col[fi, ci]
            zbuf.scatter_reduce_(0, pix, _depth_keys(zw[fi, ci], boxes.fid[g]), reduce="amin")


def _splat_large_boxes(zbuf: torch.Tensor, boxes: _Boxes, big: torch.Tensor, H: int, W: int,
                       pair_budget: int) -> None:
    """z-test into ``zbuf`` (B * H * W,) the boxes ``big`` (indices into ``boxes``, larger than the last
    tier), enumerating their (face, pixel) pairs in chunks of at most ``pair_budget``."""
    dev = zbuf.device
    sx, sy = 2.0 / W, 2.0 / H
    n = boxes.bw[big] * boxes.bh[big]
    cum = torch.cumsum(n, 0)
    start = cum - n
    total = int(cum[-1])
    for s in range(0, total, pair_budget):
        e = min(total, s + pair_budget)
        i0 = int(torch.searchsorted(cum, torch.tensor(s, device=dev), right=True))
        i1 = int(torch.searchsorted(cum, torch.tensor(e - 1, device=dev), right=True))
        ids = torch.arange(i0, i1 + 1, device=dev)
        cnt = cum[ids].clamp_max(e) - start[ids].clamp_min(s)
        k = torch.repeat_interleave(ids, cnt, output_size=e - s)
        local = torch.arange(s, e, device=dev) - start[k]
        g = big[k]
        w_k = boxes.bw[g]
        dr = torch.div(local, w_k, rounding_mode="floor")
        col = boxes.c0[g] + (local - dr * w_k)
        row = boxes.r0[g] + dr
        px = col.to(torch.float32) * sx + (sx * 0.5 - 1.0)
        py = (1.0 - sy * 0.5) - row.to(torch.float32) * sy
        hit, zw = _hits(boxes.coef[g], px, py)
        sel = torch.nonzero(hit).squeeze(1)
        g = g[sel]
        pix = boxes.base[g] + row[sel] * W + col[sel]
        zbuf.scatter_reduce_(0, pix, _depth_keys(zw[sel], boxes.fid[g]), reduce="amin")


def _pixel_ndc(H: int, W: int, device, dtype):
    """(H*W,) NDC x and y of pixel centres (row 0 = top)."""
    xs = (2 * torch.arange(W, device=device, dtype=dtype) + 1) / W - 1
    ys = 1 - (2 * torch.arange(H, device=device, dtype=dtype) + 1) / H
    return xs.repeat(H), ys.repeat_interleave(W)


def _bary_screen(cv: torch.Tensor, px: torch.Tensor, py: torch.Tensor, with_db: bool, H: int, W: int):
    """Differentiable perspective-correct barycentrics for triangles in front of the camera.

    cv (P, 3, 4); px, py (P,). Returns bary (P, 3), z/w (P,), db (P, 4) or None.
    """
    w = cv[..., 3]
    X, Y, Zn = cv[..., 0] / w, cv[..., 1] / w, cv[..., 2] / w
    X0, X1, X2 = X.unbind(-1)
    Y0, Y1, Y2 = Y.unbind(-1)
    e = torch.stack([(X2 - X1) * (py - Y1) - (Y2 - Y1) * (px - X1),
                     (X0 - X2) * (py - Y2) - (Y0 - Y2) * (px - X2),
                     (X1 - X0) * (py - Y0) - (Y1 - Y0) * (px - X0)], -1)
    area2 = (X1 - X0) * (Y2 - Y0) - (Y1 - Y0) * (X2 - X0)
    b = e / area2[:, None]  # screen-space barycentrics
    zw = (b * Zn).sum(-1)
    q = b / w
    sq = q.sum(-1, keepdim=True)
    bary = q / sq
    db = None
    if with_db:
        # d b_i / d px = A_i / area2, d b_i / d py = B_i / area2 (NDC); NDC -> pixels: 2/W and -2/H.
        dbx = torch.stack([Y1 - Y2, Y2 - Y0, Y0 - Y1], -1) / area2[:, None] / w
        dby = torch.stack([X2 - X1, X0 - X2, X1 - X0], -1) / area2[:, None] / w
        gx = (dbx * sq - q * dbx.sum(-1, keepdim=True)) / (sq * sq) * (2.0 / W)
        gy = (dby * sq - q * dby.sum(-1, keepdim=True)) / (sq * sq) * (-2.0 / H)
        db = torch.stack([gx[:, 0], gy[:, 0], gx[:, 1], gy[:, 1]], -1)
    return bary, zw, db


def _bary_homogeneous(cv: torch.Tensor, px: torch.Tensor, py: torch.Tensor, with_db: bool, H: int, W: int):
    """Differentiable barycentrics of triangles crossing the near plane (2D homogeneous form)."""
    coef, _, _ = homogeneous_setup(cv)
    A, Bc, C, Z = coef[:, 0:3], coef[:, 3:6], coef[:, 6:9], coef[:, 9:12]
    e = A * px[:, None] + Bc * py[:, None] + C
    s = e.sum(-1, keepdim=True)
    bary = e / s
    zw = Z[:, 0] * px + Z[:, 1] * py + Z[:, 2]
    db = None
    if with_db:
        gx = (A * s - e * A.sum(-1, keepdim=True)) / (s * s) * (2.0 / W)
        gy = (Bc * s - e * Bc.sum(-1, keepdim=True)) / (s * s) * (-2.0 / H)
        db = torch.stack([gx[:, 0], gy[:, 0], gx[:, 1], gy[:, 1]], -1)
    return bary, zw, db


def rasterize_torch(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int], with_db: bool = False,
                    pair_budget: int = DEFAULT_PAIR_BUDGET):
    """Rasterize on any device with plain PyTorch ops (inputs already validated).

    Args:
        pos: (B, V, 4) float32/float64 clip-space positions. tri: (F, 3) int64.
        resolution: (H, W). with_db: also return ``rast_db`` (B, H, W, 4) =
            (du/dX, du/dY, dv/dX, dv/dY) per pixel, X = column (right), Y = row (down).
        pair_budget: max candidate (face, pixel) pairs per chunk (memory bound).
    Returns:
        ``(rast, rast_db or None)``; ``rast`` (B, H, W, 4) in ``pos.dtype``, differentiable in (u, v, z/w)
        with respect to ``pos``; channel 3 holds triangle id + 1 (0 = empty) without gradient.
    """
    H, W = resolution
    B, F = pos.shape[0], tri.shape[0]
    if F >= _MAX_FACES:
        raise ValueError(f"The torch rasterizer supports fewer than {_MAX_FACES} triangles; got {F}.")
    face = _visible_faces(pos, tri, H, W, max(1, int(pair_budget)))
    flat = torch.nonzero(face >= 0).squeeze(1)  # covered pixels, flat over B*H*W
    fid = face[flat]
    b = torch.div(flat, H * W, rounding_mode="floor")
    pix = flat - b * (H * W)
    xs, ys = _pixel_ndc(H, W, pos.device, pos.dtype)
    px, py = xs[pix], ys[pix]
    corners = tri.index_select(0, fid)
    V = pos.shape[1]
    cv = pos.reshape(B * V, 4).index_select(0, (corners + (b * V)[:, None]).reshape(-1)).view(-1, 3, 4)
    w = cv[..., 3].detach()
    near_ok = ((w > _W_EPS) & (cv[..., 2].detach() >= -w)).all(-1)
    if bool(near_ok.all()):
        bary, zw, db = _bary_screen(cv, px, py, with_db, H, W)
    else:
        i_s, i_h = torch.nonzero(near_ok).squeeze(1), torch.nonzero(~near_ok).squeeze(1)
        parts = [_bary_screen(cv[i_s], px[i_s], py[i_s], with_db, H, W),
                 _bary_homogeneous(cv[i_h], px[i_h], py[i_h], with_db, H, W)]
        order = torch.cat([i_s, i_h])
        inv = torch.empty_like(order)
        inv[order] = torch.arange(order.numel(), device=order.device)
        bary = torch.cat([parts[0][0], parts[1][0]])[inv]
        zw = torch.cat([parts[0][1], parts[1][1]])[inv]
        db = torch.cat([parts[0][2], parts[1][2]])[inv] if with_db else None
    vals = torch.stack([bary[:, 0], bary[:, 1], zw, (fid + 1).to(pos.dtype)], -1)
    rast = pos.new_zeros(B * H * W, 4).index_put((flat,), vals).view(B, H, W, 4)
    rast_db = pos.new_zeros(B * H * W, 4).index_put((flat,), db).view(B, H, W, 4) if with_db else None
    return rast, rast_db
