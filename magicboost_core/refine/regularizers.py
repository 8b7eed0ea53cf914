"""Geometry regularisers for mesh refinement.

* :func:`orientation_loss` — the official one (reference §5.2, threestudio ``orient``): penalise
  rendered normals facing away from the camera, ``sum(sg(w) * max(0, n . d)^2) / #(w > 0)`` with ``w``
  the pixel coverage (alpha) and ``d`` the per-pixel viewing ray (camera -> surface).
* Mesh-only (no official counterpart; the NeRF had none): uniform Laplacian of the vertex offsets,
  normal consistency between faces sharing an edge, and a small offset-magnitude penalty.
"""
from __future__ import annotations

import torch

__all__ = ["uniform_laplacian", "apply_laplacian", "laplacian_loss", "face_adjacency", "normal_consistency_loss",
           "orientation_loss", "pixel_ray_directions", "offset_loss"]


def uniform_laplacian(faces: torch.Tensor, num_vertices: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The uniform Laplacian ``L = I - D^-1 A`` as (edges (E, 2) int64 directed, both directions;
    degree (V,) float32) over the deduplicated edge graph; apply with :func:`laplacian_loss`."""
    f = faces.long()
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 0)
    e = torch.unique(torch.cat([e, e.flip(1)], 0), dim=0)
    deg = torch.bincount(e[:, 0], minlength=num_vertices).float().clamp_min(1)
    return e, deg


def apply_laplacian(x: torch.Tensor, laplacian: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """(V, D) ``x - mean of neighbours``."""
    e, deg = laplacian
    nsum = torch.zeros_like(x).index_add(0, e[:, 0], x[e[:, 1]])
    return x - nsum / deg[:, None]


def laplacian_loss(x: torch.Tensor, laplacian) -> torch.Tensor:
    """mean over vertices of ||L x||^2 for x (V, 3)."""
    return apply_laplacian(x, laplacian).pow(2).sum(-1).mean()


def face_adjacency(faces: torch.Tensor) -> torch.Tensor:
    """(P, 2) int64 pairs of faces that share an edge (each interior edge once)."""
    f = faces.long()
    F = f.shape[0]
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 0).sort(1).values
    fid = torch.arange(F, device=f.device).repeat(3)
    key = e[:, 0] * (int(e.max()) + 1) + e[:, 1]
    order = torch.argsort(key, stable=True)
    k, fo = key[order], fid[order]
    same = k[1:] == k[:-1]
    pairs = torch.stack([fo[:-1][same], fo[1:][same]], 1)
    return pairs


def normal_consistency_loss(vertices: torch.Tensor, faces: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """mean(1 - cos(n_i, n_j)) over face pairs sharing an edge."""
    if pairs.numel() == 0:
        return vertices.sum() * 0
    v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
    n = torch.nn.functional.normalize(torch.cross(v1 - v0, v2 - v0, dim=-1), dim=-1, eps=1e-12)
    return (1 - (n[pairs[:, 0]] * n[pairs[:, 1]]).sum(-1)).mean()


def pixel_ray_directions(cameras) -> torch.Tensor:
    """(N, H, W, 3) float32 unit world-space ray directions through pixel centres (row 0 = top)."""
    H, W = cameras.height, cameras.width
    dev = cameras.c2w.device
    f = 0.5 * H / torch.tan(torch.deg2rad(cameras.fovy_deg.to(dev)) / 2)  # (N,)
    ys, xs = torch.meshgrid(torch.arange(H, device=dev, dtype=torch.float32) + 0.5,
                            torch.arange(W, device=dev, dtype=torch.float32) + 0.5, indexing="ij")
    x = (xs - W / 2)[None] / f[:, None, None]
    y = -(ys - H / 2)[None] / f[:, None, None]
    d = torch.stack([x, y, -torch.ones_like(x)], -1)  # OpenGL camera axes
    d = torch.einsum("nij,nhwj->nhwi", cameras.c2w[:, :3, :3], d)
    return torch.nn.functional.normalize(d, dim=-1)


def orientation_loss(normals: torch.Tensor, alpha: torch.Tensor, ray_dirs: torch.Tensor) -> torch.Tensor:
    """Official orientation penalty on (N, H, W, 3) world normals, (N, H, W, 1) alpha, (N, H, W, 3) rays."""
    w = alpha.detach()
    dot = (normals * ray_dirs).sum(-1, keepdim=True).clamp_min(0)
    count = (w > 0).sum().clamp_min(1)
    return (w * dot.pow(2)).sum() / count


def offset_loss(offsets: torch.Tensor) -> torch.Tensor:
    return offsets.pow(2).sum(-1).mean()
