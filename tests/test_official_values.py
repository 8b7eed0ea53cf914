"""The smaller deviations of issue 12, each held to the values of the official code (magic-research/magic-boost
f595158: configs/refine_instantmesh.yaml, threestudio/data/image.py, threestudio/data/uncond.py,
extern/MVC/scripts/demo.py, Lightning precision 16-mixed)."""
import math

import pytest
import torch

from magicboost_core.geometry.presets import (RandomPoseSampler, get_preset, refine_code_elevation_offset,
                                              sphere_elevation_bounds)
from magicboost_core.model.bundle import build_demo_model
from magicboost_core.model.conditioning import encode_views, novel_view_conditioning, with_novel_view_prompts
from magicboost_core.refine.guidance import REFINE_AUTOCAST_DTYPE, MultiViewGuidance

from devicecheck import STANDIN, StandInDevice


@pytest.fixture(scope="module")
def demo():
    torch.manual_seed(0)
    return build_demo_model(image_size=16, patch=8).eval()


def _cond(model, preset):
    torch.manual_seed(1)
    imgs = torch.rand(preset.num_views, 16, 16, 4)
    return encode_views(model, imgs, list(preset.elevations), list(preset.azimuths),
                        generator=torch.Generator().manual_seed(0))


def test_instantmesh_anchor_codes_use_the_official_refine_elevations(demo):
    """image.py: anchor_elev = anchor_relative_elev [20,-10,..] + default_elevation_deg 20 -> 40/10 in the code."""
    im = get_preset("instantmesh")
    guid = MultiViewGuidance(demo, _cond(demo, im))
    codes = guid._sds._anchor_codes
    el = torch.rad2deg(torch.atan2(codes[:, 4], codes[:, 7]))
    assert torch.allclose(el, torch.tensor([40.0, 10.0, 40.0, 10.0, 40.0, 10.0]), atol=1e-4)
    # ... while the reference view is rendered at default_elevation_deg 20, az 30, distance 4, fovy 30
    ref = im.cameras(64)[[0]]
    assert float(ref.elevation_deg[0]) == 20.0 and float(ref.azimuth_deg[0]) == 30.0
    assert (im.distance, im.fovy_deg) == (4.0, 30.0)
    assert refine_code_elevation_offset(im.elevations, im.azimuths) == 20.0
    i3 = get_preset("instant3d")
    assert refine_code_elevation_offset(i3.elevations, i3.azimuths) == 0.0
    codes3 = MultiViewGuidance(demo, _cond(demo, i3))._sds._anchor_codes
    assert torch.allclose(codes3[:, 4], torch.zeros(4)) and torch.allclose(codes3[:, 7], torch.ones(4))


def test_sds_sphere_elevations_follow_uncond_py():
    """uncond.py: asin(2 U[(e0+90)/180, (e1+90)/180] - 1) = asin(U[e0/90, e1/90]): [-6.38, 12.84] for [-10, 20]."""
    lo, hi = sphere_elevation_bounds(-10.0, 20.0)
    assert lo == pytest.approx(-6.3794, abs=1e-4) and hi == pytest.approx(12.8396, abs=1e-4)
    s = RandomPoseSampler((-10.0, 20.0), generator=torch.Generator().manual_seed(0))
    el = s.sample_elevations(20000, sphere=True)
    assert float(el.min()) >= lo - 1e-9 and float(el.max()) <= hi + 1e-9
    assert float(el.min()) < lo + 0.05 and float(el.max()) > hi - 0.05
    # sin(el) is uniform on [e0/90, e1/90]: its mean is the midpoint 1/18
    assert float(torch.sin(torch.deg2rad(el)).mean()) == pytest.approx((-10 / 90 + 20 / 90) / 2, abs=3e-3)
    deg = s.sample_elevations(20000, sphere=False)
    assert float(deg.min()) < -9.9 and float(deg.max()) > 19.9
    both = torch.cat([s.sample(64).elevation_deg for _ in range(40)])
    assert float(both.min()) >= -10 and float(both.max()) <= 20


def test_refinement_precision_is_fp16_autocast_on_gpus(demo):
    """Lightning precision 16-mixed: fp32 weights, fp16 autocast (ours was bf16)."""
    assert REFINE_AUTOCAST_DTYPE == torch.float16
    cond = _cond(demo, get_preset("instant3d"))
    with StandInDevice():
        demo.to(STANDIN)
        try:
            guid = MultiViewGuidance(demo, cond)
            assert guid._amp_dtype == torch.float16 and guid._sds.autocast_dtype == torch.float16
            assert next(demo.unet.parameters()).dtype == torch.float32  # weights untouched
        finally:
            demo.to("cpu")
    assert MultiViewGuidance(demo, cond)._amp_dtype is None  # CPU: plain fp32


