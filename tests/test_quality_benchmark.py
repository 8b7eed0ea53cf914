"""The quality benchmark's assets and protocol (benchmarks/quality.py, benchmarks/quality_assets.py)."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import fast_simplification  # noqa: F401  (a dependency: a missing one fails, never skips)
import xatlas  # noqa: F401  (a dependency: a missing one fails, never skips)

import quality  # noqa: E402
from quality_assets import ASSET_NAMES, box_downsample, desaturate, make_asset, make_coarse_textured  # noqa: E402


def test_eight_assets_and_the_protocol_constants():
    assert len(ASSET_NAMES) >= 8
    assert quality.EVAL_POSES == [(20.0, 45.0), (20.0, 135.0), (20.0, 225.0), (20.0, 315.0),
                                  (-10.0, 45.0), (-10.0, 135.0), (-10.0, 225.0), (-10.0, 315.0)]
    assert (quality.EVAL_RESOLUTION, quality.VIEW_RESOLUTION, quality.CHAMFER_POINTS) == (256, 128, 20000)


@pytest.mark.parametrize("name", ["crate", "insect"])
def test_asset_and_its_coarse_version_follow_the_protocol(name):
    a = make_asset(name)
    assert a.mesh.has_texture and a.mesh.texture.shape == (512, 512, 3)
    assert abs(float(a.mesh.vertices.norm(dim=1).max()) - 0.55) < 1e-5
    again = make_asset(name)
    assert torch.equal(a.mesh.vertices, again.mesh.vertices) and torch.equal(a.mesh.texture, again.mesh.texture)
    c = make_coarse_textured(a, seed=0)
    assert abs(c.num_faces - 0.25 * a.mesh.num_faces) <= 0.02 * a.mesh.num_faces
    assert c.texture.shape == (64, 64, 3)  # 512 / 8
    sat = lambda t: ((t.max(-1).values - t.min(-1).values) / t.max(-1).values.clamp_min(1e-6)).mean()  # noqa: E731
    assert sat(c.texture) < 0.75 * sat(a.mesh.texture)


def test_desaturate_and_box_downsample():
    rgb = torch.tensor([[0.8, 0.2, 0.4]])
    d = desaturate(rgb, 0.6)
    assert torch.allclose(d.max(-1).values, rgb.max(-1).values)
    s = lambda t: (t.max(-1).values - t.min(-1).values) / t.max(-1).values  # noqa: E731
    assert torch.allclose(s(d), 0.6 * s(rgb))
    t = torch.arange(16.0).view(4, 4, 1)
    assert torch.equal(box_downsample(t, 2)[..., 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))


def test_refine_command_is_the_users_command(tmp_path):
    argv = quality.refine_command(tmp_path / "coarse.glb", [tmp_path / f"v{i}.png" for i in range(4)], tmp_path / "o",
                                  None, [], [])
    assert argv[0] == "refine" and argv[argv.index("--preset") + 1] == "instant3d"
    assert "--steps" not in argv and "--set" not in argv  # no tuning flags unless asked for
    argv = quality.refine_command(tmp_path / "c.glb", [], tmp_path, 50, ["lambda_sds=0"], ["--seed", "1"])
    assert argv[-6:] == ["--steps", "50", "--set", "lambda_sds=0", "--seed", "1"]


@pytest.mark.parametrize("name", ASSET_NAMES)
def test_every_asset_has_outward_normals(name):
    m = make_asset(name).mesh
    v0, v1, v2 = (m.vertices[m.faces[:, i]] for i in range(3))
    n = torch.cross(v1 - v0, v2 - v0, dim=-1)
    signed_volume = float((v0 * n).sum()) / 6
    assert signed_volume > 0
