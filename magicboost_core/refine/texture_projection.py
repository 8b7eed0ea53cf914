"""Project the condition views onto a mesh's UV texture at their full resolution (issue #11, item 2).

What multi-view texturing tools do at the end of a reconstruction: every texel of the UV atlas is a
3D point on the surface; in each condition view it is *seen* when it projects inside the view's
foreground, passes a depth test against the view's own raster of the mesh (the renderer's rasterizer,
:mod:`magicboost_core.render.ops`), and faces the camera. Its new colour is the weighted mean of the
views that see it, sampled bilinearly from the images, with

* **view-angle weights** ``cos(theta) ** cos_power`` (theta between the surface normal and the ray to the
  camera): the view that looks at a surface most frontally has the most detail and dominates;
* **seam blending**: each view's weight is also multiplied by a *feather* that falls smoothly to 0 over
  ``feather_pixels`` pixels toward the border of the region that view sees reliably (its eroded
  foreground, minus pixels next to a depth discontinuity), so where one view hands over to the next the
  colours cross-fade instead of meeting at a seam, and silhouette / occlusion-edge pixels (which mix
  background or occluder colours) never leak in;
* **keep what nobody sees**: texels whose total weight is 0 keep the mesh's existing texture exactly
  (resampled only when ``texture_resolution`` changes it); weakly seen texels (total coverage, the sum of
  ``cos(theta) * feather``, below ``full_weight``) blend from the old colour to the projection, so there
  is no step at the border.

The texture resolution defaults to what the views need: about ``texels_per_pixel`` texels per
view-pixel footprint on the surface (never less than the mesh's current texture, at most
``max_resolution``), so the projected texture is at least as sharp as the inputs where they see it.

Coordinates: mesh and cameras in the same world frame (z-up, see :mod:`magicboost_core.geometry.camera`);
images (A, H, W, 3) row 0 = top; mesh uvs v-up and texture row 0 = top (the :class:`Mesh` conventions);
texel (r, c) has its centre at uv ((c + 0.5) / W, 1 - (r + 0.5) / H), as in :mod:`magicboost_core.render.bake`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as Fn

from ..geometry.camera import Cameras
from ..geometry.mesh import Mesh

__all__ = ["project_views_to_texture", "needed_texture_resolution", "ProjectionError"]


class ProjectionError(ValueError):
    """Inputs of the texture projection do not fit together; the message names the problem and the fix."""


def _check_inputs(mesh: Mesh, cameras: Cameras, images, masks) -> tuple[torch.Tensor, torch.Tensor]:
    """images (A, H, W, 3) float and masks (A, H, W) float in [0, 1] on the mesh's device."""
    if not isinstance(mesh, Mesh):
        raise ProjectionError(f"`mesh` must be a magicboost Mesh; got {type(mesh).__name__}.")
    if not isinstance(cameras, Cameras):
        raise ProjectionError(f"`cameras` must be a magicboost Cameras batch; got {type(cameras).__name__}.")
    A, H, W = len(cameras), cameras.height, cameras.width
    images = torch.as_tensor(images)
    if images.ndim != 4 or images.shape[0] != A or images.shape[1:3] != (H, W) or images.shape[-1] < 3:
        raise ProjectionError(f"`images` must be ({A}, {H}, {W}, 3) to match the {A} cameras of {W}x{H} px; got "
                              f"{tuple(images.shape)} (resize the images or build the cameras at their size).")
    masks = torch.as_tensor(masks)
    if masks.ndim == 4 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if masks.shape != (A, H, W):
        raise ProjectionError(f"`masks` must be ({A}, {H}, {W}) or ({A}, {H}, {W}, 1); got {tuple(masks.shape)}.")
    dev = mesh.device
    return images[..., :3].to(dev, torch.float32).clamp(0, 1), masks.to(dev, torch.float32)


def _with_uvs_and_texture(mesh: Mesh, resolution: int | None) -> tuple[Mesh, torch.Tensor]:
    """(mesh with uvs, its current colours as an (R, R, 3) texture): the texture, else baked vertex
    colours, else grey; resampled bilinearly to ``resolution`` when given."""
    from ..render.bake import bake_vertex_colors_to_texture

    if mesh.uvs is None:
        from ..geometry.uv import unwrap_uv

        mesh = unwrap_uv(mesh, resolution=resolution or 1024)
    if mesh.texture is not None:
        tex = mesh.texture[..., :3].float()
    elif mesh.vertex_colors is not None:
        tex = bake_vertex_colors_to_texture(mesh, resolution or 1024)[..., :3]
    else:
        tex = torch.full((resolution or 1024,) * 2 + (3,), 0.5, device=mesh.device)
    if resolution is not None and tuple(tex.shape[:2]) != (resolution, resolution):
        tex = Fn.interpolate(tex.permute(2, 0, 1)[None], size=(resolution, resolution), mode="bilinear",
                             align_corners=False, antialias=resolution < tex.shape[0])[0].permute(1, 2, 0)
    return mesh, tex.contiguous()


