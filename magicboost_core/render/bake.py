"""Texture baking: vertex colours -> texture, and multi-view images -> texture.

Both rasterize the mesh in UV space: texel (row r, column c) of an (H, W) texture has its centre at
mesh uv ``((c + 0.5) / W, 1 - (r + 0.5) / H)`` (mesh uvs are v-up, texture row 0 = top), which is
exactly what :func:`~.renderer.render` samples. Texels covered by no UV triangle are filled by
dilation (``padding`` texels, so bilinear and mip-mapped lookups at chart borders do not bleed the
background) and then by a push-pull (pyramid) fill, so the result holds no undefined texels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as Fn

from ..geometry.camera import Cameras
from ..geometry.mesh import Mesh
from .checks import check_resolution
from .errors import RenderError
from .ops import interpolate, rasterize, texture

__all__ = ["bake_vertex_colors_to_texture", "bake_views_to_texture", "uv_raster", "dilate_texture", "push_pull_fill",
           "project_to_pixels"]


def project_to_pixels(cams: Cameras, pts: torch.Tensor, height: int, width: int):
    """Nearest pixel of world points in each camera.

    Args:
        cams: N cameras; pts: (K, 3) world points.
    Returns:
        ``(w, screen, row, col, inside)``: clip w (N, K) (view depth); continuous image coordinates (N, K, 2)
        in [0, 1] (x right, y down: ``(0, 0)`` = top-left corner) for bilinear sampling; nearest pixel row /
        col (N, K) int64 clamped into the image (row 0 at the top); (N, K) bool: in front of the camera and
        inside the image.
    """
    clip = cams.world_to_clip(pts)  # (N, K, 4)
    w = clip[..., 3]
    front = w > 1e-8
    ws = torch.where(front, w, torch.ones_like(w))
    x, y = clip[..., 0] / ws, clip[..., 1] / ws
    col = ((x + 1) * 0.5 * width - 0.5).round().long()
    row = ((1 - y) * 0.5 * height - 0.5).round().long()
    inside = front & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    screen = torch.stack([(x + 1) * 0.5, (1 - y) * 0.5], -1)
    return w, screen, row.clamp(0, height - 1), col.clamp(0, width - 1), inside


def _require_uvs(mesh: Mesh, what: str) -> None:
    if not isinstance(mesh, Mesh):
        raise RenderError(f"`mesh` must be a magicboost Mesh; got {type(mesh).__name__}.")
    if mesh.uvs is None:
        raise RenderError(f"{what} needs texture coordinates but the mesh has no uvs; "
                          "run magicboost_core.geometry.uv.unwrap_uv (xatlas) first.")


def uv_raster(mesh: Mesh, resolution, backend: str = "auto") -> torch.Tensor:
    """(1, H, W, 4) raster of the mesh's ``uv_faces`` in texture space (ids are face ids)."""
    _require_uvs(mesh, "UV rasterization")
    H, W = check_resolution(resolution, allow_int=True)
    uv = mesh.uvs
    pos = torch.stack([uv[:, 0] * 2 - 1, uv[:, 1] * 2 - 1, torch.zeros_like(uv[:, 0]), torch.ones_like(uv[:, 0])], -1)
    rast, _ = rasterize(pos[None].contiguous(), mesh.uv_faces, (H, W), backend=backend)
    return rast


