"""Refinement that never makes an asset worse (issue #11): geometry safety, frame contract, guard, profiles."""
import argparse
import json
from types import SimpleNamespace

import pytest
import torch

from magicboost_core.geometry.mesh import Mesh
from magicboost_core.geometry.presets import get_preset
from magicboost_core.refine.config import RefineConfig, RefineConfigError, merge_settings, parse_settings
from magicboost_core.refine.frame_check import FrameMismatchError, prepare_frame
from magicboost_core.refine.large_steps import LargeStepsParametrization, conjugate_gradient, system_matrix
from magicboost_core.refine.loop import refine_mesh
from magicboost_core.render.renderer import render

from toy_guidance import ToyGuidance  # tests/ is on sys.path under pytest

import trimesh


def _colour_by_face_axis(v):
    a = v.abs().argmax(1)
    pal = torch.tensor([[0.9, 0.2, 0.2], [0.2, 0.8, 0.3], [0.2, 0.3, 0.9]])
    return pal[a]


def box(extents=(0.6, 0.45, 0.35), subdivisions=3, offset=(0.0, 0.0, 0.0)):
    tm = trimesh.creation.box(extents=extents)
    for _ in range(subdivisions):
        tm = tm.subdivide()
    v = torch.tensor(tm.vertices, dtype=torch.float32) + torch.tensor(offset)
    return Mesh(vertices=v, faces=torch.tensor(tm.faces), vertex_colors=_colour_by_face_axis(v - torch.tensor(offset)))


def concat(*meshes):
    vs, fs, cs, n = [], [], [], 0
    for m in meshes:
        vs.append(m.vertices)
        fs.append(m.faces + n)
        cs.append(m.vertex_colors)
        n += m.num_vertices
    return Mesh(vertices=torch.cat(vs), faces=torch.cat(fs), vertex_colors=torch.cat(cs))


def views_of(mesh, res=48, preset="instant3d"):
    p = get_preset(preset)
    out = render(mesh, p.cameras(res), background=1.0)
    return SimpleNamespace(images=out.rgb, masks=out.alpha, elevations=list(p.elevations), azimuths=list(p.azimuths),
                           mask_source="alpha")


def quick(**kw):
    base = dict(steps=30, render_resolution=48, batch_size=2, preview_resolution=16, color_mode="vertex_colors",
                lambda_sds=50.0, lambda_anchor_rgb=1e5, lambda_anchor_mask=1e5, lr_offsets_edges=0.2)
    base.update(kw)
    return RefineConfig(**base)


# ---- geometry --------------------------------------------------------------------------------------------
def test_large_steps_solve_inverts_the_system_matrix():
    tm = trimesh.creation.icosphere(subdivisions=2)
    f = torch.tensor(tm.faces)
    M, diag = system_matrix(f, len(tm.vertices), 10.0)
    b = torch.randn(len(tm.vertices), 3, generator=torch.Generator().manual_seed(0))
    x = conjugate_gradient(M, diag, b, tol=1e-8)
    assert torch.allclose(torch.sparse.mm(M, x), b, atol=1e-4)
    p = LargeStepsParametrization(f, len(tm.vertices), 10.0)
    assert torch.allclose(p.solve(p.to_latent(b)), b, atol=1e-4)
    # the step of a one-vertex gradient spreads over the neighbourhood instead of spiking that vertex
    g = torch.zeros_like(b)
    g[0, 0] = 1.0
    y = p.from_latent_gradient(g)
    assert y[0, 0] < 0.5 * g[0, 0] and (y[:, 0] > 1e-3).sum() > 5


