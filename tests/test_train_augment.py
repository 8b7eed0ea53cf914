import pytest
import torch

from magicboost_core.train.augment import (AugmentConfig, augment_conditions, cfg_dropout_mask, distort_anchors,
                                           noise_anchors, random_drop_mask)


def _ac():
    b = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - b, 0)


def test_noise_anchors_labels_match_applied_noise():
    x = torch.rand(6, 4, 3, 8, 8) * 2 - 1
    g = torch.Generator().manual_seed(0)
    y, tau = noise_anchors(x, _ac(), prob=0.7, g=g)
    assert y.shape == x.shape and tau.shape == (6, 4)
    assert (tau[:, 0] == 0).all() and torch.equal(y[:, 0], x[:, 0])
    assert tau.min() >= 0 and tau.max() <= 500 and (tau > 0).any()
    # replay the generator: the noised anchors are exactly sqrt(ab) x + sqrt(1 - ab) eps
    g2 = torch.Generator().manual_seed(0)
    sel = torch.rand(6, 4, generator=g2) < 0.7
    sel[:, 0] = False
    torch.randint(0, 501, (6, 4), generator=g2)
    eps = torch.randn(x.shape, generator=g2)
    ab = _ac()[tau.long()].float()
    expect = ab.sqrt()[..., None, None, None] * x + (1 - ab).sqrt()[..., None, None, None] * eps
    assert torch.allclose(y[sel], expect[sel], atol=1e-6)
    assert torch.equal(y[~sel], x[~sel]) and (tau[~sel] == 0).all()


def test_distort_anchors_labels_and_identity():
    x = torch.rand(5, 4, 3, 16, 16) * 2 - 1
    y, geo = distort_anchors(x, prob=1.0, g=torch.Generator().manual_seed(1))
    assert y.shape == x.shape and geo.shape == (5, 4)
    assert (geo[:, 0] == 0).all() and torch.equal(y[:, 0], x[:, 0])
    assert (geo[:, 1:] > 0).all() and geo.max() <= 0.5
    assert not torch.allclose(y[:, 1:], x[:, 1:])
    y0, geo0 = distort_anchors(x, prob=0.0, g=torch.Generator().manual_seed(1))
    assert torch.equal(y0, x) and (geo0 == 0).all()
    # a zoom of magnitude ~0 is (nearly) the identity; larger labels move the image more
    y1, g1 = distort_anchors(x, prob=1.0, g=torch.Generator().manual_seed(1), max_geo=1e-4)
    assert torch.allclose(y1, x, atol=1e-2)
    white = torch.ones(1, 2, 3, 16, 16)
    yw, _ = distort_anchors(white, prob=1.0, g=torch.Generator().manual_seed(3))
    assert torch.allclose(yw, white)  # the border fill is white


def test_drop_mask_never_drops_anchor_zero():
    m = random_drop_mask(200, 4, prob=1.0, each=1.0, g=torch.Generator())
    assert m.shape == (200, 3) and (m == 1).all()  # only side anchors 1..3 are in the mask
    m = random_drop_mask(500, 4, prob=0.3, each=0.5, g=torch.Generator().manual_seed(0))
    rows = (m.sum(1) > 0).float().mean()
    assert 0.1 < rows < 0.3
    assert random_drop_mask(3, 4, prob=0.0, each=1.0, g=torch.Generator()).sum() == 0
    u = cfg_dropout_mask(1000, 0.1, torch.Generator().manual_seed(0))
    assert u.dtype == torch.bool and 0.05 < u.float().mean() < 0.15


def test_augment_conditions_shapes_and_switch():
    imgs = torch.rand(4, 4, 3, 16, 16)
    enc = lambda t: t * 2 - 1  # noqa: E731
    lat, lab, drop = augment_conditions(imgs, enc, _ac(), AugmentConfig(noise_prob=1, geo_prob=1, drop_prob=1),
                                        torch.Generator().manual_seed(0))
    assert lat.shape == (4, 4, 3, 16, 16) and lab.shape == (4, 4, 2) and drop.shape == (4, 3)
    assert (lab[:, 0] == 0).all() and torch.allclose(lat[:, 0], imgs[:, 0] * 2 - 1)
    assert (lab[:, 1:, 1] > 0).all() and (lab[:, 1:, 1] <= 0.5).all() and (lab[:, 1:, 0] <= 500).all()
    lat, lab, drop = augment_conditions(imgs, enc, _ac(), AugmentConfig(enabled=False), torch.Generator())
    assert drop is None and (lab == 0).all() and torch.allclose(lat, imgs * 2 - 1)


def test_augment_config_errors():
    with pytest.raises(ValueError, match="noise_prob"):
        AugmentConfig(noise_prob=1.5)
    with pytest.raises(ValueError, match="max_noise_t"):
        AugmentConfig(max_noise_t=900)
