"""refine_mesh end to end on tiny inputs with the model-free ToyGuidance (seconds on CPU)."""
import math
from dataclasses import replace

import pytest
import torch

from magicboost_core.geometry.mesh import Mesh
from magicboost_core.geometry.presets import get_preset
from magicboost_core.refine.config import AIUConfig, RefineConfig
from magicboost_core.refine.loop import RefineInputError, refine_mesh
from magicboost_core.refine.representation import RefinableMesh, subdivide_midpoint
from magicboost_core.refine.sds import sds_step
from magicboost_core.render.renderer import render

from toy_guidance import Cond, ToyGuidance  # tests/ is on sys.path under pytest

import trimesh


def textured_sphere(radius=0.4, tex=16):
    m = trimesh.creation.icosphere(subdivisions=2, radius=radius)
    v = torch.tensor(m.vertices, dtype=torch.float32)
    uv = torch.stack([torch.atan2(v[:, 1], v[:, 0]) / (2 * math.pi) + 0.5, v[:, 2] / (2 * radius) + 0.5], -1)
    g = torch.Generator().manual_seed(1)
    return Mesh(vertices=v, faces=torch.tensor(m.faces), uvs=uv, texture=torch.rand(tex, tex, 3, generator=g))


def coloured_sphere(radius=0.4):
    m = textured_sphere(radius)
    return Mesh(vertices=m.vertices, faces=m.faces, vertex_colors=(m.vertices / (2 * radius) + 0.5).clamp(0, 1))


def views_of(mesh, res=32):
    p = get_preset("instant3d")
    out = render(mesh, p.cameras(res), background=1.0)
    return Cond(out.rgb, out.alpha, list(p.elevations), list(p.azimuths))


def small_config(**kw):
    base = dict(steps=6, render_resolution=32, batch_size=2, texture_resolution=16, preview_resolution=16)
    base.update(kw)
    return RefineConfig(**base)


def test_one_sds_step_gives_finite_nonzero_gradients_to_offsets_and_texture():
    mesh = textured_sphere()
    rep = RefinableMesh(mesh, "texture")
    cams = get_preset("instant3d").cameras(32)[[0, 1]]
    out = rep.render(cams)
    g = torch.Generator().manual_seed(0)
    sds = sds_step(ToyGuidance(32), out.rgb.permute(0, 3, 1, 2), cams.elevation_deg, cams.azimuth_deg, 300, g)
    sds.loss.backward()
    for p in (rep.offsets, rep.colors):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_refine_runs_records_losses_previews_and_is_deterministic():
    mesh = textured_sphere()
    cond = views_of(mesh)
    seen, previews = [], []
    cfg = small_config(steps=10, preview_every=5, guard_checks=0)  # the final state, not the guard's pick
    r1 = refine_mesh(None, cond, mesh, cfg, guidance=ToyGuidance(16), progress=lambda s, n, l: seen.append((s, n)),
                     preview=lambda s, imgs: previews.append((s, imgs.shape)))
    assert seen[-1] == (10, 10) and len(r1.losses) == 10 and r1.steps_done == 10 and not r1.interrupted
    assert previews == [(5, (4, 16, 16, 3)), (10, (4, 16, 16, 3))]
    assert any("sds" in l for l in r1.losses) and any("rgb" in l for l in r1.losses)
    assert any("aiu" in l for l in r1.losses)
    assert r1.mesh.num_vertices == mesh.num_vertices and r1.mesh.has_texture
    r2 = refine_mesh(None, cond, mesh, cfg, guidance=ToyGuidance(16))
    assert torch.equal(r1.mesh.vertices, r2.mesh.vertices) and torch.equal(r1.mesh.texture, r2.mesh.texture)
    r3 = refine_mesh(None, cond, mesh, replace(cfg, seed=1), guidance=ToyGuidance(16))
    assert not torch.equal(r1.mesh.vertices, r3.mesh.vertices)


