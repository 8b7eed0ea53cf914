"""Conversions: ComfyUI core MESH (via the stand-in class), ComfyUI-3D-Pack Mesh, trimesh."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from magicboost_core.geometry import Mesh, MeshError
from magicboost_core.geometry.camera import ZUP_TO_YUP
from magicboost_core.geometry.mesh_convert import (
    ComfyMeshLike, concatenate_meshes, mesh_from_comfy, mesh_from_trimesh, mesh_to_comfy, mesh_to_trimesh,
    split_uv_seams,
)
from magicboost_core.geometry.primitives import box, checker_texture, icosphere, textured_quad, uv_sphere

COLOR_TOL = 1 / 255 + 1e-6


def corners_equal(a: Mesh, b: Mesh, uv: bool = True, colors_tol: float | None = 0.0, atol: float = 1e-6):
    assert a.faces.shape == b.faces.shape
    assert (a.vertices[a.faces] - b.vertices[b.faces]).abs().max() <= atol
    if uv:
        assert (a.uvs[a.uv_faces] - b.uvs[b.uv_faces]).abs().max() <= 1e-6
    if colors_tol is not None:
        assert (a.vertex_colors[a.faces] - b.vertex_colors[b.faces]).abs().max() <= colors_tol


# ---- core MESH -------------------------------------------------------------------------------------
def test_core_mesh_round_trip_variable_batch():
    a = uv_sphere(6, 8, uv=True, texture=checker_texture(8), colors="position")
    b = box(colors=(0.1, 0.2, 0.3))
    core = mesh_to_comfy([a, b], mesh_cls=ComfyMeshLike)
    assert isinstance(core, ComfyMeshLike)
    assert core.vertices.shape[0] == 2 and core.vertices.dtype == torch.float32
    assert core.faces.dtype == torch.int64 and core.faces.shape == (2, a.num_faces, 3)
    assert core.vertex_counts.tolist() == [split_uv_seams(a)[0].num_vertices, 8]  # seams split per vertex
    assert core.face_counts.tolist() == [a.num_faces, 12]
    assert core.uvs.shape[:2] == core.vertices.shape[:2] and core.texture.shape == (2, 8, 8, 3)
    assert core.vertex_colors.shape[-1] == 3
    # smooth normals survive the seam split: split copies of one vertex share its normal
    split, vmap = split_uv_seams(a)
    expected = (a.normals()[vmap].double() @ ZUP_TO_YUP.T).float()
    assert torch.allclose(core.normals[0, : split.num_vertices], expected, atol=1e-6)
    back = mesh_from_comfy(core)
    assert len(back) == 2
    corners_equal(a, back[0], colors_tol=1e-6)
    assert torch.equal(back[0].texture, a.texture)
    assert back[1].num_vertices == 8 and (back[1].vertices - b.vertices).abs().max() <= 1e-6
    assert torch.equal(back[1].faces, b.faces)
    # one item by index
    only = mesh_from_comfy(core, index=1)
    assert len(only) == 1 and only[0].num_faces == 12
    with pytest.raises(MeshError, match="out of range"):
        mesh_from_comfy(core, index=5)


def test_core_mesh_frame_and_uv_convention():
    q = textured_quad()
    core = mesh_to_comfy(q, mesh_cls=ComfyMeshLike)
    expected = (q.vertices.double() @ ZUP_TO_YUP.T).float()
    assert torch.allclose(core.vertices[0], expected, atol=1e-7)  # y-up, as SaveGLB writes it verbatim
    assert torch.allclose(core.uvs[0, :, 1], 1 - q.uvs[:, 1])  # glTF TEXCOORD: v down
    assert core.vertex_counts is None  # uniform batch: no counts
    up = (ZUP_TO_YUP @ torch.tensor([0.0, 0, 1], dtype=torch.float64)).float()
    assert torch.allclose(core.normals[0], up.expand(4, 3))
    raw = mesh_to_comfy(q, mesh_cls=ComfyMeshLike, axes="none")
    assert torch.equal(raw.vertices[0], q.vertices)
    assert torch.equal(mesh_from_comfy(raw, axes="none")[0].vertices, q.vertices)


def test_core_mesh_with_custom_class_and_plain_two_arg_constructor():
    class OldMesh:  # like Types.MESH before optional fields existed
        def __init__(self, vertices, faces):
            self.vertices, self.faces = vertices, faces

    core = mesh_to_comfy(icosphere(1, colors="position"), mesh_cls=OldMesh)
    assert isinstance(core, OldMesh) and core.vertex_colors.shape == (1, 42, 3)
    back = mesh_from_comfy(core)[0]
    assert (back.vertices - icosphere(1).vertices).abs().max() <= 1e-6


def test_core_mesh_padding_without_counts_and_alpha_and_resize():
    v = torch.rand(1, 5, 3)
    f = torch.tensor([[[0, 1, 2], [1, 2, 3], [0, 0, 0], [0, 0, 0]]])
    m = mesh_from_comfy(ComfyMeshLike(v, f), axes="none")[0]
    assert m.num_faces == 2  # all-zero padding rows dropped
    a = textured_quad(texture=checker_texture(8, channels=4))
    b = textured_quad(texture=checker_texture(4))
    with pytest.warns(UserWarning):
        core = mesh_to_comfy([a, b], mesh_cls=ComfyMeshLike)
    assert core.texture.shape == (2, 8, 8, 3)


def test_core_mesh_empty_items_and_bad_shapes():
    v = torch.zeros(2, 4, 3)
    v[0, :3] = torch.eye(3)
    f = torch.zeros(2, 1, 3, dtype=torch.long)
    f[0, 0] = torch.tensor([0, 1, 2])
    core = ComfyMeshLike(v, f, vertex_counts=torch.tensor([3, 0]), face_counts=torch.tensor([1, 0]))
    with pytest.warns(UserWarning, match="empty"):
        out = mesh_from_comfy(core)
    assert len(out) == 1
    with pytest.raises(MeshError, match=r"\[B, N, 3\]"):
        mesh_from_comfy(ComfyMeshLike(torch.zeros(2, 3, 2), torch.zeros(2, 1, 3)))


# ---- ComfyUI-3D-Pack Mesh --------------------------------------------------------------------------
def test_pack3d_mesh_is_accepted():
    q = textured_quad(colors="position")
    yup = (q.vertices.double() @ ZUP_TO_YUP.T).float()
    vt = q.uvs.clone()
    vt[:, 1] = 1 - vt[:, 1]  # kiui / 3D-Pack store v down
    obj = SimpleNamespace(v=yup, f=q.faces.int(), vt=vt, ft=q.faces.int(), vc=q.vertex_colors,
                          albedo=q.texture, vn=None)
    m = mesh_from_comfy(obj)[0]
    assert (m.vertices - q.vertices).abs().max() <= 1e-6
    assert torch.equal(m.faces, q.faces) and torch.allclose(m.uvs, q.uvs)
    assert torch.equal(m.texture, q.texture) and torch.equal(m.vertex_colors, q.vertex_colors)
    # a 3D-Pack mesh with an albedo but no UVs (their default grey texture) loads without texture
    bare = mesh_from_comfy(SimpleNamespace(v=yup, f=q.faces, vt=None, ft=None, vc=None, albedo=torch.ones(4, 4, 3)))
    assert bare[0].texture is None


# ---- trimesh ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: uv_sphere(6, 8, uv=True, texture=checker_texture(8, channels=4), colors="position"),
    lambda: box(colors=(0.25, 0.5, 0.75, 0.5)),
    lambda: icosphere(1),
])
def test_trimesh_round_trip(make):
    m = make()
    tm = mesh_to_trimesh(m)
    assert len(tm.faces) == m.num_faces
    back = mesh_from_trimesh(tm)
    corners_equal(m, back, uv=m.uvs is not None, colors_tol=COLOR_TOL if m.vertex_colors is not None else None)
    if m.texture is not None:
        assert torch.equal(back.texture, m.texture)
    if m.vertex_colors is None:
        assert back.vertex_colors is None
    else:
        assert back.vertex_colors.shape[1] == m.vertex_colors.shape[1]


def test_trimesh_inputs_through_mesh_from_comfy():
    import trimesh
    tm = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    z = mesh_from_comfy(tm)[0]  # a TRIMESH socket: y-up -> z-up
    ext = z.vertices.max(0).values - z.vertices.min(0).values
    assert torch.allclose(ext, torch.tensor([1.0, 3.0, 2.0]), atol=1e-6)
    raw = mesh_from_comfy(tm, axes="none")[0]
    assert torch.allclose(raw.vertices.max(0).values - raw.vertices.min(0).values, torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(MeshError, match="point cloud"):
        mesh_from_comfy(trimesh.PointCloud(np.eye(3)))


def test_our_mesh_and_lists_pass_through():
    q = textured_quad()
    assert mesh_from_comfy(q)[0] is q
    both = mesh_from_comfy([q, mesh_to_comfy(box(), mesh_cls=ComfyMeshLike)])
    assert len(both) == 2 and both[0] is q and (both[1].vertices - box().vertices).abs().max() <= 1e-6


def test_unknown_object_is_rejected_with_a_clear_message():
    with pytest.raises(MeshError, match=r"dict.*core MESH.*3D-Pack.*trimesh"):
        mesh_from_comfy({"vertices": 1})
    with pytest.raises(MeshError, match="Mesh or a non-empty list"):
        mesh_to_comfy([])
    with pytest.raises(ValueError, match="axes"):
        mesh_to_comfy(box(), axes="yup")


def test_concatenate_meshes_mixed_alpha():
    c = concatenate_meshes([box(colors=(1.0, 0.0, 0.0, 0.5)), icosphere(0)])
    assert c.vertex_colors.shape == (20, 4)
    assert torch.equal(c.vertex_colors[8:], torch.ones(12, 4))
    assert torch.equal(c.faces[12:], icosphere(0).faces + 8)
