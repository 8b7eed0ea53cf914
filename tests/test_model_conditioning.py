import numpy as np
import pytest
import torch

from magicboost_core.model.bundle import build_demo_model
from magicboost_core.model.conditioning import ViewInputError, encode_views

EL, AZ = [0, 0, 0, 0], [0, 90, 180, 270]


@pytest.fixture(scope="module")
def demo():
    torch.manual_seed(0)
    return build_demo_model(image_size=16, patch=8).eval()


def test_encode_views_rgba(demo):
    imgs = torch.rand(4, 32, 32, 4)
    imgs[..., 3] = 0.0
    imgs[:, 8:24, 8:24, 3] = 1.0
    c = encode_views(demo, imgs, EL, AZ)
    assert c.images.shape == (4, 16, 16, 3) and c.masks.shape == (4, 16, 16)
    assert torch.allclose(c.images[:, 0, 0], torch.ones(4, 3))  # transparent -> white
    assert torch.allclose(c.images[:, 4:12, 4:12], torch.nn.functional.avg_pool2d(
        imgs[:, 8:24, 8:24, :3].permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1), atol=1e-6)
    assert c.masks[:, 0, 0].eq(0).all() and c.masks[:, 8, 8].eq(1).all()
    assert c.anchor_latents.shape == (4, 3, 16, 16)
    assert torch.allclose(c.anchor_latents, c.images.permute(0, 3, 1, 2) * 2 - 1, atol=1e-6)
    assert c.image_tokens.shape == (5, 192)
    assert c.labels.tolist() == [[0, 0], [0, 0], [500, 0.5], [500, 0.5], [500, 0.5]]
    assert c.num_anchors == 4 and c.elevations.tolist() == EL and c.azimuths.tolist() == AZ


def test_encode_views_rgb_uint8_masks_and_strength(demo):
    imgs = (np.random.default_rng(0).random((4, 16, 16, 3)) * 255).astype(np.uint8)
    masks = np.zeros((4, 16, 16), np.float32)
    c = encode_views(demo, imgs, EL, AZ, masks=masks, strength_tex=1.0, strength_geo=0.5, background=(0, 0, 0))
    assert c.images.abs().max() == 0  # mask 0 composites the whole view onto black
    assert c.labels[2:].tolist() == [[0, 0.25]] * 3
    c2 = encode_views(demo, imgs, EL, AZ)
    assert torch.allclose(c2.images, torch.from_numpy(imgs).float() / 255, atol=1e-6)
    assert c2.masks.eq(1).all()


@pytest.mark.parametrize("images, el, az, match", [
    (torch.rand(4, 32, 32, 3), [0, 0, 0], AZ, "elevations: 3 value"),
    (torch.rand(4, 32, 32, 3), EL, [0, 90], "azimuths: 2 value"),
    (torch.rand(4, 32, 24, 3), EL, AZ, "must be square.*crop or pad"),
    (torch.rand(4, 8, 8, 3), EL, AZ, "too small.*at least 16"),
    (torch.full((4, 32, 32, 3), float("nan")), EL, AZ, "NaN"),
    (torch.rand(4, 32, 32, 5), EL, AZ, "3 \\(RGB\\) or 4 \\(RGBA\\)"),
    (torch.rand(4, 3, 32, 32), EL, AZ, "channels-first.*permute"),
    (torch.rand(32, 32, 3), EL, AZ, "one image.*stack"),
    (torch.rand(4, 32, 32, 3) * 255, EL, AZ, "divide 0-255 images by 255"),
])
def test_encode_views_errors(demo, images, el, az, match):
    with pytest.raises(ViewInputError, match=match):
        encode_views(demo, images, el, az)


def test_mask_shape_error(demo):
    with pytest.raises(ViewInputError, match="masks: expected shape"):
        encode_views(demo, torch.rand(4, 32, 32, 3), EL, AZ, masks=torch.ones(4, 16, 16))
