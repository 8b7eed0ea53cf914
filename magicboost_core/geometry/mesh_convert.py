"""Conversions between :class:`~.mesh.Mesh` and the mesh objects met in ComfyUI and in Python.

Supported partners:

* **ComfyUI core MESH** (``comfy_api.latest.Types.MESH``), duck-typed, never imported at module
  level: an object with ``vertices`` [B, N, 3] float and ``faces`` [B, M, 3] int64, optional
  ``uvs`` [B, N, 2], ``vertex_colors`` [B, N, 3|4], ``texture`` [B, H, W, 3] in [0, 1],
  ``vertex_counts``/``face_counts`` [B] (variable-size batches zero-padded to a common N / M).
* **ComfyUI-3D-Pack Mesh** (kiui-style): ``v`` (N, 3), ``f`` (M, 3), optional ``vt`` (T, 2),
  ``ft`` (M, 3), ``vc`` (N, 3), ``albedo`` (H, W, 3) (accepted as input only).
* **trimesh** ``Trimesh`` / ``Scene`` (both directions, see :func:`mesh_to_trimesh`).

Conventions of the partners (and what the converters do about them):

* **Frames.** Our Mesh lives in the pack's **z-up** world. Core MESH objects end up verbatim in GLB
  files (``SaveGLB`` writes the arrays as they are) and 3D-Pack/kiui meshes are loaded raw from
  GLB files, so both are treated as **glTF y-up**. With ``axes="auto"`` (default) the ComfyUI
  converters rotate z-up <-> y-up with :data:`~.camera.ZUP_TO_YUP` (a proper rotation: no mirror,
  winding unchanged); ``axes="none"`` keeps raw coordinates. A ``trimesh.Trimesh`` passed to
  :func:`mesh_from_comfy` (a ``TRIMESH`` socket) is treated the same way; :func:`mesh_to_trimesh`
  and :func:`mesh_from_trimesh` never change coordinates.
* **UVs.** Ours and trimesh's have **v up** (origin bottom-left, as OBJ). Core MESH ``uvs`` and
  3D-Pack ``vt`` are written straight into glTF ``TEXCOORD_0`` by their savers, so they have
  **v down** (origin top-left): the ComfyUI converters map ``v -> 1 - v``.
* **Seams.** Our Mesh keeps separate ``uvs``/``uv_faces`` (a vertex may have several UVs); core MESH
  and trimesh hold one UV per vertex, so vertices are split at UV seams on the way out
  (:func:`split_uv_seams`; positions are duplicated exactly). :func:`merge_seam_vertices` welds
  them back.
* Textures are always (H, W, C) float in [0, 1], row 0 = top of the image.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .camera import YUP_TO_ZUP, ZUP_TO_YUP
from .mesh import Mesh, MeshError

__all__ = [
    "ComfyMeshLike",
    "split_uv_seams",
    "merge_seam_vertices",
    "concatenate_meshes",
    "mesh_to_trimesh",
    "mesh_from_trimesh",
    "mesh_to_comfy",
    "mesh_from_comfy",
    "texture_from_pil",
    "texture_to_pil",
    "colors_to_float",
]

_AXES = ("auto", "none")


# ---------------------------------------------------------------------------------------------------
# small helpers
def _check_axes(axes: str) -> str:
    if axes not in _AXES:
        raise ValueError(f"axes must be one of {_AXES}; got {axes!r}.")
    return axes


def _rotate(points: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 rotation to (..., 3) points in float64 and return the input dtype."""
    return (points.double() @ R.to(points.device).T).to(points.dtype)


def _rotate_mesh(mesh: Mesh, R: torch.Tensor) -> Mesh:
    normals = None if mesh.vertex_normals is None else _rotate(mesh.vertex_normals, R)
    return mesh.replace(vertices=_rotate(mesh.vertices, R), vertex_normals=normals)


def colors_to_float(colors) -> np.ndarray:
    """Colours of any storage type -> float32 in [0, 1] (uint8 / 255, uint16 / 65535, floats as is)."""
    c = np.asarray(colors)
    if c.dtype == np.uint8:
        return c.astype(np.float32) / 255.0
    if c.dtype == np.uint16:
        return c.astype(np.float32) / 65535.0
    c = c.astype(np.float32)
    if c.size and float(np.nanmax(c)) > 1.0 + 1e-6:  # integer colours stored in a float/int array
        c = c / 255.0
    return np.clip(np.nan_to_num(c), 0.0, 1.0)


