"""The trainer with a configured prediction_type: targets, loss weights, init_from, resume checks, export."""
import argparse

import pytest
import torch

from magicboost_core.train.augment import AugmentConfig
from magicboost_core.train.dataset import DataConfig
from magicboost_core.train.trainer import TrainConfig, Trainer, export_checkpoint
from train_helpers import TINY, tiny_data as _data


def _cfg(kind="v_prediction", **kw):
    base = dict(steps=2, batch_size=4, lr=3e-3, warmup_steps=1, checkpoint_every=1, device="cpu",
                unet=dict(TINY, prediction_type=kind),
                data=DataConfig(num_objects=6, targets_per_object=2, image_size=16, render_size=32),
                augment=AugmentConfig(noise_prob=0.5, geo_prob=0.5, drop_prob=0.5))
    base.update(kw)
    return TrainConfig(**base)


def test_v_target_and_flat_v_loss_weights(tmp_path):
    tr = Trainer(_cfg(), _data(), tmp_path)
    assert tr.prediction_type == "v_prediction" and tr.unet.config.prediction_type == "v_prediction"
    torch.testing.assert_close(tr.loss_weights, torch.ones(1000, dtype=torch.float64))
    b = tr.make_batch(0)
    ab = tr.alphas_cumprod[b["timestep"]].float().view(-1, 1, 1, 1)
    x0 = (b["sample"] - (1 - ab).sqrt() * b["eps"]) / ab.sqrt()
    torch.testing.assert_close(b["target"], ab.sqrt() * b["eps"] - (1 - ab).sqrt() * x0, atol=1e-4, rtol=1e-4)
    # the same step of an eps run sees the same inputs and regresses the noise
    te = Trainer(_cfg("epsilon"), _data(), tmp_path / "eps")
    be = te.make_batch(0)
    torch.testing.assert_close(be["sample"], b["sample"])
    torch.testing.assert_close(be["target"], be["eps"])


def test_loss_is_mse_to_the_v_target(tmp_path):
    tr = Trainer(_cfg(), _data(), tmp_path)
    b = tr.make_batch(1)
    with torch.no_grad():
        pred = tr.unet(b["sample"], b["timestep"], b["anchors"], b["text"], b["image_tokens"], b["camera"],
                       b["labels"], drop_mask=b["drop_mask"])
        want = ((pred - b["target"]).pow(2).flatten(1).mean(1) * b["weight"]).mean()
        torch.testing.assert_close(tr.loss_on(b), want)


def test_init_from_loads_weights_and_resume_checks_type(tmp_path):
    src = Trainer(_cfg("epsilon", steps=1), _data(), tmp_path / "src")
    src.fit(progress=False)
    src.export(tmp_path / "eps_model")
    tr = Trainer(_cfg(init_from=str(tmp_path / "eps_model")), _data(), tmp_path / "v")
    for p, q in zip(src.ema.parameters(), tr.unet.parameters()):
        torch.testing.assert_close(p, q)
    for p, q in zip(tr.ema.parameters(), tr.unet.parameters()):  # the EMA starts from the init weights too
        torch.testing.assert_close(p, q)
    tr.fit(progress=False)
    with pytest.raises(ValueError, match="--prediction-type v_prediction"):
        Trainer(_cfg("epsilon", steps=3), _data(), tmp_path / "v").load_checkpoint()
    resumed = Trainer(_cfg(steps=3), _data(), tmp_path / "v")
    assert resumed.load_checkpoint() == 2
    export_checkpoint(resumed.checkpoint_path, tmp_path / "v_model")
    from magicboost_core.model import MultiViewModel

    assert MultiViewModel.from_pretrained(str(tmp_path / "v_model")).unet.config.prediction_type == "v_prediction"


def test_init_from_refuses_another_architecture(tmp_path):
    src = Trainer(_cfg("epsilon", steps=0), _data(), tmp_path / "src")
    src.export(tmp_path / "m")
    other = dict(TINY, model_channels=64)
    with pytest.raises(ValueError, match="model_channels"):
        Trainer(_cfg(unet=dict(other, prediction_type="v_prediction"), init_from=str(tmp_path / "m")), _data(),
                tmp_path / "x")


def test_cli_flags():
    from magicboost_core.train.cli import register

    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command"))
    a = p.parse_args(["train", "--out", "x", "--prediction-type", "v_prediction", "--init-from", "m",
                      "--checkpoint-every", "200", "--ema-decay", "0.999"])
    assert (a.prediction_type, a.init_from, a.checkpoint_every, a.ema_decay) == ("v_prediction", "m", 200, 0.999)
    with pytest.raises(SystemExit):
        p.parse_args(["train", "--out", "x", "--prediction-type", "velocity"])
