"""Image encoders producing the image-prompt tokens fed to the UNet's resampler (reference §1.5, §2.5).

Interface: ``encoder(images) -> tokens``: ``images`` (B, 3, H, W) float in [0, 1], alpha already composited on
white; ``tokens`` (B, num_tokens, output_dim). Attributes ``num_tokens`` and ``output_dim``.

* :class:`CLIPImageEncoder` - OpenCLIP ViT-H/14 visual tower (self-contained PyTorch, parameter names of the HF
  ``CLIPVisionModel`` without the ``vision_model.`` prefix). Output = penultimate hidden state
  (``hidden_states[-2]``: 257 x 1280, CLS token included, no ``ln_post``/``post_layernorm``, no projection).
  Only the first ``num_layers - 1`` transformer blocks are kept since the last one is never used.
* :class:`PatchImageEncoder` - parameter-free patch tokens, for the small demo model.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .codec import resize_square
from .weights import WeightsError, build_and_load, format_key_list, load_weights_file

__all__ = [
    "CLIPVisionSpec", "CLIPImageEncoder", "ClipTransformerBlock", "PatchImageEncoder", "build_image_encoder",
    "clip_vision_state_dict_to_ours", "openclip_visual_to_hf", "openclip_block_to_hf", "infer_clip_vision_spec",
    "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD",
]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class CLIPVisionSpec:
    """CLIP ViT architecture. Defaults = OpenCLIP ViT-H/14 (laion2b_s32b_b79k) as Magic-Boost uses it.

    ``num_layers`` is the depth of the full tower (32); the encoder keeps ``num_layers - 1`` blocks and returns
    their output (= ``hidden_states[-2]`` of the full tower).
    """

    hidden_size: int = 1280
    num_layers: int = 32
    num_heads: int = 16
    intermediate_size: int = 5120
    patch_size: int = 14
    image_size: int = 224
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu"  # "gelu" (exact, OpenCLIP) or "quick_gelu" (OpenAI CLIP)

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"CLIPVisionSpec: hidden_size {self.hidden_size} not divisible by num_heads "
                             f"{self.num_heads}.")
        if self.image_size % self.patch_size:
            raise ValueError(f"CLIPVisionSpec: image_size {self.image_size} not divisible by patch_size "
                             f"{self.patch_size}.")
        if self.num_layers < 2:
            raise ValueError("CLIPVisionSpec: num_layers must be >= 2 (the penultimate layer is used).")
        if self.hidden_act not in ("gelu", "quick_gelu"):
            raise ValueError(f"CLIPVisionSpec: hidden_act must be 'gelu' or 'quick_gelu', got {self.hidden_act!r}.")

    @classmethod
    def tiny(cls) -> "CLIPVisionSpec":
        return cls(hidden_size=64, num_layers=3, num_heads=4, intermediate_size=128, patch_size=4, image_size=16)

    @property
    def num_positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1

    def to_dict(self) -> dict:
        return asdict(self)


def _infer_heads(hidden: int) -> int:
    # OpenCLIP/OpenAI ViTs use 64-wide heads except the wide ones (H: 1280/16, g: 1408/16, bigG: 1664/16).
    return 16 if hidden in (1280, 1408, 1664) else max(1, hidden // 64)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, causal: bool = False):
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out_proj(o.transpose(1, 2).reshape(b, n, d))


class _MLP(nn.Module):
    def __init__(self, dim: int, inner: int, act: str):
        super().__init__()
        self.fc1 = nn.Linear(dim, inner)
        self.fc2 = nn.Linear(inner, dim)
        self.act = act

    def forward(self, x):
        x = self.fc1(x)
        x = F.gelu(x) if self.act == "gelu" else x * torch.sigmoid(1.702 * x)
        return self.fc2(x)


class ClipTransformerBlock(nn.Module):
    """Pre-LN CLIP transformer block (HF names: layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2,
    mlp.fc1/fc2). ``act``: "gelu" (exact) or "quick_gelu"; ``causal`` for the text tower."""

    def __init__(self, dim: int, heads: int, inner: int, eps: float = 1e-5, act: str = "gelu", causal: bool = False):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(dim, eps=eps)
        self.self_attn = _Attention(dim, heads, causal)
        self.layer_norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = _MLP(dim, inner, act)

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class _Embeddings(nn.Module):
    def __init__(self, spec: CLIPVisionSpec):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(spec.hidden_size))
        self.patch_embedding = nn.Conv2d(3, spec.hidden_size, spec.patch_size, stride=spec.patch_size, bias=False)
        self.position_embedding = nn.Embedding(spec.num_positions, spec.hidden_size)

    def forward(self, pixels):
        x = self.patch_embedding(pixels).flatten(2).transpose(1, 2)  # (B, n, D)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + self.position_embedding.weight.to(x.dtype)


class _Encoder(nn.Module):
    def __init__(self, spec: CLIPVisionSpec, depth: int):
        super().__init__()
        self.layers = nn.ModuleList([
            ClipTransformerBlock(spec.hidden_size, spec.num_heads, spec.intermediate_size, spec.layer_norm_eps,
                                 spec.hidden_act) for _ in range(depth)
        ])


class CLIPImageEncoder(nn.Module):
    """OpenCLIP ViT image tokens: (B, 3, H, W) [0, 1] -> (B, 257, 1280) penultimate hidden states.

    Preprocessing = open_clip's val transform done in torch: resize the shorter side to ``image_size``
    (bicubic, antialiased, like PIL), centre crop, OpenAI mean/std. Differentiable.
    """

    kind = "clip_vision"

    def __init__(self, spec: CLIPVisionSpec | None = None):
        super().__init__()
        self.spec = spec or CLIPVisionSpec()
        s = self.spec
        self.embeddings = _Embeddings(s)
        self.pre_layrnorm = nn.LayerNorm(s.hidden_size, eps=s.layer_norm_eps)
        self.encoder = _Encoder(s, s.num_layers - 1)

    @property
    def num_tokens(self) -> int:
        return self.spec.num_positions

    @property
    def output_dim(self) -> int:
        return self.spec.hidden_size

    def config_dict(self) -> dict:
        return {"kind": self.kind, "spec": self.spec.to_dict()}

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) [0, 1] -> normalised (B, 3, S, S) pixels, S = ``spec.image_size``."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"CLIPImageEncoder expects (B, 3, H, W) images in [0, 1], got {tuple(images.shape)}.")
        s = self.spec.image_size
        h, w = images.shape[-2:]
        if (h, w) != (s, s):
            # torchvision Resize(int): shorter side -> s, longer side -> int(s * long / short).
            nh, nw = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
            images = F.interpolate(images, size=(nh, nw), mode="bicubic", align_corners=False,
                                   antialias=True).clamp(0.0, 1.0)
            top, left = int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))
            images = images[..., top:top + s, left:left + s]
        mean = torch.tensor(OPENAI_CLIP_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(OPENAI_CLIP_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        return (images - mean) / std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p = self.embeddings.patch_embedding.weight
        x = self.preprocess(images.to(device=p.device, dtype=p.dtype))
        x = self.pre_layrnorm(self.embeddings(x))
        for layer in self.encoder.layers:
            x = layer(x)
        return x

    def load_clip_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load HF (``vision_model.*``) or OpenCLIP (``visual.*``) layout weights, any known prefix."""
        sd = clip_vision_state_dict_to_ours(state_dict, self.spec.num_layers)
        loaded = build_and_load(lambda: CLIPImageEncoder(self.spec), sd, "CLIP vision")
        for name, child in loaded.named_children():
            setattr(self, name, child)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], spec: CLIPVisionSpec | None = None):
        """Encoder from CLIP vision weights; ``spec`` defaults to one inferred from the weights."""
        spec = spec or infer_clip_vision_spec(state_dict)
        sd = clip_vision_state_dict_to_ours(state_dict, spec.num_layers)
        return build_and_load(lambda: cls(spec), sd, "CLIP vision")

    @classmethod
    def from_file(cls, path, spec: CLIPVisionSpec | None = None):
        """Encoder from a ComfyUI ``models/clip_vision`` file (HF layout) or OpenCLIP visual weights."""
        return cls.from_state_dict(load_weights_file(path, "CLIP vision"), spec)


