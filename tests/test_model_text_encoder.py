import json

import pytest
import torch
from safetensors.torch import save_file

from magicboost_core.model import text_encoder as T
from magicboost_core.model.weights import WeightsError


def _byte_chars():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def make_tiny_tokenizer(folder):
    """A CLIP BPE vocabulary with single characters only (no merges): 514 tokens, id 0 = '!'."""
    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + 256 for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


def _hf_text(layers):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    cfg = CLIPTextConfig(vocab_size=600, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=2, max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5,
                         bos_token_id=512, eos_token_id=513, pad_token_id=0)
    m = CLIPTextModel(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def test_tokenize_pads_with_zero(tmp_path):
    tok = T.load_tokenizer(make_tiny_tokenizer(tmp_path / "tok"))
    ids = T.tokenize(tok, ["a ", "ab, c"])
    assert ids.shape == (2, 77)
    assert ids[0, :3].tolist() == [512, ord("a") - 33 + 256, 513] and ids[0, 3:].eq(0).all()
    long = T.tokenize(tok, ["x " * 200])
    assert long.shape == (1, 77) and long[0, -1] == 513


def test_prompts_match_hf_and_openclip_layouts(tmp_path):
    tokdir = make_tiny_tokenizer(tmp_path / "tok")
    spec = T.CLIPTextSpec.tiny()
    prompts = [T.REFINE_PROMPT, T.REFINE_NEGATIVE_PROMPT]
    ids = T.tokenize(T.load_tokenizer(tokdir), prompts)
    # SD-2.1 style: the file holds exactly the blocks used; last_hidden_state (final LN included)
    hf = _hf_text(2)
    save_file({"text_model." + k.split("text_model.", 1)[-1]: v.contiguous() for k, v in hf.state_dict().items()},
              str(tmp_path / "te.safetensors"))
    emb = T.encode_prompts(tmp_path / "te.safetensors", tokdir, prompts, spec)
    with torch.no_grad():
        ref = hf(input_ids=ids).last_hidden_state
    assert emb.shape == (2, 77, 32)
    assert torch.allclose(emb, ref, atol=1e-5)
    # Full tower (one block more, OpenCLIP layout under the official prefix): penultimate + final LN
    full = _hf_text(3)
    sd = {k.split("text_model.", 1)[-1]: v for k, v in full.state_dict().items() if "position_ids" not in k}
    oc = {"clip_model.model.token_embedding.weight": sd["embeddings.token_embedding.weight"],
          "clip_model.model.positional_embedding": sd["embeddings.position_embedding.weight"],
          "clip_model.model.ln_final.weight": sd["final_layer_norm.weight"],
          "clip_model.model.ln_final.bias": sd["final_layer_norm.bias"],
          "clip_model.model.text_projection": torch.randn(32, 32), "clip_model.model.logit_scale": torch.tensor(1.0),
          "clip_model.model.visual.conv1.weight": torch.randn(4, 3, 2, 2)}
    for i in range(3):
        b, o = f"encoder.layers.{i}.", f"clip_model.model.transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            oc[o + f"attn.in_proj_{kind}"] = torch.cat([sd[b + f"self_attn.{x}_proj.{kind}"] for x in "qkv"])
            oc[o + f"attn.out_proj.{kind}"] = sd[b + f"self_attn.out_proj.{kind}"]
            oc[o + f"ln_1.{kind}"] = sd[b + f"layer_norm1.{kind}"]
            oc[o + f"ln_2.{kind}"] = sd[b + f"layer_norm2.{kind}"]
            oc[o + f"mlp.c_fc.{kind}"] = sd[b + f"mlp.fc1.{kind}"]
            oc[o + f"mlp.c_proj.{kind}"] = sd[b + f"mlp.fc2.{kind}"]
    emb2 = T.encode_prompts_from_state_dict(oc, tokdir, prompts, spec)
    with torch.no_grad():
        h = full(input_ids=ids, output_hidden_states=True).hidden_states[-2]
        ref2 = full.final_layer_norm(h) if hasattr(full, "final_layer_norm") else full.text_model.final_layer_norm(h)
    assert torch.allclose(emb2, ref2, atol=1e-5)


def test_errors(tmp_path):
    with pytest.raises(T.TextEncoderError, match="tokenizer folder not found"):
        T.load_tokenizer(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "vocab.json").write_text("{}")
    with pytest.raises(T.TextEncoderError, match="merges.txt.*sd1_tokenizer"):
        T.load_tokenizer(tmp_path / "half")
    with pytest.raises(FileNotFoundError, match="text encoder file not found"):
        T.encode_prompts(tmp_path / "none.safetensors", tmp_path / "half", ["a"])
    with pytest.raises(WeightsError, match="not a CLIP text tower"):
        T.text_state_dict_to_ours({"x": torch.zeros(1)}, 23)


def test_prompt_constants():
    assert T.NOVEL_VIEW_PROMPT == "a , 3d asset"
    assert T.REFINE_PROMPT == "a "
    assert "pixelated,  obscure" in T.NOVEL_VIEW_NEGATIVE_PROMPT
    assert T.REFINE_NEGATIVE_PROMPT.startswith("ugly, bad anatomy") and T.REFINE_NEGATIVE_PROMPT.endswith("bad proportions")