def test_box_seen_by_four_level_views_keeps_its_top_and_bottom():
    gt = box()
    jitter = torch.randn(gt.vertices.shape, generator=torch.Generator().manual_seed(0)) * 0.004
    coarse = gt.replace(vertices=gt.vertices + jitter, vertex_colors=torch.full_like(gt.vertex_colors, 0.5))
    r = refine_mesh(None, views_of(gt), coarse, quick(guard_checks=0), guidance=ToyGuidance(16))
    v0, v1 = coarse.vertices, r.mesh.vertices
    # top and bottom faces are never seen by the level views: they stay exactly where the coarse mesh had them
    inner_cap = (v0[:, 2].abs() > 0.17) & (v0[:, 0].abs() < 0.2) & (v0[:, 1].abs() < 0.15)
    assert inner_cap.sum() > 10
    assert (v1[inner_cap] - v0[inner_cap]).norm(dim=1).max() < 1e-5
    ext0 = v0.max(0).values - v0.min(0).values
    ext1 = v1.max(0).values - v1.min(0).values
    assert torch.allclose(ext1, ext0, rtol=0.03)
    # the seen sides did move (the colours and geometry were refined, not frozen)
    assert (v1 - v0).norm(dim=1).max() > 1e-4
    assert (r.mesh.vertex_colors - coarse.vertex_colors).abs().max() > 0.05


def test_thin_part_survives():
    """A thin horizontal wing (seen edge-on by the level views) keeps its thickness and span."""
    body = box(extents=(0.5, 0.12, 0.12), subdivisions=3)
    wing = box(extents=(0.14, 0.9, 0.012), subdivisions=3, offset=(0.0, 0.0, 0.0))
    gt = concat(body, wing)
    coarse = gt.replace(vertex_colors=torch.full_like(gt.vertex_colors, 0.5))
    r = refine_mesh(None, views_of(gt), coarse, quick(guard_checks=0), guidance=ToyGuidance(16))
    n_body = body.num_vertices
    w0, w1 = coarse.vertices[n_body:], r.mesh.vertices[n_body:]
    tip = w0[:, 1].abs() > 0.3
    thick0 = w0[tip, 2].max() - w0[tip, 2].min()
    thick1 = w1[tip, 2].max() - w1[tip, 2].min()
    assert abs(float(thick1 - thick0)) < 0.25 * float(thick0)
    assert abs(float(w1[:, 1].max() - w0[:, 1].max())) < 0.01
    assert (w1 - w0).norm(dim=1).mean() < 0.004


def test_guard_never_returns_a_state_worse_than_the_input_at_the_condition_views():
    gt = box()
    # a wildly over-weighted prior (SDS 1e6, large steps) makes every step worse; the guard returns the input
    cfg = quick(lambda_sds=1e6, lambda_anchor_rgb=0.0, lambda_anchor_mask=0.0, lambda_rgb=0.0, lambda_mask=0.0,
                lr_texture=0.5, steps=10, guard_checks=5)
    r = refine_mesh(None, views_of(gt), gt, cfg, guidance=ToyGuidance(16))
    assert r.guard["best"] <= r.guard["coarse"] + 1e-9
    assert torch.allclose(r.mesh.vertex_colors, gt.vertex_colors, atol=1e-6)
    off = refine_mesh(None, views_of(gt), gt, merge_settings(cfg, {"guard_checks": 0}), guidance=ToyGuidance(16))
    assert not torch.allclose(off.mesh.vertex_colors, gt.vertex_colors, atol=1e-3)  # what the guard prevents


# ---- frame contract --------------------------------------------------------------------------------------
def _frame_inputs(mesh, res=48):
    cams = get_preset("instant3d").cameras(res)
    return cams, (render(mesh, cams).alpha > 0.5).float()


