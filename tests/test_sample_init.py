"""Novel-view sampling's ``init``: pure noise (official) or SDEdit from the nearest condition view."""
import argparse

import pytest
import torch

import nodes
from magicboost_core.model.bundle import build_demo_model
from magicboost_core.model.conditioning import encode_views
from magicboost_core.model.sampling import nearest_condition_view, sample_novel_views
from nodes.common import NodeInputError

EL, AZ = [0.0, 0.0, 0.0, 0.0], [0.0, 90.0, 180.0, 270.0]


def _setup():
    torch.manual_seed(0)
    model = build_demo_model().eval()
    g = torch.Generator().manual_seed(1)
    # four clearly different flat views: red, green, blue, black
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, 0]])
    images = colours.view(4, 1, 1, 3).expand(4, 32, 32, 3).contiguous()
    cond = encode_views(model, images, EL, AZ, generator=g)
    return model, cond, colours


def test_nearest_condition_view_by_direction():
    _, cond, _ = _setup()
    idx = nearest_condition_view(cond, [10.0, 0.0, 5.0, -20.0, 0.0], [44.0, 46.0, 181.0, -100.0, 315.1])
    assert idx.tolist() == [0, 1, 2, 3, 0]


def test_nearest_view_low_strength_stays_at_the_view():
    model, cond, colours = _setup()
    # strength 0.1 of 10 steps = one DDIM step from t = 1: the result is the nearest view (up to the tiny noise)
    out = sample_novel_views(model, cond, [10.0, 10.0, 10.0], [100.0, 190.0, -10.0], steps=10, cfg=1.0,
                             init="nearest_view", strength=0.1)
    for img, want in zip(out, [1, 2, 0]):
        err = (img - colours[want]).abs().mean(-1)
        assert float(err.mean()) < 0.05
    # from noise the same (untrained) model gives nothing like the views
    noise = sample_novel_views(model, cond, [10.0], [100.0], steps=10, cfg=1.0)
    assert float((noise[0] - colours[1]).abs().mean()) > 0.2


def test_init_strength_changes_the_schedule_length():
    model, cond, _ = _setup()
    seen = []
    sample_novel_views(model, cond, [0.0], [30.0], steps=10, cfg=1.0, init="nearest_view", strength=0.5,
                       progress=lambda i, n, _p: seen.append((i, n)))
    assert seen[-1] == (5, 5)


def test_init_errors():
    model, cond, _ = _setup()
    with pytest.raises(ValueError, match="init must be one of"):
        sample_novel_views(model, cond, [0.0], [30.0], steps=2, init="image")
    with pytest.raises(ValueError, match="nearest_view"):
        sample_novel_views(model, cond, [0.0], [30.0], steps=2, init="noise", strength=0.5)


def test_node_init_inputs():
    spec = nodes.NODE_CLASS_MAPPINGS["MagicBoostNovelViewSample"].INPUT_TYPES()["optional"]
    assert spec["init"][0] == ["noise", "nearest_view"] and spec["init"][1]["default"] == "noise"
    assert 0 < spec["init_strength"][1]["min"] and spec["init_strength"][1]["max"] == 1.0
    model, _, colours = _setup()
    images = colours.view(4, 1, 1, 3).expand(4, 32, 32, 3).contiguous()
    (views,) = nodes.NODE_CLASS_MAPPINGS["MagicBoostEncodeViews"]().encode(
        model, images, "views (batch)", "instant3d", seed=0, sample_posterior=False)
    (cams,) = nodes.NODE_CLASS_MAPPINGS["MagicBoostCameraPoses"]().make("custom", "5", "170, 265")
    node = nodes.NODE_CLASS_MAPPINGS["MagicBoostNovelViewSample"]()
    (out,) = node.sample(model, views, cams, steps=10, cfg=1.0, init="nearest_view", init_strength=0.1)
    assert out.shape == (2, 32, 32, 3)
    assert float((out[0] - colours[2]).abs().mean()) < 0.05 and float((out[1] - colours[3]).abs().mean()) < 0.05
    with pytest.raises(NodeInputError, match="input 'init_strength'"):
        node.sample(model, views, cams, steps=4, init="nearest_view", init_strength=0.1)
    with pytest.raises(NodeInputError, match="input 'init'"):
        node.sample(model, views, cams, steps=4, init="image")


def test_sample_cli_flags():
    from magicboost_core.model.cli import register

    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command"))
    a = p.parse_args(["sample", "m", "a.png", "--init", "nearest_view", "--init-strength", "0.3"])
    assert (a.init, a.init_strength) == ("nearest_view", 0.3)
    assert p.parse_args(["sample", "m", "a.png"]).init == "noise"
