import dataclasses
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from magicboost_core.geometry.camera_vector import camera_vectors
from magicboost_core.model.bundle import build_demo_model, default_demo_unet_config
from magicboost_core.model.codec import PixelCodec
from magicboost_core.model.conditioning import ViewConditioning, encode_views
from magicboost_core.model.denoiser import MultiViewDenoiser

EL, AZ = [0.0, 0.0, 0.0, 0.0], [30.0, 120.0, 210.0, 300.0]


class RecordingUNet(nn.Module):
    """Same forward signature as MultiViewUNet; eps depends on every conditioning input."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.calls = []
        self.config = SimpleNamespace(prediction_type="epsilon")

    def forward(self, sample, timestep, anchors, text, image_tokens, camera, labels, drop_mask=None,
                anchor_cache=None):
        self.calls.append(dict(sample=sample, timestep=timestep, anchors=anchors, text=text,
                               image_tokens=image_tokens, camera=camera, labels=labels, drop_mask=drop_mask))
        s = (text.mean((1, 2)) + image_tokens.mean((1, 2)) + anchors.mean((1, 2, 3, 4)) + labels.mean((1, 2))
             + camera.mean((1, 2)) + timestep.float() / 1000)
        return self.w * sample * (1 + s.view(-1, 1, 1, 1))


def _fake_setup():
    g = torch.Generator().manual_seed(0)
    unet = RecordingUNet()
    model = SimpleNamespace(unet=unet, text_cond=torch.randn(3, 4, generator=g), text_uncond=torch.randn(3, 4, generator=g),
                            codec=PixelCodec(8))
    cond = ViewConditioning(images=torch.rand(4, 8, 8, 3), masks=torch.ones(4, 8, 8), elevations=torch.tensor(EL),
                            azimuths=torch.tensor(AZ), anchor_latents=torch.randn(4, 3, 8, 8, generator=g),
                            image_tokens=torch.randn(5, 6, generator=g),
                            labels=torch.tensor([[0, 0], [0, 0], [500, .5], [500, .5], [500, .5]]))
    return model, cond


def test_official_cond_and_uncond_batches():
    model, cond = _fake_setup()
    d = MultiViewDenoiser(model, cond, cfg_scale=5.0, use_anchor_cache=False)
    z = torch.randn(2, 3, 8, 8)
    dm = torch.tensor([[0, 1, 0], [1, 0, 0]])
    eps, eps_c = d.predict(z, torch.tensor([981, 21]), [10.0, -5.0], [75.0, 200.0], drop_mask=dm)
    call = model.unet.calls[-1]
    assert torch.equal(call["sample"], torch.cat([z, z]))
    assert call["timestep"].tolist() == [981, 21, 981, 21]
    assert torch.equal(call["text"][:2], model.text_cond.expand(2, 3, 4))
    assert torch.equal(call["text"][2:], model.text_uncond.expand(2, 3, 4))
    assert torch.equal(call["image_tokens"][:2], cond.image_tokens.expand(2, 5, 6))
    assert call["image_tokens"][2:].eq(0).all()
    assert torch.equal(call["anchors"][:2], cond.anchor_latents.expand(2, 4, 3, 8, 8))
    assert call["anchors"][2:].eq(0).all()
    assert torch.equal(call["labels"][:2], cond.labels.expand(2, 5, 2)) and call["labels"][2:].eq(0).all()
    assert torch.equal(call["drop_mask"], torch.cat([dm, dm]))
    cam = call["camera"]
    assert cam.shape == (4, 5, 10) and torch.equal(cam[:2], cam[2:])
    ref = camera_vectors([10.0] + EL, [75.0] + AZ)  # target relative to anchor 0 (az 30), radius 0
    assert torch.allclose(cam[0], ref, atol=1e-6)
    assert torch.allclose(cam[1, 0], camera_vectors([-5.0, 0.0], [200.0, 30.0])[0], atol=1e-6)
    # CFG formula
    u = RecordingUNet()(z, torch.tensor([981, 21]), call["anchors"][2:], call["text"][2:], call["image_tokens"][2:],
                        cam[2:], call["labels"][2:])
    assert torch.allclose(eps_c, call["sample"][:2] * 0 + model.unet(z, torch.tensor([981, 21]), call["anchors"][:2],
                          call["text"][:2], call["image_tokens"][:2], cam[:2], call["labels"][:2]), atol=1e-6)
    assert torch.allclose(eps, u + 5.0 * (eps_c - u), atol=1e-5)


def test_cfg_one_runs_only_the_conditional_branch():
    model, cond = _fake_setup()
    d = MultiViewDenoiser(model, cond, cfg_scale=1.0, use_anchor_cache=False)
    eps, eps_c = d.predict(torch.randn(3, 3, 8, 8), 500, [0, 0, 0], [0, 10, 20])
    assert model.unet.calls[-1]["sample"].shape[0] == 3 and torch.equal(eps, eps_c)
    with pytest.raises(ValueError, match="target cameras"):
        d.predict(torch.randn(3, 3, 8, 8), 500, [0, 0], [0, 10])


@pytest.fixture(scope="module")
def demo64():
    torch.manual_seed(0)
    small = dataclasses.replace(default_demo_unet_config(8), channel_mult=(1, 2), attention_resolutions=(1, 2))
    m = build_demo_model(small, image_size=8, patch=8).eval().double()
    cond = encode_views(m, torch.rand(4, 16, 16, 4), EL, AZ)
    return m, cond


def test_cached_equals_uncached_and_cfg_formula(demo64):
    m, cond = demo64
    cached = MultiViewDenoiser(m, cond, cfg_scale=5.0)
    plain = MultiViewDenoiser(m, cond, cfg_scale=5.0, use_anchor_cache=False)
    g = torch.Generator().manual_seed(1)
    for b in (2, 1, 2):  # batch size changes rebuild the expanded cache
        z = torch.randn(b, 3, 8, 8, generator=g, dtype=torch.float64)
        t = torch.randint(1, 1000, (b,), generator=g)
        el, az = torch.rand(b, generator=g) * 30, torch.rand(b, generator=g) * 360
        e1, c1 = cached.predict(z, t, el, az)
        e2, c2 = plain.predict(z, t, el, az)
        assert torch.allclose(e1, e2, atol=1e-9) and torch.allclose(c1, c2, atol=1e-9)
    dm = torch.tensor([[0, 1, 0], [0, 1, 0]])
    z = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    e1, _ = cached.predict(z, 400, [0, 0], [45, 45], drop_mask=dm)
    e2, _ = plain.predict(z, 400, [0, 0], [45, 45], drop_mask=dm)
    e3, _ = plain.predict(z, 400, [0, 0], [45, 45])
    assert torch.allclose(e1, e2, atol=1e-9) and not torch.allclose(e1, e3, atol=1e-6)
    # CFG: s=0 gives the unconditional prediction
    u, c = MultiViewDenoiser(m, cond, cfg_scale=0.0).predict(z, 400, [0, 0], [45, 45])
    e, c5 = cached.predict(z, 400, [0, 0], [45, 45])
    assert torch.allclose(c, c5, atol=1e-9)
    assert torch.allclose(e, u + 5.0 * (c - u), atol=1e-8)
    assert not torch.allclose(u, c, atol=1e-4)
