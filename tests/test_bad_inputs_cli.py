"""Bad and hostile input over the command line (``magicboost ...`` through ``cli.main(argv)``).

Every case asserts the exit code (2 = bad input) and that the one-line message names
the input and the fix — no traceback, no wrong result, nothing written outside the output folder.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil

import numpy as np
import pytest
import torch

import hostile_files as H
from magicboost_core import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO = REPO / "magicboost_core" / "assets" / "demo_model"
VIEWS = sorted((REPO / "workflows" / "inputs" / "instant3d").glob("*.png"))
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def run_cli(argv, capsys):
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _sample(tmp_path, *extra, views=None):
    return ["sample", DEMO, *(views or VIEWS), "--out", tmp_path / "nv", "--steps", "1", *extra]


# ------------------------------------------------------------------------------------------ sample: numbers
@pytest.mark.parametrize("extra, words", [
    (["--target-az", "inf"], ["--target-az", "finite"]),
    (["--target-az", "nan"], ["--target-az", "finite"]),
    (["--target-az", "45,abc"], ["--target-az", "not a number", "e.g."]),
    (["--target-elev", "100"], ["--target-elev", "between -90 and 90"]),
    (["--elevations", "0,0,0,-inf", "--azimuths", "0,90,180,270"], ["--elevations", "finite"]),
    (["--steps", "0"], ["--steps", "between 1 and 10000"]),
    (["--cfg", "nan"], ["--cfg", "finite"]),
    (["--strength-tex", "2"], ["--strength-tex", "between 0 and 1"]),
    (["--batch-size", "0"], ["--batch-size", "between 1"]),
    (["--device", "tpu9"], ["--device", "not a device", "cpu"]),
])
def test_sample_rejects_bad_numbers(tmp_path, capsys, extra, words):
    code, err = run_cli(_sample(tmp_path, *extra), capsys)
    assert code == 2
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "nv").exists() or not list((tmp_path / "nv").iterdir())  # nothing sampled


@NO_CUDA
@pytest.mark.parametrize("command", ["sample", "train"])
def test_cuda_without_gpu_is_a_clear_error(tmp_path, capsys, command):
    argv = _sample(tmp_path, "--device", "cuda") if command == "sample" else \
        ["train", "--out", tmp_path / "run", "--device", "cuda"]
    code, err = run_cli(argv, capsys)
    assert code == 2 and "--device" in err and "no CUDA GPU" in err and "--device cpu" in err


# ------------------------------------------------------------------------------------------ sample: view files
def _bad_view(kind: str, tmp: pathlib.Path) -> pathlib.Path:
    if kind == "text":
        (tmp / "v.png").write_text("this is not an image")
        return tmp / "v.png"
    if kind == "truncated":
        return H.truncated_png(tmp / "v.png")
    if kind == "bomb":
        return H.png_header_only(tmp / "v.png", 100000, 100000)
    if kind == "big":
        return H.png_header_only(tmp / "v.png", 9000, 9000)
    if kind == "empty":
        (tmp / "v.png").write_bytes(b"")
        return tmp / "v.png"
    if kind == "fifo":
        return H.fifo(tmp / "v.png")
    if kind == "device":
        return pathlib.Path("/dev/zero")
    if kind == "folder":
        return tmp
    return tmp / "missing.png"


@pytest.mark.parametrize("kind, words", [
    ("text", ["not an image file", "PNG, JPG"]),
    ("truncated", ["damaged or truncated", "again"]),
    ("bomb", ["decompression bomb", "normal image"]),
    ("big", ["9000 x 9000", "MAGICBOOST_MAX_IMAGE_PIXELS"]),
    ("empty", ["empty", "PNG"]),
    ("fifo", ["FIFO", "regular file"]),
    ("device", ["/dev/zero", "device", "regular file"]),
    ("folder", ["folder", "file itself"]),
    ("missing", ["not found", "Check the path"]),
])
def test_sample_rejects_bad_view_files(tmp_path, capsys, kind, words):
    bad = _bad_view(kind, tmp_path)
    code, err = run_cli(_sample(tmp_path, views=[bad] + VIEWS[1:]), capsys)
    assert code == 2
    assert "view image" in err
    for w in words:
        assert w in err, (w, err)


def test_sample_out_is_a_file_is_found_before_sampling(tmp_path, capsys):
    (tmp_path / "nv").write_text("keep me")
    code, err = run_cli(_sample(tmp_path), capsys)
    assert code == 2 and "--out" in err and "existing file" in err and "choose a folder" in err
    assert (tmp_path / "nv").read_text() == "keep me"


@pytest.mark.parametrize("mutate, words", [
    (lambda c: c["unet"].__setitem__("model_channels", "32"), ["model_channels", "without quotes"]),
    (lambda c: c["text"].__setitem__("length", -1), ["text.length", "outside"]),
    (lambda c: c.__setitem__("codec", [1]), ["'codec' must be an object"]),
    (lambda c: c["image_encoder"].__setitem__("patch", 0), ["config is invalid", "export the model again"]),
    (lambda c: c.__setitem__("format_version", "x"), ["format_version", "whole number"]),
])
def test_sample_malformed_model_config(tmp_path, capsys, mutate, words):
    model = tmp_path / "model"
    shutil.copytree(DEMO, model)
    cfg = json.loads((model / "config.json").read_text())
    mutate(cfg)
    (model / "config.json").write_text(json.dumps(cfg))
    code, err = run_cli(["sample", model, *VIEWS, "--out", tmp_path / "nv", "--steps", "1"], capsys)
    assert code == 2 and "config.json" in err
    for w in words:
        assert w in err, (w, err)


def test_sample_never_overwrites_earlier_outputs(tmp_path, capsys):
    out = tmp_path / "nv"
    out.mkdir()
    (out / "view_00_el10_az45.png").write_bytes(b"earlier result")
    code, _ = run_cli(_sample(tmp_path), capsys)
    assert code == 0
    assert (out / "view_00_el10_az45.png").read_bytes() == b"earlier result"
    assert (out / "view_00_el10_az45_2.png").stat().st_size > 100


def test_sample_reads_16_bit_views_correctly(tmp_path):
    from magicboost_core.model.cli import load_view_images

    paths = [H.png16_grey(tmp_path / f"{i}.png", 32768) for i in range(2)]
    images = load_view_images(paths)
    assert images.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(images, 32768 / 65535, atol=1e-6)  # was ~1.0 (clipped to 255 / 255)


# ------------------------------------------------------------------------------------------ train
def _train(tmp_path, *extra):
    return ["train", "--out", tmp_path / "run", "--steps", "1", "--objects", "2", *extra]


@pytest.mark.parametrize("extra, words", [
    (["--lr", "nan"], ["--lr", "finite"]),
    (["--lr", "-1"], ["--lr", "between 0 and 10"]),
    (["--lr", "0"], ["--lr", "must be > 0"]),
    (["--steps", "-5"], ["--steps", "between 0"]),
    (["--batch-size", "0"], ["--batch-size", "between 1"]),
    (["--max-minutes", "inf"], ["--max-minutes", "finite"]),
    (["--device", "quantum"], ["--device", "not a device"]),
])
def test_train_rejects_bad_options_before_any_work(tmp_path, capsys, extra, words):
    code, err = run_cli(_train(tmp_path, *extra), capsys)
    assert code == 2
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("torch_format", [True, False])
def test_train_resume_never_runs_code_from_a_planted_checkpoint(tmp_path, capsys, torch_format):
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "PWNED"
    H.evil_pickle(run / "checkpoint.pt", marker, torch_format=torch_format,
                  wrap=lambda p: {"step": 1, "unet": p, "ema": {}, "optim": {}, "config": {}})
    code, err = run_cli(_train(tmp_path, "--resume"), capsys)
    assert code == 2
    assert not marker.exists(), "the planted pickle ran code"
    assert "checkpoint.pt" in err and ("refused for safety" in err or "not a readable" in err)
    assert "without --resume" in err


@pytest.mark.parametrize("content, words", [
    (b"PK\x03\x04 truncated", ["not a readable training checkpoint", "truncated"]),
    ("plain_dict", ["not a 'magicboost train' checkpoint", "expected the keys"]),
])
def test_train_resume_rejects_damaged_checkpoints(tmp_path, capsys, content, words):
    run = tmp_path / "run"
    run.mkdir()
    if content == "plain_dict":
        torch.save({"weights": torch.zeros(2)}, run / "checkpoint.pt")
    else:
        (run / "checkpoint.pt").write_bytes(content)
    code, err = run_cli(_train(tmp_path, "--resume"), capsys)
    assert code == 2
    for w in words:
        assert w in err, (w, err)


def test_train_resume_loads_real_checkpoints_with_weights_only(tmp_path):
    from magicboost_core.train.trainer import read_checkpoint

    state = {"step": 3, "unet": {"w": torch.ones(2)}, "ema": {"w": torch.ones(2)},
             "optim": torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))]).state_dict(),
             "config": {"steps": 4, "unet": {}}, "history": [{"step": 1, "loss": 0.5}]}
    torch.save(state, tmp_path / "checkpoint.pt")
    assert read_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3


@pytest.mark.parametrize("explicit", [True, False])
def test_train_export_never_replaces_a_model_folder(tmp_path, capsys, explicit):
    export = tmp_path / "somewhere" if explicit else tmp_path / "run" / "model"
    export.mkdir(parents=True)
    (export / "config.json").write_text("{\"precious\": true}")
    argv = _train(tmp_path, *(["--export", export] if explicit else []))
    code, err = run_cli(argv, capsys)
    assert code == 2 and "never replaced" in err and "--export" in err
    assert (export / "config.json").read_text() == "{\"precious\": true}"
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # refused before training


def test_train_out_is_a_file(tmp_path, capsys):
    (tmp_path / "run").write_text("x")
    code, err = run_cli(_train(tmp_path), capsys)
    assert code == 2 and "--out" in err and "existing file" in err


def test_nul_byte_in_a_path_argument(tmp_path, capsys):
    code, err = run_cli(["sample", DEMO, "a\x00b.png", "--out", tmp_path / "nv"], capsys)
    assert code == 2 and "NUL" in err and "view image" in err
    assert os.listdir(tmp_path) == [] or not list((tmp_path / "nv").iterdir())
