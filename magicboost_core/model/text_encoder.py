"""Text embeddings of the fixed prompts (reference §1.4, §4, §5.2).

Magic-Boost only ever uses a handful of fixed strings, so a model stores their embeddings (``text_cond``,
``text_uncond``) and the text encoder is needed once, at conversion time. The encoder is the OpenCLIP ViT-H
text tower as SD-2.1 uses it: 23 of the 24 blocks ("penultimate"), then the final layer norm -> (77, 1024).
It is a self-contained PyTorch module with HF ``CLIPTextModel`` parameter names (no ``text_model.`` prefix);
weights load from HF-layout files (SD-2.1 ``text_encoder``, 23 blocks; a full 24-block tower is cut to 23) or
OpenCLIP layout (``token_embedding``, ``transformer.resblocks.N``, ``ln_final``; official ``clip_model.model.``).
Padding uses token id 0, as OpenCLIP and SD-2.x do.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from .image_encoder import ClipTransformerBlock, openclip_tower_to_hf
from .weights import WeightsError, build_and_load, format_key_list, load_weights_file

__all__ = [
    "CLIPTextSpec", "CLIPTextEncoder", "TextEncoderError", "encode_prompts", "encode_prompts_from_state_dict",
    "load_tokenizer", "tokenize", "text_state_dict_to_ours", "find_tokenizer", "TokenizerNotFoundError",
    "TOKENIZER_ENV", "bpe_file_to_vocab",
    "REFINE_PROMPT", "REFINE_NEGATIVE_PROMPT", "NOVEL_VIEW_PROMPT", "NOVEL_VIEW_PROMPT_TEMPLATE",
    "NOVEL_VIEW_NEGATIVE_PROMPT", "CONTEXT_LENGTH", "PAD_TOKEN_ID",
]

#: Refinement (threestudio guidance, refine_*.yaml): prompt and negative prompt.
REFINE_PROMPT = "a "
REFINE_NEGATIVE_PROMPT = (
    "ugly, bad anatomy, blurry, pixelated obscure, unnatural colors, poor lighting, dull, and unclear, cropped, "
    "lowres, low quality, artifacts, duplicate, morbid, mutilated, poorly drawn face, deformed, dehydrated, bad "
    "proportions"
)
#: Novel-view demo script (extern/MVC/scripts/demo.py): "<text>, 3d asset" with the default text "a ".
NOVEL_VIEW_PROMPT_TEMPLATE = "{text}, 3d asset"
NOVEL_VIEW_PROMPT = NOVEL_VIEW_PROMPT_TEMPLATE.format(text="a ")
NOVEL_VIEW_NEGATIVE_PROMPT = (
    "uniform low no texture ugly, boring, bad anatomy, blurry, pixelated,  obscure, unnatural colors, poor "
    "lighting, dull, and unclear."
)

CONTEXT_LENGTH = 77
PAD_TOKEN_ID = 0


class TextEncoderError(ValueError):
    """Missing or unusable text encoder / tokenizer files."""


@dataclass
class CLIPTextSpec:
    """Text tower as used: ``num_layers`` blocks actually run (SD-2.1: 23 of OpenCLIP ViT-H's 24)."""

    hidden_size: int = 1024
    num_layers: int = 23
    num_heads: int = 16
    intermediate_size: int = 4096
    vocab_size: int = 49408
    max_positions: int = CONTEXT_LENGTH
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu"

    @classmethod
    def tiny(cls) -> "CLIPTextSpec":
        return cls(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, vocab_size=600)


class _TextEmbeddings(nn.Module):
    def __init__(self, spec: CLIPTextSpec):
        super().__init__()
        self.token_embedding = nn.Embedding(spec.vocab_size, spec.hidden_size)
        self.position_embedding = nn.Embedding(spec.max_positions, spec.hidden_size)


class _TextLayers(nn.Module):
    def __init__(self, spec: CLIPTextSpec):
        super().__init__()
        self.layers = nn.ModuleList([
            ClipTransformerBlock(spec.hidden_size, spec.num_heads, spec.intermediate_size, spec.layer_norm_eps,
                                 spec.hidden_act, causal=True) for _ in range(spec.num_layers)
        ])


class CLIPTextEncoder(nn.Module):
    """token ids (N, L<=77) int64 -> embeddings (N, L, hidden) = final_layer_norm(blocks(tok + pos))."""

    def __init__(self, spec: CLIPTextSpec | None = None):
        super().__init__()
        self.spec = spec or CLIPTextSpec()
        self.embeddings = _TextEmbeddings(self.spec)
        self.encoder = _TextLayers(self.spec)
        self.final_layer_norm = nn.LayerNorm(self.spec.hidden_size, eps=self.spec.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        n = input_ids.shape[1]
        x = self.embeddings.token_embedding(input_ids) + self.embeddings.position_embedding.weight[:n]
        for layer in self.encoder.layers:
            x = layer(x)
        return self.final_layer_norm(x)


#: OpenCLIP text-tower names -> HF ``CLIPTextModel`` names (besides the transformer blocks).
_OC_TEXT_RENAMES = {
    "token_embedding.weight": "embeddings.token_embedding.weight",
    "positional_embedding": "embeddings.position_embedding.weight",
    "ln_final.weight": "final_layer_norm.weight", "ln_final.bias": "final_layer_norm.bias",
}


def text_state_dict_to_ours(state_dict: Mapping[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Text-tower weights (HF or OpenCLIP layout, any prefix) -> :class:`CLIPTextEncoder` names with the first
    ``num_layers`` blocks. A tower with exactly one block more is cut (penultimate layer); other counts raise."""
    keys = list(state_dict)
    anchor = "embeddings.token_embedding.weight"
    hf = [k[: -len(anchor)] for k in keys if k.endswith(anchor)]
    if hf:
        p = min(hf, key=len)
        sd = {k[len(p):]: v for k, v in state_dict.items()
              if k.startswith(p) and not k.endswith("position_ids")}
    else:
        oc = [k[: -len("token_embedding.weight")] for k in keys if k.endswith("token_embedding.weight")]
        if not oc:
            raise WeightsError(
                "These weights are not a CLIP text tower (no '*token_embedding.weight' key; first keys: "
                f"{format_key_list(keys[:5])})."
            )
        p = min(oc, key=len)
        tower = {k: v for k, v in state_dict.items() if not k.startswith(p + "visual.")}
        sd = openclip_tower_to_hf(tower, _OC_TEXT_RENAMES, skip=("text_projection", "logit_scale", "attn_mask"),
                                  what="OpenCLIP text", prefix=p)
    ids = {int(m.group(1)) for k in sd if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
    depth = max(ids) + 1 if ids else 0
    if depth not in (num_layers, num_layers + 1):
        raise WeightsError(
            f"The text encoder has {depth} blocks; expected {num_layers} (SD-2.1 text_encoder) or {num_layers + 1} "
            "(full OpenCLIP ViT-H text tower)."
        )
    return {k: v for k, v in sd.items()
            if not ((m := re.match(r"encoder\.layers\.(\d+)\.", k)) and int(m.group(1)) >= num_layers)
            and not k.startswith(("text_projection", "logit_scale"))}


class TokenizerNotFoundError(TextEncoderError):
    """No CLIP tokenizer vocabulary was given and none was found on this machine."""


#: Environment variable naming a tokenizer (folder with vocab.json + merges.txt, or a CLIP BPE file).
TOKENIZER_ENV = "MAGICBOOST_TOKENIZER"
_BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
#: pip packages that ship the CLIP BPE vocabulary, and where inside them (OpenCLIP, OpenAI CLIP / clip-anytorch).
_PIP_VOCABS = (("open_clip", _BPE_NAME), ("clip", _BPE_NAME), ("x_clip", "data/bpe_simple_vocab_16e6.txt"))


def _comfyui_roots() -> list[Path]:
    """Candidate ComfyUI folders: $COMFYUI_PATH, the one this pack is installed in (custom_nodes/<pack>), and
    the folder of an importable ``comfy`` package."""
    roots = []
    if os.environ.get("COMFYUI_PATH"):
        roots.append(Path(os.environ["COMFYUI_PATH"]))
    pack = Path(__file__).resolve().parents[2]
    if pack.parent.name == "custom_nodes":
        roots.append(pack.parent.parent)
    try:
        spec = importlib.util.find_spec("comfy")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        roots.extend(Path(p).parent for p in spec.submodule_search_locations)
    return roots


def _pip_vocab_files() -> list[tuple[Path, str]]:
    found = []
    for package, rel in _PIP_VOCABS:
        try:
            spec = importlib.util.find_spec(package)  # locates the package without importing it
        except (ImportError, ValueError):
            continue
        for loc in (spec.submodule_search_locations or []) if spec is not None else []:
            f = Path(loc) / rel
            if f.is_file():
                found.append((f, f"the CLIP vocabulary shipped by the pip package '{package}'"))
    return found


def find_tokenizer(explicit=None) -> tuple[Path, str]:
    """Locate a CLIP tokenizer: ``(path, description)``.

    Order: ``explicit`` (a folder with vocab.json + merges.txt, or a CLIP BPE file ``*.txt[.gz]``);
    ``$MAGICBOOST_TOKENIZER``; ComfyUI's bundled ``comfy/sd1_tokenizer`` (``$COMFYUI_PATH``, the ComfyUI this pack
    is installed in, or an importable ``comfy``); the BPE vocabulary of an installed pip package (``open_clip``,
    ``clip``). SD-2.1 / OpenCLIP ViT-H use this same CLIP vocabulary. Nothing is downloaded.

    Raises :class:`TokenizerNotFoundError` naming every place that was searched.
    """
    if explicit is not None:
        return Path(explicit), "given"
    if os.environ.get(TOKENIZER_ENV):
        return Path(os.environ[TOKENIZER_ENV]), f"${TOKENIZER_ENV}"
    searched = []
    for root in _comfyui_roots():
        d = root / "comfy" / "sd1_tokenizer"
        searched.append(str(d))
        if (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
            return d, "ComfyUI's bundled CLIP tokenizer"
    pip = _pip_vocab_files()
    if pip:
        return pip[0]
    raise TokenizerNotFoundError(
        "no CLIP tokenizer found: looked for ComfyUI's comfy/sd1_tokenizer (" + (", ".join(searched) or
        "no ComfyUI folder found; set COMFYUI_PATH") + ") and for the vocabulary of the pip packages "
        f"{', '.join(p for p, _ in _PIP_VOCABS)}. Pass --tokenizer DIR (a folder with vocab.json + merges.txt, "
        "e.g. ComfyUI/comfy/sd1_tokenizer or the 'tokenizer' folder of stabilityai/stable-diffusion-2-1-base) or "
        f"set {TOKENIZER_ENV}."
    )


def _byte_alphabet() -> list[str]:
    """CLIP's reversible byte -> printable-character table, in token-id order (256 characters)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]


def bpe_file_to_vocab(bpe_file) -> tuple[dict, list[str]]:
    """A CLIP BPE merges file (OpenAI / OpenCLIP ``bpe_simple_vocab_16e6.txt[.gz]``) -> (vocab, merges).

    Ids: 256 byte characters, the same with ``</w>``, one token per merge (the first 48,894 merges), then
    ``<|startoftext|>`` and ``<|endoftext|>`` (49,408 ids for the full file), as CLIP's tokenizer numbers them.
    """
    raw = Path(bpe_file).read_bytes()
    text = gzip.decompress(raw).decode("utf-8") if raw[:2] == b"\x1f\x8b" else raw.decode("utf-8")
    lines = text.split("\n")[1:]
    merges = [ln for ln in lines[: 49152 - 256 - 2] if len(ln.split()) == 2]
    chars = _byte_alphabet()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def load_tokenizer(tokenizer_dir):
    """A transformers ``CLIPTokenizer`` from a local folder holding ``vocab.json`` and ``merges.txt``
    (e.g. ComfyUI's ``comfy/sd1_tokenizer``) or from a CLIP BPE file (``bpe_simple_vocab_16e6.txt.gz``, as
    pip packages ship it). Nothing is downloaded."""
    d = Path(tokenizer_dir)
    if d.is_file() and d.name.endswith((".txt", ".txt.gz")):
        vocab, merges = bpe_file_to_vocab(d)
        d = Path(tempfile.mkdtemp(prefix="magicboost-tokenizer-"))
        (d / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    if not d.is_dir():
        raise TextEncoderError(
            f"tokenizer folder not found: {d}. Give a folder with vocab.json and merges.txt (ComfyUI ships one "
            "in comfy/sd1_tokenizer) or a CLIP BPE file (bpe_simple_vocab_16e6.txt.gz)."
        )
    missing = [f for f in ("vocab.json", "merges.txt") if not (d / f).is_file()]
    if missing:
        raise TextEncoderError(
            f"tokenizer folder {d} lacks {', '.join(missing)}; it needs vocab.json and merges.txt (ComfyUI ships "
            "them in comfy/sd1_tokenizer)."
        )
    from transformers import CLIPTokenizer

    try:
        return CLIPTokenizer.from_pretrained(str(d), local_files_only=True)
    except Exception as e:
        raise TextEncoderError(f"could not build a CLIP tokenizer from {d}: {type(e).__name__}: {e}") from e


def tokenize(tokenizer, prompts: Sequence[str], length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """(N, length) int64: BOS, tokens, EOS (truncated to ``length`` with EOS kept), then ``PAD_TOKEN_ID``."""
    rows = []
    for p in prompts:
        ids = list(tokenizer(p, truncation=True, max_length=length)["input_ids"])
        rows.append(ids + [PAD_TOKEN_ID] * (length - len(ids)))
    return torch.tensor(rows, dtype=torch.long)


@torch.no_grad()
def encode_prompts_from_state_dict(state_dict: Mapping[str, torch.Tensor], tokenizer_dir, prompts: Sequence[str],
                                   spec: CLIPTextSpec | None = None, device="cpu") -> torch.Tensor:
    """Embeddings (N, 77, hidden) float32 of ``prompts`` with text-tower weights given as a state dict."""
    spec = spec or CLIPTextSpec()
    tok = load_tokenizer(tokenizer_dir)
    sd = text_state_dict_to_ours(state_dict, spec.num_layers)
    enc = build_and_load(lambda: CLIPTextEncoder(spec), sd, "CLIP text encoder", dtype=torch.float32).to(device)
    ids = tokenize(tok, prompts).to(device)
    if int(ids.max()) >= spec.vocab_size:
        raise TextEncoderError("the tokenizer produced ids beyond the text encoder's vocabulary; mismatched files.")
    return enc.eval()(ids).float().cpu()


def encode_prompts(text_encoder_path, tokenizer_dir, prompts: Sequence[str], spec: CLIPTextSpec | None = None,
                   device="cpu") -> torch.Tensor:
    """Embeddings (N, 77, 1024) of ``prompts`` from a text-encoder weights file (SD-2.1 ``text_encoder``
    safetensors, HF layout, or OpenCLIP layout) and a tokenizer folder (vocab.json + merges.txt)."""
    return encode_prompts_from_state_dict(load_weights_file(text_encoder_path, "text encoder"), tokenizer_dir,
                                          prompts, spec, device)