def test_novel_view_conditioning_follows_demo_py(demo):
    """demo.py: noise_embed zeros, every anchor its own CLIP features (target: anchor 0's), prompt 'a , 3d asset'."""
    cond = _cond(demo, get_preset("instant3d"))
    assert cond.labels[2:].tolist() == [[500.0, 0.5]] * 3  # refinement labels
    nv = novel_view_conditioning(cond)
    assert nv.labels.abs().sum() == 0
    assert nv.image_tokens.shape == (5,) + tuple(cond.image_tokens.shape)
    assert torch.equal(nv.image_tokens[0], cond.image_tokens) and torch.equal(nv.image_tokens[1], cond.image_tokens)
    assert not torch.equal(nv.image_tokens[2], nv.image_tokens[1])
    from magicboost_core.model.sampling import sample_novel_views

    out = sample_novel_views(demo, nv, [10.0], [45.0], steps=2)
    assert out.shape == (1, 16, 16, 3) and torch.isfinite(out).all()


def test_novel_view_prompts_replace_the_refinement_prompts():
    from magicboost_core.model.bundle import MultiViewModel

    torch.manual_seed(0)
    base = build_demo_model(image_size=16, patch=8)
    d = base.text.cond.shape
    novel = (torch.full(d, 2.0), torch.full(d, 3.0))
    model = MultiViewModel(base.unet, base.codec, base.image_encoder, base.text.cond, base.text.uncond, base.info,
                           novel_view_text=novel)
    seen = with_novel_view_prompts(model)
    assert torch.equal(seen.text_cond, novel[0]) and torch.equal(seen.text_uncond, novel[1])
    assert seen.unet is model.unet and seen.codec is model.codec
    assert with_novel_view_prompts(base) is base  # older models keep their prompts


def test_novel_view_sample_node_defaults_to_the_demo_conditioning(demo, monkeypatch):
    import nodes
    from nodes.common import EncodedViews
    from nodes import view_nodes

    cond = _cond(demo, get_preset("instant3d"))
    seen = {}

    def fake_sample(model, c, el, az, **kw):
        seen["cond"] = c
        return torch.zeros(len(el), 16, 16, 3)

    monkeypatch.setattr(view_nodes, "sample_novel_views", fake_sample)
    node = nodes.NODE_CLASS_MAPPINGS["MagicBoostNovelViewSample"]()
    views = EncodedViews(cond=cond, preset=get_preset("instant3d"), model_id=id(demo))
    node.sample(demo, views, get_preset("instant3d"), steps=1)
    assert seen["cond"].labels.abs().sum() == 0 and seen["cond"].image_tokens.dim() == 3
    node.sample(demo, views, get_preset("instant3d"), steps=1, conditioning="refinement")
    assert seen["cond"] is cond


def test_bundle_keeps_novel_view_prompts_and_reads_older_folders(tmp_path):
    from magicboost_core.model.bundle import MultiViewModel

    torch.manual_seed(0)
    base = build_demo_model(image_size=16, patch=8)
    d = base.text.cond.shape
    novel = (torch.full(d, 2.0), torch.full(d, 3.0))
    m = MultiViewModel(base.unet, base.codec, base.image_encoder, base.text.cond, base.text.uncond, base.info,
                       novel_view_text=novel)
    m.save_pretrained(tmp_path / "new")
    back = MultiViewModel.from_pretrained(tmp_path / "new")
    assert torch.equal(back.novel_view_text()[0], novel[0]) and torch.equal(back.novel_view_text()[1], novel[1])
    base.save_pretrained(tmp_path / "old")  # a folder without the novel-view pair
    old = MultiViewModel.from_pretrained(tmp_path / "old")
    assert old.novel_view_text() is None and with_novel_view_prompts(old) is old


def test_refinement_refuses_a_converted_model_without_prompts(demo):
    """Issue 12: a bundle without prompt embeddings is never used for refinement silently."""
    import dataclasses

    from magicboost_core.refine.guidance import MissingPromptEmbeddingsError

    cond = _cond(demo, get_preset("instant3d"))
    info = demo.info
    try:
        demo.info = dataclasses.replace(info, kind="official", text_source="zeros")
        with pytest.raises(MissingPromptEmbeddingsError, match="without prompt embeddings.*magicboost convert"):
            MultiViewGuidance(demo, cond)
        MultiViewGuidance(demo, cond, allow_zero_prompts=True)
        demo.info = dataclasses.replace(info, kind="official", text_source="clip_text")
        MultiViewGuidance(demo, cond)
    finally:
        demo.info = info
    MultiViewGuidance(demo, cond)  # the demo model is trained without text: fine
