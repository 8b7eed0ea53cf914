"""Mesh metrics: Chamfer distance, normal consistency, saturation."""
import pytest
import torch

from magicboost_core.eval.mesh_metrics import (chamfer_distance, mean_saturation, mesh_distances, nearest_neighbors,
                                               normal_consistency, sample_surface)
from magicboost_core.geometry.mesh import Mesh

import trimesh


def sphere(r=0.5, sub=3):
    m = trimesh.creation.icosphere(subdivisions=sub, radius=r)
    return Mesh(vertices=torch.tensor(m.vertices, dtype=torch.float32), faces=torch.tensor(m.faces))


def test_identical_meshes_have_small_chamfer_and_full_consistency():
    m = sphere()
    d = mesh_distances(m, m, num_points=4000)
    assert d["chamfer"] < 0.02 and d["normal_consistency"] > 0.99


def test_chamfer_of_concentric_spheres_is_radius_gap():
    a, b = sphere(0.5), sphere(0.6)
    cd = chamfer_distance(a, b, num_points=4000)
    assert cd == pytest.approx(0.1, abs=0.01)
    assert chamfer_distance(a, b, 4000) == pytest.approx(chamfer_distance(b, a, 4000, seed=0), abs=0.01)


def test_normal_consistency_drops_for_noisy_surface():
    a = sphere()
    g = torch.Generator().manual_seed(0)
    noisy = a.replace(vertices=a.vertices + 0.03 * torch.randn(a.vertices.shape, generator=g))
    assert normal_consistency(noisy, a, 4000) < normal_consistency(a, a, 4000) - 0.05


def test_samples_lie_on_surface_and_nn_chunks_agree():
    a = sphere(0.5, 4)
    p, n = sample_surface(a, 1000)
    assert ((p.norm(dim=1) - 0.5).abs() < 0.01).all()
    d1, i1 = nearest_neighbors(p, a.vertices, chunk=7)
    d2, i2 = nearest_neighbors(p, a.vertices, chunk=100000)
    assert torch.equal(i1, i2) and torch.allclose(d1, d2)


def test_mean_saturation():
    img = torch.zeros(1, 2, 2, 3)
    img[0, 0, 0] = torch.tensor([1.0, 0.0, 0.0])  # s = 1
    img[0, 0, 1] = torch.tensor([0.5, 0.5, 0.5])  # s = 0
    img[0, 1, :] = 1.0                              # white background
    mask = torch.tensor([[[[1.0], [1.0]], [[0.0], [0.0]]]])
    assert mean_saturation(img, mask) == pytest.approx(0.5)
    assert mean_saturation(img) == pytest.approx(0.25)
