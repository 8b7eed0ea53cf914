"""refine_mesh with the real multi-view model code (tiny random-weight demo architecture)."""
import pytest
import torch

from magicboost_core.geometry.presets import get_preset
from magicboost_core.refine.config import RefineConfig
from magicboost_core.refine.guidance import MultiViewGuidance
from magicboost_core.refine.loop import refine_mesh
from magicboost_core.refine.representation import RefinableMesh
from magicboost_core.refine.sds import sds_step

import magicboost_core.model.bundle as model_mod
from scene_helpers import demo_scene


@pytest.fixture(scope="module")
def setup():
    from magicboost_core.model import encode_views

    model, mesh, views, p = demo_scene(subdivisions=2)
    cond = encode_views(model, views, torch.tensor(p.elevations), torch.tensor(p.azimuths),
                        generator=torch.Generator().manual_seed(0))
    return model, cond, mesh, views


def test_sds_step_with_demo_architecture_gives_gradients(setup):
    model, cond, mesh, _ = setup
    rep = RefinableMesh(mesh, "vertex_colors")
    guid = MultiViewGuidance(model, cond, cfg_scale=5.0)
    cams = get_preset("instant3d").cameras(32)[[1, 2]]
    out = rep.render(cams)
    sds = sds_step(guid, out.rgb.permute(0, 3, 1, 2), cams.elevation_deg, cams.azimuth_deg, 250,
                   torch.Generator().manual_seed(0))
    assert torch.isfinite(sds.loss) and sds.loss.item() > 0
    sds.loss.backward()
    for p in (rep.offsets, rep.colors):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_refine_with_model_runs_aiu_and_is_deterministic(setup):
    model, cond, mesh, views = setup
    cfg = RefineConfig(steps=4, render_resolution=32, batch_size=1, color_mode="vertex_colors", preview_resolution=16,
                       aiu=RefineConfig().aiu.__class__(start_fraction=0.25, every_fraction=0.9))
    r1 = refine_mesh(model, cond, mesh, cfg, reference_views=(views[..., :3], views[..., 3:]))
    assert r1.pseudo_views is not None and r1.pseudo_views.images.shape == (4, 32, 32, 3)
    assert torch.isfinite(r1.pseudo_views.images).all()
    assert any("sds" in l for l in r1.losses) and any("aiu" in l for l in r1.losses)
    r2 = refine_mesh(model, cond, mesh, cfg, reference_views=(views[..., :3], views[..., 3:]))
    assert torch.equal(r1.mesh.vertices, r2.mesh.vertices) and torch.equal(r1.mesh.vertex_colors, r2.mesh.vertex_colors)
