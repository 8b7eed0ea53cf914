import argparse
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from magicboost_core.model.bundle import ModelFormatError, MultiViewModel, attach_external_encoders
from magicboost_core.model.codec import SDVAECodec, SDVAEConfig, vae_diffusers_to_ldm
from magicboost_core.model.convert_checkpoint import ConvertError, convert_official_checkpoint
from magicboost_core.model.image_encoder import CLIPImageEncoder, CLIPVisionSpec
from magicboost_core.model.conditioning import encode_views
from magicboost_core.model.sampling import sample_novel_views
from magicboost_core.model.schedule import official_schedule_buffers
from magicboost_core.model.text_encoder import CLIPTextSpec, encode_prompts_from_state_dict

from test_model_text_encoder import make_tiny_tokenizer

VAE_CFG = SDVAEConfig.tiny()


def _openclip_block(prefix, dim, inner, g):
    r = lambda *s: torch.randn(*s, generator=g) * 0.05  # noqa: E731
    return {prefix + "ln_1.weight": 1 + r(dim), prefix + "ln_1.bias": r(dim),
            prefix + "attn.in_proj_weight": r(3 * dim, dim), prefix + "attn.in_proj_bias": r(3 * dim),
            prefix + "attn.out_proj.weight": r(dim, dim), prefix + "attn.out_proj.bias": r(dim),
            prefix + "ln_2.weight": 1 + r(dim), prefix + "ln_2.bias": r(dim),
            prefix + "mlp.c_fc.weight": r(inner, dim), prefix + "mlp.c_fc.bias": r(inner),
            prefix + "mlp.c_proj.weight": r(dim, inner), prefix + "mlp.c_proj.bias": r(dim)}


