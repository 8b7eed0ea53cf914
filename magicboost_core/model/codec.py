"""Latent codecs: images <-> the latent space the multi-view UNet denoises.

One interface for every codec:

* ``encode(images, sample=True, generator=None) -> latents``: ``images`` (B, 3, H, W) float in [0, 1] (any
  square size; resized to ``image_size``), ``latents`` (B, latent_channels, latent_size, latent_size), already
  multiplied by the codec's scale factor. Differentiable w.r.t. ``images`` (SDS back-propagates through it).
* ``decode(latents) -> images`` (B, 3, H', W') float in [0, 1].
* attributes ``latent_channels``, ``image_size`` (input resolution the model expects), ``latent_size``.

Codecs: :class:`SDVAECodec` (the official SD KL-VAE, reference §1.3) and :class:`PixelCodec` (pixel space,
for the small demo model).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .schedule import seeded_randn
from .weights import WeightsError, build_and_load, format_key_list, load_weights_file

__all__ = [
    "LatentCodec", "SDVAEConfig", "SDVAECodec", "PixelCodec", "build_codec", "resize_square",
    "SD_VAE_SCALE_FACTOR", "vae_ldm_to_diffusers", "vae_diffusers_to_ldm", "vae_state_dict_to_diffusers",
    "convert_vae_keys", "VAE_KEY_MAP",
]

SD_VAE_SCALE_FACTOR = 0.18215


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (B, C, H, W) to (B, C, size, size): area averaging when shrinking, bilinear when enlarging.

    Differentiable. Returns ``images`` itself when it already has that size.
    """
    h, w = images.shape[-2:]
    if h == size and w == size:
        return images
    if h >= size and w >= size:
        return F.interpolate(images, size=(size, size), mode="area")
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def _check_images(images: torch.Tensor, who: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{who}.encode expects images of shape (B, 3, H, W) in [0, 1], got {shape}.")


class LatentCodec(nn.Module):
    """Base class; see the module docstring for the interface."""

    kind: str = "base"
    latent_channels: int
    image_size: int
    latent_size: int

    def encode(self, images: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None):
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def config_dict(self) -> dict:
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------------------------
# SD KL-VAE
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class SDVAEConfig:
    """Architecture of the SD KL autoencoder (diffusers ``AutoencoderKL`` arguments).

    Defaults = SD 1.x/2.x VAE (ch 128, ch_mult 1,2,4,4, 2 res blocks, 4 latent channels, 256 px), the one
    Magic-Boost uses. ``tiny()`` is a small random-weight stand-in for tests.
    """

    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int = 256
    in_channels: int = 3
    out_channels: int = 3

    def __post_init__(self):
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)

    @classmethod
    def tiny(cls) -> "SDVAEConfig":
        return cls(block_out_channels=(32, 32), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                   sample_size=16)

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "SDVAEConfig":
        return cls(**dict(d))

    def build(self):
        from diffusers import AutoencoderKL

        n = len(self.block_out_channels)
        return AutoencoderKL(
            in_channels=self.in_channels, out_channels=self.out_channels,
            down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=self.block_out_channels, layers_per_block=self.layers_per_block,
            latent_channels=self.latent_channels, norm_num_groups=self.norm_num_groups,
            sample_size=self.sample_size, scaling_factor=SD_VAE_SCALE_FACTOR,
        )