def dilate_texture(tex: torch.Tensor, mask: torch.Tensor, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grow filled texels into empty ones by 3x3 averaging, ``iterations`` times.

    tex (H, W, C), mask (H, W) bool. Returns (tex, mask) updated.
    """
    t = (tex * mask[..., None]).permute(2, 0, 1)[None]
    m = mask[None, None].to(tex.dtype)
    k = torch.ones(1, 1, 3, 3, dtype=tex.dtype, device=tex.device)
    for _ in range(max(0, int(iterations))):
        cnt = Fn.conv2d(m, k, padding=1)
        s = Fn.conv2d(t, k.expand(t.shape[1], 1, 3, 3), padding=1, groups=t.shape[1])
        grow = (m == 0) & (cnt > 0)
        if not bool(grow.any()):
            break
        t = torch.where(grow, s / cnt.clamp_min(1), t)
        m = torch.where(grow, torch.ones_like(m), m)
    return t[0].permute(1, 2, 0), m[0, 0] > 0


def push_pull_fill(tex: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fill every empty texel from a mask-weighted image pyramid (smooth inpainting). tex (H, W, C), mask (H, W)."""
    if bool(mask.all()):
        return tex
    if not bool(mask.any()):
        return torch.zeros_like(tex)
    c = (tex * mask[..., None]).permute(2, 0, 1)[None]
    m = mask[None, None].to(tex.dtype)
    pyr = [(c, m)]
    while min(c.shape[-2:]) > 1:
        c = Fn.avg_pool2d(c, 2, ceil_mode=True)
        m = Fn.avg_pool2d(m, 2, ceil_mode=True)
        pyr.append((c, m))
    fill = None
    for c, m in reversed(pyr):
        val = c / m.clamp_min(1e-12)
        if fill is None:
            fill = torch.where(m > 0, val, torch.zeros_like(val))
        else:
            up = Fn.interpolate(fill, size=c.shape[-2:], mode="bilinear", align_corners=False)
            fill = torch.where(m > 0, val, up)
    out = fill[0].permute(1, 2, 0)
    return torch.where(mask[..., None], tex, out)


def _finish(tex: torch.Tensor, mask: torch.Tensor, padding: int) -> torch.Tensor:
    tex, grown = dilate_texture(tex, mask, padding)
    return push_pull_fill(tex, grown)


@torch.no_grad()
def bake_vertex_colors_to_texture(mesh: Mesh, resolution=1024, padding: int = 4, backend: str = "auto") -> torch.Tensor:
    """Bake the mesh's vertex colours into a texture for its uvs.

    Args:
        mesh: with ``uvs``/``uv_faces`` and ``vertex_colors`` (V, 3|4).
        resolution: int or (H, W). padding: texels of dilation around UV charts.
    Returns:
        (H, W, 3|4) float in [0, 1], row 0 = top (the :class:`Mesh` texture convention).
    """
    _require_uvs(mesh, "bake_vertex_colors_to_texture")
    if mesh.vertex_colors is None:
        raise RenderError("bake_vertex_colors_to_texture: the mesh has no vertex_colors to bake.")
    rast = uv_raster(mesh, resolution, backend)
    col = interpolate(mesh.vertex_colors, rast, mesh.faces, backend=backend)[0]
    mask = rast[0, ..., 3] > 0
    return _finish(col, mask, padding).clamp(0, 1)


@torch.no_grad()
def bake_views_to_texture(mesh: Mesh, cameras: Cameras, images: torch.Tensor, masks: torch.Tensor | None = None,
                          resolution=1024, initial: torch.Tensor | None = None, padding: int = 4,
                          depth_tolerance: float = 0.02, min_cos: float = 0.05, backend: str = "auto") -> torch.Tensor:
    """Project N views onto the mesh's texture (weighted by the cosine of the viewing angle).

    For each texel: its 3D point and normal come from the UV raster; in each view it counts when it
    projects inside the image, passes the depth test (``|depth - w| <= depth_tolerance * w`` against
    the view's rendered depth at the nearest pixel), lies inside ``masks`` and faces the camera
    (``cos > min_cos``). Its colour is the cos-weighted mean of the bilinear image samples.

    Args:
        mesh: with uvs. cameras: N cameras (resolution = the images').
        images: (N, H, W, 3) in [0, 1], row 0 = top. masks: (N, H, W) (or (N, H, W, 1)) foreground.
        resolution: int or (Ht, Wt) of the texture. initial: (h, w, 3) texture used where no view sees
            a texel (resampled to ``resolution`` when sizes differ); otherwise those texels are inpainted
            from their neighbours.
    Returns:
        (Ht, Wt, 3) texture in [0, 1], row 0 = top.
    """
    _require_uvs(mesh, "bake_views_to_texture")
    images, masks = _checked_views(mesh, cameras, images, masks)
    dev = mesh.device
    Ht, Wt = check_resolution(resolution, allow_int=True)
    cams = cameras.to(dev)

    rast_uv = uv_raster(mesh, (Ht, Wt), backend)
    covered = rast_uv[0, ..., 3] > 0
    idx = torch.nonzero(covered.reshape(-1)).squeeze(1)
    pts = interpolate(mesh.vertices, rast_uv, mesh.faces, backend=backend)[0].reshape(-1, 3)[idx]
    nrm = Fn.normalize(interpolate(mesh.normals(), rast_uv, mesh.faces, backend=backend)[0].reshape(-1, 3)[idx], dim=-1)

    weight, screen, inb = _view_weights(mesh, cams, pts, nrm, masks, depth_tolerance, min_cos, backend)
    uv = screen[:, :, None, :]  # (N, K, 1, 2)
    samples = texture(images, torch.where(inb[..., None, None], uv, torch.zeros_like(uv)), backend=backend)[:, :, 0]
    wsum = weight.sum(0)
    colour = (weight[..., None] * samples).sum(0) / wsum.clamp_min(1e-12)[:, None]
    seen = wsum > 0

    out = torch.zeros(Ht * Wt, 3, device=dev)
    known = torch.zeros(Ht * Wt, dtype=torch.bool, device=dev)
    out[idx] = colour
    known[idx] = seen
    out, known = out.view(Ht, Wt, 3), known.view(Ht, Wt)
    if initial is not None:
        out = torch.where(known[..., None], out, _initial_texture(initial, Ht, Wt, dev))
        return out.clamp(0, 1)
    # No fallback: inpaint unseen covered texels from seen ones, then pad the charts.
    out = push_pull_fill(out, known)
    return _finish(out, covered, padding).clamp(0, 1)


def _checked_views(mesh: Mesh, cameras, images, masks):
    """``(images (N, H, W, 3) float32, masks (N, H, W) float or None)`` on the mesh's device, checked
    against the N cameras of resolution H x W (masks may come as (N, H, W, 1))."""
    if not isinstance(cameras, Cameras):
        raise RenderError(f"`cameras` must be a magicboost Cameras batch; got {type(cameras).__name__}.")
    N, Hc, Wc = len(cameras), cameras.height, cameras.width
    dev = mesh.device
    if not isinstance(images, torch.Tensor) or images.shape != (N, Hc, Wc, 3):
        raise RenderError(f"`images` must have shape ({N}, {Hc}, {Wc}, 3) to match the cameras; got "
                          f"{getattr(images, 'shape', type(images).__name__)}.")
    images = images.to(dev, torch.float32)
    if masks is not None:
        masks = torch.as_tensor(masks, device=dev)
        if masks.ndim == 4 and masks.shape[-1] == 1:
            masks = masks[..., 0]
        if masks.shape != (N, Hc, Wc):
            raise RenderError(f"`masks` must have shape ({N}, {Hc}, {Wc}); got {tuple(masks.shape)}.")
        masks = masks.float()
    return images, masks


def _view_weights(mesh: Mesh, cams: Cameras, pts, nrm, masks, depth_tolerance: float, min_cos: float, backend):
    """``(weight (N, K), screen (N, K, 2), inside (N, K))`` for K texel points ``pts`` (K, 3) with unit
    normals ``nrm`` (K, 3): the cosine weight of each view (0 where the point is outside the image, fails
    the depth test against the view's rendered depth, lies outside ``masks`` (N, H, W) or faces away),
    and the point's continuous image coordinates as :func:`project_to_pixels` gives them."""
    N, Hc, Wc, dev = len(cams), cams.height, cams.width, pts.device
    pos = cams.world_to_clip(mesh.vertices)
    rast_c, _ = rasterize(pos, mesh.faces, (Hc, Wc), backend=backend)
    depth_c = interpolate(pos[..., 3:4], rast_c, mesh.faces, backend=backend)[..., 0]  # (N, Hc, Wc)
    cover_c = rast_c[..., 3] > 0

    w, screen, ri, ci, inb = project_to_pixels(cams, pts, Hc, Wc)
    nidx = torch.arange(N, device=dev)[:, None]
    d_here = depth_c[nidx, ri, ci]
    vis = inb & cover_c[nidx, ri, ci] & ((d_here - w).abs() <= depth_tolerance * w)
    if masks is not None:
        vis = vis & (masks[nidx, ri, ci] > 0.5)
    to_cam = Fn.normalize(cams.position.to(dev)[:, None, :] - pts[None], dim=-1)
    cos = (to_cam * nrm[None]).sum(-1)
    vis = vis & (cos > min_cos)
    return torch.where(vis, cos, torch.zeros_like(cos)), screen, inb


def _initial_texture(initial, Ht: int, Wt: int, dev) -> torch.Tensor:
    """``initial`` (h, w, 3|4) as an (Ht, Wt, 3) float32 texture (bilinearly resampled when sizes differ)."""
    init = torch.as_tensor(initial, device=dev, dtype=torch.float32)
    if init.ndim != 3 or init.shape[-1] < 3:
        raise RenderError(f"`initial` must be a texture (h, w, 3|4); got {tuple(init.shape)}.")
    init = init[..., :3]
    if init.shape[:2] != (Ht, Wt):
        init = Fn.interpolate(init.permute(2, 0, 1)[None], size=(Ht, Wt), mode="bilinear",
                              align_corners=False)[0].permute(1, 2, 0)
    return init
