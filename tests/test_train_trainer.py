import argparse
import math

import pytest
import torch

from magicboost_core.train.augment import AugmentConfig
from magicboost_core.train.dataset import DataConfig
from magicboost_core.train.trainer import TrainConfig, Trainer, condition_batch, export_checkpoint

from train_helpers import TINY, tiny_data as _data


def _cfg(**kw):
    base = dict(steps=4, batch_size=2, lr=3e-3, warmup_steps=1, checkpoint_every=2, device="cpu", unet=TINY,
                data=DataConfig(num_objects=6, targets_per_object=2, image_size=16, render_size=32),
                augment=AugmentConfig(noise_prob=0.5, geo_prob=0.5, drop_prob=0.5))
    base.update(kw)
    return TrainConfig(**base)


def test_training_lowers_loss_on_fixed_batch(tmp_path):
    torch.manual_seed(0)
    tr = Trainer(_cfg(), _data(), tmp_path)
    batch = tr.make_batch(0)
    with torch.no_grad():
        before = float(tr.loss_on(batch))
    for _ in range(6):
        loss = tr.loss_on(batch)
        tr.optim.zero_grad()
        loss.backward()
        tr.optim.step()
    with torch.no_grad():
        after = float(tr.loss_on(batch))
    assert after < 0.9 * before


def test_batch_layout_and_cfg_dropout(tmp_path):
    tr = Trainer(_cfg(batch_size=64, cfg_dropout=0.5), _data(), tmp_path)
    b = tr.make_batch(3)
    assert b["sample"].shape == (64, 3, 32, 32) or b["sample"].shape[:2] == (64, 3)
    assert b["anchors"].shape[:2] == (64, 4) and b["camera"].shape == (64, 5, 10) and b["labels"].shape == (64, 5, 2)
    assert (b["labels"][:, :2] == 0).all()  # target and anchor 0 are never labelled
    uncond = b["anchors"].flatten(1).abs().sum(1) == 0
    assert 10 < int(uncond.sum()) < 54
    assert (b["image_tokens"][uncond] == 0).all() and (b["labels"][uncond] == 0).all()
    assert (b["image_tokens"][~uncond].abs().sum((1, 2)) > 0).all()
    torch.testing.assert_close(tr.make_batch(3)["sample"], b["sample"])  # deterministic per step


def test_camera_codes_follow_official_layout():
    cam = condition_batch(torch.tensor([0.0]), torch.tensor([45.0]))
    assert cam.shape == (1, 5, 10)
    torch.testing.assert_close(cam[0, 0], torch.tensor([1, 0, 0, 0, 0, 0.70710677, 0, 1, 0.70710677, 1]))
    torch.testing.assert_close(cam[0, 1], torch.tensor([0.0, 1, 0, 0, 0, 0, 0, 1, 1, 1]))


def test_resume_continues_exactly(tmp_path):
    data = _data()
    straight = Trainer(_cfg(steps=4), data, tmp_path / "a")
    straight.fit(progress=False)
    first = Trainer(_cfg(steps=2), data, tmp_path / "b")
    first.fit(progress=False)
    resumed = Trainer(_cfg(steps=4), data, tmp_path / "b")
    assert resumed.load_checkpoint() == 2
    resumed.fit(resume=True, progress=False)
    assert resumed.step == 4
    for (n, p), q in zip(straight.unet.named_parameters(), resumed.unet.parameters()):
        torch.testing.assert_close(p, q, msg=n)
    for p, q in zip(straight.ema.parameters(), resumed.ema.parameters()):
        torch.testing.assert_close(p, q)


def test_resume_without_checkpoint_errors(tmp_path):
    tr = Trainer(_cfg(), _data(), tmp_path)
    with pytest.raises(FileNotFoundError, match="without --resume"):
        tr.fit(resume=True, progress=False)


def test_train_config_errors():
    with pytest.raises(ValueError, match="cfg_dropout"):
        TrainConfig(cfg_dropout=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="loss_weighting"):
        TrainConfig(loss_weighting="snr")