class SDVAECodec(LatentCodec):
    """The SD KL-VAE as a codec (wraps a diffusers ``AutoencoderKL`` in ``self.vae``).

    encode: images [0,1] -> resize to ``image_size`` (area) -> [-1,1] -> posterior ``mean + std * N(0,1)``
    (official, ``sample=True``) or the posterior mean (``sample=False``) -> x ``scale_factor`` (0.18215).
    decode: ``z / scale_factor`` -> decoder -> ``clamp((x + 1) / 2, 0, 1)``.
    Weights: :meth:`load_vae_weights` / :meth:`from_file` accept the LDM layout (official checkpoint under
    ``vae_model.``, ComfyUI ``models/vae`` files) and the diffusers layout.
    """

    kind = "sd_vae"

    def __init__(self, config: SDVAEConfig | None = None, scale_factor: float = SD_VAE_SCALE_FACTOR,
                 image_size: int | None = None):
        super().__init__()
        self.config = config or SDVAEConfig()
        self.scale_factor = float(scale_factor)
        self.image_size = int(image_size or self.config.sample_size)
        if self.image_size % self.config.downscale:
            raise ValueError(f"SDVAECodec: image_size {self.image_size} must be a multiple of {self.config.downscale}.")
        self.latent_channels = self.config.latent_channels
        self.latent_size = self.image_size // self.config.downscale
        self.vae = self.config.build()

    def config_dict(self) -> dict:
        return {"kind": self.kind, "vae": self.config.to_dict(), "scale_factor": self.scale_factor,
                "image_size": self.image_size}

    def encode(self, images: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None):
        _check_images(images, "SDVAECodec")
        p = next(self.vae.parameters())
        x = resize_square(images.to(device=p.device, dtype=p.dtype), self.image_size) * 2.0 - 1.0
        dist = self.vae.encode(x).latent_dist
        z = dist.mean
        if sample:
            z = z + dist.std * seeded_randn(z.shape, generator, device=z.device, dtype=z.dtype)
        return z * self.scale_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        p = next(self.vae.parameters())
        x = self.vae.decode(latents.to(device=p.device, dtype=p.dtype) / self.scale_factor).sample
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0)

    def load_vae_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load VAE weights given in LDM or diffusers layout (known prefixes are stripped)."""
        sd = vae_state_dict_to_diffusers(state_dict)
        loaded = build_and_load(self.config.build, sd, "SD VAE")
        self.vae = loaded

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], config: SDVAEConfig | None = None,
                        **kwargs) -> "SDVAECodec":
        config = config or SDVAEConfig()
        with torch.device("meta"):
            codec = cls(config, **kwargs)
        codec.load_vae_weights(state_dict)
        return codec

    @classmethod
    def from_file(cls, path, config: SDVAEConfig | None = None, **kwargs) -> "SDVAECodec":
        """A codec from a VAE weights file (.safetensors or a plain .pt/.ckpt state dict)."""
        return cls.from_state_dict(load_weights_file(path, "VAE"), config, **kwargs)


# ---- LDM <-> diffusers key conversion ---------------------------------------------------------------------------
_VAE_PREFIXES = ("vae_model.", "first_stage_model.", "vae.", "model.")
_OLD_DIFF_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}

#: The SD VAE key map, LDM name <-> diffusers ``AutoencoderKL`` name, read in either direction by
#: :func:`convert_vae_keys`. Placeholders: ``{s}`` encoder|decoder, ``{w}`` weight|bias, ``{i}``/``{j}`` indices,
#: ``{up}`` a decoder level (LDM counts from the lowest resolution, diffusers from the highest: ``n - 1 - up``),
#: ``{res}`` the rest of a ResBlock key (``nin_shortcut`` <-> ``conv_shortcut``), ``{any}`` any rest. The third
#: item marks mid-attention projections: 1x1 conv weights in LDM, Linear weights in diffusers.
VAE_KEY_MAP = (
    ("quant_conv.{any}", "quant_conv.{any}", False),
    ("post_quant_conv.{any}", "post_quant_conv.{any}", False),
    ("{s}.conv_in.{w}", "{s}.conv_in.{w}", False),
    ("{s}.conv_out.{w}", "{s}.conv_out.{w}", False),
    ("{s}.norm_out.{w}", "{s}.conv_norm_out.{w}", False),
    ("encoder.down.{i}.block.{j}.{res}", "encoder.down_blocks.{i}.resnets.{j}.{res}", False),
    ("encoder.down.{i}.downsample.conv.{w}", "encoder.down_blocks.{i}.downsamplers.0.conv.{w}", False),
    ("decoder.up.{up}.block.{j}.{res}", "decoder.up_blocks.{up}.resnets.{j}.{res}", False),
    ("decoder.up.{up}.upsample.conv.{w}", "decoder.up_blocks.{up}.upsamplers.0.conv.{w}", False),
    ("{s}.mid.block_1.{res}", "{s}.mid_block.resnets.0.{res}", False),
    ("{s}.mid.block_2.{res}", "{s}.mid_block.resnets.1.{res}", False),
    ("{s}.mid.attn_1.norm.{w}", "{s}.mid_block.attentions.0.group_norm.{w}", False),
    ("{s}.mid.attn_1.q.{w}", "{s}.mid_block.attentions.0.to_q.{w}", True),
    ("{s}.mid.attn_1.k.{w}", "{s}.mid_block.attentions.0.to_k.{w}", True),
    ("{s}.mid.attn_1.v.{w}", "{s}.mid_block.attentions.0.to_v.{w}", True),
    ("{s}.mid.attn_1.proj_out.{w}", "{s}.mid_block.attentions.0.to_out.0.{w}", True),
)
_PLACEHOLDERS = {"s": "encoder|decoder", "w": "weight|bias", "i": r"\d+", "j": r"\d+", "up": r"\d+", "res": ".+",
                 "any": ".+"}


def _key_pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)  # literal, name, literal, name, ..., literal
    return re.compile("".join(re.escape(p) if k % 2 == 0 else f"(?P<{p}>{_PLACEHOLDERS[p]})"
                              for k, p in enumerate(parts)))


#: Per rule: (LDM pattern, diffusers pattern), (LDM template, diffusers template), is a mid-attention projection.
_VAE_KEY_RULES = tuple(((_key_pattern(ldm), _key_pattern(diff)), (ldm, diff), proj) for ldm, diff, proj in VAE_KEY_MAP)
_LAYOUTS = ("ldm", "diffusers")  # index 0 / 1 of the rules' pairs
_LAYOUT_NAMES = ("LDM", "diffusers")
_UP_LEVEL = (r"decoder\.up\.(\d+)\.", r"decoder\.up_blocks\.(\d+)\.")
_SHORTCUT = ("nin_shortcut", "conv_shortcut")


def _num_levels(keys, pattern: str) -> int:
    idx = [int(m.group(1)) for k in keys if (m := re.match(pattern, k))]
    if not idx:
        raise WeightsError("VAE weights: no up/down blocks found; is this an SD VAE?")
    return max(idx) + 1


def _projection_weight(v: torch.Tensor, to_linear: bool) -> torch.Tensor:
    """Mid-attention projection weight as a Linear (C, C) (diffusers) or a 1x1 conv (C, C, 1, 1) (LDM)."""
    if to_linear and v.dim() == 4:
        return v[:, :, 0, 0]
    if not to_linear and v.dim() == 2:
        return v[:, :, None, None]
    return v


def convert_vae_keys(state_dict: Mapping[str, torch.Tensor], source: str, target: str) -> dict[str, torch.Tensor]:
    """Rename a VAE state dict (no prefix) from layout ``source`` to ``target`` ("ldm" | "diffusers") with
    :data:`VAE_KEY_MAP`, in either direction; mid-attention projection weights are reshaped (LDM 1x1 conv <->
    diffusers Linear). Raises ``WeightsError`` on keys the map does not know."""
    if sorted((source, target)) != sorted(_LAYOUTS):
        raise ValueError(f"convert_vae_keys: the layouts are 'ldm' and 'diffusers', got {source!r} -> {target!r}.")
    src, dst = _LAYOUTS.index(source), _LAYOUTS.index(target)
    n_up = _num_levels(state_dict, _UP_LEVEL[src])
    out, unknown = {}, []
    for k, v in state_dict.items():
        for patterns, templates, projection in _VAE_KEY_RULES:
            if m := patterns[src].fullmatch(k):
                break
        else:
            unknown.append(k)
            continue
        names = m.groupdict()
        if "up" in names:
            names["up"] = str(n_up - 1 - int(names["up"]))
        if "res" in names:
            names["res"] = names["res"].replace(_SHORTCUT[src], _SHORTCUT[dst])
        if projection and names["w"] == "weight":
            v = _projection_weight(v, to_linear=target == "diffusers")
        out[templates[dst].format(**names)] = v
    if unknown:
        raise WeightsError(f"VAE weights ({_LAYOUT_NAMES[src]} layout): unknown keys {format_key_list(unknown)}.")
    return out


def vae_ldm_to_diffusers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an LDM-layout VAE state dict (no prefix) to diffusers ``AutoencoderKL`` names.

    Mid-block attention 1x1 convs become Linear weights (squeezed). Raises ``WeightsError`` on keys it does
    not know.
    """
    return convert_vae_keys(state_dict, "ldm", "diffusers")


