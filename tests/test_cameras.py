import math

import pytest
import torch

from magicboost_core.geometry import Cameras, camera_vectors, condition_strength_labels, get_preset, orbit_cameras
from magicboost_core.geometry.camera import opencv_to_opengl, opengl_to_opencv, yup_to_zup, zup_to_yup
from magicboost_core.geometry.presets import RandomPoseSampler, custom_preset

# Reference §2.6: instant3d anchors az 0/90/180/270 el 0, target el 0 az 45 (float32).
REF = {
    "target": [1, 0, 0, 0, 0, 0.70710677, 0, 1, 0.70710677, 1],
    "a0": [0, 1, 0, 0, 0, 0, 0, 1, 1, 1],
    "a90": [0, 1, 0, 0, 0, 1, 0, 1, -4.37e-8, 1],
    "a180": [0, 1, 0, 0, 0, 8.74e-8, 0, 1, -1, 1],
    "a270": [0, 1, 0, 0, 0, -1, 0, 1, -4.37e-8, 1],
}


def test_reference_camera_vectors():
    el = [0, 0, 0, 0, 0]
    az = [45, 0, 90, 180, 270]
    vec = camera_vectors(el, az)
    assert vec.dtype == torch.float32 and vec.shape == (5, 10)
    for row, key in zip(vec, ["target", "a0", "a90", "a180", "a270"]):
        assert torch.allclose(row, torch.tensor(REF[key], dtype=torch.float32), atol=1e-6), (key, row)


def test_relative_azimuth_rounding_and_wrap():
    vec = camera_vectors([0, 10], [44.6, 0.0])
    assert math.isclose(float(vec[0, 5]), math.sin(math.radians(45)), abs_tol=1e-6)
    vec = camera_vectors([0, 0], [-190.0, 0.0])  # wraps to +170
    assert math.isclose(float(vec[0, 5]), math.sin(math.radians(170)), abs_tol=1e-6)


def test_condition_strength_labels():
    lab = condition_strength_labels(4)
    assert lab.tolist() == [[0, 0], [0, 0], [500, 0.5], [500, 0.5], [500, 0.5]]
    lab = condition_strength_labels(4, 1.0, 1.0)
    assert lab.abs().sum() == 0


@pytest.mark.parametrize("name", ["instant3d", "instantmesh"])
def test_presets_look_at_origin(name):
    p = get_preset(name)
    cams = p.cameras(64)
    assert len(cams) == p.num_views
    # The optical axis passes through the origin: project the origin to the image centre.
    clip = cams.world_to_clip(torch.zeros(1, 3))
    ndc = clip[..., :2] / clip[..., 3:]
    assert ndc.abs().max() < 1e-5
    assert torch.allclose(cams.position.norm(dim=-1), torch.full((p.num_views,), p.distance), atol=1e-5)
    # Rotation part is orthonormal.
    R = cams.c2w[:, :3, :3]
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(len(cams), 3, 3), atol=1e-5)


def test_instant3d_azimuth_zero_is_plus_x_and_90_is_plus_y():
    cams = get_preset("instant3d").cameras()
    assert torch.allclose(cams.position[0], torch.tensor([1.5, 0, 0]), atol=1e-5)
    assert torch.allclose(cams.position[1], torch.tensor([0, 1.5, 0]), atol=1e-5)
    # Up (+z world) projects upward in the image: NDC y increases with z.
    clip = cams[0].world_to_clip(torch.tensor([[0.0, 0.0, 0.3]]))
    assert float(clip[0, 0, 1] / clip[0, 0, 3]) > 0


def test_opengl_opencv_round_trip():
    cams = orbit_cameras([10, -20, 30], [0, 120, 250], 2.0, 40.0, width=96, height=64)
    c2w_cv, K = cams.to_opencv()
    back = Cameras.from_opencv(c2w_cv, K, 96, 64)
    assert torch.allclose(back.c2w, cams.c2w, atol=1e-6)
    assert torch.allclose(back.fovy_deg, cams.fovy_deg, atol=1e-4)
    assert torch.allclose(opencv_to_opengl(opengl_to_opencv(cams.c2w)), cams.c2w)
    # OpenCV camera looks down +z: the origin lies at positive camera-z.
    w2c_cv = torch.linalg.inv(c2w_cv)
    assert (w2c_cv[:, 2, 3] > 0).all()


def test_yup_round_trip_and_up_axis():
    cams = orbit_cameras([30], [60], 2.0)
    yup = zup_to_yup(cams.c2w)
    assert torch.allclose(yup_to_zup(yup), cams.c2w, atol=1e-6)
    # a camera above the object (positive elevation) is above in y-up too
    assert yup[0, 1, 3] > 0


def test_random_sampler_ranges_and_seed():
    g = torch.Generator().manual_seed(0)
    s = RandomPoseSampler(elevation_range=(-10, 20), distance=4.0, fovy_deg=30, resolution=32, generator=g)
    cams = s.sample(64)
    assert len(cams) == 64
    assert cams.elevation_deg.min() >= -10 - 1e-4 and cams.elevation_deg.max() <= 20 + 1e-4
    assert cams.azimuth_deg.min() >= -180 and cams.azimuth_deg.max() <= 180
    g2 = torch.Generator().manual_seed(0)
    s2 = RandomPoseSampler(elevation_range=(-10, 20), distance=4.0, fovy_deg=30, resolution=32, generator=g2)
    assert torch.equal(s2.sample(64).c2w, cams.c2w)


def test_bad_camera_input():
    with pytest.raises(ValueError, match="same length"):
        orbit_cameras([0, 0, 0], [0, 90], 1.5)
    with pytest.raises(ValueError, match="distance"):
        orbit_cameras([0], [0], 0.0)
    with pytest.raises(ValueError, match="elevations"):
        custom_preset("0,10", "0,90,180")
    with pytest.raises(ValueError, match="Unknown view preset"):
        get_preset("nope")
    with pytest.raises(ValueError, match="NaN"):
        Cameras(c2w=torch.full((1, 4, 4), float("nan")), fovy_deg=40)