@pytest.mark.parametrize("cause", ["scale", "offset", "axes"])
def test_frame_check_names_scale_offset_and_axes(cause):
    gt = box(extents=(0.7, 0.35, 0.18))
    cams, masks = _frame_inputs(gt)
    frame, ious = prepare_frame(gt, cams, masks)
    assert frame.is_identity and min(ious) > 0.95
    v = gt.vertices
    bad = {"scale": v * 2.5, "offset": v + torch.tensor([0.0, 0.3, 0.15]),
           "axes": v[:, [0, 2, 1]] * torch.tensor([1.0, -1.0, 1.0])}[cause]  # z-up stored as y-up: on its side
    with pytest.raises(FrameMismatchError) as e:
        prepare_frame(gt.replace(vertices=bad), cams, masks)
    assert e.value.cause == cause and "--align" in str(e.value) and cause in str(e.value)
    # --align fits it, and the frame maps the work-frame mesh back onto the input exactly
    frame, ious = prepare_frame(gt.replace(vertices=bad), cams, masks, align=True)
    assert min(ious) > 0.85
    work = frame.apply(gt.replace(vertices=bad))
    assert torch.allclose(frame.invert(work).vertices, bad, atol=1e-5)


def test_frame_check_reports_a_different_object_as_shape():
    cams, masks = _frame_inputs(box(extents=(0.7, 0.35, 0.18)))
    masks = torch.zeros_like(masks)
    masks[:, 5:10, 5:40] = 1
    with pytest.raises(FrameMismatchError) as e:
        prepare_frame(box(), cams, masks)
    assert e.value.cause == "shape"


# ---- settings ---------------------------------------------------------------------------------------------
def test_settings_parse_validate_and_bound():
    cfg = merge_settings(RefineConfig(), parse_settings(["steps=300", "aiu.strength=0.2", "align=true",
                                                         "adam_betas=0.9,0.95"]))
    assert (cfg.steps, cfg.aiu.strength, cfg.align, cfg.adam_betas) == (300, 0.2, True, (0.9, 0.95))
    for bad, msg in ((["stepz=3"], "unknown setting 'stepz'"), (["steps=abc"], "type int"),
                     (["steps=999999"], r"steps must be in \[1, 20000\]"),
                     (["render_resolution=5000"], r"render_resolution must be in \[8, 1024\]"),
                     (["aiu.nope=1"], "unknown setting 'aiu.nope'"), (["align=maybe"], "type bool"),
                     (["geometry_mode=wobbly"], "geometry_mode")):
        with pytest.raises(RefineConfigError, match=msg):
            merge_settings(RefineConfig(), parse_settings(bad))
    with pytest.raises(RefineConfigError, match="unknown setting"):
        RefineConfig.from_dict({"lambda_sdss": 1.0})


def _demo_like_model():
    from magicboost_core.model.bundle import ModelInfo

    return SimpleNamespace(info=ModelInfo(name="stub", kind="demo"))


def test_node_cli_and_profile_resolve_the_same_config(tmp_path):
    from magicboost_core.refine.cli import refine_config_from_args, register
    from magicboost_core.refine.profiles import DEMO_PROFILE, resolve_config
    from nodes.refine_nodes import make_refine_config

    model = _demo_like_model()
    want = resolve_config(model, preset="instant3d")
    assert want.steps == DEMO_PROFILE["steps"] and want.lambda_anchor_rgb == DEMO_PROFILE["lambda_anchor_rgb"]
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["refine", "m.glb", "a.png", "b.png", "c.png", "d.png"])
    assert refine_config_from_args(args, model) == want
    node = make_refine_config("SDS Refine Mesh", steps=0, lr_geometry=-1.0, lr_texture=-1.0, resolution=0, seed=0,
                              preset=get_preset("instant3d"), aiu=None, condition_view_weight=-1.0, model=model)
    assert node.with_(preview_every=0) == want
    # every field is settable the same way from both, and explicit values win over the profile
    (tmp_path / "c.json").write_text(json.dumps({"lambda_sds": 0.7, "aiu": {"strength": 0.3}}))
    args = parser.parse_args(["refine", "m.glb", "a.png", "b.png", "c.png", "d.png", "--config",
                              str(tmp_path / "c.json"), "--set", "steps=17", "--steps", "19"])
    cli = refine_config_from_args(args, model)
    node = make_refine_config("SDS Refine Mesh", steps=19, lr_geometry=-1.0, lr_texture=-1.0, resolution=0, seed=0,
                              preset=get_preset("instant3d"), aiu=None, condition_view_weight=-1.0, model=model,
                              config_text='{"lambda_sds": 0.7, "aiu": {"strength": 0.3}}')
    assert cli.steps == node.steps == 19 and cli.lambda_sds == node.lambda_sds == 0.7
    assert cli.aiu.strength == node.aiu.strength == 0.3
    # the official checkpoint gets the official objective
    from magicboost_core.model.bundle import ModelInfo

    official = resolve_config(SimpleNamespace(info=ModelInfo(kind="official")))
    assert official == RefineConfig(laplacian_on="offsets") and official.steps == 2500 and official.lambda_sds == 2.0
    # a bundle may name its profile and add its own settings
    custom = SimpleNamespace(info=ModelInfo(kind="official", refine_profile="demo", refine_settings={"steps": 321}))
    assert resolve_config(custom) == want.with_(steps=321, preset=RefineConfig().preset)