def test_aiu_passes_the_official_drop_mask():
    mesh = textured_sphere()
    guid = ToyGuidance(16)
    refine_mesh(None, views_of(mesh), mesh, small_config(steps=5), guidance=guid)
    assert guid.calls["sdedit"] >= 1
    assert guid.last_drop_mask.tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_interrupt_returns_valid_mesh():
    mesh = coloured_sphere()
    cond = views_of(mesh)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3

    r = refine_mesh(None, cond, mesh, small_config(steps=50, color_mode="vertex_colors"), guidance=ToyGuidance(16),
                    should_stop=stop)
    assert r.interrupted and r.steps_done == 3 and isinstance(r.mesh, Mesh)
    assert torch.isfinite(r.mesh.vertices).all() and r.mesh.vertex_colors is not None
    assert any("stopped" in m for m in r.log)

    def boom(step, total, losses):
        if step == 2:
            raise KeyboardInterrupt

    r = refine_mesh(None, cond, mesh, small_config(steps=50, color_mode="vertex_colors"), guidance=ToyGuidance(16),
                    progress=boom)
    assert r.interrupted and isinstance(r.mesh, Mesh) and any("interrupted" in m for m in r.log)


def test_reference_only_mode_needs_no_model_and_fits_the_view():
    gt = textured_sphere()
    cond = views_of(gt)
    start = gt.replace(texture=torch.full_like(gt.texture, 0.5))
    r = refine_mesh(None, cond, start, small_config(steps=30, ref_or_guidance="reference", lr_texture=0.05,
                                                      aiu=AIUConfig(mode="condition_views", start_fraction=0.1)))
    first = r.losses[0]["rgb"]
    last = min(l["rgb"] for l in r.losses[-5:])
    assert last < 0.5 * first


def test_user_frame_is_restored_and_warned():
    from magicboost_core.refine.frame_check import FrameMismatchError

    mesh = coloured_sphere()
    cond = views_of(mesh)
    moved = mesh.replace(vertices=mesh.vertices * 100 + torch.tensor([500.0, -20.0, 3.0]))
    cfg = small_config(steps=2, lr_offsets_edges=0.0, lr_texture=0.0, color_mode="vertex_colors")
    # a mesh out of range is never silently rescaled while the views are not: a clear error instead
    with pytest.raises(FrameMismatchError, match="align"):
        refine_mesh(None, cond, moved, cfg, guidance=ToyGuidance(16))
    # --align fits scale and offset to the silhouettes and maps the result back to the user's frame
    r = refine_mesh(None, cond, moved, replace(cfg, align=True), guidance=ToyGuidance(16))
    assert any(m.startswith("align:") for m in r.log) and min(r.frame_iou) > 0.9
    assert torch.allclose(r.mesh.vertices, moved.vertices, atol=1e-2)
    # a mesh already in the working volume is left alone
    r = refine_mesh(None, cond, mesh, cfg, guidance=ToyGuidance(16))
    assert not any(m.startswith("WARNING") for m in r.log) and r.frame.is_identity


def test_instantmesh_flip_is_undone():
    mesh = coloured_sphere()
    p = get_preset("instantmesh")
    out = render(mesh, p.cameras(32))
    cond = Cond(out.rgb, out.alpha, list(p.elevations), list(p.azimuths))
    cfg = small_config(preset="instantmesh", steps=2, lr_offsets_edges=0.0, color_mode="vertex_colors")
    r = refine_mesh(None, cond, mesh, cfg, guidance=ToyGuidance(16))
    assert torch.allclose(r.mesh.vertices, mesh.vertices, atol=1e-6)
    assert torch.equal(r.mesh.faces, mesh.faces)
    assert any("flipped z" in m for m in r.log)


def test_bad_inputs_are_named():
    mesh = coloured_sphere()
    cond = views_of(mesh)
    three = Cond(cond.images[:3], cond.masks[:3], cond.elevations[:3], cond.azimuths[:3])
    with pytest.raises(RefineInputError, match="3 condition views.*expects 4"):
        refine_mesh(None, three, mesh, small_config(), guidance=ToyGuidance(16))
    nan = Cond(cond.images.clone(), cond.masks, cond.elevations, cond.azimuths)
    nan.images[0, 0, 0, 0] = float("nan")
    with pytest.raises(RefineInputError, match="NaN"):
        refine_mesh(None, nan, mesh, small_config(), guidance=ToyGuidance(16))
    with pytest.raises(RefineInputError, match="model is required"):
        refine_mesh(None, cond, mesh, small_config())
    with pytest.raises(RefineInputError, match="magicboost Mesh"):
        refine_mesh(None, cond, "mesh.glb", small_config(), guidance=ToyGuidance(16))
    badmask = Cond(cond.images, cond.masks[:, :16], cond.elevations, cond.azimuths)
    with pytest.raises(RefineInputError, match="masks"):
        refine_mesh(None, badmask, mesh, small_config(), guidance=ToyGuidance(16))


