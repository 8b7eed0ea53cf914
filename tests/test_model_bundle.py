import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from magicboost_core.model import bundle as B
from magicboost_core.model.codec import PixelCodec
from magicboost_core.model.weights import WeightsError


@pytest.fixture(scope="module")
def demo():
    torch.manual_seed(0)
    return B.build_demo_model(image_size=16, patch=8).eval()


def test_demo_model_architecture(demo):
    cfg = demo.unet.config
    assert (cfg.in_channels, cfg.out_channels, cfg.ip_in_dim) == (3, 3, 192)
    assert demo.text_cond.shape == (1, cfg.context_dim) and demo.text_cond.abs().sum() == 0
    assert demo.info.kind == "demo" and demo.info.codec == "pixel" and demo.info.image_size == 16
    assert demo.image_encoder.num_tokens == 5 and demo.codec.latent_size == 16
    with pytest.raises(ValueError, match="ip_in_dim"):
        B.build_demo_model(B.default_demo_unet_config(patch=4), patch=8)


def test_demo_architecture_is_the_shipped_one():
    """build_demo_model() and the trainer build from DEMO_UNET: the architecture of assets/demo_model."""
    shipped = json.loads((B.demo_model_dir() / B.CONFIG_FILE).read_text())["unet"]
    ours = json.loads(json.dumps(B.build_demo_model().unet.config.to_dict()))
    assert ours == shipped
    from magicboost_core.train.trainer import TrainConfig
    assert B.default_demo_unet_config(**TrainConfig().unet).to_dict() == B.build_demo_model().unet.config.to_dict()


def test_save_load_round_trip(demo, tmp_path):
    out = demo.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    keys = load_file(str(out / "model.safetensors")).keys()
    assert {k.split(".")[0] for k in keys} == {"unet", "text"}  # pixel codec / patch encoder have no weights
    assert {"text.cond", "text.uncond"} <= set(keys)
    m2 = B.MultiViewModel.from_pretrained(out)
    sd1, sd2 = demo.state_dict(), m2.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert m2.info == demo.info and m2.config_dict() == demo.config_dict()
    assert not m2.training
    # also via the weights file path, and in half precision (text stays float32)
    m3 = B.MultiViewModel.from_pretrained(out / "model.safetensors", dtype=torch.float16)
    assert m3.dtype == torch.float16 and m3.text_cond.dtype == torch.float32


def test_refuses_overwrite(demo, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "something.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        demo.save_pretrained(d)
    demo.save_pretrained(d, overwrite=True)
    assert (d / "config.json").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    demo.save_pretrained(empty)  # an existing empty folder is fine


def test_load_errors(demo, tmp_path):
    with pytest.raises(FileNotFoundError, match="model not found"):
        B.MultiViewModel.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="model not found"):  # also a ValueError subclass
        B.MultiViewModel.from_pretrained(tmp_path / "nowhere")
    d = demo.save_pretrained(tmp_path / "m")
    # corrupt weights
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((d / "config.json").read_text())
    (bad / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightsError, match="not a readable .safetensors"):
        B.MultiViewModel.from_pretrained(bad)
    # missing keys
    sd = load_file(str(d / "model.safetensors"))
    dropped = sorted(k for k in sd if k.startswith("unet."))[:3]
    for k in dropped:
        del sd[k]
    save_file(sd, str(bad / "model.safetensors"))
    with pytest.raises(WeightsError, match="missing 3 key") as e:
        B.MultiViewModel.from_pretrained(bad)
    assert dropped[0] in str(e.value)
    # config / weights shape mismatch
    cfg = json.loads((d / "config.json").read_text())
    cfg["text"]["length"] = 7
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match="shape.*text.cond"):
        B.MultiViewModel.from_pretrained(d)
    # not a model config / missing config / non-safetensors file
    (d / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(B.ModelFormatError, match="not a magicboost-multiview config"):
        B.MultiViewModel.from_pretrained(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(B.ModelFormatError, match="not valid JSON"):
        B.MultiViewModel.from_pretrained(d)
    (d / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        B.MultiViewModel.from_pretrained(d)
    pt = tmp_path / "x.pt"
    pt.write_bytes(b"x")
    with pytest.raises(B.ModelFormatError, match="magicboost convert"):
        B.MultiViewModel.from_pretrained(pt)


def test_parts_must_fit(demo):
    with pytest.raises(B.ModelFormatError, match="text embeddings are 5-d, UNet context_dim=64"):
        B.MultiViewModel(demo.unet, PixelCodec(16), demo.image_encoder, torch.zeros(1, 5), torch.zeros(1, 5))


def test_demo_model_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(B, "demo_model_dir", lambda: tmp_path / "demo_model")
    with pytest.raises(B.DemoModelMissingError, match="demo model is not installed"):
        B.load_demo_model()
    assert B.demo_model_dir().name == "demo_model"


def test_external_encoders_need_matching_parts(demo):
    with pytest.raises(B.ModelFormatError, match="'pixel' codec"):
        B.attach_external_encoders(demo, vae_state_dict={"encoder.down.0.block.0.conv1.weight": torch.zeros(1)})
    with pytest.raises(B.ModelFormatError, match="does not use a CLIP image encoder"):
        B.attach_external_encoders(demo, clip_state_dict={})