def needed_texture_resolution(mesh: Mesh, cameras: Cameras, texels_per_pixel: float = 1.5,
                              max_resolution: int = 2048) -> int:
    """Power-of-two texture size giving about ``texels_per_pixel`` texels per view-pixel footprint.

    Footprint of a pixel on the surface: (median camera depth of the foreground) / focal length in pixels;
    world size of a texel at resolution R: sqrt(surface area / (UV area * R^2)).
    """
    v0, v1, v2 = (mesh.vertices[mesh.faces[:, i]] for i in range(3))
    area3d = 0.5 * torch.cross(v1 - v0, v2 - v0, dim=-1).norm(dim=-1).sum()
    u0, u1, u2 = (mesh.uvs[mesh.uv_faces[:, i]] for i in range(3))
    e1, e2 = u1 - u0, u2 - u0
    area_uv = 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).abs().sum()
    dist = (cameras.position.to(mesh.device) - mesh.vertices.mean(0)).norm(dim=-1)  # (A,) distance to the centre
    radius = (mesh.vertices - mesh.vertices.mean(0)).norm(dim=-1).max()
    focal = 0.5 * cameras.height / torch.tan(torch.deg2rad(cameras.fovy_deg.to(mesh.device)) / 2)
    footprint = float(((dist - 0.5 * radius).clamp_min(1e-6) / focal).min())
    texel_world = footprint / texels_per_pixel
    r = math.sqrt(float(area3d) / max(float(area_uv), 1e-12)) / texel_world
    return int(min(max_resolution, 2 ** math.ceil(math.log2(max(r, 8.0)))))


def _texel_geometry(mesh: Mesh, resolution: int):
    """Covered texels of the UV atlas: (flat indices (K,), 3D points (K, 3), face normals (K, 3), covered (R, R))."""
    from ..render.bake import uv_raster
    from ..render.ops import interpolate

    rast = uv_raster(mesh, resolution)
    fid = rast[0, ..., 3].reshape(-1).long() - 1
    covered = fid >= 0
    idx = torch.nonzero(covered).squeeze(1)
    pts = interpolate(mesh.vertices, rast, mesh.faces)[0].reshape(-1, 3)[idx]
    normals = mesh.face_normals()[fid[idx]]
    return idx, pts, normals, covered.view(resolution, resolution)


def _view_maps(mesh: Mesh, cams: Cameras, masks: torch.Tensor, feather_pixels: int):
    """Per view: depth raster (A, H, W) (0 where empty) and feather (A, H, W) in [0, 1].

    The reliable region of a view is its foreground (mask > 0.5 and mesh raster) with no pixel of the
    (2k+1)^2 neighbourhood, k = ``feather_pixels``, outside it or markedly closer to the camera (an
    occluder edge); the feather is that region box-filtered once more, so it reaches 0 at its border.
    """
    from ..render.ops import interpolate, rasterize

    pos = cams.world_to_clip(mesh.vertices)
    rast, _ = rasterize(pos, mesh.faces, (cams.height, cams.width))
    depth = interpolate(pos[..., 3:4].contiguous(), rast, mesh.faces)[..., 0]  # (A, H, W): camera depth w
    fg = (rast[..., 3] > 0) & (masks > 0.5)
    focal = 0.5 * cams.height / torch.tan(torch.deg2rad(cams.fovy_deg.to(depth.device)) / 2)
    k = max(1, int(feather_pixels))
    big = torch.where(fg, depth, torch.full_like(depth, 1e6))
    nearest = -Fn.max_pool2d(-big[:, None], 2 * k + 1, stride=1, padding=k)[:, 0]
    # A neighbour closer than a steep slope allows (4 pixel footprints per pixel of distance) is an occluder.
    slope = 4.0 * depth / focal[:, None, None] * k
    eroded = -Fn.max_pool2d(-fg[:, None].float(), 2 * k + 1, stride=1, padding=k)[:, 0] > 0.5
    reliable = eroded & (depth - nearest <= slope)
    feather = Fn.avg_pool2d(reliable[:, None].float(), 2 * k + 1, stride=1, padding=k,
                            count_include_pad=True)[:, 0] * reliable.float()
    return depth, feather


def _project_texels(pts, normals, cams: Cameras, images, depth, feather, cos_power: float, min_cos: float,
                    depth_tolerance: float):
    """Blend weights (A, K), coverage (A, K) (cos * feather of the views that see a texel) and bilinear
    colour samples (A, K, 3) of K texel points in the A views."""
    from ..render.bake import project_to_pixels
    from ..render.ops import texture

    A, H, W = images.shape[:3]
    w, screen, ri, ci, inside = project_to_pixels(cams, pts, H, W)
    view = torch.arange(A, device=pts.device)[:, None]
    visible = inside & ((w - depth[view, ri, ci]).abs() <= depth_tolerance * w)
    to_cam = Fn.normalize(cams.position.to(pts)[:, None, :] - pts[None], dim=-1)
    cos = (to_cam * normals[None]).sum(-1)
    visible = visible & (cos > min_cos)
    coverage = torch.where(visible, cos.clamp_min(0) * feather[view, ri, ci], torch.zeros_like(cos))
    weight = coverage * cos.clamp_min(0) ** (cos_power - 1)
    uv = screen[:, :, None, :]
    uv = torch.where(inside[..., None, None], uv, torch.zeros_like(uv))
    samples = texture(images, uv.contiguous(), filter_mode="linear")[:, :, 0]
    return weight, coverage, samples


