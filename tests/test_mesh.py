"""Mesh validation, primitives, UV seams and xatlas unwrapping."""
import pytest
import torch

from magicboost_core.geometry import Mesh, MeshError
from magicboost_core.geometry.mesh_convert import concatenate_meshes, merge_seam_vertices, split_uv_seams
from magicboost_core.geometry.primitives import (
    box, checker_texture, cylinder, icosphere, textured_quad, torus, uv_sphere,
)


def signed_volume(m: Mesh) -> float:
    v, f = m.vertices.double(), m.faces
    return float((v[f[:, 0]] * torch.cross(v[f[:, 1]], v[f[:, 2]], dim=-1)).sum() / 6)


def is_closed_and_consistent(m: Mesh) -> bool:
    """Every directed edge appears once and its reverse once: watertight with consistent winding."""
    f = m.faces
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    key = e[:, 0] * m.num_vertices + e[:, 1]
    rkey = e[:, 1] * m.num_vertices + e[:, 0]
    if torch.unique(key).numel() != key.numel():
        return False
    return bool(torch.isin(rkey, key).all())


# ---- Mesh validation (constructor already raises; these pin the messages) --------------------------
def test_mesh_without_faces_is_rejected():
    with pytest.raises(MeshError, match="no faces"):
        Mesh(vertices=torch.rand(5, 3), faces=torch.zeros(0, 3, dtype=torch.long))


def test_faces_past_vertex_count_are_rejected():
    with pytest.raises(MeshError, match="outside"):
        Mesh(vertices=torch.rand(3, 3), faces=torch.tensor([[0, 1, 3]]))


def test_nan_vertices_are_rejected():
    v = torch.rand(3, 3)
    v[1, 2] = float("nan")
    with pytest.raises(MeshError, match="NaN"):
        Mesh(vertices=v, faces=torch.tensor([[0, 1, 2]]))


# ---- primitives ------------------------------------------------------------------------------------
@pytest.mark.parametrize("make,volume", [
    (lambda: uv_sphere(16, 32, 0.5), 4 / 3 * torch.pi * 0.125),
    (lambda: icosphere(2, 0.5), 4 / 3 * torch.pi * 0.125),
    (lambda: box(1.0), 1.0),
    (lambda: box((1.0, 2.0, 0.5)), 1.0),
    (lambda: cylinder(0.5, 1.0, 48), torch.pi * 0.25),
    (lambda: torus(0.35, 0.15, 48, 24), 2 * torch.pi ** 2 * 0.35 * 0.15 ** 2),
])
def test_primitives_are_watertight_and_outward(make, volume):
    m = make()
    assert m.vertices.dtype == torch.float32 and m.faces.dtype == torch.int64
    assert is_closed_and_consistent(m)
    vol = signed_volume(m)
    assert vol > 0  # outward (CCW seen from outside)
    assert vol == pytest.approx(float(volume), rel=0.05)


def test_primitive_counts_and_colours():
    assert icosphere(0).num_vertices == 12 and icosphere(0).num_faces == 20
    assert icosphere(2).num_vertices == 162 and icosphere(2).num_faces == 320
    s = uv_sphere(6, 8, colors="position")
    assert s.num_vertices == 2 + 5 * 8 and s.vertex_colors.shape == (42, 3)
    assert float(s.vertex_colors.min()) >= 0 and float(s.vertex_colors.max()) <= 1
    b = box(colors=(1.0, 0.0, 0.0, 0.5))
    assert b.vertex_colors.shape == (8, 4) and torch.equal(b.vertex_colors[0], torch.tensor([1.0, 0.0, 0.0, 0.5]))
    assert torch.allclose(icosphere(1, radius=0.7).vertices.norm(dim=-1), torch.tensor(0.7), atol=1e-6)
    with pytest.raises(MeshError, match="colors"):
        box(colors="rainbow")


