import pytest
import torch
from safetensors.torch import save_file

from magicboost_core.model.codec import (
    PixelCodec, SDVAECodec, SDVAEConfig, build_codec, vae_diffusers_to_ldm, vae_ldm_to_diffusers,
    vae_state_dict_to_diffusers,
)
from magicboost_core.model.weights import WeightsError


@pytest.fixture(scope="module")
def tiny_vae():
    torch.manual_seed(0)
    return SDVAECodec(SDVAEConfig.tiny()).eval()


def test_pixel_codec_shapes_range_gradient():
    c = PixelCodec(image_size=8)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    z = c.encode(x)
    assert z.shape == (2, 3, 8, 8) and c.latent_size == 8 and c.latent_channels == 3
    assert z.min() >= -1 and z.max() <= 1
    z.sum().backward()
    assert x.grad is not None and torch.allclose(x.grad, torch.full_like(x, 2.0 / 4))  # area 2x2 -> 1/4, x2
    img = c.decode(z.detach() * 3)
    assert img.shape == (2, 3, 8, 8) and img.min() >= 0 and img.max() <= 1
    y = torch.rand(1, 3, 8, 8)
    assert torch.allclose(c.decode(c.encode(y)), y, atol=1e-6)
    assert isinstance(build_codec(c.config_dict()), PixelCodec)
    with pytest.raises(ValueError, match="RGB"):
        PixelCodec(8, channels=4)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        c.encode(torch.rand(2, 16, 16, 3))


def test_sd_vae_codec_shapes_range_gradient(tiny_vae):
    c = tiny_vae
    assert (c.image_size, c.latent_size, c.latent_channels) == (16, 8, 4)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)  # area-resized to 16
    z = c.encode(x, generator=torch.Generator().manual_seed(0))
    assert z.shape == (2, 4, 8, 8)
    z.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        m1 = c.encode(x, sample=False)
        m2 = c.encode(x, sample=False)
        s1 = c.encode(x, generator=torch.Generator().manual_seed(3))
        s2 = c.encode(x, generator=torch.Generator().manual_seed(3))
        s3 = c.encode(x, generator=torch.Generator().manual_seed(4))
        # mean mode equals the diffusers posterior mean x scale
        ref = c.vae.encode(x * 2 - 1 if x.shape[-1] == 16 else torch.nn.functional.interpolate(x, size=16, mode="area") * 2 - 1).latent_dist.mean
        img = c.decode(z)
    assert torch.equal(m1, m2) and torch.equal(s1, s2) and not torch.equal(s1, s3)
    assert torch.allclose(m1, ref * 0.18215, atol=1e-6)
    assert img.shape == (2, 3, 16, 16) and img.min() >= 0 and img.max() <= 1
    c2 = build_codec(c.config_dict())
    assert isinstance(c2, SDVAECodec) and c2.config == c.config


def test_ldm_diffusers_round_trip_and_loading(tiny_vae, tmp_path):
    diff = {k: v.clone() for k, v in tiny_vae.vae.state_dict().items()}
    ldm = vae_diffusers_to_ldm(diff)
    assert "encoder.down.0.block.0.norm1.weight" in ldm and "decoder.up.1.upsample.conv.weight" in ldm
    assert ldm["encoder.mid.attn_1.q.weight"].dim() == 4
    back = vae_ldm_to_diffusers(ldm)
    assert back.keys() == diff.keys() and all(torch.equal(back[k], diff[k]) for k in diff)
    # LDM file with the official prefix loads into a codec that computes the same thing.
    save_file({"first_stage_model." + k: v.contiguous() for k, v in ldm.items()}, str(tmp_path / "vae.safetensors"))
    c = SDVAECodec.from_file(tmp_path / "vae.safetensors", SDVAEConfig.tiny())
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(c.encode(x, sample=False), tiny_vae.encode(x, sample=False), atol=1e-6)
        z = torch.randn(1, 4, 8, 8)
        assert torch.allclose(c.decode(z), tiny_vae.decode(z), atol=1e-6)
    # diffusers layout, old attention names
    old = {k.replace("attentions.0.to_q", "attentions.0.query").replace("attentions.0.to_out.0", "attentions.0.proj_attn"): v
           for k, v in diff.items()}
    assert vae_state_dict_to_diffusers(old).keys() == diff.keys()


def test_vae_errors(tmp_path):
    with pytest.raises(WeightsError, match="not an SD VAE"):
        vae_state_dict_to_diffusers({"foo.weight": torch.zeros(1)})
    bad = vae_diffusers_to_ldm(SDVAECodec(SDVAEConfig.tiny()).vae.state_dict())
    bad["encoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="unknown keys.*extra"):
        vae_ldm_to_diffusers(bad)
    with pytest.raises(WeightsError, match="shape"):
        SDVAECodec.from_state_dict(vae_diffusers_to_ldm(SDVAECodec(SDVAEConfig.tiny()).vae.state_dict()),
                                   SDVAEConfig(block_out_channels=(32, 32), layers_per_block=1, norm_num_groups=8,
                                               latent_channels=8, sample_size=16))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsError, match="not a readable .safetensors"):
        SDVAECodec.from_file(tmp_path / "junk.safetensors", SDVAEConfig.tiny())
    with pytest.raises(FileNotFoundError, match="not found"):
        SDVAECodec.from_file(tmp_path / "missing.safetensors")


def test_full_size_official_vae_keys_map_to_diffusers(shared_dir):
    tsv = shared_dir / "fixtures" / "official-unet-fullsize-keys.tsv"
    shapes = {}
    for line in tsv.read_text().splitlines():
        name, shape = line.split("\t")
        if name.startswith("vae_model."):
            shapes[name] = torch.Size(eval(shape))
    assert len(shapes) == 248
    fake = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    ours = vae_state_dict_to_diffusers(fake)
    with torch.device("meta"):
        ref = SDVAEConfig().build().state_dict()
    assert ours.keys() == ref.keys()
    assert all(ours[k].shape == ref[k].shape for k in ref)