def test_subdivision_keeps_surface_and_colours():
    mesh = textured_sphere()
    sub = subdivide_midpoint(mesh)
    assert sub.num_faces == 4 * mesh.num_faces
    cams = get_preset("instant3d").cameras(32)
    a, b = render(mesh, cams), render(sub, cams)
    assert (a.alpha - b.alpha).abs().mean() < 1e-3
    assert (a.rgb - b.rgb).abs().mean() < 1e-2


def test_anchor_losses_weight_the_side_views_and_give_gradients():
    from magicboost_core.refine.loop import anchor_losses, anchor_weights

    assert anchor_weights(4, 0.3).tolist() == pytest.approx([1.0, 0.3, 0.3, 0.3])
    assert anchor_weights(6, 0.0).tolist() == [1.0, 0, 0, 0, 0, 0]
    mesh = coloured_sphere()
    rep = RefinableMesh(mesh, "vertex_colors")
    cams = get_preset("instant3d").cameras(24)
    out = rep.render(cams)
    images = torch.rand(4, 24, 24, 3, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(4, 24, 24, 1)
    l_rgb, l_mask = anchor_losses(out.rgb, out.alpha, images, masks, anchor_weights(4, 1.0))
    per_view = (out.rgb - images).pow(2).flatten(1).mean(1)
    assert torch.allclose(l_rgb, per_view.mean(), atol=1e-6)
    only_ref, _ = anchor_losses(out.rgb, out.alpha, images, masks, anchor_weights(4, 0.0))
    assert torch.allclose(only_ref, per_view[0], atol=1e-6)
    (l_rgb + l_mask).backward()
    for p in (rep.offsets, rep.colors):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_anchor_term_is_off_by_default_and_fits_the_side_views_when_on():
    gt = coloured_sphere()
    cond = views_of(gt)
    start = gt.replace(vertex_colors=torch.full_like(gt.vertex_colors, 0.5))
    cfg = small_config(steps=20, ref_or_guidance="reference", color_mode="vertex_colors", lr_texture=0.05,
                       lambda_mask=0.0, aiu=AIUConfig(enabled=False))
    off = refine_mesh(None, cond, start, cfg)
    assert RefineConfig().lambda_anchor_rgb == 0 and RefineConfig().lambda_anchor_mask == 0
    assert not any("anchor_rgb" in l for l in off.losses)
    on = refine_mesh(None, cond, start, replace(cfg, lambda_anchor_rgb=1e5, lambda_anchor_mask=1e4))
    assert all("anchor_rgb" in l and "anchor_mask" in l for l in on.losses)
    assert on.losses[-1]["anchor_rgb"] < 0.5 * on.losses[0]["anchor_rgb"]
    # the back of the sphere (seen only by the side/back anchors) moves towards the ground truth only with the term on
    back = gt.vertices[:, 0] < -0.2
    err = lambda r: (r.mesh.vertex_colors[back] - gt.vertex_colors[back]).abs().mean()  # noqa: E731
    assert err(on) < 0.8 * err(off)


def test_views_without_silhouette_never_get_an_all_ones_mask_target():
    """Plain RGB views with nothing to key (mask_source "none", e.g. a textured backdrop) must not make
    the whole frame a silhouette target: the mask terms stay off, the run says so."""
    mesh = coloured_sphere()
    cond = views_of(mesh)
    noise = torch.rand(cond.images.shape[:3] + (3,), generator=torch.Generator().manual_seed(3))
    cond.images = cond.images[..., :3] * cond.masks + noise * (1 - cond.masks)  # no uniform background
    cond.masks = None
    cond.mask_source = "none"
    cfg = small_config(ref_or_guidance="reference", lambda_mask=2e4, lambda_anchor_rgb=1.0, lambda_anchor_mask=1e4,
                       aiu=AIUConfig(enabled=False), frame_check_iou=0.0)
    res = refine_mesh(None, cond, mesh, cfg)
    assert all("mask" not in step for step in res.losses)
    assert any("no silhouette" in line for line in res.log)
