"""The converter finds a CLIP tokenizer itself (issue 12, breaker 2) and never writes zero prompts silently."""
import gzip
import sys

import pytest
import torch

from magicboost_core.model import text_encoder as T

from test_model_convert import VAE_CFG, _ckpt, official_parts  # noqa: F401  (fixture)
from test_model_text_encoder import make_tiny_tokenizer


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No ComfyUI, no tokenizer env var, no pip vocabulary visible."""
    for k in ("COMFYUI_PATH", T.TOKENIZER_ENV):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(T, "_PIP_VOCABS", (("magicboost_fake_clip", T._BPE_NAME),))
    real_find = T.importlib.util.find_spec
    monkeypatch.setattr(T.importlib.util, "find_spec",
                        lambda name, *a: None if name == "comfy" else real_find(name, *a))
    return monkeypatch


def _bpe_file(path, merges=("a b", "ab c</w>")):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(("#version: test\n" + "\n".join(merges) + "\n").encode()))
    return path


def test_bpe_file_numbers_tokens_like_clip(tmp_path):
    vocab, merges = T.bpe_file_to_vocab(_bpe_file(tmp_path / "bpe.txt.gz"))
    assert merges == ["a b", "ab c</w>"]
    assert vocab["!"] == 0 and vocab["a"] == 64 and vocab["a</w>"] == 256 + 64  # CLIP: 'a</w>' = 320
    assert vocab["ab"] == 512 and vocab["abc</w>"] == 513
    assert vocab["<|startoftext|>"] == 514 and vocab["<|endoftext|>"] == 515
    tok = T.load_tokenizer(tmp_path / "bpe.txt.gz")
    assert T.tokenize(tok, ["abc"], length=5).tolist() == [[514, 513, 515, 0, 0]]


def test_finds_a_pip_package_vocabulary(clean_env, tmp_path):
    _bpe_file(tmp_path / "site" / "magicboost_fake_clip" / T._BPE_NAME)
    (tmp_path / "site" / "magicboost_fake_clip" / "__init__.py").write_text("raise ImportError('never imported')\n")
    clean_env.syspath_prepend(str(tmp_path / "site"))
    path, how = T.find_tokenizer()
    assert path == tmp_path / "site" / "magicboost_fake_clip" / T._BPE_NAME and "magicboost_fake_clip" in how
    assert "magicboost_fake_clip" not in sys.modules


def test_finds_comfyui_bundled_tokenizer_first(clean_env, tmp_path):
    make_tiny_tokenizer(tmp_path / "ComfyUI" / "comfy" / "sd1_tokenizer")
    clean_env.setenv("COMFYUI_PATH", str(tmp_path / "ComfyUI"))
    path, how = T.find_tokenizer()
    assert path == tmp_path / "ComfyUI" / "comfy" / "sd1_tokenizer" and "ComfyUI" in how
    assert T.find_tokenizer(tmp_path / "x")[0] == tmp_path / "x"  # an explicit one wins


def test_no_tokenizer_anywhere_is_a_clear_error(clean_env):
    with pytest.raises(T.TokenizerNotFoundError, match="comfy/sd1_tokenizer.*--tokenizer DIR"):
        T.find_tokenizer()


def test_convert_finds_the_tokenizer_itself(clean_env, tmp_path, official_parts):  # noqa: F811
    """On main, a conversion without --tokenizer wrote all-zero prompt embeddings with only a warning."""
    from magicboost_core.model.bundle import MultiViewModel
    from magicboost_core.model.convert_checkpoint import convert_official_checkpoint

    parts = official_parts
    make_tiny_tokenizer(tmp_path / "ComfyUI" / "comfy" / "sd1_tokenizer")
    clean_env.setenv("COMFYUI_PATH", str(tmp_path / "ComfyUI"))
    ckpt = _ckpt(tmp_path / "mb.pt", parts, "unet", "vae", "visual", "text")
    rep = convert_official_checkpoint(ckpt, tmp_path / "out", num_head_channels=16, vae_config=VAE_CFG)
    assert any("ComfyUI's bundled CLIP tokenizer" in n for n in rep.notes) and rep.warnings == []
    m = MultiViewModel.from_pretrained(rep.output)
    assert m.info.text_source == "clip_text" and m.text_cond.abs().sum() > 0 and m.novel_view_text() is not None


def test_real_clip_vocabulary_gives_clip_ids(monkeypatch):
    """With a real CLIP vocabulary (ComfyUI's, $MAGICBOOST_TOKENIZER or an installed open_clip / clip package) the
    ids are OpenAI CLIP's. Checked 2026-12-05 with clip-anytorch 2.6.0's bpe_simple_vocab_16e6.txt.gz."""
    try:
        path, _ = T.find_tokenizer()
    except T.TokenizerNotFoundError:
        pytest.skip("no real CLIP vocabulary on this machine (ComfyUI, open_clip or clip)")
    ids = T.tokenize(T.load_tokenizer(path), ["a photo of a cat", "a , 3d asset"], length=8).tolist()
    assert ids == [[49406, 320, 1125, 539, 320, 2368, 49407, 0], [49406, 320, 267, 274, 323, 13039, 49407, 0]]
