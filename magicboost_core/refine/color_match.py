"""Colour calibration of the coarse mesh to its condition views, before refining.

Coarse generators (and texture baking) often get an object's colours wrong *globally*: dulled
saturation, a tone curve, a tint. Refinement fixes colours where the condition views see the surface,
but tops, bottoms and hollows no view sees would keep the wrong colours and meet the corrected ones at
a visible border. So first one affine colour map ``c' = W^T [c, 1]`` (4 x 3) is fitted by least squares
from the coarse mesh's own albedo renders at the condition poses to the condition images, over pixels
well inside both silhouettes, with a ridge pull toward the identity map (so few or flat pixels cannot
produce a wild map), and applied to every colour of the mesh (texture texels or vertex colours).

It is kept only when it explains at least ``min_gain`` (half) of the photometric error at the condition
views: a smaller gain means the difference is not a global colour shift (misregistered or blurred
detail) and the map would only extrapolate wrongly to colours the views do not show (measured: an
airplane whose views are mostly its red-and-white fuselage got orange and dark-blue wings from a map
that removed 39 % of the error; the crate, insect and nut, dulled globally, lose 80-85 %). Otherwise
the colours are left untouched and the log says why.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..geometry.mesh import Mesh

__all__ = ["fit_color_map", "apply_color_map", "match_colors_to_views"]


def fit_color_map(source: torch.Tensor, target: torch.Tensor, ridge: float = 1e-2) -> torch.Tensor:
    """(4, 3) affine map minimising ``|[s, 1] W - t|^2 + ridge * N * |W - I|^2`` for (N, 3) colour pairs
    (dtype/device of ``source``)."""
    X = torch.cat([source, torch.ones_like(source[:, :1])], 1).double()
    Y = target.double().to(X.device)
    eye = torch.zeros(4, 3, dtype=X.dtype, device=X.device)
    eye[:3] = torch.eye(3, dtype=X.dtype, device=X.device)
    lam = ridge * X.shape[0]
    A = X.T @ X + lam * torch.eye(4, dtype=X.dtype, device=X.device)
    W = torch.linalg.solve(A, X.T @ Y + lam * eye)
    return W.to(source.dtype)


def apply_color_map(colors: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """(..., 3) colours mapped by the (4, 3) affine map, clamped to [0, 1]."""
    flat = colors.reshape(-1, 3)
    out = torch.cat([flat, torch.ones_like(flat[:, :1])], 1) @ W.to(flat)
    return out.clamp(0, 1).reshape(colors.shape)


def _interior(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """(A, H, W, 1) masks eroded by ``pixels`` (min-pool)."""
    if pixels <= 0:
        return mask
    m = mask.permute(0, 3, 1, 2)
    m = -F.max_pool2d(-m, 2 * pixels + 1, stride=1, padding=pixels)
    return m.permute(0, 2, 3, 1)


@torch.no_grad()
def match_colors_to_views(mesh: Mesh, cameras, images: torch.Tensor, masks: torch.Tensor, *, erode: int = 2,
                          ridge: float = 1e-2, min_gain: float = 0.5, min_pixels: int = 200,
                          log: list | None = None) -> Mesh:
    """``mesh`` with its colours (texture, else vertex colours) calibrated to the views (module docstring).

    Args:
        mesh: in the cameras' frame, with a texture or vertex colours; cameras: A views at the images' size;
        images: (A, H, W, 3) on white; masks: (A, H, W, 1) in {0, 1}.
    """
    from ..render.renderer import render

    log = log if log is not None else []
    if not mesh.has_texture and mesh.vertex_colors is None:
        return mesh
    out = render(mesh, cameras, mode="albedo", background=1.0, antialias=False)
    both = _interior((out.alpha > 0.99).float(), erode) * _interior((masks > 0.5).float(), erode)
    sel = both[..., 0] > 0.5
    if int(sel.sum()) < min_pixels:
        log.append("colour calibration skipped: too few pixels inside both the mesh's and the views' silhouettes.")
        return mesh
    src, dst = out.rgb[sel].float(), images[sel].float()
    W = fit_color_map(src, dst, ridge)
    before = float((src - dst).pow(2).mean())
    after = float((apply_color_map(src, W) - dst).pow(2).mean())
    if before < 1e-5 or after > (1 - min_gain) * before:
        log.append(f"colour calibration skipped: it would lower the condition-view colour error only from "
                   f"{before:.5f} to {after:.5f}.")
        return mesh
    if mesh.has_texture:
        tex = mesh.texture
        new = mesh.replace(texture=torch.cat([apply_color_map(tex[..., :3], W), tex[..., 3:]], -1).contiguous())
    else:
        vc = mesh.vertex_colors
        new = mesh.replace(vertex_colors=torch.cat([apply_color_map(vc[:, :3], W), vc[:, 3:]], -1).contiguous())
    log.append(f"colour calibration: the coarse colours were mapped to the views' colours (affine, fitted on "
               f"{int(sel.sum())} pixels; condition-view colour error {before:.5f} -> {after:.5f}).")
    return new