def vae_diffusers_to_ldm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`vae_ldm_to_diffusers` (mid attention Linear weights become 1x1 convs)."""
    return convert_vae_keys(state_dict, "diffusers", "ldm")


def vae_state_dict_to_diffusers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Normalise VAE weights of any supported layout to diffusers ``AutoencoderKL`` names.

    Strips one known prefix (``vae_model.``, ``first_stage_model.``, ``vae.``), detects the layout (LDM:
    ``encoder.down.0.block.0...``; diffusers: ``encoder.down_blocks.0.resnets.0...``, old attention names
    ``query/key/value/proj_attn`` accepted) and drops nothing else: foreign keys raise ``WeightsError``.
    """
    sd = dict(state_dict)
    for p in _VAE_PREFIXES:
        if sd and all(k.startswith(p) for k in sd):
            sd = {k[len(p):]: v for k, v in sd.items()}
            break
    if any(k.startswith("encoder.down.") or k.startswith("decoder.up.") for k in sd):
        return vae_ldm_to_diffusers(sd)
    if any(k.startswith("encoder.down_blocks.") for k in sd):
        out = {}
        for k, v in sd.items():
            m = re.fullmatch(r"(.*\.attentions\.0\.)(query|key|value|proj_attn)\.(weight|bias)", k)
            if m:
                k = f"{m.group(1)}{_OLD_DIFF_ATTN[m.group(2)]}.{m.group(3)}"
                if v.dim() == 4:
                    v = v[:, :, 0, 0]
            out[k] = v
        return out
    raise WeightsError(
        "These weights are not an SD VAE (no 'encoder.down.*' or 'encoder.down_blocks.*' keys; first keys: "
        f"{format_key_list(list(sd)[:5])}). Pass the VAE file ComfyUI keeps in models/vae (SD 1.x/2.x VAE)."
    )


