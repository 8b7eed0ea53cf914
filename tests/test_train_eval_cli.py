"""Evaluation with SDEdit init, ``magicboost eval-views`` and ``magicboost export-checkpoint``."""
import argparse
import json

import pytest
import torch

from magicboost_core.model import build_demo_model
from magicboost_core.train import cli
from magicboost_core.train.augment import AugmentConfig
from magicboost_core.train.dataset import DataConfig, MultiViewData
from magicboost_core.train.evaluate import evaluate, sample_targets
from magicboost_core.train.trainer import TrainConfig, Trainer

TINY = dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(2,),
            num_head_channels=32, context_dim=32, ip_tokens=4, resampler_depth=1, resampler_heads=1,
            resampler_dim_head=16, resampler_ff_mult=1, prediction_type="v_prediction")


def _data(n=4, size=32):
    g = torch.Generator().manual_seed(0)
    return MultiViewData(
        anchors=torch.randint(0, 256, (n, 4, size, size, 3), generator=g, dtype=torch.uint8),
        targets=torch.randint(0, 256, (n, 1, size, size, 3), generator=g, dtype=torch.uint8),
        target_elevation=torch.rand(n, 1, generator=g) * 40 - 10,
        target_azimuth=torch.rand(n, 1, generator=g) * 360 - 180,
        anchors_perturbed=torch.randint(0, 256, (n, 4, size, size, 3), generator=g, dtype=torch.uint8),
    )


def _checkpoint(tmp_path):
    cfg = TrainConfig(steps=1, batch_size=2, warmup_steps=1, checkpoint_every=1, device="cpu", unet=TINY,
                      data=DataConfig(num_objects=4, targets_per_object=1), augment=AugmentConfig(enabled=False))
    tr = Trainer(cfg, _data(), tmp_path / "run")
    tr.fit(progress=False)
    return tr


def test_nearest_view_init_at_tiny_strength_reproduces_the_baseline():
    torch.manual_seed(0)
    model = build_demo_model().eval()
    r = evaluate(model, _data(), steps=10, cfg=1.0, init="nearest_view", strength=0.1)
    assert abs(r["psnr"] - r["baseline_psnr"]) < 0.2
    with pytest.raises(ValueError, match="init must be"):
        sample_targets(model, torch.rand(1, 4, 3, 32, 32), torch.zeros(1), torch.zeros(1), init="view")


def test_evaluation_numbers_are_unchanged():
    """evaluate() samples with model.sampling.ddim_sample; a seed still gives the PSNR of its former own DDIM
    loop on the shipped (v) demo model (values computed with that loop, commit a92583e; the eps path of the
    sampler is checked against diffusers in test_model_prediction)."""
    from magicboost_core.model import load_demo_model

    model = load_demo_model().eval()
    assert evaluate(model, _data(), steps=6, cfg=2.0, seed=1)["psnr"] == pytest.approx(7.10972785949707, abs=1e-5)
    r = evaluate(model, _data(), steps=6, cfg=3.0, init="nearest_view", strength=0.5)
    assert r["psnr"] == pytest.approx(8.641929626464844, abs=1e-5)


def test_export_and_eval_commands(tmp_path, monkeypatch, capsys):
    tr = _checkpoint(tmp_path)
    p = argparse.ArgumentParser()
    cli.register(p.add_subparsers(dest="command"))
    args = p.parse_args(["export-checkpoint", str(tr.checkpoint_path), str(tmp_path / "model")])
    assert args.func(args) == 0
    assert "exported step 1 (EMA weights)" in capsys.readouterr().out
    model, label = cli.load_model_or_checkpoint(str(tmp_path / "model"))
    same, label2 = cli.load_model_or_checkpoint(str(tr.checkpoint_path))
    assert "step 1" in label2 and model.unet.config.prediction_type == "v_prediction"
    for a, b in zip(model.unet.parameters(), same.unet.parameters()):
        torch.testing.assert_close(a, b)
    args = p.parse_args(["export-checkpoint", str(tr.checkpoint_path), str(tmp_path / "half"), "--half"])
    assert args.func(args) == 0
    full, half = (tmp_path / n / "model.safetensors" for n in ("model", "half"))
    assert half.stat().st_size < 0.6 * full.stat().st_size
    halved, _ = cli.load_model_or_checkpoint(str(tmp_path / "half"))
    for a, b in zip(model.unet.parameters(), halved.unet.parameters()):
        assert b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)

    import magicboost_core.train.dataset as dataset

    monkeypatch.setattr(dataset, "load_data", lambda *a, **k: _data())
    out = tmp_path / "r.json"
    args = p.parse_args(["eval-views", str(tr.checkpoint_path), "--objects", "2", "--steps", "2", "--cfg", "1,2",
                         "--json", str(out)])
    assert args.func(args) == 0
    res = json.loads(out.read_text())
    assert set(res["by_cfg"]) == {"1.0", "2.0"} and res["by_cfg"]["1.0"]["n"] == 2
    assert res["prediction_type"] == "v_prediction"
    assert "nearest view: PSNR" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--objects"):
        args.objects = 65
        args.func(args)


def test_evaluation_on_a_non_cpu_device(tmp_path):
    """``eval-views --device cuda``: sampling, the nearest-view baseline and one-step denoising with the model
    on a GPU (the CPU stand-in of tests/devicecheck.py fails wherever CPU and device tensors meet)."""
    from devicecheck import STANDIN, StandInDevice  # tests/ is on sys.path under pytest

    from magicboost_core.train.evaluate import denoise_psnr

    model, _ = cli.load_model_or_checkpoint(str(_checkpoint(tmp_path).checkpoint_path))
    want = (evaluate(model, _data(), steps=3, cfg=3.0), denoise_psnr(model, _data(), t=500))
    with StandInDevice():
        model.to(STANDIN)
        try:
            got = (evaluate(model, _data(), steps=3, cfg=3.0), denoise_psnr(model, _data(), t=500))
        finally:
            model.to("cpu")
    assert got[0] == pytest.approx(want[0], abs=1e-4) and got[1] == pytest.approx(want[1], abs=1e-4)
