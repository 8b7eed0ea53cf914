"""Which parts of a mesh the condition views constrain: per-vertex visibility weights in [0, 1].

A surface point is *constrained* when at least one condition view sees it from the front: its face
is the nearest surface at some pixel of that view and the face's normal points toward the camera.
The weight of a face is ``max over views of seen * ramp(cos)``, with ``cos`` the cosine between the
face normal and the direction to the camera and ``ramp`` rising linearly from 0 at ``cos_min`` to 1
at ``cos_full`` (grazing surfaces are barely constrained by the images: their depth is free). A
vertex takes the largest weight of its faces; a few averaging passes over the edges, which may only lower
a weight, turn the binary frontier into a ramp on the seen side (unseen vertices stay exactly 0) so that
the refined surface stays continuous.

The refinement multiplies the geometry offsets by this weight: where no view looks, the coarse mesh is
the prior and stays in place (no term, neither SDS nor a silhouette, can move it); see
:mod:`magicboost_core.refine.loop`.
"""
from __future__ import annotations

import torch

__all__ = ["face_visibility", "vertex_visibility"]


def face_visibility(vertices: torch.Tensor, faces: torch.Tensor, cameras, cos_min: float = 0.05,
                    cos_full: float = 0.35) -> torch.Tensor:
    """(F,) weights in [0, 1] (device/dtype of ``vertices``): how well the best condition view sees each face.

    Args:
        vertices: (V, 3) world positions; faces: (F, 3) int64; cameras: N :class:`Cameras` (their resolution
        sets the visibility test's resolution; faces smaller than a pixel may be missed).
    """
    from ..geometry.mesh import Mesh
    from ..render.renderer import render

    v = vertices.detach()
    f = faces.long()
    with torch.no_grad():
        out = render(Mesh(vertices=v, faces=f), cameras.to(v.device), mode="albedo", antialias=False)
    tri = out.rast[..., 3].long() - 1  # (N, H, W); -1 = empty
    v0, v1, v2 = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    normal = torch.nn.functional.normalize(torch.cross(v1 - v0, v2 - v0, dim=-1), dim=-1, eps=1e-12)
    centroid = (v0 + v1 + v2) / 3
    cam_pos = cameras.position.to(v)
    weight = torch.zeros(f.shape[0], dtype=v.dtype, device=v.device)
    for i in range(tri.shape[0]):
        ids = tri[i][tri[i] >= 0]
        seen = torch.zeros_like(weight)
        seen[torch.unique(ids)] = 1.0
        to_cam = torch.nn.functional.normalize(cam_pos[i] - centroid, dim=-1)
        cos = (normal * to_cam).sum(-1)
        ramp = ((cos - cos_min) / max(cos_full - cos_min, 1e-6)).clamp(0, 1)
        weight = torch.maximum(weight, seen * ramp)
    return weight


def vertex_visibility(vertices: torch.Tensor, faces: torch.Tensor, cameras, smooth_iterations: int = 2,
                      **kw) -> torch.Tensor:
    """(V,) weights in [0, 1] (device/dtype of ``vertices``): the largest :func:`face_visibility` of each
    vertex's faces, then ``smooth_iterations`` passes of ``w <- min(w, (w + mean of neighbours) / 2)``."""
    f = faces.long()
    wf = face_visibility(vertices, f, cameras, **kw)
    V = vertices.shape[0]
    w = torch.zeros(V, dtype=wf.dtype, device=wf.device)
    w = w.scatter_reduce(0, f.reshape(-1), wf.repeat_interleave(3), reduce="amax", include_self=True)
    if smooth_iterations > 0:
        e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 0)
        e = torch.unique(torch.cat([e, e.flip(1)], 0), dim=0)
        deg = torch.bincount(e[:, 0], minlength=V).to(w).clamp_min(1)
        for _ in range(smooth_iterations):  # only lowers: unseen vertices stay exactly 0
            w = torch.minimum(w, 0.5 * w + 0.5 * torch.zeros_like(w).index_add(0, e[:, 0], w[e[:, 1]]) / deg)
    return w
