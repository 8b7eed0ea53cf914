import dataclasses

import pytest
import torch

from magicboost_core.model.image_encoder import (
    CLIPImageEncoder, CLIPVisionSpec, PatchImageEncoder, build_image_encoder, clip_vision_state_dict_to_ours,
    infer_clip_vision_spec,
)
from magicboost_core.model.weights import WeightsError


def _hf_tiny():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                           patch_size=4, image_size=16, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=16)
    m = CLIPVisionModel(cfg).eval()
    with torch.no_grad():  # non-trivial norms and embeddings
        for n, p in m.named_parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def _to_openclip(hf_sd):
    """HF vision names (any 'vision_model.' prefix removed) -> OpenCLIP visual names (test-side inverse)."""
    sd = {k.split("vision_model.", 1)[-1]: v for k, v in hf_sd.items() if "position_ids" not in k}
    out = {"conv1.weight": sd["embeddings.patch_embedding.weight"], "class_embedding": sd["embeddings.class_embedding"],
           "positional_embedding": sd["embeddings.position_embedding.weight"],
           "ln_pre.weight": sd["pre_layrnorm.weight"], "ln_pre.bias": sd["pre_layrnorm.bias"],
           "ln_post.weight": sd["post_layernorm.weight"], "ln_post.bias": sd["post_layernorm.bias"],
           "proj": torch.randn(64, 16)}
    i = 0
    while f"encoder.layers.{i}.layer_norm1.weight" in sd:
        b, o = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[o + f"attn.in_proj_{kind}"] = torch.cat([sd[b + f"self_attn.{x}_proj.{kind}"] for x in "qkv"])
            out[o + f"attn.out_proj.{kind}"] = sd[b + f"self_attn.out_proj.{kind}"]
            out[o + f"ln_1.{kind}"] = sd[b + f"layer_norm1.{kind}"]
            out[o + f"ln_2.{kind}"] = sd[b + f"layer_norm2.{kind}"]
            out[o + f"mlp.c_fc.{kind}"] = sd[b + f"mlp.fc1.{kind}"]
            out[o + f"mlp.c_proj.{kind}"] = sd[b + f"mlp.fc2.{kind}"]
        i += 1
    return out


def test_clip_matches_transformers_penultimate_in_both_layouts():
    hf = _hf_tiny()
    hf_sd = hf.state_dict()
    x = torch.rand(2, 3, 16, 16)
    spec = CLIPVisionSpec.tiny()
    # ComfyUI clip_vision layout: 'vision_model.' prefix + a projection to ignore
    comfy = {("vision_model." + k if not k.startswith("vision_model.") else k): v for k, v in hf_sd.items()}
    comfy["visual_projection.weight"] = torch.randn(16, 64)
    enc_hf = CLIPImageEncoder.from_state_dict(comfy, spec).eval()
    # heads cannot be read from weights: 64-wide heads are assumed (16 for ViT-H width 1280)
    assert infer_clip_vision_spec(comfy) == dataclasses.replace(spec, num_heads=1)
    official = {"clip_model.model.visual." + k: v for k, v in _to_openclip(hf_sd).items()}
    official["clip_model.model.token_embedding.weight"] = torch.randn(10, 8)  # text tower keys are ignored
    enc_oc = CLIPImageEncoder.from_state_dict(official, spec).eval()
    with torch.no_grad():
        ref = hf(pixel_values=enc_hf.preprocess(x), output_hidden_states=True).hidden_states[-2]
        a, b = enc_hf(x), enc_oc(x)
    assert a.shape == (2, 17, 64) and enc_hf.num_tokens == 17 and enc_hf.output_dim == 64
    assert torch.allclose(a, ref, atol=1e-5), (a - ref).abs().max()
    assert torch.allclose(a, b, atol=1e-6)
    assert len(enc_hf.encoder.layers) == 2  # last block dropped


def test_preprocess_resize_crop_normalise():
    enc = CLIPImageEncoder(CLIPVisionSpec.tiny())
    x = torch.rand(1, 3, 20, 40)
    p = enc.preprocess(x)
    assert p.shape == (1, 3, 16, 16)
    white = enc.preprocess(torch.ones(1, 3, 32, 32))
    assert torch.allclose(white[0, :, 0, 0], (1 - torch.tensor([0.48145466, 0.4578275, 0.40821073]))
                          / torch.tensor([0.26862954, 0.26130258, 0.27577711]), atol=1e-5)
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    enc(x).sum().backward()
    assert x.grad is not None


def test_clip_weight_errors():
    with pytest.raises(WeightsError, match="not a CLIP vision tower"):
        CLIPImageEncoder.from_state_dict({"foo": torch.zeros(1)})
    sd = _hf_tiny().state_dict()
    with pytest.raises(WeightsError, match="3 transformer blocks but the config expects 5"):
        clip_vision_state_dict_to_ours(sd, 5)


def test_full_size_official_visual_keys(shared_dir):
    tsv = shared_dir / "fixtures" / "official-unet-fullsize-keys.tsv"
    fake = {}
    for line in tsv.read_text().splitlines():
        name, shape = line.split("\t")
        if name.startswith("clip_model."):
            fake[name] = torch.empty(eval(shape), device="meta")
    spec = infer_clip_vision_spec(fake)
    assert spec == CLIPVisionSpec()
    ours = clip_vision_state_dict_to_ours(fake, spec.num_layers)
    with torch.device("meta"):
        ref = CLIPImageEncoder(spec).state_dict()
    assert ours.keys() == ref.keys() and all(ours[k].shape == ref[k].shape for k in ref)


def test_patch_encoder():
    enc = PatchImageEncoder(32, 8)
    assert enc.num_tokens == 17 and enc.output_dim == 192
    x = torch.zeros(2, 3, 64, 64)
    x[:, 1, 0:16, 16:32] = 1.0  # patch (row 0, col 1) after the 2x area resize; green channel
    t = enc(x)
    assert t.shape == (2, 17, 192)
    assert torch.allclose(t[:, 0], t[:, 1:].mean(1))
    assert torch.all(t[:, 2, 64:128] == 1.0) and torch.all(t[:, 2, :64] == -1.0)  # channel-major features
    assert torch.all(t[:, 1] == -1.0) and torch.all(t[:, 3] == -1.0)
    assert isinstance(build_image_encoder(enc.config_dict()), PatchImageEncoder)
    with pytest.raises(ValueError, match="multiple"):
        PatchImageEncoder(30, 8)
