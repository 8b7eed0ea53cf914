"""Device discipline (issue 12, breaker 1): the condition builders, one SDS step and one AIU step with the model
and the cameras on a non-CPU device. ``tests/devicecheck.py`` stands in for a GPU on CPU-only machines and fails
wherever a tensor created on the CPU meets one on the device."""
import pytest
import torch

from magicboost_core.geometry.camera_vector import camera_vectors, condition_strength_labels
from magicboost_core.refine.aiu import aiu_cameras, drop_nearest_anchor_mask, sdedit_pseudo_views
from magicboost_core.refine.guidance import MultiViewGuidance
from magicboost_core.refine.representation import RefinableMesh
from magicboost_core.refine.sds import sds_step

from devicecheck import STANDIN, DeviceMixError, StandInDevice, is_standin
from scene_helpers import demo_scene


def test_standin_catches_mixing_and_allows_scalars():
    with StandInDevice():
        x = torch.ones(3).to(STANDIN)
        assert x.device == STANDIN and is_standin(x * torch.tensor(2.0))
        with pytest.raises(DeviceMixError, match="same device"):
            torch.cat([x, torch.zeros(2)])
        assert not is_standin(x.cpu()) and float(x.sum()) == 3.0
        assert is_standin(torch.zeros(2, device=x.device))
        with pytest.raises(DeviceMixError, match="generator"):
            torch.randn(2, generator=torch.Generator(), device=STANDIN)


def test_camera_codes_and_drop_mask_stay_on_the_input_device():
    el = torch.tensor([0.0, 10.0, 0.0], device="meta")
    az = torch.tensor([45.0, 0.0, 90.0], device="meta")
    codes = camera_vectors(el, az, None, torch.tensor([True, False, False], device="meta"), (0.0, 0.0, 0.0))
    assert codes.device.type == "meta" and codes.shape == (3, 10)
    mask = drop_nearest_anchor_mask(torch.tensor([10.0, 200.0], device="meta"), [0.0, 90.0, 180.0, 270.0])
    assert mask.device.type == "meta" and mask.shape == (2, 3)
    lab = condition_strength_labels(4, device="meta")
    assert lab.device.type == "meta" and lab.shape == (5, 2)


@pytest.fixture(scope="module")
def scene():
    return demo_scene(subdivisions=1)


def test_condition_sds_and_aiu_on_a_non_cpu_device(scene):
    from magicboost_core.model import encode_views

    model, mesh, views, preset = scene
    with StandInDevice():
        model.to(STANDIN)
        try:
            assert is_standin(next(model.unet.parameters()))
            cond = encode_views(model, views, list(preset.elevations), list(preset.azimuths),
                                generator=torch.Generator().manual_seed(0))
            assert cond.anchor_latents.device == STANDIN
            guid = MultiViewGuidance(model, cond, cfg_scale=5.0)
            rep = RefinableMesh(mesh.to(STANDIN), "vertex_colors").to(STANDIN)  # as refine_mesh builds it
            cams = preset.cameras(32)[[1, 2]].to(STANDIN)
            out = rep.render(cams)
            sds = sds_step(guid, out.rgb.permute(0, 3, 1, 2), cams.elevation_deg, cams.azimuth_deg, 250,
                           torch.Generator().manual_seed(0))
            assert is_standin(sds.loss) and torch.isfinite(sds.loss)
            sds.loss.backward()
            assert rep.colors.grad is not None
            aiu = aiu_cameras(preset.distance, preset.fovy_deg, 32).to(STANDIN)
            pv = sdedit_pseudo_views(guid, rep, aiu, list(preset.azimuths), strength=0.1, num_ddim_steps=50)
            assert pv.images.shape == (4, 32, 32, 3) and torch.isfinite(pv.images).all()
        finally:
            model.to("cpu")


def test_refine_loop_with_aiu_on_a_non_cpu_device(scene):
    """The whole refine_mesh loop (SDS + AIU) with the model on the stand-in device mixes no devices."""
    from magicboost_core.model import encode_views
    from magicboost_core.refine.config import RefineConfig
    from magicboost_core.refine.loop import refine_mesh

    model, mesh, views, preset = scene
    cond = encode_views(model, views, list(preset.elevations), list(preset.azimuths),
                        generator=torch.Generator().manual_seed(0))
    cfg = RefineConfig(steps=4, render_resolution=32, batch_size=1, color_mode="vertex_colors", preview_resolution=16,
                       aiu=RefineConfig().aiu.__class__(start_fraction=0.25, every_fraction=0.9))
    with StandInDevice():
        model.to(STANDIN)
        try:
            r = refine_mesh(model, cond, mesh, cfg, reference_views=(views[..., :3], views[..., 3:]))
        finally:
            model.to("cpu")
    assert r.steps_done == 4 and r.pseudo_views is not None
    assert any("sds" in row for row in r.losses)
