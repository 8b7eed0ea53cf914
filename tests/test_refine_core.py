"""Refinement building blocks: schedules, drop-nearest-anchor rule, SDS maths, config errors."""

import pytest
import torch

from magicboost_core.refine import schedule as S
from magicboost_core.refine.aiu import drop_nearest_anchor_mask
from magicboost_core.refine.config import AIUConfig, RefineConfig, RefineConfigError, ablation_config
from magicboost_core.model.schedule import alphas_cumprod
from magicboost_core.refine.sds import predict_x0, rescale_x0, sds_x0_loss


def test_alphas_cumprod_check_values():
    a = alphas_cumprod()
    assert a.dtype == torch.float64 and a.shape == (1000,)
    for i, v in [(0, 0.99915), (1, 0.998296), (81, 0.917138), (500, 0.276333), (981, 0.0057755), (999, 0.0046601)]:
        assert a[i].item() == pytest.approx(v, rel=2e-5)


def test_max_step_anneals_from_half_to_three_tenths_official_run():
    # official: 2500 steps, p = 0.5 -> 0.3 linearly over steps 0..2000, then 0.3
    assert S.max_step_fraction(0, 2500) == pytest.approx(0.5)
    assert S.max_step_fraction(1000, 2500) == pytest.approx(0.4)
    assert S.max_step_fraction(2000, 2500) == pytest.approx(0.3)
    assert S.max_step_fraction(2400, 2500) == pytest.approx(0.3)
    assert S.timestep_range(0, 2500) == (20, 500)
    assert S.timestep_range(2000, 2500) == (20, 300)
    assert S.timestep_range(1000, 2500) == (20, 400)


def test_schedule_scales_with_run_length():
    assert S.timestep_range(0, 100) == (20, 500)
    assert S.timestep_range(40, 100) == (20, 400)
    assert S.timestep_range(80, 100) == (20, 300)
    assert S.timestep_range(99, 100) == (20, 300)


def test_sampled_timesteps_stay_in_range_and_cover_endpoints():
    g = torch.Generator().manual_seed(0)
    ts = [S.sample_timestep(2000, 2500, g) for _ in range(3000)]
    assert min(ts) == 20 and max(ts) == 300


def test_aiu_steps_official_and_scaled():
    assert S.aiu_steps(2500) == [500, 1000, 1500, 2000]
    assert S.aiu_steps(100) == [20, 40, 60, 80]
    assert S.pseudo_views_active(500, 2500) and S.pseudo_views_active(2000, 2500)
    assert not S.pseudo_views_active(499, 2500) and not S.pseudo_views_active(2001, 2500)
    assert [S.is_reconstruction_step(s) for s in range(4)] == [True, False, True, False]


@pytest.mark.parametrize("az, dropped", [
    (0, 0), (45, 0), (90, 0), (134, 0), (136, 1), (180, 1), (224, 1), (226, 2), (270, 2), (359, 2),
    (-90, 2), (-180, 1), (-1, 2), (360, 0),
])
def test_drop_nearest_anchor_instant3d(az, dropped):
    # anchors 0/90/180/270: side anchors are 1..3 (az 90, 180, 270) -> drop-mask index 0..2
    m = drop_nearest_anchor_mask([az], [0, 90, 180, 270])
    assert m.shape == (1, 3)
    assert m.sum().item() == 1 and int(m[0].argmax()) == dropped


@pytest.mark.parametrize("az, dropped", [
    (0, 0), (30, 0), (90, 0), (119, 0), (121, 1), (150, 1), (210, 2), (270, 3), (330, 4), (359, 4), (-30, 4),
])
def test_drop_nearest_anchor_instantmesh(az, dropped):
    # anchors 30/90/150/210/270/330: side anchors 1..5 (90..330); no wrap-around: az 0 -> 90 (|0-90|=90 < |0-330|)
    m = drop_nearest_anchor_mask([az], [30, 90, 150, 210, 270, 330])
    assert m.shape == (1, 5) and int(m[0].argmax()) == dropped