# ---- weight layouts ---------------------------------------------------------------------------------------------
_HF_ANCHOR = "embeddings.patch_embedding.weight"
_OC_ANCHOR = "conv1.weight"


def _find_prefix(keys, anchor: str) -> str | None:
    cands = sorted((k[: -len(anchor)] for k in keys if k.endswith(anchor)), key=len)
    for c in cands:
        if c == "" or c.endswith("."):
            return c
    return None


_OC_BLOCK_NAMES = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
                   "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}


def openclip_block_to_hf(base: str, rest: str, value: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """One OpenCLIP resblock tensor (``rest`` after ``resblocks.N.``) -> HF-named tensors under ``base``
    (the fused ``in_proj`` is split into q, k, v). None when ``rest`` is not a known name."""
    if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
        kind = "weight" if rest.endswith("weight") else "bias"
        q, k, v = value.chunk(3, dim=0)
        return {base + f"self_attn.q_proj.{kind}": q, base + f"self_attn.k_proj.{kind}": k,
                base + f"self_attn.v_proj.{kind}": v}
    m = re.fullmatch(r"(attn\.out_proj|ln_1|ln_2|mlp\.c_fc|mlp\.c_proj)\.(weight|bias)", rest)
    if not m:
        return None
    return {base + f"{_OC_BLOCK_NAMES[m.group(1)]}.{m.group(2)}": value}


def openclip_tower_to_hf(state_dict: Mapping[str, torch.Tensor], renames: Mapping[str, str], skip=(),
                         what: str = "OpenCLIP", prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename the weights of an OpenCLIP tower (visual or text) to HF ``CLIP*Model`` names (no model prefix).

    Keys are read after ``prefix`` (other keys are not part of the tower and are ignored): ``renames`` maps exact
    OpenCLIP names to HF names, ``transformer.resblocks.N.*`` become ``encoder.layers.N.*``
    (:func:`openclip_block_to_hf`), names in ``skip`` are dropped; any other key raises ``WeightsError``
    ("``what`` weights: unknown keys ...", full keys).
    """
    out, unknown = {}, []
    for key, v in state_dict.items():
        if not key.startswith(prefix):
            continue
        k = key[len(prefix):]
        if k in renames:
            out[renames[k]] = v
        elif m := re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)", k):
            renamed = openclip_block_to_hf(f"encoder.layers.{m.group(1)}.", m.group(2), v)
            if renamed is None:
                unknown.append(key)
            else:
                out.update(renamed)
        elif k not in skip:
            unknown.append(key)
    if unknown:
        raise WeightsError(f"{what} weights: unknown keys {format_key_list(unknown)}.")
    return out


#: OpenCLIP visual-tower names -> HF ``CLIPVisionModel`` names (besides the transformer blocks).
_OC_VISUAL_RENAMES = {
    "conv1.weight": "embeddings.patch_embedding.weight", "class_embedding": "embeddings.class_embedding",
    "positional_embedding": "embeddings.position_embedding.weight",
    "ln_pre.weight": "pre_layrnorm.weight", "ln_pre.bias": "pre_layrnorm.bias",
    "ln_post.weight": "post_layernorm.weight", "ln_post.bias": "post_layernorm.bias",
}


def openclip_visual_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename OpenCLIP visual-tower weights (no prefix: ``conv1.weight``, ``transformer.resblocks.N...``) to HF
    ``CLIPVisionModel`` names without the ``vision_model.`` prefix. ``proj`` is dropped (not used here)."""
    return openclip_tower_to_hf(state_dict, _OC_VISUAL_RENAMES, skip=("proj",), what="OpenCLIP visual")


def _vision_hf_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    keys = list(state_dict)
    p = _find_prefix(keys, _HF_ANCHOR)
    if p is not None:
        return {k[len(p):]: v for k, v in state_dict.items()
                if k.startswith(p) and not k.endswith("position_ids")}
    p = _find_prefix(keys, _OC_ANCHOR)
    if p is not None and any(k.startswith(p + "transformer.resblocks.") for k in keys):
        return openclip_visual_to_hf({k[len(p):]: v for k, v in state_dict.items()
                                      if k.startswith(p) and not k.endswith("attn_mask")})
    raise WeightsError(
        "These weights are not a CLIP vision tower (no '*embeddings.patch_embedding.weight' (HF) or "
        f"'*visual.conv1.weight' (OpenCLIP) key; first keys: {format_key_list(keys[:5])}). Use the "
        "CLIP-ViT-H-14 file ComfyUI keeps in models/clip_vision."
    )


def clip_vision_state_dict_to_ours(state_dict: Mapping[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Weights of a full CLIP vision tower (HF or OpenCLIP layout, any prefix; text-tower keys and projections
    ignored) -> this module's names, keeping the first ``num_layers - 1`` blocks."""
    sd = _vision_hf_layout(state_dict)
    layer_ids = {int(m.group(1)) for k in sd if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
    if layer_ids and max(layer_ids) + 1 != num_layers:
        raise WeightsError(
            f"CLIP vision weights have {max(layer_ids) + 1} transformer blocks but the config expects {num_layers}."
        )
    out = {}
    for k, v in sd.items():
        m = re.match(r"encoder\.layers\.(\d+)\.", k)
        if (m and int(m.group(1)) >= num_layers - 1) or k.startswith("post_layernorm."):
            continue  # the last block and the post-layernorm never reach the penultimate output
        out[k] = v
    return out


def infer_clip_vision_spec(state_dict: Mapping[str, torch.Tensor]) -> CLIPVisionSpec:
    """Architecture from the weights (heads follow the OpenCLIP convention, see ``_infer_heads``)."""
    sd = _vision_hf_layout(state_dict)
    try:
        w = sd["embeddings.patch_embedding.weight"]
        pos = sd["embeddings.position_embedding.weight"].shape[0]
        inner = sd["encoder.layers.0.mlp.fc1.weight"].shape[0]
    except KeyError as e:
        raise WeightsError(f"CLIP vision weights lack {e.args[0]!r}; the file is incomplete.") from e
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"encoder\.layers\.(\d+)\.", k)))
    grid = math.isqrt(pos - 1)
    hidden, patch = w.shape[0], w.shape[-1]
    return CLIPVisionSpec(hidden_size=hidden, num_layers=depth, num_heads=_infer_heads(hidden),
                          intermediate_size=inner, patch_size=patch, image_size=grid * patch)


# ---- demo encoder -------------------------------------------------------------------------------------------------
class PatchImageEncoder(nn.Module):
    """Parameter-free patch tokens for the demo model.

    images (B, 3, H, W) [0, 1] -> area-resize to ``image_size`` -> ``2x - 1`` -> non-overlapping ``patch`` x
    ``patch`` patches in row-major order, each flattened channel-major (c, dy, dx) -> (B, n, 3 p²); a first
    extra token = the mean of the n patch tokens is prepended: output (B, n + 1, 3 p²), n = (image_size / p)².
    """

    kind = "patch"

    def __init__(self, image_size: int = 32, patch: int = 8):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"PatchImageEncoder: image_size {image_size} must be a multiple of patch {patch}.")
        self.image_size = int(image_size)
        self.patch = int(patch)

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch) ** 2 + 1

    @property
    def output_dim(self) -> int:
        return 3 * self.patch * self.patch

    def config_dict(self) -> dict:
        return {"kind": self.kind, "image_size": self.image_size, "patch": self.patch}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"PatchImageEncoder expects (B, 3, H, W) images in [0, 1], got {tuple(images.shape)}.")
        x = resize_square(images, self.image_size) * 2.0 - 1.0
        tokens = F.unfold(x, kernel_size=self.patch, stride=self.patch).transpose(1, 2)  # (B, n, 3p²)
        return torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)


def build_image_encoder(config: Mapping) -> nn.Module:
    """An image encoder (random / uninitialised weights) from its ``config_dict()``."""
    kind = config.get("kind")
    if kind == "clip_vision":
        return CLIPImageEncoder(CLIPVisionSpec(**config["spec"]))
    if kind == "patch":
        return PatchImageEncoder(config.get("image_size", 32), config.get("patch", 8))
    raise ValueError(f"Unknown image encoder kind {kind!r} in the model config; expected 'clip_vision' or 'patch'.")