SHARED = Path(os.environ.get("MAGICBOOST_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


@pytest.fixture(scope="module")
def official_parts():
    shared_dir = SHARED
    if not (shared_dir / "fixtures" / "official-unet-tiny").is_dir():
        pytest.skip(f"shared fixtures not found at {shared_dir} (set MAGICBOOST_SHARED)")
    g = torch.Generator().manual_seed(0)
    unet = load_file(str(shared_dir / "fixtures" / "official-unet-tiny" / "weights.safetensors"))
    torch.manual_seed(0)
    vae = {"vae_model." + k: v for k, v in vae_diffusers_to_ldm(SDVAECodec(VAE_CFG).vae.state_dict()).items()}
    v = "clip_model.model.visual."
    visual = {v + "conv1.weight": torch.randn(1280, 3, 8, 8, generator=g) * 0.02,
              v + "class_embedding": torch.randn(1280, generator=g), v + "positional_embedding": torch.randn(5, 1280, generator=g),
              v + "ln_pre.weight": torch.ones(1280), v + "ln_pre.bias": torch.zeros(1280),
              v + "ln_post.weight": torch.ones(1280), v + "ln_post.bias": torch.zeros(1280),
              v + "proj": torch.randn(1280, 32, generator=g)}
    for i in range(2):
        visual.update(_openclip_block(f"{v}transformer.resblocks.{i}.", 1280, 64, g))
    t = "clip_model.model."
    text = {t + "token_embedding.weight": torch.randn(600, 32, generator=g), t + "positional_embedding": torch.randn(77, 32, generator=g) * 0.1,
            t + "ln_final.weight": torch.ones(32), t + "ln_final.bias": torch.zeros(32),
            t + "text_projection": torch.randn(32, 32, generator=g), t + "logit_scale": torch.tensor(4.6)}
    for i in range(3):
        text.update(_openclip_block(f"{t}transformer.resblocks.{i}.", 32, 64, g))
    sched = {k: v.float() for k, v in official_schedule_buffers().items()}
    return dict(unet=unet, vae=vae, visual=visual, text=text, sched=sched)


def _ckpt(path, parts, *names, extra=None):
    sd = {}
    for n in names:
        sd.update(parts[n])
    sd.update(extra or {})
    torch.save(sd, path)
    return path


def test_convert_full_checkpoint(official_parts, tmp_path):
    p = official_parts
    ckpt = _ckpt(tmp_path / "magic-boost-4view.pt", p, "unet", "vae", "visual", "text", "sched")
    tok = make_tiny_tokenizer(tmp_path / "tok")
    rep = convert_official_checkpoint(ckpt, tmp_path / "out", tokenizer=tok, num_head_channels=16, vae_config=VAE_CFG)
    assert rep.warnings == [] and rep.sources == {"unet": "checkpoint", "VAE": "checkpoint",
                                                  "CLIP vision": "checkpoint", "text": "checkpoint"}
    m = MultiViewModel.from_pretrained(rep.output)
    assert m.info.name == "magic-boost-4view" and m.info.kind == "official" and m.info.text_source == "clip_text"
    assert m.unet.config.num_head_channels == 16 and m.unet.config.context_dim == 32
    from magicboost_core.model.convert_unet import convert_official_unet

    ref = convert_official_unet(p["unet"])
    sd = m.unet.state_dict()
    assert all(torch.equal(sd[k], v.float()) for k, v in ref.items())
    assert m.text_cond.shape == (77, 32)
    spec = CLIPTextSpec(hidden_size=32, num_layers=2, num_heads=1, intermediate_size=64, vocab_size=600)
    emb = encode_prompts_from_state_dict(p["text"], tok, [m.info.prompt, m.info.negative_prompt], spec)
    assert torch.allclose(m.text_cond, emb[0], atol=1e-6) and torch.allclose(m.text_uncond, emb[1], atol=1e-6)
    # the novel-view demo prompts are stored too (official demo.py: "a , 3d asset" and its negative prompt)
    assert m.info.novel_view_prompt == "a , 3d asset"
    assert m.info.novel_view_negative_prompt.startswith("uniform low no texture ugly, boring")
    nv = encode_prompts_from_state_dict(p["text"], tok, [m.info.novel_view_prompt, m.info.novel_view_negative_prompt],
                                        spec)
    ncond, nuncond = m.novel_view_text()
    assert torch.allclose(ncond, nv[0], atol=1e-6) and torch.allclose(nuncond, nv[1], atol=1e-6)
    assert not torch.allclose(ncond, m.text_cond)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(m.image_encoder(x), CLIPImageEncoder.from_state_dict(p["visual"])(x), atol=1e-5)
        assert m.image_encoder(x).shape == (1, 5, 1280)
    # the converted model samples end to end (SD VAE codec, CLIP tokens, UNet)
    cond = encode_views(m, torch.rand(4, 24, 24, 4), [0] * 4, [0, 90, 180, 270], generator=torch.Generator().manual_seed(0))
    assert cond.anchor_latents.shape == (4, 4, 8, 8) and cond.image_tokens.shape == (5, 1280)
    imgs = sample_novel_views(m, cond, [10], [45], steps=2)
    assert imgs.shape == (1, 16, 16, 3) and torch.isfinite(imgs).all()
    with pytest.raises(FileExistsError, match="not empty"):
        convert_official_checkpoint(ckpt, tmp_path / "out", vae_config=VAE_CFG)
    # swapping in ComfyUI-loaded encoders (LDM-layout VAE, HF-layout CLIP vision)
    torch.manual_seed(5)
    other = SDVAECodec(VAE_CFG)
    attach_external_encoders(m, vae_state_dict=vae_diffusers_to_ldm(other.vae.state_dict()))
    with torch.no_grad():
        assert torch.allclose(m.codec.encode(x, sample=False), other.encode(x, sample=False), atol=1e-6)
    hf_clip = {"vision_model." + k: v for k, v in CLIPImageEncoder(CLIPVisionSpec.tiny()).state_dict().items()}
    with pytest.raises(ModelFormatError, match="64 wide but the UNet expects 1280"):
        attach_external_encoders(m, clip_state_dict=hf_clip)


def test_missing_parts_come_from_files(official_parts, tmp_path):
    p = official_parts
    ckpt = _ckpt(tmp_path / "unet_only.pt", p, "unet")
    with pytest.raises(ConvertError, match="no VAE weights; pass --vae"):
        convert_official_checkpoint(ckpt, tmp_path / "o1", vae_config=VAE_CFG)
    vae_file = tmp_path / "sd_vae.safetensors"  # ComfyUI models/vae layout: LDM names, no prefix
    save_file({k[len("vae_model."):]: v.contiguous() for k, v in p["vae"].items()}, str(vae_file))
    with pytest.raises(ConvertError, match="no CLIP vision weights; pass --clip-vision"):
        convert_official_checkpoint(ckpt, tmp_path / "o2", vae=vae_file, vae_config=VAE_CFG)
    clip_file = tmp_path / "clip_vision.safetensors"
    save_file({k[len("clip_model.model."):]: v.contiguous() for k, v in p["visual"].items()}, str(clip_file))
    # No text tower: refused (issue 12: the official always encodes its prompts), zeros only on request.
    with pytest.raises(ConvertError, match="cannot encode the prompts.*--text-encoder.*--allow-zero-prompts"):
        convert_official_checkpoint(ckpt, tmp_path / "o3", vae=vae_file, clip_vision=clip_file, vae_config=VAE_CFG,
                                    num_head_channels=16)
    rep = convert_official_checkpoint(ckpt, tmp_path / "o3", vae=vae_file, clip_vision=clip_file, vae_config=VAE_CFG,
                                      num_head_channels=16, dtype=torch.float16, allow_zero_prompts=True)
    assert any("ZEROS" in w for w in rep.warnings)
    m = MultiViewModel.from_pretrained(rep.output)
    assert m.info.text_source == "zeros" and m.text_cond.abs().sum() == 0
    assert load_file(str(rep.output / "model.safetensors"))["unet.unet.conv_in.weight"].dtype == torch.float16
    with pytest.raises(ConvertError, match="no clip_model.model.\\* text tower; pass --text-encoder"):
        convert_official_checkpoint(ckpt, tmp_path / "o4", vae=vae_file, clip_vision=clip_file, vae_config=VAE_CFG,
                                    tokenizer=make_tiny_tokenizer(tmp_path / "tok"))


def test_foreign_key_and_schedule_warning(official_parts, tmp_path):
    p = official_parts
    bad = _ckpt(tmp_path / "bad.pt", p, "unet", "vae", "visual", "text",
                extra={"cond_stage_model.foo": torch.zeros(2), "model_ema.decay": torch.tensor(0.99),
                       "model_ema.diffusion_modelinput_blocks00weight": torch.zeros(2), "logvar": torch.zeros(1000)})
    with pytest.raises(ConvertError, match="1 key.*cond_stage_model.foo.*--allow-extra-keys"):
        convert_official_checkpoint(bad, tmp_path / "o", vae_config=VAE_CFG)
    tok = make_tiny_tokenizer(tmp_path / "tok")
    rep = convert_official_checkpoint(bad, tmp_path / "o", vae_config=VAE_CFG, num_head_channels=16, tokenizer=tok,
                                      allow_extra_keys=True)
    assert any("skipped 4 key(s)" in n and "model_ema.* (2)" in n and "logvar (1)" in n
               and "cond_stage_model.* (1)" in n for n in rep.notes), rep.notes
    sched = dict(p["sched"])
    sched["betas"] = sched["betas"] * 1.5
    ckpt = tmp_path / "sched.safetensors"
    sd = {**p["unet"], **p["vae"], **p["visual"], **sched}
    save_file({k: v.contiguous() for k, v in sd.items()}, str(ckpt))
    rep = convert_official_checkpoint(ckpt, tmp_path / "o5", vae_config=VAE_CFG, num_head_channels=16,
                                      allow_zero_prompts=True)
    assert any("betas differs" in w for w in rep.warnings)
    with pytest.raises(ConvertError, match="no 'model.diffusion_model"):
        convert_official_checkpoint(_ckpt(tmp_path / "v.pt", p, "vae"), tmp_path / "o6", vae_config=VAE_CFG)


class Payload:  # unpickling this needs code: refused by weights_only
    def __init__(self):
        self.x = 1


class Runs:
    def __reduce__(self):
        return (print, ("this would run at load time",))


def test_code_carrying_pickle_refused(tmp_path):
    for i, obj in enumerate([Payload(), Runs()]):
        path = tmp_path / f"evil{i}.pt"
        torch.save({"model.diffusion_model.x": torch.zeros(1), "obj": obj}, path)
        with pytest.raises(ConvertError, match="not a plain weights checkpoint.*(Payload|print)"):
            convert_official_checkpoint(path, tmp_path / "o")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00\x01 definitely not a checkpoint")
    with pytest.raises(ConvertError, match="could not read"):
        convert_official_checkpoint(junk, tmp_path / "o")


def test_cli_sample_and_convert_errors(tmp_path, capsys):
    import dataclasses

    from magicboost_core.model import cli
    from magicboost_core.model.bundle import build_demo_model, default_demo_unet_config

    torch.manual_seed(0)
    cfg = dataclasses.replace(default_demo_unet_config(8), channel_mult=(1, 2), attention_resolutions=(1, 2))
    build_demo_model(cfg, image_size=8, patch=8).save_pretrained(tmp_path / "demo")
    views = []
    for i in range(4):
        a = (np.random.default_rng(i).random((16, 16, 4)) * 255).astype(np.uint8)
        Image.fromarray(a, "RGBA").save(tmp_path / f"{i}.png")
        views.append(str(tmp_path / f"{i}.png"))
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sample", str(tmp_path / "demo"), *views, "--steps", "2", "--target-az", "45,90",
                              "--out", str(tmp_path / "nv"), "--device", "cpu"])
    assert args.func(args) == 0
    out = sorted((tmp_path / "nv").glob("*.png"))
    assert [o.name for o in out] == ["view_00_el10_az45.png", "view_01_el10_az90.png"]
    assert Image.open(out[0]).size == (8, 8)
    args = parser.parse_args(["sample", str(tmp_path / "demo"), *views[:3], "--steps", "2",
                              "--out", str(tmp_path / "nv3")])
    with pytest.raises(ValueError, match="default preset 'instant3d' has 4"):
        args.func(args)
    assert not (tmp_path / "nv3").exists()  # a failed call leaves no empty folder behind
    args = parser.parse_args(["sample", str(tmp_path / "demo"), *views[:3], "--steps", "2",
                              "--out", str(tmp_path / "new" / "deeper")])
    with pytest.raises(ValueError, match="default preset 'instant3d' has 4"):
        args.func(args)
    assert not (tmp_path / "new").exists()
    args = parser.parse_args(["sample", str(tmp_path / "demo"), *views[:3], "--steps", "2",
                              "--out", str(tmp_path / "nv")])
    with pytest.raises(ValueError, match="default preset 'instant3d' has 4"):
        args.func(args)
    assert len(list((tmp_path / "nv").glob("*.png"))) == 2  # a folder that was there stays, with its files
    args = parser.parse_args(["convert", str(tmp_path / "none.pt"), str(tmp_path / "x")])
    with pytest.raises(ConvertError, match="not found"):
        args.func(args)
    assert cli.parse_angles("0, 90;180 270", "x") == [0, 90, 180, 270]
    with pytest.raises(ValueError, match="--azimuths"):
        cli.parse_angles("0,abc", "--azimuths")


