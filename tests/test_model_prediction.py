"""prediction_type: closed-form identities, the denoiser's conversion to eps, and DDIM against diffusers."""
import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from magicboost_core.model import schedule
from magicboost_core.model.config import MultiViewUNetConfig
from magicboost_core.model.conditioning import ViewConditioning
from magicboost_core.model.codec import PixelCodec
from magicboost_core.model.denoiser import MultiViewDenoiser
from magicboost_core.model.prediction import (PREDICTION_TYPES, check_prediction_type, loss_weights_to_match,
                                              to_epsilon, to_x0, training_target)
from magicboost_core.model.sampling import ddim_sample

ACP = schedule.alphas_cumprod()


def _pair(b=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(b, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(b, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 250, 800, 999][:b])
    ab = ACP[t]
    x_t = ab.sqrt().view(-1, 1, 1, 1) * x0 + (1 - ab).sqrt().view(-1, 1, 1, 1) * eps
    return x0, eps, ab, x_t


def test_v_definition_and_inverses():
    x0, eps, ab, x_t = _pair()
    v = training_target(x0, eps, ab, "v_prediction")
    sa, sb = ab.sqrt().view(-1, 1, 1, 1), (1 - ab).sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close(v, sa * eps - sb * x0)
    torch.testing.assert_close(to_epsilon(v, x_t, ab, "v_prediction"), eps)
    torch.testing.assert_close(to_x0(v, x_t, ab, "v_prediction"), x0)
    # v is the time derivative of x_t along the circle (sqrt(ab), sqrt(1-ab)) = (cos phi, sin phi)
    torch.testing.assert_close(x_t * sa - v * sb, x0)


@pytest.mark.parametrize("kind", PREDICTION_TYPES)
def test_every_type_round_trips(kind):
    x0, eps, ab, x_t = _pair()
    target = training_target(x0, eps, ab, kind)
    torch.testing.assert_close(to_epsilon(target, x_t, ab, kind), eps)
    torch.testing.assert_close(to_x0(target, x_t, ab, kind), x0)


def test_scalar_alpha_bar_and_errors():
    x0, eps, ab, x_t = _pair(1)
    v = training_target(x0, eps, float(ab[0]), "v_prediction")
    torch.testing.assert_close(to_epsilon(v, x_t, float(ab[0]), "v_prediction"), eps)
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        check_prediction_type("v")
    with pytest.raises(ValueError, match="one per item"):
        to_epsilon(torch.zeros(3, 1), torch.zeros(3, 1), torch.full((2,), 0.5), "v_prediction")
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        to_x0(torch.zeros(1, 1), torch.zeros(1, 1), 1.0, "epsilon")


@pytest.mark.parametrize("kind", PREDICTION_TYPES)
@pytest.mark.parametrize("objective", ["v", "eps"])
def test_loss_weights_measure_the_objective(kind, objective):
    """w(t) * ||pred - target||^2 equals the error of the same prediction measured in v or eps space."""
    x0, eps, ab, x_t = _pair()
    d = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.1
    pred = training_target(x0, eps, ab, kind) + d
    eps_hat = to_epsilon(pred, x_t, ab, kind)
    err = (eps_hat - eps) if objective == "eps" else (
        training_target(to_x0(pred, x_t, ab, kind), eps_hat, ab, "v_prediction") - training_target(x0, eps, ab, "v_prediction"))
    w = loss_weights_to_match(ab, kind, objective)
    torch.testing.assert_close(w * d.pow(2).flatten(1).sum(1), err.pow(2).flatten(1).sum(1))
    if kind == "v_prediction" and objective == "v":
        assert torch.all(w == 1)


def test_config_field_default_validation_and_shipped_bundle():
    from magicboost_core.model.bundle import demo_model_dir

    assert MultiViewUNetConfig().prediction_type == "epsilon"
    cfg = MultiViewUNetConfig.tiny()
    d = cfg.to_dict()
    d.pop("prediction_type")  # bundles written before the field existed are eps models
    assert MultiViewUNetConfig.from_dict(d).prediction_type == "epsilon"
    v = MultiViewUNetConfig(prediction_type="v_prediction")
    assert MultiViewUNetConfig.from_dict(v.to_dict()) == v
    with pytest.raises(ValueError, match="unet.prediction_type"):
        MultiViewUNetConfig(prediction_type="velocity")
    shipped = json.loads((demo_model_dir() / "config.json").read_text())
    assert shipped["unet"]["prediction_type"] == "v_prediction"  # issue #13: the demo prior is a v model


# ---- the denoiser converts, the sampler matches diffusers ------------------------------------------------------
class AnalyticUNet(nn.Module):
    """A 'model' whose output is a fixed smooth function of (sample, t), declared as ``kind``."""

    def __init__(self, kind):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.config = SimpleNamespace(prediction_type=kind)

    @staticmethod
    def output(sample, t):
        return torch.tanh(sample) * 0.7 + 0.05 * (t.float() / 1000).view(-1, 1, 1, 1)

    def forward(self, sample, timestep, anchors, text, image_tokens, camera, labels, drop_mask=None,
                anchor_cache=None):
        return self.w * self.output(sample, timestep)


def _denoiser(kind, cfg_scale=1.0):
    g = torch.Generator().manual_seed(0)
    model = SimpleNamespace(unet=AnalyticUNet(kind), text_cond=torch.zeros(1, 4), text_uncond=torch.zeros(1, 4),
                            codec=PixelCodec(8))
    cond = ViewConditioning(images=torch.rand(4, 8, 8, 3), masks=torch.ones(4, 8, 8),
                            elevations=torch.zeros(4), azimuths=torch.tensor([0.0, 90.0, 180.0, 270.0]),
                            anchor_latents=torch.randn(4, 3, 8, 8, generator=g), image_tokens=torch.randn(5, 6),
                            labels=torch.zeros(5, 2))
    return MultiViewDenoiser(model, cond, cfg_scale=cfg_scale, use_anchor_cache=False)


def test_denoiser_returns_eps_for_v_models():
    d = _denoiser("v_prediction")
    z = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([981, 21])
    eps, eps_c = d.predict(z, t, [0.0, 10.0], [45.0, 200.0])
    v = AnalyticUNet.output(z, t)
    ab = ACP[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(eps, ab.sqrt() * v + (1 - ab).sqrt() * z)
    torch.testing.assert_close(eps_c, eps)
    # eps models are passed through untouched
    e_eps, _ = _denoiser("epsilon").predict(z, t, [0.0, 10.0], [45.0, 200.0])
    torch.testing.assert_close(e_eps, v)


@pytest.mark.parametrize("kind", ["v_prediction", "epsilon", "sample"])
def test_ddim_matches_diffusers_scheduler(kind):
    import diffusers  # noqa: F401  (a dependency: a missing one fails, never skips)
    steps = 20
    sched = schedule.make_ddim_scheduler()
    sched.register_to_config(prediction_type=kind)
    sched = type(sched).from_config(sched.config)
    sched.set_timesteps(steps)
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    ref = noise.clone()
    for t in sched.timesteps:
        out = AnalyticUNet.output(ref, torch.full((2,), int(t)))
        ref = sched.step(out, t, ref, eta=0.0).prev_sample
    assert [int(t) for t in sched.timesteps] == schedule.ddim_timesteps(steps)
    ours = ddim_sample(_denoiser(kind), [0.0, 5.0], [30.0, 60.0], num_steps=steps, noise=noise)
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=1e-4)
