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
_MID_ATTN_LDM_TO_DIFF = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_MID_ATTN_DIFF_TO_LDM = {v: k for k, v in _MID_ATTN_LDM_TO_DIFF.items()}
_OLD_DIFF_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _to_diff(rest: str) -> str:
    return rest.replace("nin_shortcut", "conv_shortcut")


def _to_ldm(rest: str) -> str:
    return rest.replace("conv_shortcut", "nin_shortcut")


def _num_levels(keys, pattern: str) -> int:
    idx = [int(m.group(1)) for k in keys if (m := re.match(pattern, k))]
    if not idx:
        raise WeightsError("VAE weights: no up/down blocks found; is this an SD VAE?")
    return max(idx) + 1


def vae_ldm_to_diffusers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an LDM-layout VAE state dict (no prefix) to diffusers ``AutoencoderKL`` names.

    Mid-block attention 1x1 convs become Linear weights (squeezed). Raises ``WeightsError`` on keys it does
    not know.
    """
    n_up = _num_levels(state_dict, r"decoder\.up\.(\d+)\.")
    out, unknown = {}, []
    for k, v in state_dict.items():
        new = None
        if k.startswith(("quant_conv.", "post_quant_conv.")):
            new = k
        elif m := re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out)\.(weight|bias)", k):
            new = k
        elif m := re.fullmatch(r"(encoder|decoder)\.norm_out\.(weight|bias)", k):
            new = f"{m.group(1)}.conv_norm_out.{m.group(2)}"
        elif m := re.fullmatch(r"encoder\.down\.(\d+)\.block\.(\d+)\.(.+)", k):
            new = f"encoder.down_blocks.{m.group(1)}.resnets.{m.group(2)}.{_to_diff(m.group(3))}"
        elif m := re.fullmatch(r"encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)", k):
            new = f"encoder.down_blocks.{m.group(1)}.downsamplers.0.conv.{m.group(2)}"
        elif m := re.fullmatch(r"decoder\.up\.(\d+)\.block\.(\d+)\.(.+)", k):
            i = n_up - 1 - int(m.group(1))
            new = f"decoder.up_blocks.{i}.resnets.{m.group(2)}.{_to_diff(m.group(3))}"
        elif m := re.fullmatch(r"decoder\.up\.(\d+)\.upsample\.conv\.(weight|bias)", k):
            new = f"decoder.up_blocks.{n_up - 1 - int(m.group(1))}.upsamplers.0.conv.{m.group(2)}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid\.block_([12])\.(.+)", k):
            new = f"{m.group(1)}.mid_block.resnets.{int(m.group(2)) - 1}.{_to_diff(m.group(3))}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)", k):
            new = f"{m.group(1)}.mid_block.attentions.0.{_MID_ATTN_LDM_TO_DIFF[m.group(2)]}.{m.group(3)}"
            if m.group(2) != "norm" and m.group(3) == "weight" and v.dim() == 4:
                v = v[:, :, 0, 0]
        if new is None:
            unknown.append(k)
        else:
            out[new] = v
    if unknown:
        raise WeightsError(f"VAE weights (LDM layout): unknown keys {format_key_list(unknown)}.")
    return out


def vae_diffusers_to_ldm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`vae_ldm_to_diffusers` (mid attention Linear weights become 1x1 convs)."""
    n_up = _num_levels(state_dict, r"decoder\.up_blocks\.(\d+)\.")
    out, unknown = {}, []
    for k, v in state_dict.items():
        new = None
        if k.startswith(("quant_conv.", "post_quant_conv.")) or re.fullmatch(r"(encoder|decoder)\.conv_(in|out)\.\w+",
                                                                            k):
            new = k
        elif m := re.fullmatch(r"(encoder|decoder)\.conv_norm_out\.(weight|bias)", k):
            new = f"{m.group(1)}.norm_out.{m.group(2)}"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k):
            new = f"encoder.down.{m.group(1)}.block.{m.group(2)}.{_to_ldm(m.group(3))}"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)", k):
            new = f"encoder.down.{m.group(1)}.downsample.conv.{m.group(2)}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k):
            new = f"decoder.up.{n_up - 1 - int(m.group(1))}.block.{m.group(2)}.{_to_ldm(m.group(3))}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", k):
            new = f"decoder.up.{n_up - 1 - int(m.group(1))}.upsample.conv.{m.group(2)}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.([01])\.(.+)", k):
            new = f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.{_to_ldm(m.group(3))}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\."
                               r"(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)", k):
            new = f"{m.group(1)}.mid.attn_1.{_MID_ATTN_DIFF_TO_LDM[m.group(2)]}.{m.group(3)}"
            if m.group(2) != "group_norm" and m.group(3) == "weight" and v.dim() == 2:
                v = v[:, :, None, None]
        if new is None:
            unknown.append(k)
        else:
            out[new] = v
    if unknown:
        raise WeightsError(f"VAE weights (diffusers layout): unknown keys {format_key_list(unknown)}.")
    return out


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