def test_runner_resolves_the_profile_through_the_node(monkeypatch, tmp_path):
    """The headless runner on the shipped workflow with the refine widgets at 'auto' gets the demo model's profile."""
    import safetensors  # noqa: F401  (a dependency: a missing one fails, never skips)
    from magicboost_core.refine.profiles import resolve_config
    from nodes import refine_nodes, runner
    from nodes.engine import PACK_ROOT

    seen = {}

    class Stop(Exception):
        pass

    def fake_refine(model, cond, mesh, config, **kw):
        seen["config"], seen["model"] = config, model
        raise Stop

    monkeypatch.setattr(refine_nodes, "refine_mesh", fake_refine)
    prompt = runner.load_workflow(str(PACK_ROOT / "workflows" / "api" / "refine_instant3d_api.json"))
    sds = next(k for k, v in prompt.items() if v["class_type"] == "MagicBoostSDSRefineMesh")
    prompt = runner.apply_overrides(prompt, [f"{sds}.steps=0", f"{sds}.lr_geometry=-1", f"{sds}.lr_texture=-1",
                                             f"{sds}.resolution=0", f"{sds}.condition_view_weight=-1"])
    prompt[sds]["inputs"].pop("aiu_config", None)
    with pytest.raises(Exception) as e:
        runner.run_workflow(prompt, runner.default_registry(), output_dir=str(tmp_path),
                            input_dir=str(PACK_ROOT / "workflows" / "inputs"), progress=False)
    assert "config" in seen, e.value
    assert seen["config"].with_(preview_every=0) == resolve_config(seen["model"], preset="instant3d")


