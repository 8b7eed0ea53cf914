"""``render(mesh, cameras, ...)``: one call from a :class:`Mesh` and :class:`Cameras` to images.

Built only from the four primitives of :mod:`.ops`, so it runs on either backend and every output is
differentiable with respect to ``vertices``, ``vertex_colors`` and ``texture`` (pass tensors with
``requires_grad`` to optimise them).

Per call (N views, H x W, F faces): one rasterization; vertex normals (O(F)); interpolation of the
colour source, normals and depth (O(N*H*W)); one texture lookup when textured (plus a mip pyramid,
~1.33x the texture, for ``texture_filter="linear-mipmap-linear"``); antialiasing (O(N*F) facing, a
topology cached per ``faces`` tensor, O(silhouette pixels)). Measured with the torch backend, 4 x 256 x 256,
50k faces, shaded, forward + backward: ~0.17 s of CPU time on one thread of an AMD EPYC core, peak
~125 MB above the inputs (``benchmarks/render.py``). On CPU, prefer one torch thread when the
machine is shared: the renderer runs many medium-sized ops and OpenMP stalls when cores are busy.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as Fn

from ..geometry.camera import Cameras
from ..geometry.mesh import Mesh
from .errors import RenderError
from .ops import FILTER_MODES, interpolate, interpolate_da, rasterize
from .ops import antialias as antialias_op
from .ops import texture as texture_op

__all__ = ["RenderOutput", "render", "RENDER_MODES", "DEFAULT_GREY"]

RENDER_MODES = ("albedo", "shaded", "normal")
DEFAULT_GREY = 0.7


@dataclass
class RenderOutput:
    """Images from :func:`render`; N = number of cameras, row 0 = top of each image.

    Attributes:
        rgb: (N, H, W, 3) float in [0, 1] (for colours in [0, 1]), composited over the background,
            antialiased when requested.
        alpha: (N, H, W, 1) coverage in [0, 1] (antialiased at silhouettes when requested).
        depth: (N, H, W, 1) camera-space distance along the view axis (-z_cam, world units), 0 where
            empty. Not antialiased.
        normal: (N, H, W, 3) world-space unit normals (smooth, from area-weighted vertex normals),
            0 where empty. Not antialiased.
        rast: (N, H, W, 4) raster (u, v, z/w, triangle_id + 1) for reuse with the primitives.
    """

    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    normal: torch.Tensor
    rast: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(N, H, W, 1) bool: a triangle covers the pixel centre."""
        return self.rast[..., 3:4] > 0


def _vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    v0, v1, v2 = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    fn = torch.cross(v1 - v0, v2 - v0, dim=-1)
    n = torch.zeros_like(vertices).index_add(0, faces.reshape(-1), fn.repeat_interleave(3, dim=0))
    return Fn.normalize(n, dim=-1, eps=1e-20)


def _per_view(x, n: int, name: str, device, dtype) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=dtype, device=device)
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[-1] != 3 or t.shape[0] not in (1, n):
        raise RenderError(f"`{name}` must have shape (3,) or ({n}, 3); got {tuple(t.shape)}.")
    return t.expand(n, 3)


def _background(background, shape, device, dtype) -> torch.Tensor:
    N, H, W = shape
    bg = torch.as_tensor(background, dtype=dtype, device=device)
    if bg.ndim == 0:
        return bg.expand(N, H, W, 3)
    if bg.ndim == 1 and bg.shape[0] == 3:
        return bg.expand(N, H, W, 3)
    if bg.ndim == 4 and bg.shape[1:] == (H, W, 3) and bg.shape[0] in (1, N):
        return bg.expand(N, H, W, 3)
    raise RenderError(f"`background` must be a float, an RGB triple or an (N|1, {H}, {W}, 3) image; "
                      f"got {tuple(bg.shape)}.")


