"""What refinement optimises: per-vertex offsets of the input mesh and its colours.

Colours are either a UV texture (H, W, 3) in [0, 1] (row 0 = top, v up in ``uvs``; xatlas unwrap when
the input has none) or per-vertex colours (V, 3). Parameters are stored in [0, 1] directly and clamped
after each optimiser step. Everything lives in the normalised frame of the loop.
"""
from __future__ import annotations

import torch

from ..geometry.mesh import Mesh

__all__ = ["RefinableMesh", "subdivide_midpoint", "prepare_colors", "texture_from_uvs_at_vertices"]


def _midpoint_split(faces: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One 1->4 split of ``faces`` (F, 3) over per-corner ``values`` (N, D); returns (values', faces')."""
    f = faces.long()
    n = values.shape[0]
    e = torch.stack([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 1)  # (F, 3, 2)
    es = e.sort(-1).values.reshape(-1, 2)
    uniq, inv = torch.unique(es, dim=0, return_inverse=True)
    mids = 0.5 * (values[uniq[:, 0]] + values[uniq[:, 1]])
    m = (inv.reshape(-1, 3) + n)  # midpoint index of edges (01, 12, 20)
    a, b, c = f[:, 0], f[:, 1], f[:, 2]
    m01, m12, m20 = m[:, 0], m[:, 1], m[:, 2]
    nf = torch.cat([torch.stack([a, m01, m20], 1), torch.stack([m01, b, m12], 1),
                    torch.stack([m20, m12, c], 1), torch.stack([m01, m12, m20], 1)], 0)
    return torch.cat([values, mids], 0), nf


def subdivide_midpoint(mesh: Mesh) -> Mesh:
    """One level of midpoint (1 -> 4) subdivision; positions, vertex colours and UVs are interpolated
    linearly, so the surface and its colours are unchanged (only the resolution of the offsets grows)."""
    vals = mesh.vertices if mesh.vertex_colors is None else torch.cat([mesh.vertices, mesh.vertex_colors], 1)
    nv, nf = _midpoint_split(mesh.faces, vals)
    kw = dict(vertices=nv[:, :3].contiguous(), faces=nf)
    if mesh.vertex_colors is not None:
        kw["vertex_colors"] = nv[:, 3:].contiguous()
    if mesh.uvs is not None:
        nuv, nuf = _midpoint_split(mesh.uv_faces, mesh.uvs)
        kw.update(uvs=nuv, uv_faces=nuf, texture=mesh.texture)
    return Mesh(**kw)


def texture_from_uvs_at_vertices(mesh: Mesh) -> torch.Tensor:
    """(V, 3) colours sampled from the texture at each vertex's (first) UV corner."""
    uv_of_vertex = torch.zeros(mesh.num_vertices, 2, device=mesh.device)
    uv_of_vertex[mesh.faces.reshape(-1)] = mesh.uvs[mesh.uv_faces.reshape(-1)]
    tex = mesh.texture[..., :3].permute(2, 0, 1)[None]
    grid = torch.stack([uv_of_vertex[:, 0] * 2 - 1, 1 - uv_of_vertex[:, 1] * 2], -1)[None, None]
    c = torch.nn.functional.grid_sample(tex, grid, mode="bilinear", align_corners=False, padding_mode="border")
    return c[0, :, 0].T.clamp(0, 1).contiguous()


def prepare_colors(mesh: Mesh, color_mode: str, texture_resolution: int, condition=None,
                   notes: list | None = None) -> Mesh:
    """Make sure ``mesh`` carries the colour representation refinement optimises.

    The result carries exactly **one colour source** (the one optimised), so the refined mesh never
    leaves with a texture and vertex colours together (glTF viewers multiply them).

    ``texture`` mode: keep an existing texture (vertex colours dropped: the renderer shows the texture);
    else unwrap UVs (xatlas) and bake the vertex colours; a mesh with neither starts grey (0.5) and, when
    ``condition = (cameras, images, masks)`` is given, gets the condition views projected onto it.
    ``vertex_colors`` mode: keep vertex colours; sample them from the texture; or grey (the texture is
    dropped, the UVs kept).
    """
    notes = notes if notes is not None else []
    if color_mode == "vertex_colors":
        if mesh.vertex_colors is not None:
            return mesh.replace(vertex_colors=mesh.vertex_colors[:, :3], texture=None)
        if mesh.has_texture:
            notes.append("vertex-colour mode: colours sampled from the input texture at the vertices "
                         "(the refined mesh carries vertex colours only).")
            return mesh.replace(vertex_colors=texture_from_uvs_at_vertices(mesh), texture=None)
        notes.append("the mesh has no colours: starting from grey vertex colours.")
        return mesh.replace(vertex_colors=torch.full_like(mesh.vertices, 0.5))

    if mesh.has_texture:
        tex = mesh.texture[..., :3]
        if mesh.vertex_colors is not None:
            notes.append("texture mode: the input's vertex colours are dropped (the texture is refined).")
        return mesh.replace(texture=tex.contiguous(), vertex_colors=None)
    from ..geometry.uv import unwrap_uv
    from ..render import bake as B

    unwrapped = unwrap_uv(mesh)
    if unwrapped.num_vertices != mesh.num_vertices:
        raise RuntimeError("unwrap_uv changed the vertex count; refinement needs the input's vertices.")
    if mesh.vertex_colors is not None:
        notes.append(f"no UV texture: unwrapped UVs with xatlas and baked the vertex colours into a "
                     f"{texture_resolution}^2 texture.")
        tex = B.bake_vertex_colors_to_texture(unwrapped, texture_resolution)
    else:
        grey = torch.full((texture_resolution, texture_resolution, 3), 0.5, device=mesh.device)
        if condition is not None:
            cams, images, masks = condition
            notes.append("the mesh has no UVs and no colours: unwrapped UVs, started from grey and projected "
                         "the condition views onto the texture.")
            tex = B.bake_views_to_texture(unwrapped, cams, images, masks, texture_resolution, initial=grey)
        else:
            notes.append("the mesh has no UVs and no colours: unwrapped UVs and started from a grey texture.")
            tex = grey
    tex = tex.texture if isinstance(tex, Mesh) else tex
    return unwrapped.replace(texture=torch.as_tensor(tex)[..., :3].float().contiguous(), vertex_colors=None)


class RefinableMesh(torch.nn.Module):
    """Offsets (V', 3) per distinct vertex position on fixed base vertices + colours (texture (H, W, 3) or vertex colours (V, 3))."""

    def __init__(self, mesh: Mesh, color_mode: str = "texture", refine_geometry: bool = True):
        super().__init__()
        self.base = mesh
        self.color_mode = color_mode
        self.register_buffer("base_vertices", mesh.vertices.clone())
        # Vertices split at UV seams (glTF/PLY) share one offset so geometry refinement never tears seams.
        welded, weld = torch.unique(mesh.vertices.detach(), dim=0, return_inverse=True)
        self.register_buffer("weld", weld.reshape(-1))
        self.register_buffer("welded_base", welded.clone())
        self.register_buffer("welded_faces", self.weld[mesh.faces])
        self.offsets = torch.nn.Parameter(torch.zeros_like(welded), requires_grad=refine_geometry)
        if color_mode == "texture":
            if not mesh.has_texture:
                raise ValueError("RefinableMesh: texture mode needs a mesh with uvs and a texture (see prepare_colors).")
            self.colors = torch.nn.Parameter(mesh.texture[..., :3].clone())
        else:
            if mesh.vertex_colors is None:
                raise ValueError("RefinableMesh: vertex-colour mode needs vertex colours (see prepare_colors).")
            self.colors = torch.nn.Parameter(mesh.vertex_colors[:, :3].clone())

    @property
    def faces(self) -> torch.Tensor:
        return self.base.faces

    def vertices(self) -> torch.Tensor:
        """(V, 3) current positions (base + offset of each vertex's welded position)."""
        return self.base_vertices + self.offsets[self.weld]

    def render(self, cameras, background: float = 1.0, antialias: bool = True, grad: bool = True):
        """Albedo render: RenderOutput with rgb (N, H, W, 3) on ``background``, alpha, depth, normal."""
        from ..render.renderer import render

        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx:
            kw = dict(vertices=self.vertices())
            if self.color_mode == "texture":
                kw["texture"] = self.colors
            else:
                kw["vertex_colors"] = self.colors
            return render(self.base, cameras, mode="albedo", background=background, antialias=antialias, **kw)

    @torch.no_grad()
    def clamp_(self):
        self.colors.clamp_(0, 1)

    @torch.no_grad()
    def snapshot(self) -> dict:
        return {"offsets": self.offsets.detach().clone(), "colors": self.colors.detach().clone()}

    @torch.no_grad()
    def load_snapshot(self, snap: dict):
        self.offsets.copy_(snap["offsets"])
        self.colors.copy_(snap["colors"])

    @torch.no_grad()
    def to_mesh(self, snap: dict | None = None) -> Mesh:
        """The refined mesh (normalised frame), detached, with fresh vertex normals."""
        off = self.offsets if snap is None else snap["offsets"]
        col = self.colors if snap is None else snap["colors"]
        v = (self.base_vertices + off[self.weld]).detach().clone()
        if self.color_mode == "texture":
            m = self.base.replace(vertices=v, texture=col.detach().clone().clamp(0, 1))
            if self.base.vertex_colors is not None:
                m = m.replace(vertex_colors=texture_from_uvs_at_vertices(m))
            return m
        return self.base.replace(vertices=v, vertex_colors=col.detach().clone().clamp(0, 1))