# ---- CLI hardening ----------------------------------------------------------------------------------------
def test_cli_rejects_bad_steps_resolution_and_out(tmp_path, capsys):
    from magicboost_core.cli import main

    for argv in (["demo", "--steps", "0"], ["refine", "m.glb", "a.png", "--steps", "999999"],
                 ["refine", "m.glb", "a.png", "--resolution", "100000"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    assert "steps must be in" in capsys.readouterr().err
    f = tmp_path / "afile"
    f.write_text("x")
    views = [str(tmp_path / f"v{i}.png") for i in range(4)]
    assert main(["refine", "m.glb", *views, "--out", str(f)]) == 2
    assert "is an existing file" in capsys.readouterr().err


def test_colour_calibration_fixes_dull_colours_also_where_no_view_looks():
    from magicboost_core.refine.color_match import match_colors_to_views

    gt = box(subdivisions=4)
    v = gt.vertices
    gt = gt.replace(vertex_colors=torch.stack([0.5 + 0.45 * torch.sin(9 * v[:, 0] + 3 * v[:, 1] + 5 * v[:, 2]),
                                               0.5 + 0.45 * torch.sin(4 * v[:, 0] - 8 * v[:, 1] + 1.0),
                                               0.5 + 0.45 * torch.cos(6 * v[:, 1] + 7 * v[:, 2] - 2 * v[:, 0])], -1))
    grey = gt.vertex_colors.mean(-1, keepdim=True)
    dull = gt.replace(vertex_colors=grey + 0.6 * (gt.vertex_colors - grey))  # 60 % saturation
    p = get_preset("instant3d")
    cams = p.cameras(48)
    out = render(gt, cams, background=1.0)
    log = []
    fixed = match_colors_to_views(dull, cams, out.rgb, (out.alpha > 0.5).float(), log=log)
    top = gt.vertices[:, 2] > 0.17  # never seen by the level views
    err = lambda m: (m.vertex_colors[top] - gt.vertex_colors[top]).abs().mean()  # noqa: E731
    assert err(fixed) < 0.4 * err(dull) and "colour calibration" in log[0]
    # views that agree with the mesh already: nothing to gain, colours untouched
    same = match_colors_to_views(gt, cams, out.rgb, (out.alpha > 0.5).float(), log=log)
    assert torch.equal(same.vertex_colors, gt.vertex_colors) and "skipped" in log[-1]


def test_ctrl_c_during_refine_saves_the_best_state_and_exits_130(tmp_path, monkeypatch, capsys):
    import safetensors  # noqa: F401  (a dependency: a missing one fails, never skips)
    from PIL import Image

    from magicboost_core.cli import main
    from magicboost_core.geometry.mesh_io import save_mesh
    from magicboost_core.refine import loop

    gt = box()
    glb = save_mesh(gt, tmp_path / "coarse.glb")
    cond = views_of(gt, res=32)
    paths = []
    for i in range(4):
        rgba = torch.cat([cond.images[i], cond.masks[i]], -1).clamp(0, 1)
        paths.append(tmp_path / f"v{i}.png")
        Image.fromarray((rgba * 255).round().byte().numpy(), "RGBA").save(paths[-1])
    real = loop.refine_mesh

    def interrupted_after_three(model, cond, mesh, config, **kw):
        def progress(step, total, losses):
            if step == 3:
                raise KeyboardInterrupt
        kw["progress"] = progress
        return real(model, cond, mesh, config.with_(steps=50, render_resolution=32), **kw)

    monkeypatch.setattr(loop, "refine_mesh", interrupted_after_three)
    code = main(["refine", str(glb), *map(str, paths), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted after 3 steps" in err and "best state so far" in err
    assert (tmp_path / "out" / "coarse_refined.glb").exists()


def test_colours_no_view_sees_frontally_are_kept():
    """A plate tilted 10 degrees: its top is seen only at a grazing angle (one level view, cos 0.17), where the
    views' pixels smear; those colours keep the coarse values, frontally seen ones are refined."""
    import math

    plate = box(extents=(0.5, 0.5, 0.03), subdivisions=4)
    a = math.radians(10.0)
    rot = torch.tensor([[1.0, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    gt = plate.replace(vertices=plate.vertices @ rot.T)
    coarse = gt.replace(vertex_colors=torch.full_like(gt.vertex_colors, 0.5))
    cfg = quick(steps=12, guard_checks=0, match_colors=False, colors_where_seen=True, lambda_sds=0.0)
    r = refine_mesh(None, views_of(gt), coarse, cfg, guidance=ToyGuidance(16))
    p = plate.vertices  # in the plate's own frame: inside of the top face / the +x side
    top = (p[:, 2] > 0.01) & (p[:, 0].abs() < 0.2) & (p[:, 1].abs() < 0.2)
    side = p[:, 0] > 0.24
    assert torch.equal(r.mesh.vertex_colors[top], coarse.vertex_colors[top])
    assert (r.mesh.vertex_colors[side] - coarse.vertex_colors[side]).abs().max() > 0.05
    off = refine_mesh(None, views_of(gt), coarse, cfg.with_(colors_where_seen=False), guidance=ToyGuidance(16))
    assert (off.mesh.vertex_colors[top] - coarse.vertex_colors[top]).abs().max() > 0.02