def render(
    mesh: Mesh,
    cameras: Cameras,
    mode: str = "albedo",
    vertices: torch.Tensor | None = None,
    vertex_colors: torch.Tensor | None = None,
    texture: torch.Tensor | None = None,
    background=1.0,
    light_dir=None,
    light_pos=None,
    ambient: float = 0.3,
    antialias: bool = True,
    backend: str = "auto",
    texture_filter: str = "linear-mipmap-linear",
) -> RenderOutput:
    """Render a mesh from a batch of cameras.

    Args:
        mesh: the :class:`Mesh` (faces, and uvs/uv_faces, texture, vertex colours when present).
        cameras: N cameras sharing a resolution (on the mesh's device).
        mode: "albedo" (unlit colour, as the official anchor update renders), "shaded" (Lambert:
            ``colour * (ambient + (1 - ambient) * max(0, n . l))``) or "normal" (``(n + 1) / 2``).
        vertices: (V, 3) overrides ``mesh.vertices`` (e.g. optimised positions with requires_grad).
        vertex_colors: (V, 3|4) overrides ``mesh.vertex_colors``.
        texture: (Ht, Wt, 3|4) overrides ``mesh.texture`` (row 0 = top; needs ``mesh.uvs``).
        background: float, RGB triple or (N|1, H, W, 3) image composited behind the mesh.
        light_dir: (3,) or (N, 3) world direction **towards** a directional light; default: from the
            camera (the camera's backward axis). light_pos: (3,) or (N, 3) world position of a point
            light instead (overrides ``light_dir``).
        ambient: ambient term of the "shaded" mode, in [0, 1].
        antialias: blend silhouette pixels (gives silhouette gradients to the vertices).
        backend: "auto", "torch" or "nvdiffrast" (see :func:`~.backend.get_backend`).
        texture_filter: "linear-mipmap-linear" (default; avoids aliasing when the texture is
            minified) or "linear".
    Colour source, in order: ``texture`` argument, ``vertex_colors`` argument, the mesh's texture,
    the mesh's vertex colours, else uniform grey 0.7. Alpha channels of colours are ignored.
    Textures are sampled with uvs interpolated over ``uv_faces`` (seams allowed) and v flipped
    (mesh uvs are v-up, texture row 0 = top).
    Returns:
        :class:`RenderOutput` with rgb, alpha, depth, normal, rast.
    """
    verts = _checked_vertices(mesh, cameras, mode, texture_filter, vertices)
    faces = mesh.faces
    dev, dtype = verts.device, verts.dtype
    cams = cameras.to(dev) if cameras.c2w.device != dev else cameras
    N, H, W = len(cams), cams.height, cams.width
    tex, colors = _colour_source(mesh, verts, texture, vertex_colors)

    pos = cams.world_to_clip(verts)  # (N, V, 4)
    use_mip = tex is not None and texture_filter != "linear"
    rast, rast_db = rasterize(pos, faces, (H, W), backend=backend, with_db=use_mip)
    mask = (rast[..., 3:4] > 0).to(dtype)
    point_light = mode == "shaded" and light_pos is not None
    vn = _vertex_normals(verts, faces) if (vertices is not None or mesh.vertex_normals is None) else mesh.vertex_normals
    vcol, vnormal, depth, world = _interpolate_vertex_attributes(verts, vn, colors, pos, rast, faces, point_light,
                                                                backend)
    normal = Fn.normalize(vnormal, dim=-1, eps=1e-12) * mask
    albedo = _albedo(mesh, tex, vcol, rast, rast_db if use_mip else None, texture_filter, dtype, backend)
    if mode == "albedo":
        color = albedo
    elif mode == "normal":
        color = (normal + 1) * 0.5
    else:
        color = albedo * _lambert(normal, cams, world, light_dir, light_pos, ambient)
    bg = _background(background, (N, H, W), dev, dtype)
    rgb = color * mask + bg * (1 - mask)
    alpha = mask
    if antialias:
        both = antialias_op(torch.cat([rgb, mask], -1), rast, pos, faces, backend=backend)
        rgb, alpha = both[..., :3], both[..., 3:4]
    return RenderOutput(rgb=rgb, alpha=alpha, depth=depth, normal=normal, rast=rast)


def _checked_vertices(mesh, cameras, mode: str, texture_filter: str, vertices) -> torch.Tensor:
    """Check :func:`render`'s arguments; the (V, 3) float positions to render (``vertices`` or the mesh's)."""
    if mode not in RENDER_MODES:
        raise RenderError(f"mode must be one of {RENDER_MODES}; got {mode!r}.")
    if texture_filter not in FILTER_MODES:
        raise RenderError(f"texture_filter must be one of {FILTER_MODES}; got {texture_filter!r}.")
    if not isinstance(mesh, Mesh):
        raise RenderError(f"`mesh` must be a magicboost Mesh; got {type(mesh).__name__}.")
    if not isinstance(cameras, Cameras):
        raise RenderError(f"`cameras` must be a magicboost Cameras batch; got {type(cameras).__name__}.")
    verts = mesh.vertices if vertices is None else vertices
    if not isinstance(verts, torch.Tensor) or verts.shape != mesh.vertices.shape or not verts.is_floating_point():
        raise RenderError(f"`vertices` must be a float tensor of shape {tuple(mesh.vertices.shape)} (the mesh's); got "
                          f"{getattr(verts, 'shape', type(verts).__name__)}.")
    return verts