def test_full_size_official_key_list_is_fully_claimed():
    from magicboost_core.model.convert_checkpoint import infer_text_spec, split_official_state_dict
    from magicboost_core.model.text_encoder import text_state_dict_to_ours, CLIPTextEncoder

    tsv = SHARED / "fixtures" / "official-unet-fullsize-keys.tsv"
    if not tsv.is_file():
        pytest.skip(f"{tsv} not found (set MAGICBOOST_SHARED)")
    sd = {}
    for line in tsv.read_text().splitlines():
        name, shape = line.split("\t")
        sd[name] = torch.empty(eval(shape), device="meta")
    parts = split_official_state_dict(sd)
    assert (len(parts.unet), len(parts.vae), len(parts.schedule)) == (773, 248, 12)
    assert len(parts.unet) + len(parts.vae) + len(parts.visual) + len(parts.text) + len(parts.schedule) == len(sd)
    spec = infer_text_spec(parts.text)
    assert spec == CLIPTextSpec()  # 23 of 24 blocks, 1024 wide, 16 heads, 77 positions
    ours = text_state_dict_to_ours(parts.text, spec.num_layers)
    with torch.device("meta"):
        ref = CLIPTextEncoder(spec).state_dict()
    assert ours.keys() == ref.keys() and all(ours[k].shape == ref[k].shape for k in ref)
