"""Mask resolution of condition views (issue 12, breaker 3): alpha -> MASK -> background key -> silhouette off."""
from types import SimpleNamespace

import pytest
import torch

from magicboost_core.masks import (estimate_background_mask, is_placeholder_mask, resolve_view_masks,
                                   silhouette_available)


def _object_on(bg: float, size: int = 64, hole: bool = False):
    """(H, W, 3) a coloured disc (with an enclosed background-coloured hole) on a uniform background, and its mask."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r = ((yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2).sqrt()
    disc = r < size * 0.3
    img = torch.full((size, size, 3), bg)
    img[disc] = torch.tensor([0.8, 0.3, 0.1])
    if hole:
        img[r < size * 0.08] = bg  # background colour inside the object: stays object
    return img, disc.float()


@pytest.mark.parametrize("bg", [0.5, 1.0, 128 / 255])  # Zero123++ grey, Instant3D white
def test_background_key_recovers_the_object(bg):
    img, truth = _object_on(bg, hole=True)
    img = (img + 0.01 * torch.randn_like(img)).clamp(0, 1)  # JPEG-ish noise on the background
    est = estimate_background_mask(img)
    assert est is not None and est.shape == truth.shape
    assert float((est != truth).float().mean()) < 0.01


def test_background_key_refuses_non_uniform_background():
    torch.manual_seed(0)
    assert estimate_background_mask(torch.rand(64, 64, 3)) is None
    assert estimate_background_mask(torch.full((64, 64, 3), 0.5)) is None  # empty view: no object


def test_resolution_order_and_never_an_all_ones_target():
    img, truth = _object_on(0.5)
    rgb = img[None].expand(2, -1, -1, -1)
    alpha = torch.zeros(2, 64, 64)
    alpha[:, 10:20, 10:20] = 1
    rgba = torch.cat([rgb, alpha[..., None]], -1)
    assert resolve_view_masks(rgba, truth[None].expand(2, -1, -1)).source == "alpha"
    r = resolve_view_masks(rgb, alpha)
    assert r.source == "input" and torch.equal(r.masks, alpha)
    r = resolve_view_masks(rgb, torch.ones(2, 64, 64))  # an all-ones mask says nothing: estimate instead
    assert r.source == "estimated" and torch.equal(r.masks[0], truth)
    opaque = torch.cat([rgb, torch.ones(2, 64, 64, 1)], -1)
    assert resolve_view_masks(opaque).source == "estimated"
    torch.manual_seed(0)
    r = resolve_view_masks(torch.rand(2, 64, 64, 3))
    assert r.source == "none" and not r.has_silhouette and "silhouette term off" in r.note
    assert not silhouette_available(SimpleNamespace(mask_source="none"))


def test_comfyui_placeholder_mask():
    assert is_placeholder_mask(torch.zeros(1, 64, 64), 256, 256)
    assert is_placeholder_mask(torch.zeros(64, 64), 384, 256)
    assert not is_placeholder_mask(torch.zeros(1, 64, 64), 64, 64)  # a real 64x64 image: a real mask
    assert not is_placeholder_mask(torch.ones(1, 64, 64), 256, 256)
    assert not is_placeholder_mask(torch.zeros(1, 32, 32), 256, 256)


def test_encode_views_estimates_masks_of_rgb_grids():
    from magicboost_core.model.bundle import build_demo_model
    from magicboost_core.model.conditioning import encode_views

    img, truth = _object_on(0.5)
    views = img[None].expand(4, -1, -1, -1)
    cond = encode_views(build_demo_model(image_size=32).eval(), views, [0] * 4, [0, 90, 180, 270])
    assert cond.mask_source == "estimated"
    small = torch.nn.functional.interpolate(truth[None, None], size=32, mode="area")[0, 0]
    assert float((cond.masks[0] - small).abs().mean()) < 0.02
    # Official: RGB views enter the model as given (grey background kept), only alpha is composited.
    assert torch.allclose(cond.images[0, 0, 0], torch.full((3,), 0.5))


def test_condition_views_from_never_targets_the_whole_frame():
    from magicboost_core.refine.loop import condition_views_from

    img, truth = _object_on(1.0)
    cond = SimpleNamespace(images=img[None].expand(4, -1, -1, -1), masks=None, elevations=[0] * 4,
                           azimuths=[0, 90, 180, 270])
    rgb, m, _, _ = condition_views_from(cond)
    assert torch.equal(m[0, ..., 0], truth)
    assert float(m.mean()) < 0.5


def test_encode_views_node_accepts_the_load_image_placeholder():
    import nodes
    from magicboost_core.model.bundle import build_demo_model

    img, _ = _object_on(0.5, size=96)
    node = nodes.NODE_CLASS_MAPPINGS["MagicBoostEncodeViews"]()
    model = build_demo_model(image_size=32).eval()
    (views,) = node.encode(model, img[None].expand(4, -1, -1, -1).contiguous(), preset="instant3d",
                           mask=torch.zeros(1, 64, 64))
    assert views.masks is None and views.cond.mask_source == "estimated"