def test_drop_mask_aiu_batch():
    m = drop_nearest_anchor_mask([0, 90, 180, 270], [0, 90, 180, 270])
    assert m.tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_sds_x0_loss_matches_formula_and_gradient():
    acp = alphas_cumprod()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 4, 4, generator=g, requires_grad=True)
    eps_cfg, eps_c = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    z_t = torch.randn(2, 3, 4, 4, generator=g)
    t = 300
    a = acp[t].float()
    x0 = (z_t - (1 - a).sqrt() * eps_cfg) / a.sqrt()
    x0c = (z_t - (1 - a).sqrt() * eps_c) / a.sqrt()
    assert torch.allclose(predict_x0(z_t, eps_cfg, t, acp), x0, atol=1e-5)
    k = (x0c.std(dim=(1, 2, 3), keepdim=True) + 1e-8) / (x0.std(dim=(1, 2, 3), keepdim=True) + 1e-8)
    want = 0.2 * k * x0 + 0.8 * x0
    got = rescale_x0(x0, x0c, 0.2)
    assert torch.allclose(got, want, atol=1e-6)
    loss = sds_x0_loss(z, got)
    assert loss.item() == pytest.approx((0.5 * ((z - want) ** 2).sum() / 2).item(), rel=1e-5)
    loss.backward()
    assert torch.allclose(z.grad, (z - want).detach() / 2, atol=1e-5)


def test_config_defaults_are_official():
    c = RefineConfig()
    assert (c.cfg_scale, c.recon_std_rescale, c.min_step_fraction, c.max_step_start, c.max_step_end) == (5.0, 0.2, 0.02, 0.5, 0.3)
    assert c.lambda_sds == 2.0 and c.lambda_orient == 6000.0 and c.ref_or_guidance == "alternate"
    assert c.aiu.strength == 0.1 and c.aiu.num_ddim_steps == 50 and c.aiu.view_probabilities == (0.25, 0.0, 0.25, 0.25, 0.25)
    assert c.adam_betas == (0.9, 0.99) and c.batch_size == 4 and c.steps == 2500


@pytest.mark.parametrize("kw, words", [
    (dict(steps=0), "steps"),
    (dict(ref_or_guidance="both"), "ref_or_guidance"),
    (dict(color_mode="pbr"), "color_mode"),
    (dict(aiu=AIUConfig(mode="magic")), "AIUConfig.mode"),
    (dict(aiu=AIUConfig(strength=0.01)), "num_ddim_steps"),
    (dict(max_step_end=0.9), "max_step_end"),
    (dict(lambda_anchor_rgb=-1.0), "lambda_anchor_rgb"),
    (dict(anchor_side_weight=-0.5), "anchor_side_weight"),
])
def test_config_errors_name_the_field(kw, words):
    with pytest.raises(RefineConfigError, match=words):
        RefineConfig(**kw)


def test_config_from_dict_rejects_unknown_and_ablation_variants():
    with pytest.raises(RefineConfigError, match="unknown setting"):
        RefineConfig.from_dict({"stepz": 3})
    c = RefineConfig.from_dict({"steps": 10, "aiu": {"enabled": False}})
    assert c.steps == 10 and not c.aiu.enabled
    assert not ablation_config(RefineConfig(), "no_aiu").aiu.enabled
    l1 = ablation_config(RefineConfig(), "plain_l1")
    assert l1.aiu.mode == "condition_views" and l1.aiu.loss == "l1"
    ref = ablation_config(RefineConfig(), "reference_only")
    assert ref.ref_or_guidance == "reference" and not ref.aiu.enabled
    with pytest.raises(RefineConfigError, match="ablation"):
        ablation_config(RefineConfig(), "nope")


def test_merge_settings_checks_names_and_strict_json_types():
    from magicboost_core.refine.config import merge_settings

    cfg = merge_settings(RefineConfig(), {"steps": "30", "aiu": {"enabled": "false"}})  # text, as from --set
    assert cfg.steps == 30 and cfg.aiu.enabled is False
    cfg = merge_settings(RefineConfig(), {"steps": 7, "lambda_sds": 1, "adam_betas": [0.8, 0.9]}, strict=True)
    assert (cfg.steps, cfg.lambda_sds, cfg.adam_betas) == (7, 1.0, (0.8, 0.9))
    for bad, words in (({"steps": "30"}, "'steps' must be int"), ({"adam_betas": [0.9]}, "adam_betas"),
                       ({"stepz": 1}, "unknown setting 'stepz'"), ({"aiu": {"mood": 1}}, "unknown setting 'aiu.mood'"),
                       ({"aiu": 3}, "group of settings")):
        with pytest.raises(RefineConfigError, match=words):
            merge_settings(RefineConfig(), bad, strict=True)