def _color_transfer(flat: torch.Tensor, idx: torch.Tensor, projected: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """``flat`` (R*R, 3) with the covered texels ``idx`` mapped by the affine colour map that best takes the
    old colours of the fully seen texels (``full`` (K,) bool) to their ``projected`` (K, 3) colours."""
    if int(full.sum()) < 16:
        return flat
    old = flat[idx]
    X = torch.cat([old[full], torch.ones_like(old[full][:, :1])], 1).double()
    M = torch.linalg.lstsq(X, projected[full].double()).solution  # (4, 3)
    out = flat.clone()
    out[idx] = (torch.cat([old, torch.ones_like(old[:, :1])], 1).double() @ M).float().clamp(0, 1)
    return out


@torch.no_grad()
def project_views_to_texture(mesh: Mesh, cameras: Cameras, images, masks, texture_resolution: int | None = None, *,
                             cos_power: float = 4.0, min_cos: float = 0.1, depth_tolerance: float = 0.01,
                             feather_pixels: int = 1, full_weight: float = 0.15, padding: int = 4,
                             texels_per_pixel: float = 1.5, max_resolution: int = 2048, unseen: str = "keep") -> Mesh:
    """``mesh`` with its UV texture replaced by the condition views projected onto it (see the module doc).

    Args:
        mesh: a :class:`Mesh` in the cameras' frame; with uvs (unwrapped with xatlas when missing). Its
            current colours (texture, else vertex colours baked, else grey) are kept where no view sees.
        cameras: the A condition cameras (their width/height = the images').
        images: (A, H, W, 3) float in [0, 1], row 0 = top. masks: (A, H, W) or (A, H, W, 1), foreground > 0.5.
        texture_resolution: output texture size; ``None`` = :func:`needed_texture_resolution`, never below
            the current texture's size.
        cos_power: exponent of the view-angle weight. min_cos: texels seen more obliquely are ignored.
        depth_tolerance: relative depth-test tolerance (|w - depth| <= tol * w). feather_pixels: width of the
            seam cross-fade in view pixels. full_weight: total coverage (sum of cos * feather over the views)
            above which a texel is pure projection; below it blends toward the old colour.
        padding: texels the new colours are dilated into the atlas gutter.
        unseen: ``"keep"`` (default): texels no view sees keep their colour exactly; ``"color_transfer"``:
            they (and the old side of the blend) get an affine colour correction (RGB -> RGB + offset,
            least squares) fitted on the fully seen texels from old to projected colours, which lifts
            a globally dulled or tinted texture where the views do not reach.
    Returns:
        A new Mesh: same vertices/faces/uvs, ``texture`` (R, R, 3), no vertex colours (one colour source).
    """
    images, masks = _check_inputs(mesh, cameras, images, masks)
    current = mesh.texture.shape[0] if mesh.texture is not None else None
    if texture_resolution is None and mesh.uvs is not None:
        needed = needed_texture_resolution(mesh, cameras, texels_per_pixel, max_resolution)
        texture_resolution = max(needed, current or 0)
    mesh, base = _with_uvs_and_texture(mesh, texture_resolution)
    R = base.shape[0]
    if base.shape[1] != R:
        raise ProjectionError(f"only square textures are supported; the mesh's texture is {tuple(base.shape[:2])}.")
    cams = cameras.to(mesh.device)
    idx, pts, normals, covered = _texel_geometry(mesh, R)
    depth, feather = _view_maps(mesh, cams, masks, feather_pixels)
    weight, coverage, samples = _project_texels(pts, normals, cams, images, depth, feather, cos_power, min_cos, depth_tolerance)
    wsum = weight.sum(0)
    projected = (weight[..., None] * samples).sum(0) / wsum.clamp_min(1e-12)[:, None]
    alpha = (coverage.sum(0) / full_weight).clamp(0, 1)[:, None]
    flat = base.reshape(-1, 3)
    if unseen == "color_transfer":
        flat = _color_transfer(flat, idx, projected, alpha[:, 0] >= 1)
    elif unseen != "keep":
        raise ProjectionError(f"unseen must be 'keep' or 'color_transfer'; got {unseen!r}.")
    new_cov = torch.where(alpha > 0, flat[idx] + alpha * (projected - flat[idx]), flat[idx])
    delta = torch.zeros_like(flat)
    delta[idx] = new_cov - base.reshape(-1, 3)[idx]  # the whole change (colour transfer included)
    delta = delta.view(R, R, 3)
    if padding > 0:  # carry the change into the atlas gutter so bilinear / mip lookups at chart borders match
        from ..render.bake import dilate_texture

        grown, grown_mask = dilate_texture(delta, covered, padding)
        delta = torch.where((grown_mask & ~covered)[..., None], grown, delta)
    out = base + delta
    return mesh.replace(texture=out.clamp(0, 1).contiguous(), vertex_colors=None)