def test_v_loss_weighting(tmp_path):
    """An eps model (the official objective) trains with the v loss: eps-MSE weighted by 1/alpha_bar."""
    tr = Trainer(_cfg(unet={**TINY, "prediction_type": "epsilon"}), _data(), tmp_path)
    w = tr.loss_weights
    assert w.shape == (1000,) and abs(float(w.mean()) - 1) < 1e-9
    torch.testing.assert_close(w[999] / w[0], tr.alphas_cumprod[0] / tr.alphas_cumprod[999])
    b = tr.make_batch(0)
    torch.testing.assert_close(b["weight"], w[b["timestep"]].float())


def test_cli_registers_train():
    from magicboost_core.train.cli import register

    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command"))
    a = p.parse_args(["train", "--out", "x", "--steps", "5", "--no-augment", "--resume"])
    assert a.steps == 5 and a.no_augment and a.resume and a.func.__name__ == "run_train"
    from magicboost_core.train.cli import _attention_resolutions

    assert _attention_resolutions("1, 2,4") == (1, 2, 4)
    for bad in ("", "3", "0,2", "a"):
        with pytest.raises(ValueError, match="--attention-resolutions"):
            _attention_resolutions(bad)


def test_export_round_trip(tmp_path):
    from magicboost_core.model import MultiViewModel

    tr = Trainer(_cfg(steps=1), _data(), tmp_path)
    tr.fit(progress=False)
    tr.export(tmp_path / "model")
    m = MultiViewModel.from_pretrained(str(tmp_path / "model"))
    for p, q in zip(tr.ema.parameters(), m.unet.parameters()):
        torch.testing.assert_close(p, q)
    export_checkpoint(tr.checkpoint_path, tmp_path / "again")
    m2 = MultiViewModel.from_pretrained(str(tmp_path / "again"))
    for p, q in zip(tr.ema.parameters(), m2.unet.parameters()):
        torch.testing.assert_close(p, q)


def test_time_budget_stop_reports_the_last_steps_loss(tmp_path):
    tr = Trainer(_cfg(steps=50), _data(), tmp_path)
    summary = tr.fit(progress=False, max_seconds=0.0)  # stops after the first step, before any log point
    assert summary["steps"] == 1 and math.isfinite(summary["final_loss"])
    assert tr.history[-1]["step"] == 1 and tr.checkpoint_path.exists()


def test_checkpoint_records_its_unet_config(tmp_path):
    """A checkpoint carries the UNet config it was trained with; one from before that (only the run's overrides of
    the then-eps demo architecture) reads as an eps model, so exporting it never mislabels its outputs."""
    from magicboost_core.train.trainer import checkpoint_unet_config, model_from_checkpoint, read_checkpoint

    tr = Trainer(_cfg(steps=1), _data(), tmp_path)
    tr.fit(progress=False)
    state = read_checkpoint(tr.checkpoint_path)
    assert checkpoint_unet_config(state) == tr.unet.config and tr.unet.config.prediction_type == "v_prediction"
    old = {k: v for k, v in state.items() if k != "unet_config"}
    assert checkpoint_unet_config(old).prediction_type == "epsilon"
    torch.save(old, tmp_path / "old.pt")
    old_v = {**old, "config": {**old["config"], "unet": {**old["config"]["unet"], "prediction_type": "v_prediction"}}}
    assert checkpoint_unet_config(old_v) == tr.unet.config
    model, step = model_from_checkpoint(tmp_path / "old.pt")
    assert step == 1 and model.unet.config.prediction_type == "epsilon"
    again = Trainer(_cfg(steps=2, unet={**TINY, "prediction_type": "epsilon"}), _data(), tmp_path)
    with pytest.raises(ValueError, match="trained with prediction_type 'v_prediction'.*--prediction-type v_pred"):
        again.load_checkpoint()
