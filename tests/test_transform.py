"""Normalisation, axis changes and the InstantMesh z-flip."""
import itertools

import pytest
import torch

from magicboost_core.geometry import Mesh, MeshError
from magicboost_core.geometry.camera import YUP_TO_ZUP
from magicboost_core.geometry.primitives import box, icosphere, torus, uv_sphere
from magicboost_core.geometry.transform import (
    Normalization, axes_rotation, bounding_sphere, change_axes, flip_z, normalize_to_unit_sphere,
)


def signed_volume(m) -> float:
    v, f = m.vertices.double(), m.faces
    return float((v[f[:, 0]] * torch.cross(v[f[:, 1]], v[f[:, 2]], dim=-1)).sum() / 6)


def shifted_box():
    b = box((2.0, 1.0, 4.0), colors="position")
    return b.replace(vertices=b.vertices + torch.tensor([10.0, -3.0, 0.5]))


@pytest.mark.parametrize("radius", [1.0, 0.5])
def test_normalize_to_unit_sphere_and_exact_inverse(radius):
    m = shifted_box()
    n, norm = normalize_to_unit_sphere(m, radius)
    assert float(n.vertices.norm(dim=-1).max()) == pytest.approx(radius, abs=1e-6)
    lo, hi = n.bounds()
    assert torch.allclose((lo + hi) / 2, torch.zeros(3), atol=1e-6)
    assert torch.allclose(norm.center, torch.tensor([10.0, -3.0, 0.5], dtype=torch.float64))
    back = norm.invert(n)
    assert (back.vertices - m.vertices).abs().max() <= 1e-6
    assert torch.equal(back.faces, m.faces) and torch.equal(back.vertex_colors, m.vertex_colors)
    pts = torch.rand(7, 3)
    assert torch.allclose(norm.invert_points(norm.apply_points(pts)), pts, atol=1e-6)
    again = Normalization.from_dict(norm.to_dict())
    assert torch.equal(again.center, norm.center) and again.scale == norm.scale


def test_degenerate_input_is_rejected():
    m = box()
    with pytest.raises(MeshError, match="zero area"):  # a mesh whose vertices coincide cannot even be built
        normalize_to_unit_sphere(m.replace(vertices=torch.ones_like(m.vertices)))
    with pytest.raises(ValueError, match="radius"):
        normalize_to_unit_sphere(m, 0.0)
    with pytest.raises(ValueError, match="scale"):
        Normalization(center=torch.zeros(3), scale=0.0)


def test_axes_rotations_are_proper_and_invertible():
    axes = ["+x", "-x", "+y", "-y", "+z", "-z"]
    count = 0
    for up, fwd in itertools.product(axes, axes):
        if up[1] == fwd[1]:
            with pytest.raises(ValueError, match="different axes"):
                axes_rotation(up, fwd)
            continue
        R = axes_rotation(up, fwd)
        assert torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64))
        assert float(torch.linalg.det(R)) == pytest.approx(1)
        count += 1
    assert count == 24
    assert torch.equal(axes_rotation("+z", "+x"), torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="up must be one of"):
        axes_rotation("up", "+x")


def test_change_axes_round_trip_and_gltf_front():
    m = torus(colors="position")
    src = change_axes(m, up="+y", forward="+z", inverse=True)  # express in a glTF-like frame
    back = change_axes(src, up="+y", forward="+z")
    assert (back.vertices - m.vertices).abs().max() <= 1e-6
    assert torch.equal(back.faces, m.faces)
    # glTF: up +y -> our +z, front +z -> our +x
    tri = Mesh(vertices=torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]),
               faces=torch.tensor([[0, 1, 2]]))
    r = change_axes(tri, up="+y", forward="+z").vertices
    assert torch.allclose(r, torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    # up-only conversion of mesh_io (YUP_TO_ZUP) agrees on the up axis
    assert torch.allclose((YUP_TO_ZUP @ torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)).float(), r[0])
    assert signed_volume(change_axes(m, "-x", "+y")) > 0  # rotations keep normals outward


def test_flip_z_keeps_normals_outward_and_is_an_involution():
    m = uv_sphere(6, 8, uv=True, colors="position")
    m = m.replace(vertices=m.vertices + torch.tensor([0.0, 0.0, 0.3]))
    m = m.replace(vertex_normals=m.compute_vertex_normals())
    f = flip_z(m)
    assert torch.equal(f.vertices[:, :2], m.vertices[:, :2]) and torch.equal(f.vertices[:, 2], -m.vertices[:, 2])
    assert signed_volume(f) == pytest.approx(signed_volume(m), rel=1e-6) and signed_volume(f) > 0
    # each face normal is the mirror image of the original one
    mirror = torch.tensor([1.0, 1.0, -1.0])
    assert torch.allclose(f.face_normals(), m.face_normals() * mirror, atol=1e-6)
    assert torch.allclose(f.vertex_normals, f.compute_vertex_normals(), atol=1e-5)
    # corners keep their UVs
    assert torch.equal(f.uvs[f.uv_faces][:, [0, 2, 1]], m.uvs[m.uv_faces])
    ff = flip_z(f)
    assert torch.equal(ff.vertices, m.vertices) and torch.equal(ff.faces, m.faces)
    assert torch.equal(ff.uv_faces, m.uv_faces)
    assert signed_volume(flip_z(icosphere(1))) > 0


def test_normalization_with_rotation_round_trips_and_serialises():
    m = torus(0.3, 0.1, 16, 8)
    m = m.replace(vertex_normals=m.compute_vertex_normals())
    R = axes_rotation("+y", "+z")
    norm = Normalization(torch.tensor([0.1, -0.2, 0.05]), 2.0, R)
    moved = norm.apply(m)
    assert torch.allclose(moved.vertices, ((m.vertices.double() @ R.T - norm.center) * 2.0).float(), atol=1e-6)
    assert torch.allclose(moved.vertex_normals, moved.compute_vertex_normals(), atol=1e-5)  # normals rotated along
    again = Normalization.from_dict(norm.to_dict())
    assert torch.allclose(again.invert(moved).vertices, m.vertices, atol=1e-6)
    c, r = bounding_sphere(m.vertices.double())
    assert torch.allclose(c, torch.zeros(3, dtype=torch.float64), atol=1e-6) and abs(r - 0.4) < 1e-3