# ----------------------------------------------------------------------------------------------------------------
# Pixel space
# ----------------------------------------------------------------------------------------------------------------
class PixelCodec(LatentCodec):
    """Pixel space as a "latent" space, for the small demo model.

    encode: area-resize to ``image_size``, then ``2x - 1`` (no sampling, ``sample``/``generator`` ignored);
    decode: ``clamp((x + 1) / 2, 0, 1)``. Latents: (B, 3, image_size, image_size). Differentiable.
    """

    kind = "pixel"

    def __init__(self, image_size: int = 32, channels: int = 3):
        super().__init__()
        if channels != 3:
            raise ValueError(f"PixelCodec: only RGB (channels=3) is supported, got channels={channels}.")
        if image_size < 1:
            raise ValueError(f"PixelCodec: image_size must be >= 1, got {image_size}.")
        self.image_size = int(image_size)
        self.latent_size = int(image_size)
        self.latent_channels = int(channels)

    def config_dict(self) -> dict:
        return {"kind": self.kind, "image_size": self.image_size, "channels": self.latent_channels}

    def encode(self, images: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None):
        _check_images(images, "PixelCodec")
        return resize_square(images, self.image_size) * 2.0 - 1.0

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return ((latents + 1.0) / 2.0).clamp(0.0, 1.0)


def build_codec(config: Mapping) -> LatentCodec:
    """A codec (random / uninitialised weights) from its ``config_dict()``."""
    kind = config.get("kind")
    if kind == "sd_vae":
        return SDVAECodec(SDVAEConfig.from_dict(config["vae"]),
                          scale_factor=config.get("scale_factor", SD_VAE_SCALE_FACTOR),
                          image_size=config.get("image_size"))
    if kind == "pixel":
        return PixelCodec(image_size=config.get("image_size", 32), channels=config.get("channels", 3))
    raise ValueError(f"Unknown codec kind {kind!r} in the model config; expected 'sd_vae' or 'pixel'.")