def _drop_opaque_alpha(c: np.ndarray) -> np.ndarray:
    """RGBA colours whose alpha is 1 everywhere -> RGB (formats like glTF always store 4 channels)."""
    if c.ndim == 2 and c.shape[1] == 4 and bool(np.all(c[:, 3] >= 1.0 - 1e-6)):
        return c[:, :3]
    return c


def _colors_to_uint8(c: torch.Tensor) -> np.ndarray:
    """(V, 3|4) float [0, 1] -> (V, 4) uint8 RGBA (alpha 255 when absent)."""
    a = (c.detach().cpu().float().clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    if a.shape[1] == 3:
        a = np.concatenate([a, np.full((a.shape[0], 1), 255, np.uint8)], axis=1)
    return a


def texture_to_pil(texture: torch.Tensor):
    """(H, W, 3|4) float [0, 1] -> 8-bit PIL image (RGB or RGBA), rounding to the nearest level."""
    from PIL import Image

    arr = (texture.detach().cpu().float().clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGBA" if arr.shape[2] == 4 else "RGB")


def texture_from_pil(image) -> torch.Tensor:
    """PIL image of any mode -> (H, W, 3|4) float32 in [0, 1] (RGBA kept when the image has alpha)."""
    from ..images import pil_to_rgba  # one reader of PIL modes (16-bit grey scaled, not clipped)

    rgba, has_alpha = pil_to_rgba(image)
    return torch.from_numpy(rgba if has_alpha else np.ascontiguousarray(rgba[..., :3]))


# ---------------------------------------------------------------------------------------------------
# seams
def split_uv_seams(mesh: Mesh) -> tuple[Mesh, torch.Tensor]:
    """Duplicate vertices so that every vertex has exactly one UV (for trimesh, glTF, core MESH).

    Returns ``(split, vmap)``: ``split.uvs`` has one row per vertex and ``split.uv_faces == split.faces``;
    ``vmap`` (V',) int64 holds the original vertex index of each new vertex (colours and normals are
    carried along). Face order is unchanged; positions are copied exactly. A mesh without UVs, or whose
    UVs are already per vertex, comes back unchanged with ``vmap = arange(V)``. Vertices used by no face
    are dropped when splitting is needed.
    """
    V = mesh.num_vertices
    if mesh.uvs is None or (mesh.uvs.shape[0] == V and torch.equal(mesh.uv_faces, mesh.faces)):
        return mesh, torch.arange(V, device=mesh.device)
    T = mesh.uvs.shape[0]
    key = mesh.faces.reshape(-1) * T + mesh.uv_faces.reshape(-1)
    uniq, inverse = torch.unique(key, return_inverse=True)  # sorted: by vertex, then by uv
    vmap = uniq // T
    tmap = uniq % T
    faces = inverse.reshape(-1, 3)
    pick = lambda t: None if t is None else t[vmap]  # noqa: E731
    split = Mesh(
        vertices=mesh.vertices[vmap], faces=faces, vertex_colors=pick(mesh.vertex_colors),
        uvs=mesh.uvs[tmap], uv_faces=faces, texture=mesh.texture, vertex_normals=pick(mesh.vertex_normals),
    )
    return split, vmap


def merge_seam_vertices(mesh: Mesh) -> Mesh:
    """Weld vertices that have bit-identical positions (undo :func:`split_uv_seams`).

    UVs stay per corner (``uvs`` = the old per-vertex UVs, ``uv_faces`` = the old faces), so textures
    are unaffected. The first occurrence of each position keeps its index order, colour and normal.
    Useful before geometry refinement: split seams would otherwise tear apart when vertices move.
    Note it also welds distinct parts that merely touch at identical coordinates.
    """
    v = mesh.vertices
    uniq, inverse = torch.unique(v, dim=0, return_inverse=True)
    if uniq.shape[0] == v.shape[0]:
        return mesh
    n = uniq.shape[0]
    idx = torch.arange(v.shape[0], device=v.device)
    first = torch.full((n,), v.shape[0], dtype=torch.long, device=v.device).scatter_reduce(0, inverse, idx, "amin")
    order = torch.argsort(first)  # new index -> group, in first-occurrence order
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n, device=v.device)
    old_of_new = first[order]
    new_of_old = rank[inverse]
    uvs, uv_faces = mesh.uvs, mesh.uv_faces
    pick = lambda t: None if t is None else t[old_of_new]  # noqa: E731
    return Mesh(
        vertices=v[old_of_new], faces=new_of_old[mesh.faces], vertex_colors=pick(mesh.vertex_colors),
        uvs=uvs, uv_faces=uv_faces, texture=mesh.texture, vertex_normals=pick(mesh.vertex_normals),
    )


# ---------------------------------------------------------------------------------------------------
# concatenation (scenes with several parts, multi-material OBJ) with texture-atlas packing
@dataclass
class _Part:
    mesh: Mesh
    fill_color: tuple[float, ...] | None = None  # colour of an untextured part when others are textured


def _pack_textures(parts: list[_Part]) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Shelf-pack the parts' textures into one atlas.

    Returns the atlas (H, W, C) and, per part, ``(uvs, uv_faces)`` re-mapped into it. Untextured parts
    get a 4x4 patch of their fill colour (white by default) and all their corners point at its centre.
    """
    C = 4 if any(p.mesh.texture is not None and p.mesh.texture.shape[2] == 4 for p in parts) else 3
    tiles = []
    for p in parts:
        if p.mesh.texture is not None:
            t = p.mesh.texture.detach().cpu().float()
        else:
            col = list(p.fill_color or (1.0, 1.0, 1.0))[:C]
            col += [1.0] * (C - len(col))
            t = torch.tensor(col, dtype=torch.float32).expand(4, 4, C).clone()
        if t.shape[2] < C:
            t = torch.cat([t, torch.ones(*t.shape[:2], 1)], dim=2)
        tiles.append(t)
    k = max(1, math.ceil(math.sqrt(len(tiles))))
    rows = [list(range(i, min(i + k, len(tiles)))) for i in range(0, len(tiles), k)]
    row_h = [max(tiles[i].shape[0] for i in r) for r in rows]
    row_w = [sum(tiles[i].shape[1] for i in r) for r in rows]
    H, W = sum(row_h), max(row_w)
    atlas = torch.zeros(H, W, C)
    offsets: dict[int, tuple[int, int]] = {}
    y = 0
    for r, h in zip(rows, row_h):
        x = 0
        for i in r:
            th, tw = tiles[i].shape[:2]
            atlas[y:y + th, x:x + tw] = tiles[i]
            offsets[i] = (x, y)
            x += tw
        y += h
    out = []
    outside = False
    for i, p in enumerate(parts):
        th, tw = tiles[i].shape[:2]
        ox, oy = offsets[i]
        if p.mesh.texture is not None:
            uv = p.mesh.uvs.detach().cpu().double()
            outside |= bool(((uv < -1e-4) | (uv > 1 + 1e-4)).any())
            uf = p.mesh.uv_faces.cpu()
        else:
            uv = torch.full((1, 2), 0.5, dtype=torch.float64)
            uf = torch.zeros_like(p.mesh.faces.cpu())
        u = (ox + uv[:, 0] * tw) / W
        v = 1.0 - (oy + (1.0 - uv[:, 1]) * th) / H
        out.append((torch.stack([u, v], dim=1).float(), uf))
    if outside:
        warnings.warn("Packing several textures into one atlas: some UVs lie outside [0, 1] (tiling); "
                      "those parts will sample their neighbours in the atlas.", stacklevel=3)
    return atlas, out


def concatenate_meshes(meshes: Sequence[Mesh], fill_colors: Sequence[tuple | None] | None = None) -> Mesh:
    """Join several meshes into one (vertices stacked, faces offset).

    Optional attributes are unified: vertex colours missing on some parts become white (RGB, or RGBA
    with alpha 1 when any part has alpha); when parts carry different textures (or only some are
    textured) the textures are shelf-packed into one atlas and UVs re-mapped (untextured parts point at
    a patch of their ``fill_colors`` entry, white by default); UVs without any texture are kept when
    every part has them. Vertex normals are kept only if every part has them. Result lives on the CPU.
    """
    meshes = [m.detach().to("cpu") for m in meshes]
    if not meshes:
        raise MeshError("concatenate_meshes: no meshes given.")
    if len(meshes) == 1:
        return meshes[0]
    fills = list(fill_colors) if fill_colors is not None else [None] * len(meshes)
    offs = np.cumsum([0] + [m.num_vertices for m in meshes])[:-1]
    vertices = torch.cat([m.vertices for m in meshes])
    faces = torch.cat([m.faces + int(o) for m, o in zip(meshes, offs)])

    cs = _unified_colors(meshes)
    colors = None if cs is None else torch.cat(cs)

    uvs = uv_faces = texture = None
    textures = [m.texture for m in meshes]
    if any(t is not None for t in textures):
        first = next(t for t in textures if t is not None)
        same = all(t is not None and t.shape == first.shape and torch.equal(t, first) for t in textures)
        if same:  # one shared image: no packing needed
            uvs_list, uf_list = [m.uvs for m in meshes], [m.uv_faces for m in meshes]
            texture = first
        else:
            texture, mapped = _pack_textures([_Part(m, f) for m, f in zip(meshes, fills)])
            uvs_list, uf_list = [a for a, _ in mapped], [b for _, b in mapped]
    elif all(m.uvs is not None for m in meshes):
        uvs_list, uf_list = [m.uvs for m in meshes], [m.uv_faces for m in meshes]
    else:
        uvs_list = None
    if uvs_list is not None:
        toffs = np.cumsum([0] + [u.shape[0] for u in uvs_list])[:-1]
        uvs = torch.cat(uvs_list)
        uv_faces = torch.cat([uf + int(o) for uf, o in zip(uf_list, toffs)])

    normals = None
    if all(m.vertex_normals is not None for m in meshes):
        normals = torch.cat([m.vertex_normals for m in meshes])
    return Mesh(vertices=vertices, faces=faces, vertex_colors=colors, uvs=uvs, uv_faces=uv_faces,
                texture=texture, vertex_normals=normals)


# ---------------------------------------------------------------------------------------------------
# trimesh
def mesh_to_trimesh(mesh: Mesh):
    """Our Mesh -> ``trimesh.Trimesh`` (coordinates unchanged, ``process=False``).

    UVs become per-vertex ``TextureVisuals`` (vertices split at seams first); a texture becomes a
    ``PBRMaterial`` baseColorTexture (8-bit, metallic 0, roughness 1). Vertex colours become
    ``ColorVisuals`` (uint8 RGBA) or, on a textured mesh, ``visual.vertex_attributes["color"]``
    (exported by trimesh as glTF COLOR_0). Vertex normals are passed on when the mesh has them.
    """
    import trimesh

    m, _ = split_uv_seams(mesh.detach().to("cpu"))
    v = m.vertices.double().numpy()
    f = m.faces.numpy()
    if m.uvs is not None:
        # explicit material: trimesh's default one carries a 2x2 grey placeholder image
        material = trimesh.visual.material.PBRMaterial(
            baseColorTexture=None if m.texture is None else texture_to_pil(m.texture),
            baseColorFactor=[255, 255, 255, 255], metallicFactor=0.0, roughnessFactor=1.0)
        visual = trimesh.visual.TextureVisuals(uv=m.uvs.double().numpy(), material=material)
        if m.vertex_colors is not None:
            visual.vertex_attributes["color"] = _colors_to_uint8(m.vertex_colors)
    elif m.vertex_colors is not None:
        visual = trimesh.visual.ColorVisuals(vertex_colors=_colors_to_uint8(m.vertex_colors))
    else:
        visual = None
    tm = trimesh.Trimesh(vertices=v, faces=f, visual=visual, process=False)
    if m.vertex_normals is not None:
        tm.vertex_normals = m.vertex_normals.double().numpy()
    return tm


def _material_image_and_color(material):
    """(PIL image or None, RGBA float tuple or None) of a trimesh material."""
    image = color = None
    if material is None:
        return None, None
    img = getattr(material, "baseColorTexture", None)
    if img is None:
        img = getattr(material, "image", None)
    image = img
    factor = getattr(material, "baseColorFactor", None)
    if factor is None:
        factor = getattr(material, "diffuse", None) if img is None else None
    if factor is not None:
        f = colors_to_float(np.asarray(factor).reshape(1, -1)).reshape(-1)
        color = tuple(float(x) for x in f)
    return image, color


def mesh_from_trimesh(tm, name: str = "trimesh object") -> Mesh:
    """``trimesh.Trimesh`` (or ``Scene``, concatenated with node transforms) -> our Mesh, coordinates unchanged.

    Reads UVs + base-colour texture (PBR ``baseColorTexture`` or simple ``image``), vertex colours
    (``ColorVisuals``, face colours averaged to vertices, or the ``color``
    vertex attribute trimesh uses for textured meshes), dropping an alpha channel that is 1 everywhere.
    Material colour factors are ignored on a single mesh (trimesh and ComfyUI's SaveGLB write grey
    defaults that would darken textures), but in a scene whose parts differ by material colour (or where
    other parts carry vertex colours) untextured parts get their material colour as vertex colours,
    and untextured parts of a textured scene get it as their atlas patch.
    ``name`` (e.g. the file name) is used in error messages.
    """
    import trimesh

    if isinstance(tm, trimesh.Scene):
        converted = _scene_parts(tm, name)
        meshes = [m for m, _ in converted]
        fills = [f for _, f in converted]
        plain = [m.vertex_colors is None and m.texture is None for m in meshes]
        rgb = {tuple(round(x, 4) for x in (f or (1.0, 1.0, 1.0))[:3]) for f, p in zip(fills, plain) if p}
        if len(meshes) > 1 and any(plain) and (len(rgb) > 1 or any(m.vertex_colors is not None for m in meshes)):
            # material colours tell the parts apart: keep them as vertex colours
            meshes = [m.replace(vertex_colors=torch.tensor((f or (1.0, 1.0, 1.0))[:3], dtype=torch.float32)
                                .expand(m.num_vertices, 3).clone()) if p else m
                      for m, f, p in zip(meshes, fills, plain)]
        return concatenate_meshes(meshes, fills)
    return _trimesh_part(tm, name)[0]


def _trimesh_part(tm, name: str) -> tuple[Mesh, tuple | None]:
    """One Trimesh -> (Mesh, fill colour for atlas packing or None)."""
    import trimesh

    if not isinstance(tm, trimesh.Trimesh):
        if isinstance(tm, trimesh.PointCloud):
            raise MeshError(f"{name} is a point cloud (no faces); Magic-Boost refines triangle meshes.")
        raise MeshError(f"{name}: expected a trimesh.Trimesh or trimesh.Scene, got {type(tm).__name__}.")
    if len(tm.faces) == 0:
        raise MeshError(f"{name} has no faces (a point cloud?); Magic-Boost refines triangle meshes.")
    vertices = torch.from_numpy(np.asarray(tm.vertices, dtype=np.float64)).float()
    faces = torch.from_numpy(np.asarray(tm.faces, dtype=np.int64))
    visual = tm.visual
    colors = uvs = texture = None
    raw_colors = None
    if getattr(visual, "kind", None) in ("vertex", "face"):
        raw_colors = visual.vertex_colors
    else:
        for store in (getattr(visual, "vertex_attributes", None), getattr(tm, "vertex_attributes", None)):
            if store is not None and "color" in store and len(store["color"]) == len(tm.vertices):
                raw_colors = store["color"]
                break
    if raw_colors is not None:
        colors = torch.from_numpy(_drop_opaque_alpha(colors_to_float(raw_colors)).copy())

    fill = None
    if isinstance(visual, trimesh.visual.TextureVisuals):
        uv = getattr(visual, "uv", None)
        image, factor = _material_image_and_color(getattr(visual, "material", None))
        if uv is not None and len(uv) == len(tm.vertices):
            uvs = torch.from_numpy(np.asarray(uv, dtype=np.float64)[:, :2]).float()
            if image is not None:
                # The base-colour factor is ignored when a texture exists (as kiui / 3D-Pack do): trimesh
                # writes its default 0.4 grey "diffuse" as the factor, which would darken every texture.
                texture = texture_from_pil(image)
        if texture is None and factor is not None:
            fill = factor
    return Mesh(vertices=vertices, faces=faces, vertex_colors=colors, uvs=uvs, texture=texture), fill


def _scene_parts(scene, name: str) -> list[tuple[Mesh, tuple | None]]:
    """Triangle meshes of a trimesh Scene as (Mesh, fill colour), node transforms applied.

    (Transforms are applied to our Mesh rather than with ``Trimesh.copy().apply_transform`` because
    trimesh's copy drops the colour attribute of textured visuals.) Mirroring transforms (det < 0)
    reverse the winding so faces stay outward.
    """
    import trimesh

    parts, kinds = [], set()
    for node in scene.graph.nodes_geometry:
        transform, geom_name = scene.graph[node]
        geom = scene.geometry.get(geom_name)
        if geom is None:
            continue
        kinds.add(type(geom).__name__)
        if not (isinstance(geom, trimesh.Trimesh) and len(geom.faces) > 0):
            continue
        mesh, fill = _trimesh_part(geom, name)
        T = torch.from_numpy(np.array(transform, dtype=np.float64))
        if not torch.equal(T, torch.eye(4, dtype=torch.float64)):
            A, t = T[:3, :3], T[:3, 3]
            verts = (mesh.vertices.double() @ A.T + t).float()
            faces, uv_faces = mesh.faces, mesh.uv_faces
            if float(torch.linalg.det(A)) < 0:
                faces = faces[:, [0, 2, 1]]
                uv_faces = None if uv_faces is None else uv_faces[:, [0, 2, 1]]
            mesh = mesh.replace(vertices=verts, faces=faces, uv_faces=uv_faces)
        parts.append((mesh, fill))
    if not parts:
        what = ", ".join(sorted(kinds)) or "nothing"
        raise MeshError(f"{name} holds no triangle faces (found: {what}); a point cloud or empty scene "
                        "cannot be refined. Give a triangle mesh.")
    return parts


# ---------------------------------------------------------------------------------------------------
# ComfyUI core MESH
class ComfyMeshLike:
    """Stand-in for ``comfy_api.latest.Types.MESH`` when ComfyUI is not importable (same attributes)."""

    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor, uvs=None, vertex_colors=None, texture=None,
                 vertex_counts=None, face_counts=None):
        self.vertices = vertices  # (B, N, 3) float32
        self.faces = faces  # (B, M, 3) int64
        self.uvs = uvs  # (B, N, 2), glTF convention (v down)
        self.vertex_colors = vertex_colors  # (B, N, 3|4) in [0, 1]
        self.texture = texture  # (B, H, W, 3) in [0, 1], row 0 = top
        self.vertex_counts = vertex_counts  # (B,) int64 or None
        self.face_counts = face_counts  # (B,) int64 or None
        self.normals = None  # (B, N, 3) unit vertex normals or None

    def __repr__(self) -> str:
        return f"ComfyMeshLike(vertices={tuple(self.vertices.shape)}, faces={tuple(self.faces.shape)})"


def mesh_to_comfy(meshes: Mesh | Sequence[Mesh], mesh_cls=None, axes: str = "auto"):
    """One mesh or a list -> one ComfyUI core MESH batch (B = number of meshes).

    ``mesh_cls``: the class to build (``mesh_cls(vertices, faces)``, optional fields then set as
    attributes); default :class:`ComfyMeshLike`. The engine never imports ComfyUI: the nodes pass
    ``comfy_api.latest.Types.MESH`` here when they run inside ComfyUI.
    ``axes="auto"`` rotates our z-up meshes into the glTF y-up frame core MESH uses; ``"none"`` keeps
    raw coordinates. UVs are split per vertex and written with v down (glTF). Textures become
    (B, H, W, 3): alpha dropped, resized (bilinear) to the largest size when sizes differ, white for
    untextured items of a textured batch. Missing colours in a mixed batch are white. Unequal sizes are
    zero-padded and recorded in ``vertex_counts``/``face_counts``. ``normals`` [B, N, 3] holds smooth
    vertex normals computed before the seam split (newer ComfyUI writes them to GLB; without them it
    would shade split seams as creases).
    """
    _check_axes(axes)
    if isinstance(meshes, Mesh):
        meshes = [meshes]
    meshes = list(meshes)
    if not meshes or not all(isinstance(m, Mesh) for m in meshes):
        raise MeshError("mesh_to_comfy expects a Mesh or a non-empty list of Mesh objects.")
    cls = mesh_cls or ComfyMeshLike
    items = []
    for m in meshes:
        m = m.detach().to("cpu")
        m = m.replace(vertex_normals=m.normals())  # smooth normals before seams are split (shading)
        if axes == "auto":
            m = _rotate_mesh(m, ZUP_TO_YUP)
        split, _ = split_uv_seams(m)
        items.append(split)
    N = max(m.num_vertices for m in items)
    M = max(m.num_faces for m in items)
    out = cls(_stack_padded([m.vertices for m in items], N, 3), _stack_padded([m.faces for m in items], M, 3,
                                                                             torch.int64))
    out.normals = _stack_padded([m.vertex_normals for m in items], N, 3)
    out.uvs = None
    if any(m.uvs is not None for m in items):  # glTF convention: v down
        out.uvs = _stack_padded([None if m.uvs is None else torch.stack([m.uvs[:, 0], 1.0 - m.uvs[:, 1]], 1)
                                 for m in items], N, 2)
    colors = _unified_colors(items)
    out.vertex_colors = None if colors is None else _stack_padded(colors, N, colors[0].shape[1])
    out.texture = _batch_texture([m.texture for m in items])
    uniform = all(m.num_vertices == N and m.num_faces == M for m in items)
    out.vertex_counts = None if uniform else torch.tensor([m.num_vertices for m in items], dtype=torch.int64)
    out.face_counts = None if uniform else torch.tensor([m.num_faces for m in items], dtype=torch.int64)
    return out


def _stack_padded(rows: list, n: int, width: int, dtype=torch.float32) -> torch.Tensor:
    """(B, n, width) zeros holding each (k_i, width) tensor of ``rows`` in its first k_i rows (None: all zeros)."""
    out = torch.zeros(len(rows), n, width, dtype=dtype)
    for i, r in enumerate(rows):
        if r is not None:
            out[i, : r.shape[0]] = r
    return out


def _unified_colors(meshes: Sequence[Mesh]) -> list[torch.Tensor] | None:
    """Each mesh's (V_i, C) vertex colours with one width C (the widest, 3 or 4): white where a mesh has
    none, alpha 1 added where it has RGB only; None when no mesh has colours."""
    if not any(m.vertex_colors is not None for m in meshes):
        return None
    C = max(m.vertex_colors.shape[1] for m in meshes if m.vertex_colors is not None)
    rows = []
    for m in meshes:
        c = m.vertex_colors if m.vertex_colors is not None else torch.ones(m.num_vertices, C)
        if c.shape[1] < C:
            c = torch.cat([c, torch.ones(c.shape[0], 1)], dim=1)
        rows.append(c)
    return rows


def _batch_texture(texs: list) -> torch.Tensor | None:
    """(B, H, W, 3) textures (alpha dropped, resized to the largest H, W, white for untextured items), or
    None when no item has a texture. ``texs``: B (h, w, 3|4) tensors or None."""
    if not any(t is not None for t in texs):
        return None
    H = max(t.shape[0] for t in texs if t is not None)
    W = max(t.shape[1] for t in texs if t is not None)
    texture = torch.ones(len(texs), H, W, 3)
    for i, t in enumerate(texs):
        if t is None:
            continue
        t = t[..., :3]
        if t.shape[:2] != (H, W):
            warnings.warn(f"mesh_to_comfy: resizing texture {i} from {tuple(t.shape[:2])} to {(H, W)} so the "
                          "batch shares one texture size.", stacklevel=3)
            t = torch.nn.functional.interpolate(t.permute(2, 0, 1)[None], size=(H, W), mode="bilinear",
                                                align_corners=False)[0].permute(1, 2, 0).clamp(0, 1)
        texture[i] = t
    if any(t is not None and t.shape[2] == 4 for t in texs):
        warnings.warn("mesh_to_comfy: core MESH textures are RGB; the alpha channel was dropped.", stacklevel=3)
    return texture


def _t(x, dtype=None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.detach().cpu()
    return t.to(dtype) if dtype is not None else t


def _core_items(obj, index: int | None) -> list[Mesh]:
    V = _t(obj.vertices)
    F = _t(obj.faces)
    if V.ndim == 2:
        V, F = V[None], F[None]
    if V.ndim != 3 or V.shape[-1] != 3 or F.ndim != 3 or F.shape[-1] != 3:
        raise MeshError(f"core MESH must hold vertices [B, N, 3] and faces [B, M, 3]; got "
                        f"{tuple(V.shape)} and {tuple(F.shape)}.")
    B = V.shape[0]
    opt = {k: getattr(obj, k, None) for k in ("uvs", "vertex_colors", "texture", "vertex_counts", "face_counts")}
    uvs = None if opt["uvs"] is None else _t(opt["uvs"]).float()
    cols = None if opt["vertex_colors"] is None else _t(opt["vertex_colors"]).float()
    tex = None if opt["texture"] is None else _t(opt["texture"])
    if uvs is not None and uvs.ndim == 2:
        uvs = uvs[None]
    if cols is not None and cols.ndim == 2:
        cols = cols[None]
    if tex is not None and tex.ndim == 3:
        tex = tex[None]
    vc, fc = opt["vertex_counts"], opt["face_counts"]
    indices = range(B) if index is None else [index]
    out = []
    for i in indices:
        if not -B <= i < B:
            raise MeshError(f"core MESH batch has {B} items; index {i} is out of range.")
        i = i % B
        nv = int(_t(vc)[i]) if vc is not None else V.shape[1]
        nf = int(_t(fc)[i]) if fc is not None else F.shape[1]
        v = V[i, :nv].float()
        f = F[i, :nf].long()
        if vc is None and f.shape[0] > 1:  # zero-padded rows of a batch without counts: drop (0,0,0)
            f = f[f.abs().sum(-1) > 0] if bool((f.abs().sum(-1) > 0).any()) else f
        if nv == 0 or f.shape[0] == 0:
            if index is not None:
                raise MeshError(f"core MESH item {i} is empty (no vertices or faces).")
            warnings.warn(f"mesh_from_comfy: skipping empty core MESH item {i}.", stacklevel=3)
            continue
        uv = None
        if uvs is not None:
            uv = uvs[i, :nv].clone()
            uv[:, 1] = 1.0 - uv[:, 1]
        c = None if cols is None else cols[i, :nv]
        t = None
        if tex is not None and uv is not None:
            t = tex[i if tex.shape[0] == B else 0]
            t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
        elif tex is not None:
            warnings.warn("mesh_from_comfy: the core MESH has a texture but no uvs; texture ignored.", stacklevel=3)
        out.append(Mesh(vertices=v, faces=f, vertex_colors=c, uvs=uv, texture=t))
    if not out:
        raise MeshError("core MESH holds only empty items (no vertices or faces).")
    return out


def _pack3d_item(obj) -> Mesh:
    v = _t(obj.v).float()
    f = _t(obj.f).long()
    vt, ft = getattr(obj, "vt", None), getattr(obj, "ft", None)
    vc, albedo = getattr(obj, "vc", None), getattr(obj, "albedo", None)
    uvs = uv_faces = tex = None
    if vt is not None:
        uvs = _t(vt).float()[:, :2].clone()
        uvs[:, 1] = 1.0 - uvs[:, 1]
        uv_faces = _t(ft).long() if ft is not None else None
        if albedo is not None:
            tex = _t(albedo).float()
            if tex.ndim == 3 and tex.shape[0] in (3, 4) and tex.shape[2] not in (3, 4):
                tex = tex.permute(1, 2, 0)
    cols = None if vc is None else _t(vc).float()
    return Mesh(vertices=v, faces=f, vertex_colors=cols, uvs=uvs, uv_faces=uv_faces, texture=tex)


def mesh_from_comfy(obj: Any, index: int | None = None, axes: str = "auto") -> list[Mesh]:
    """A mesh object from a ComfyUI socket -> list of our Meshes (z-up, v-up UVs).

    Accepts: core MESH (or :class:`ComfyMeshLike`; batches sliced with ``vertex_counts``/``face_counts``
    when present, otherwise all-zero padded faces are dropped; empty items skipped with a warning),
    ComfyUI-3D-Pack's Mesh (``v``, ``f``, optional ``vt``/``ft``/``vc``/``albedo``), ``trimesh.Trimesh``
    / ``trimesh.Scene``, our :class:`Mesh` (returned as is, no axis change), or a list/tuple of these.
    ``index`` picks one batch item. ``axes="auto"`` converts the y-up glTF frame of ComfyUI meshes to
    our z-up world; ``"none"`` keeps raw coordinates.
    """
    _check_axes(axes)
    if isinstance(obj, Mesh):
        return [obj]
    if isinstance(obj, (list, tuple)):
        out = []
        for o in obj:
            out.extend(mesh_from_comfy(o, axes=axes))
        if index is not None:
            if not -len(out) <= index < len(out):
                raise MeshError(f"the list holds {len(out)} meshes; index {index} is out of range.")
            return [out[index]]
        return out
    try:
        import trimesh

        is_tm = isinstance(obj, (trimesh.Trimesh, trimesh.Scene, trimesh.PointCloud))
    except ImportError:  # pragma: no cover
        is_tm = False
    is_core = not is_tm and hasattr(obj, "vertices") and hasattr(obj, "faces")
    is_pack3d = not is_tm and not is_core and hasattr(obj, "v") and hasattr(obj, "f")
    if not (is_tm or is_core or is_pack3d):
        raise MeshError(
            f"Cannot read a mesh from a {type(obj).__module__}.{type(obj).__qualname__}: expected a ComfyUI core "
            "MESH (vertices/faces), a ComfyUI-3D-Pack Mesh (v/f), a trimesh.Trimesh or Scene, or a magicboost Mesh."
        )
    if not is_core and index not in (None, 0, -1):
        raise MeshError(f"index {index} given but a {type(obj).__name__} holds a single mesh.")
    if is_tm:
        meshes = [mesh_from_trimesh(obj, name=f"the {type(obj).__name__} input")]
    elif is_core:
        meshes = _core_items(obj, index)
    else:
        meshes = [_pack3d_item(obj)]
    if axes == "auto":
        meshes = [_rotate_mesh(m, YUP_TO_ZUP) for m in meshes]
    return meshes
