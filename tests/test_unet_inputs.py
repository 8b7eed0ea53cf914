"""Clear errors for bad inputs, configs and state dicts of the multi-view UNet."""
import pytest
import torch

from magicboost_core.model.config import MultiViewUNetConfig, UnsupportedConfigError
from magicboost_core.model.convert_unet import UnknownKeyError, convert_official_unet, official_unet_key_map
from magicboost_core.model.unet import MultiViewUNet, UNetInputError
from test_unet_cached import random_inputs


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MultiViewUNet(MultiViewUNetConfig.tiny()).eval()


@pytest.fixture
def inp(model):
    return random_inputs(model, b=2, a=4)


def _call(model, **kw):
    with torch.no_grad():
        return model(**kw)


def test_wrong_camera_frame_count(model, inp):
    inp["camera"] = inp["camera"][:, :4]
    with pytest.raises(UNetInputError, match=r"camera must be \(B, F, 10\) = \(2, 5, 10\)"):
        _call(model, **inp)


def test_text_batch_mismatch(model, inp):
    inp["text"] = inp["text"][:1]
    with pytest.raises(UNetInputError, match="text batch 1 != sample batch 2"):
        _call(model, **inp)


def test_text_frames_and_width(model, inp):
    with pytest.raises(UNetInputError, match="text has 4 frames, expected F = 1 \\+ anchors = 5"):
        _call(model, **dict(inp, text=inp["text"][:, :4]))
    with pytest.raises(UNetInputError, match="text tokens must be"):
        _call(model, **dict(inp, text=inp["text"][..., :8]))


def test_image_token_width(model, inp):
    inp["image_tokens"] = inp["image_tokens"][..., :1024]
    with pytest.raises(UNetInputError, match="image_tokens width 1024 != ip_in_dim 1280"):
        _call(model, **inp)


def test_dtype_mismatch(model, inp):
    inp["sample"] = inp["sample"].double()
    with pytest.raises(UNetInputError, match="sample dtype torch.float64 does not match the model dtype torch.float32"):
        _call(model, **inp)


def test_anchor_shape_and_missing_anchors(model, inp):
    with pytest.raises(UNetInputError, match="anchors .* do not fit the target"):
        _call(model, **dict(inp, anchors=inp["anchors"][..., :4, :4]))
    with pytest.raises(UNetInputError, match="no anchor_cache"):
        _call(model, **dict(inp, anchors=None))


def test_drop_mask_checks(model, inp):
    with pytest.raises(UNetInputError, match=r"drop_mask must be \(B, A-1\) = \(2, 3\)"):
        _call(model, **inp, drop_mask=torch.zeros(2, 4))
    with pytest.raises(UNetInputError, match="0 \\(keep\\) or 1 \\(drop\\)"):
        _call(model, **inp, drop_mask=torch.full((2, 3), 0.5))


def test_timestep_shape(model, inp):
    with pytest.raises(UNetInputError, match="timestep must be a scalar or \\(2,\\)"):
        _call(model, **dict(inp, timestep=torch.tensor([1, 2, 3])))


def test_cache_mismatches(model, inp):
    cond = {k: inp[k] for k in ("text", "image_tokens", "camera", "labels")}
    with torch.no_grad():
        cache = model.encode_anchors(inp["anchors"], **cond)
    one = {k: v[:1] for k, v in inp.items()}
    with pytest.raises(UNetInputError, match="anchor_cache was built for batch 2"):
        _call(model, **dict(one, anchors=None), anchor_cache=cache)
    other_cam = inp["camera"].clone()
    other_cam[:, 2, 5] += 1.0
    with pytest.raises(UNetInputError, match="differ from those the anchor_cache was built with"):
        _call(model, **dict(inp, anchors=None, camera=other_cam), anchor_cache=cache)
    # the target's own camera may change freely
    target_cam = inp["camera"].clone()
    target_cam[:, 0] += 1.0
    _call(model, **dict(inp, anchors=None, camera=target_cam), anchor_cache=cache)


def test_forward_frames_checks(model, inp):
    b, nf = 2, 5
    rows = lambda v: v.reshape(b * nf, *v.shape[2:])  # noqa: E731
    x = torch.randn(b * nf, 4, 8, 8)
    args = (torch.zeros(b * nf, dtype=torch.long), rows(inp["text"]), rows(inp["camera"]), rows(inp["image_tokens"]),
            inp["anchors"], rows(inp["labels"]))
    with pytest.raises(UNetInputError, match="num_frames=7"):
        model.forward_frames(x, *args, num_frames=7)
    with pytest.raises(UNetInputError, match=r"x must be \(B\*F, C, H, W\) = \(10, C, H, W\)"):
        model.forward_frames(x[:9], *args)


def test_unknown_keys_are_all_named():
    km = official_unet_key_map(MultiViewUNetConfig.tiny())
    with torch.device("meta"):
        model = MultiViewUNet(MultiViewUNetConfig.tiny())
    ours = model.state_dict()
    sd = {"model.diffusion_model." + k: ours[v] for k, v in km.items()}
    sd["model.diffusion_model.foo.weight"] = torch.zeros(1)
    sd["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_k_ip.weight"] = torch.zeros(1)
    sd["vae_model.decoder.conv_in.weight"] = torch.zeros(1)  # not a UNet key: left alone
    with pytest.raises(UnknownKeyError) as err:
        convert_official_unet(sd)
    assert err.value.keys == sorted(["model.diffusion_model.foo.weight",
                                     "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_k_ip.weight"])
    assert "model.diffusion_model.foo.weight" in str(err.value) and "attn1.to_k_ip" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_bare_unet_dict_and_identity_of_tensors():
    km = official_unet_key_map(MultiViewUNetConfig.tiny())
    with torch.device("meta"):
        ours = MultiViewUNet(MultiViewUNetConfig.tiny()).state_dict()
    bare = {k: ours[v] for k, v in km.items()}
    converted = convert_official_unet(bare)
    assert set(converted) == set(ours)
    assert all(converted[km[k]] is bare[k] for k in bare)


def test_config_round_trip_and_unsupported_flags():
    cfg = MultiViewUNetConfig.tiny()
    assert MultiViewUNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown fields"):
        MultiViewUNetConfig.from_dict({"bogus": 1})
    with pytest.raises(UnsupportedConfigError, match="use_sep_selfattn=False"):
        MultiViewUNetConfig.from_official_kwargs({"use_sep_selfattn": False})
    with pytest.raises(ValueError, match="not divisible by num_head_channels"):
        MultiViewUNetConfig(model_channels=96, num_head_channels=64)
    assert MultiViewUNetConfig.from_official_kwargs({"frame_num": 7, "image_size": 32}) == MultiViewUNetConfig.full()