def test_uv_sphere_with_seams_and_textured_quad():
    s = uv_sphere(6, 8, uv=True, texture=checker_texture(8))
    assert is_closed_and_consistent(s)
    assert s.uvs.shape == (7 * 9, 2) and s.uv_faces.shape == s.faces.shape
    assert s.uvs.min() >= 0 and s.uvs.max() <= 1
    q = textured_quad()
    assert q.has_texture and q.texture.shape == (8, 8, 3)
    assert torch.allclose(q.face_normals(), torch.tensor([0.0, 0.0, 1.0]).expand(2, 3))
    # PNG-exact texture values
    assert torch.equal((q.texture * 255).round() / 255, q.texture)


# ---- seams ---------------------------------------------------------------------------------------
def test_split_and_merge_uv_seams_preserve_corners():
    s = uv_sphere(6, 8, uv=True, texture=checker_texture(8), colors="position")
    split, vmap = split_uv_seams(s)
    assert split.num_vertices > s.num_vertices
    assert split.uvs.shape[0] == split.num_vertices and torch.equal(split.uv_faces, split.faces)
    assert torch.equal(split.vertices[split.faces], s.vertices[s.faces])
    assert torch.equal(split.uvs[split.uv_faces], s.uvs[s.uv_faces])
    assert torch.equal(split.vertex_colors, s.vertex_colors[vmap])
    merged = merge_seam_vertices(split)
    assert merged.num_vertices == s.num_vertices
    assert is_closed_and_consistent(merged)
    assert torch.equal(merged.vertices[merged.faces], s.vertices[s.faces])
    assert torch.equal(merged.uvs[merged.uv_faces], s.uvs[s.uv_faces])
    # already per-vertex: unchanged
    q = textured_quad()
    same, vmap = split_uv_seams(q)
    assert same is q and torch.equal(vmap, torch.arange(4))


def test_concatenate_packs_different_textures():
    red = torch.tensor([1.0, 0.0, 0.0]).expand(2, 2, 3).clone()
    blue = torch.tensor([0.0, 0.0, 1.0]).expand(4, 2, 3).clone()
    a, b = textured_quad(texture=red), textured_quad(texture=blue)
    c = concatenate_meshes([a, b, box(colors=(0.0, 1.0, 0.0))])
    assert c.num_vertices == 4 + 4 + 8 and c.num_faces == 2 + 2 + 12
    assert c.vertex_colors.shape == (16, 3)
    assert torch.equal(c.vertex_colors[:8], torch.ones(8, 3))  # white where missing
    H, W, _ = c.texture.shape
    uv = c.uvs[c.uv_faces]  # (F, 3, 2)
    # sample slightly inside the corners: move each corner 10% toward the face centre
    cen = uv.mean(1, keepdim=True)
    uv_in = uv + 0.1 * (cen - uv)
    px = (uv_in[..., 0] * W).long().clamp(0, W - 1)
    py = ((1 - uv_in[..., 1]) * H).long().clamp(0, H - 1)
    sampled = c.texture[py, px]
    assert torch.equal(sampled[:2], red[0, 0].expand(2, 3, 3))
    assert torch.equal(sampled[2:4], blue[0, 0].expand(2, 3, 3))
    assert torch.equal(sampled[4:], torch.ones(12, 3, 3))  # untextured part -> white patch


# ---- xatlas --------------------------------------------------------------------------------------
def test_unwrap_uv_keeps_geometry():
    import xatlas  # noqa: F401  (a dependency: a missing one fails, never skips)
    from magicboost_core.geometry.uv import unwrap_uv

    m = icosphere(1, colors="position")
    u = unwrap_uv(m, resolution=64)
    assert torch.equal(u.vertices, m.vertices) and torch.equal(u.faces, m.faces)
    assert torch.equal(u.vertex_colors, m.vertex_colors)
    assert u.uv_faces.shape == m.faces.shape and u.uvs.shape[1] == 2
    assert float(u.uvs.min()) >= 0 and float(u.uvs.max()) <= 1
    # charts do not overlap much: total uv area is positive and below 1
    t = u.uvs[u.uv_faces].double()
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    area = (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).abs() / 2
    assert 0.1 < float(area.sum()) <= 1.0
    with pytest.warns(UserWarning, match="re-bake"):
        unwrap_uv(textured_quad(), resolution=16)