def _colour_source(mesh: Mesh, verts: torch.Tensor, texture, vertex_colors):
    """``(tex, colors)``: at most one of a (Ht, Wt, 3|4) texture and (V, 3|4) vertex colours, in the order
    ``texture`` argument, ``vertex_colors`` argument, mesh texture, mesh vertex colours (both None: grey)."""
    tex = None
    colors = None
    if texture is not None:
        tex = texture
    elif vertex_colors is not None:
        colors = vertex_colors
    elif mesh.texture is not None:
        tex = mesh.texture
    elif mesh.vertex_colors is not None:
        colors = mesh.vertex_colors
    if tex is not None:
        if mesh.uvs is None:
            raise RenderError("A texture needs texture coordinates but the mesh has no uvs; "
                              "run magicboost_core.geometry.uv.unwrap_uv (xatlas) on the mesh first.")
        if not isinstance(tex, torch.Tensor) or tex.ndim != 3 or tex.shape[-1] not in (3, 4):
            raise RenderError(f"`texture` must be (Ht, Wt, 3|4); got {getattr(tex, 'shape', type(tex).__name__)}.")
    if colors is not None and (not isinstance(colors, torch.Tensor) or colors.ndim != 2
                               or colors.shape[0] != verts.shape[0] or colors.shape[1] not in (3, 4)):
        raise RenderError(f"`vertex_colors` must be ({verts.shape[0]}, 3|4); got "
                          f"{getattr(colors, 'shape', type(colors).__name__)}.")
    return tex, colors


def _interpolate_vertex_attributes(verts, vn, colors, pos, rast, faces, point_light: bool, backend):
    """One interpolation for every per-vertex quantity -> ``(colour, normal, depth, world)``: (N, H, W, 3)
    colour (None without ``colors``), (N, H, W, 3) unnormalised normal, (N, H, W, 1) clip w = depth and
    (N, H, W, 3) world position (None unless ``point_light``).

    verts, vn: (V, 3) positions and vertex normals; colors: (V, 3|4) or None; pos: (N, V, 4) clip
    positions; rast: (N, H, W, 4); faces: (F, 3).
    """
    N, dtype = pos.shape[0], verts.dtype
    per_vertex = ([colors[:, :3].to(dtype)] if colors is not None else []) + [vn.to(dtype)]
    parts = [torch.cat(per_vertex, -1)[None].expand(N, -1, -1), pos[..., 3:4]]
    if point_light:
        parts.append(verts[None].expand(N, -1, -1))
    attr = torch.cat(parts, -1)
    feats = interpolate(attr, rast, faces, backend=backend)
    c = 3 if colors is not None else 0
    return (feats[..., :3] if colors is not None else None, feats[..., c:c + 3], feats[..., c + 3:c + 4],
            feats[..., c + 4:c + 7] if point_light else None)


def _albedo(mesh: Mesh, tex, vcol, rast, rast_db, texture_filter: str, dtype, backend) -> torch.Tensor:
    """(N, H, W, 3) unlit colour: ``tex`` (Ht, Wt, 3|4, row 0 = top) sampled at the uvs (v flipped)
    interpolated over ``mesh.uv_faces`` (``rast_db`` (N, H, W, 4) screen derivatives for mip-mapping, or
    None), else the interpolated vertex colours ``vcol`` (N, H, W, 3), else uniform grey."""
    if tex is None:
        if vcol is not None:
            return vcol
        return torch.full((*rast.shape[:3], 3), DEFAULT_GREY, dtype=dtype, device=rast.device)
    uv_attr = torch.stack([mesh.uvs[:, 0], 1.0 - mesh.uvs[:, 1]], -1).to(dtype)
    uv, uv_da = interpolate_da(uv_attr, rast, mesh.uv_faces, rast_db, backend=backend)
    return texture_op(tex[..., :3].to(dtype), uv, filter_mode=texture_filter, boundary="wrap",
                      uv_da=uv_da, backend=backend)


def _lambert(normal, cams: Cameras, world, light_dir, light_pos, ambient: float) -> torch.Tensor:
    """(N, H, W, 1) shading factor ``ambient + (1 - ambient) * max(0, n . l)`` for (N, H, W, 3) unit
    normals; a point light at ``light_pos`` when ``world`` (N, H, W, 3) positions are given, else the
    directional ``light_dir`` (default: each camera's backward axis)."""
    N, dev, dtype = normal.shape[0], normal.device, normal.dtype
    if world is not None:
        lp = _per_view(light_pos, N, "light_pos", dev, dtype)
        ldir = Fn.normalize(lp[:, None, None, :] - world, dim=-1, eps=1e-12)
    else:
        ld = cams.c2w[:, :3, 2].to(dtype) if light_dir is None else _per_view(light_dir, N, "light_dir", dev, dtype)
        ldir = Fn.normalize(ld, dim=-1, eps=1e-12)[:, None, None, :]
    lambert = (normal * ldir).sum(-1, keepdim=True).clamp_min(0)
    return ambient + (1.0 - ambient) * lambert
