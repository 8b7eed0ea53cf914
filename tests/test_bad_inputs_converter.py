"""Bad and hostile checkpoints for ``magicboost convert`` (and the weights reader it shares with the nodes).

Each case asserts exit code 2, a message naming the file and the fix, that a planted pickle ran nothing,
and that nothing was written (the output folder stays absent or unchanged).
"""
from __future__ import annotations

import json
import pathlib
import struct

import pytest
import torch

import hostile_files as H
from magicboost_core import cli


def _safetensors(path: pathlib.Path, header: bytes, body: bytes = b"", length: int | None = None) -> pathlib.Path:
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + body)
    return path


def _forged(kind: str, t: pathlib.Path) -> tuple[pathlib.Path, list[str]]:
    if kind == "huge_header_length":
        return _safetensors(t / "c.safetensors", b"{}", length=10 ** 15), ["not a readable .safetensors", "again"]
    if kind == "offsets_past_end":
        hdr = json.dumps({"w": {"dtype": "F32", "shape": [10 ** 9], "data_offsets": [0, 4 * 10 ** 9]}}).encode()
        return _safetensors(t / "c.safetensors", hdr, b"\0" * 16), ["not a readable .safetensors"]
    if kind == "bad_json_header":
        return _safetensors(t / "c.safetensors", b"{abc}"), ["not a readable .safetensors"]
    if kind == "wrong_dtype":
        hdr = json.dumps({"w": {"dtype": "Q99", "shape": [1], "data_offsets": [0, 4]}}).encode()
        return _safetensors(t / "c.safetensors", hdr, b"\0" * 4), ["not a readable .safetensors"]
    if kind == "empty":
        (t / "c.safetensors").write_bytes(b"")
        return t / "c.safetensors", ["not a readable .safetensors"]
    if kind == "text_pt":
        (t / "c.pt").write_text("hello")
        return t / "c.pt", ["c.pt", "corrupt"]
    if kind == "list_pt":
        torch.save([torch.zeros(2)], t / "c.pt")
        return t / "c.pt", ["expected a dict of tensors"]
    if kind == "device":
        return pathlib.Path("/dev/zero"), ["/dev/zero", "device", "regular file"]
    if kind == "fifo":
        return H.fifo(t / "c.pt"), ["FIFO", "regular file"]
    if kind == "folder":
        return t, ["is a folder", "file itself"]
    if kind == "missing":
        return t / "nope.pt", ["not found", "Check the path"]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["huge_header_length", "offsets_past_end", "bad_json_header", "wrong_dtype", "empty",
                                  "text_pt", "list_pt", "device", "fifo", "folder", "missing"])
def test_convert_rejects_forged_and_non_checkpoint_files(tmp_path, capsys, kind):
    src = tmp_path / "src"
    src.mkdir()
    path, words = _forged(kind, src)
    code = cli.main(["convert", str(path), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "official checkpoint" in err or "c.pt" in err
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("torch_format", [True, False])
@pytest.mark.parametrize("wrap", ["dict", "nested"])
def test_convert_never_runs_code_from_a_pickle(tmp_path, capsys, torch_format, wrap):
    marker = tmp_path / "PWNED"
    wrapper = (lambda p: {"state_dict": {"w": p}}) if wrap == "nested" else (lambda p: {"w": p})
    path = H.evil_pickle(tmp_path / "evil.pt", marker, torch_format=torch_format, wrap=wrapper)
    code = cli.main(["convert", str(path), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists(), "the planted pickle ran code"
    assert "evil.pt" in err and ("refused for safety" in err or "corrupt" in err)
    assert not (tmp_path / "out").exists()


def test_convert_never_replaces_an_existing_folder(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("precious")
    torch.save({"w": torch.zeros(1)}, tmp_path / "c.pt")
    code = cli.main(["convert", str(tmp_path / "c.pt"), str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "already exists" in err and "new output folder" in err
    assert (out / "config.json").read_text() == "precious"


def test_model_weights_that_are_a_planted_pickle_are_refused(tmp_path):
    """The node side: Load MV Model reads model.safetensors only; a .pt handed to the loader is refused."""
    from magicboost_core.model.bundle import ModelFormatError, MultiViewModel

    marker = tmp_path / "PWNED"
    H.evil_pickle(tmp_path / "model.pt", marker)
    with pytest.raises(ModelFormatError, match="not a .safetensors model file.*magicboost convert"):
        MultiViewModel.from_pretrained(tmp_path / "model.pt")
    assert not marker.exists()
