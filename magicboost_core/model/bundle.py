"""``MultiViewModel``: everything the refinement needs from the diffusion side, saved as one folder.

Parts: ``unet`` (:class:`~magicboost_core.model.unet.MultiViewUNet`), ``codec`` (latent codec),
``image_encoder`` (image-prompt tokens), ``text`` (the fixed prompts' embeddings: ``text.cond`` and
``text.uncond``, (L, D) each) and ``info`` (:class:`ModelInfo`).

Folder format (``save_pretrained`` / ``from_pretrained``)::

    config.json        {"format": "magicboost-multiview", "format_version": 1, "info": {...},
                        "unet": {...}, "codec": {...}, "image_encoder": {...}, "text": {"length": L, "dim": D}}
    model.safetensors  every tensor, keys prefixed unet. / codec. / image_encoder. / text.

Only safetensors are read, so loading a model never runs code from the file.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from ..validate import load_json_file, readable_error
from .codec import LatentCodec, PixelCodec, build_codec
from .image_encoder import PatchImageEncoder, build_image_encoder
from .text_encoder import REFINE_NEGATIVE_PROMPT, REFINE_PROMPT
from .weights import WeightsError, WeightsFileNotFoundError, build_and_load, load_weights_file

__all__ = [
    "ModelInfo", "MultiViewModel", "ModelFormatError", "DemoModelMissingError", "TextEmbeddings",
    "demo_model_dir", "load_demo_model", "build_demo_model", "default_demo_unet_config", "DEMO_UNET",
    "attach_external_encoders",
    "FORMAT_NAME", "FORMAT_VERSION", "CONFIG_FILE", "WEIGHTS_FILE",
]

FORMAT_NAME = "magicboost-multiview"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@readable_error
class ModelFormatError(WeightsError):
    """A model folder whose config.json is missing, unreadable, or inconsistent with the weights."""


@readable_error
class DemoModelMissingError(WeightsFileNotFoundError):
    """The demo model has not been trained/shipped into ``magicboost_core/assets/demo_model`` yet."""


@dataclass
class ModelInfo:
    """Descriptive facts about a model (stored in config.json under "info").

    ``kind``: "official" (converted Magic-Boost checkpoint) or "demo" (small pixel-space model).
    ``codec``: codec kind ("sd_vae" | "pixel"); ``image_size``: input resolution of the codec (px).
    ``default_preset``: view preset the model was trained for. ``prompt``/``negative_prompt``: the strings
    whose embeddings are ``text.cond``/``text.uncond``; ``text_source`` says where those came from.
    ``refine_profile``: the refinement profile that suits the model (a name of
    :data:`magicboost_core.refine.profiles.PROFILES`; empty = by ``kind``: "official" or "demo") and
    ``refine_settings``: RefineConfig fields the bundle sets on top of it (see ``refine.profiles``).
    """

    name: str = "magic-boost"
    kind: str = "official"
    codec: str = "sd_vae"
    image_size: int = 256
    default_preset: str = "instant3d"
    prompt: str = REFINE_PROMPT
    negative_prompt: str = REFINE_NEGATIVE_PROMPT
    text_source: str = "clip_text"
    notes: str = ""
    novel_view_prompt: str = ""
    novel_view_negative_prompt: str = ""
    refine_profile: str = ""
    refine_settings: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in ("official", "demo"):
            raise ValueError(f"ModelInfo.kind must be 'official' or 'demo', got {self.kind!r}.")

    @classmethod
    def from_dict(cls, d: dict) -> "ModelInfo":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class TextEmbeddings(nn.Module):
    """Buffers ``cond`` and ``uncond``: (L, D) embeddings of the (refinement) prompt and negative prompt; optional
    ``novel_cond`` / ``novel_uncond``: the novel-view demo's pair (models converted from 2026-12 on)."""

    def __init__(self, cond: torch.Tensor, uncond: torch.Tensor, novel_view: tuple | None = None):
        super().__init__()
        pairs = [(cond, uncond)] + ([tuple(novel_view)] if novel_view is not None else [])
        for c, u in pairs:
            if c.dim() != 2 or c.shape != cond.shape or u.shape != cond.shape:
                raise ValueError(
                    f"text embeddings must all be (L, D) with the same shape, got {tuple(c.shape)} and "
                    f"{tuple(u.shape)} (first: {tuple(cond.shape)})."
                )
        self.register_buffer("cond", cond.detach().clone())
        self.register_buffer("uncond", uncond.detach().clone())
        self.has_novel_view = novel_view is not None
        if self.has_novel_view:
            self.register_buffer("novel_cond", novel_view[0].detach().clone())
            self.register_buffer("novel_uncond", novel_view[1].detach().clone())


class MultiViewModel(nn.Module):
    """The multi-view diffusion model with its codec, image encoder and prompt embeddings."""

    def __init__(self, unet: nn.Module, codec: LatentCodec, image_encoder: nn.Module, text_cond: torch.Tensor,
                 text_uncond: torch.Tensor, info: ModelInfo | None = None, novel_view_text: tuple | None = None):
        super().__init__()
        self.unet = unet
        self.codec = codec
        self.image_encoder = image_encoder
        self.text = TextEmbeddings(text_cond, text_uncond, novel_view_text)
        self.info = info or ModelInfo()
        self._check_consistency()

    # ---- facts -------------------------------------------------------------------------------------------------
    def _check_consistency(self) -> None:
        cfg = self.unet.config
        problems = []
        if self.codec.latent_channels != cfg.in_channels:
            problems.append(f"codec latents have {self.codec.latent_channels} channels, UNet "
                            f"in_channels={cfg.in_channels}")
        if self.image_encoder.output_dim != cfg.ip_in_dim:
            problems.append(f"image tokens are {self.image_encoder.output_dim}-d, UNet ip_in_dim={cfg.ip_in_dim}")
        if self.text.cond.shape[-1] != cfg.context_dim:
            problems.append(f"text embeddings are {self.text.cond.shape[-1]}-d, UNet context_dim={cfg.context_dim}")
        if problems:
            raise ModelFormatError("MultiViewModel parts do not fit together: " + "; ".join(problems) + ".")

    @property
    def text_cond(self) -> torch.Tensor:
        return self.text.cond

    @property
    def text_uncond(self) -> torch.Tensor:
        return self.text.uncond

    def novel_view_text(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(cond, uncond) embeddings of the novel-view demo prompts, or None when the model lacks them."""
        return (self.text.novel_cond, self.text.novel_uncond) if self.text.has_novel_view else None

    @property
    def has_prompt_embeddings(self) -> bool:
        """False for a converted model whose prompt embeddings are zeros (converted without a text encoder)."""
        return self.info.text_source != "zeros"

    @property
    def device(self) -> torch.device:
        return self.text.cond.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def config_dict(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "info": asdict(self.info),
            "unet": self.unet.config.to_dict(),
            "codec": self.codec.config_dict(),
            "image_encoder": self.image_encoder.config_dict(),
            "text": {"length": int(self.text.cond.shape[0]), "dim": int(self.text.cond.shape[1]),
                     "novel_view": bool(self.text.has_novel_view)},
        }

    # ---- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict) -> "MultiViewModel":
        """Build the architecture described by a ``config_dict()`` (weights random or uninitialised)."""
        from .config import MultiViewUNetConfig
        from .unet import MultiViewUNet

        _validate_config(config)
        try:
            unet = MultiViewUNet(MultiViewUNetConfig.from_dict(config["unet"]))
            codec = build_codec(config["codec"])
            encoder = build_image_encoder(config["image_encoder"])
            length, dim = int(config["text"]["length"]), int(config["text"]["dim"])
            info = ModelInfo.from_dict(config.get("info", {}))
        except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError, RuntimeError, OverflowError,
                MemoryError) as e:
            if isinstance(e, ModelFormatError):
                raise
            raise ModelFormatError(f"model config is invalid ({type(e).__name__}: {e}); the config.json does not "
                                   "describe a buildable model. Convert or export the model again.") from e
        z = torch.zeros(length, dim)
        novel = (z.clone(), z.clone()) if config["text"].get("novel_view") else None
        return cls(unet, codec, encoder, z, z.clone(), info, novel_view_text=novel)

    # ---- saving / loading --------------------------------------------------------------------------------------
    def save_pretrained(self, directory, overwrite: bool = False, dtype: torch.dtype | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into ``directory`` (created).

        Refuses a directory that exists and is not empty unless ``overwrite=True``. ``dtype`` (e.g.
        ``torch.float16``) converts floating-point tensors on the way out (default: keep).
        """
        from safetensors.torch import save_file

        d = Path(directory)
        if d.exists() and not d.is_dir():
            raise FileExistsError(f"{d} exists and is not a folder; choose another output path.")
        if d.exists() and any(d.iterdir()) and not overwrite:
            raise FileExistsError(f"{d} already exists and is not empty; choose a new folder or pass overwrite=True.")
        d.mkdir(parents=True, exist_ok=True)
        tensors, seen = {}, set()
        for k, v in self.state_dict().items():
            t = v.detach().to("cpu")
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            t = t.contiguous()
            if t.untyped_storage().data_ptr() in seen:  # safetensors refuses shared storage
                t = t.clone()
            seen.add(t.untyped_storage().data_ptr())
            tensors[k] = t
        save_file(tensors, str(d / WEIGHTS_FILE),
                  metadata={"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)})
        (d / CONFIG_FILE).write_text(json.dumps(self.config_dict(), indent=2))
        return d

    @classmethod
    def from_pretrained(cls, path, device="cpu", dtype: torch.dtype = torch.float32) -> "MultiViewModel":
        """Load a folder written by :meth:`save_pretrained` (or its ``model.safetensors``; config.json is read
        from the same folder). Errors name the problem: missing folder/file, corrupt or non-safetensors
        weights, missing keys, shapes that do not fit the config."""
        p = Path(path)
        if not p.exists():
            raise WeightsFileNotFoundError(
                f"model not found: {p}. Give the folder written by 'magicboost convert' (config.json + "
                "model.safetensors)."
            )
        if p.is_dir():
            folder, weights = p, p / WEIGHTS_FILE
        else:
            if p.suffix.lower() != ".safetensors":
                raise ModelFormatError(
                    f"{p} is not a .safetensors model file. Official .pt checkpoints must be converted first: "
                    "magicboost convert OFFICIAL.pt OUT_DIR"
                )
            folder, weights = p.parent, p
        cfg_path = folder / CONFIG_FILE
        if not cfg_path.is_file():
            raise WeightsFileNotFoundError(
                f"{cfg_path} not found; a model folder needs config.json next to {weights.name}.")
        if not weights.is_file():
            raise WeightsFileNotFoundError(f"{weights} not found; the model folder {folder} has no weights file.")
        try:
            config = load_json_file(cfg_path, "model config", "config")
        except ValueError as e:
            raise ModelFormatError(f"{e} The model folder is damaged; convert or export the model again.") from None
        try:
            _validate_config(config)
        except ModelFormatError as e:
            raise ModelFormatError(f"{cfg_path}: {e}") from None
        sd = load_weights_file(weights, "model")
        try:
            model = build_and_load(lambda: cls.from_config(config), sd, f"model {folder}", dtype=dtype)
        except ModelFormatError as e:
            raise ModelFormatError(e if str(cfg_path) in str(e) else f"{cfg_path}: {e}") from None
        model.text.cond = model.text.cond.float()
        model.text.uncond = model.text.uncond.float()
        if model.text.has_novel_view:
            model.text.novel_cond = model.text.novel_cond.float()
            model.text.novel_uncond = model.text.novel_uncond.float()
        return model.to(device).eval()


def _validate_config(config) -> None:
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        fmt = config.get("format") if isinstance(config, dict) else None
        raise ModelFormatError(
            f"config is not a {FORMAT_NAME} config (format={fmt!r}); "
            "is this folder a converted Magic-Boost model?"
        )
    version = config.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ModelFormatError(f"format_version must be a whole number, got {version!r}; the config.json is damaged.")
    if version > FORMAT_VERSION:
        raise ModelFormatError(
            f"model format version {config.get('format_version')} is newer than this code supports ({FORMAT_VERSION}); "
            "update the node pack."
        )
    missing = [k for k in ("unet", "codec", "image_encoder", "text") if k not in config]
    if missing:
        raise ModelFormatError(f"model config lacks the section(s) {missing}.")
    problems = [f"section {k!r} must be an object, got {type(config[k]).__name__}"
                for k in ("unet", "codec", "image_encoder", "text", "info") if k in config and
                not isinstance(config[k], dict)]
    for key in ("unet", "codec", "image_encoder", "text"):
        if isinstance(config[key], dict):
            problems += _bad_numbers(config[key], key)
    if problems:
        raise ModelFormatError("model config is invalid: " + "; ".join(problems[:8]) + ". The config.json was edited "
                               "or damaged; convert or export the model again.")


_MAX_CONFIG_INT = 1 << 16  # no size of a real model comes near it; larger values only exhaust memory


def _bad_numbers(value, where: str) -> list[str]:
    """Problems with the numbers of one config section: sizes are whole numbers in [1, 65536] (0 allowed for
    counts), other numbers finite; text where a number belongs is reported too."""
    import math

    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _bad_numbers(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _bad_numbers(v, f"{where}[{i}]")
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if not 0 <= value <= _MAX_CONFIG_INT:
            out.append(f"{where} = {value} is outside [0, {_MAX_CONFIG_INT}]")
    elif isinstance(value, float):
        if not math.isfinite(value):
            out.append(f"{where} = {value} is not a finite number")
    elif isinstance(value, str):
        if value.strip().lstrip("-").replace(".", "", 1).isdigit():
            out.append(f"{where} = {value!r} is text; write the number without quotes")
    return out


def attach_external_encoders(model: MultiViewModel, vae_state_dict=None, clip_state_dict=None) -> MultiViewModel:
    """Replace the model's VAE codec and/or CLIP image encoder with weights loaded elsewhere (e.g. ComfyUI's
    Load VAE / Load CLIP Vision), in place; returns ``model``.

    ``vae_state_dict``: SD VAE weights in LDM or diffusers layout (the model's codec must be an SD VAE codec;
    its architecture and image size are kept). ``clip_state_dict``: CLIP vision weights (HF/ComfyUI or
    OpenCLIP layout); their width must equal the UNet's ``ip_in_dim`` (ViT-H/14: 1280). The new parts take the
    device and dtype of the model. Raises ``WeightsError`` / ``ModelFormatError`` when the weights do not fit.
    """
    from .codec import SDVAECodec
    from .image_encoder import CLIPImageEncoder, infer_clip_vision_spec

    p = next(model.unet.parameters())
    if vae_state_dict is not None:
        old = model.codec
        if not isinstance(old, SDVAECodec):
            raise ModelFormatError(f"this model uses a {old.kind!r} codec; an external VAE cannot replace it.")
        new = SDVAECodec.from_state_dict(vae_state_dict, old.config, scale_factor=old.scale_factor,
                                         image_size=old.image_size)
        model.codec = new.to(device=p.device, dtype=p.dtype).eval()
    if clip_state_dict is not None:
        if not isinstance(model.image_encoder, CLIPImageEncoder):
            raise ModelFormatError("this model does not use a CLIP image encoder; an external one cannot replace it.")
        spec = infer_clip_vision_spec(clip_state_dict)
        if spec.hidden_size != model.unet.config.ip_in_dim:
            raise ModelFormatError(
                f"the CLIP vision model is {spec.hidden_size} wide but the UNet expects "
                f"{model.unet.config.ip_in_dim}-d image tokens; use OpenCLIP ViT-H/14 (CLIP-ViT-H-14-laion2B, 1280 "
                "wide)."
            )
        new = CLIPImageEncoder.from_state_dict(clip_state_dict, spec)
        model.image_encoder = new.to(device=p.device, dtype=p.dtype).eval()
    model._check_consistency()
    return model


# ---- the demo model ---------------------------------------------------------------------------------------------
def demo_model_dir() -> Path:
    """``magicboost_core/assets/demo_model``: where the shipped demo model lives."""
    return Path(__file__).resolve().parents[1] / "assets" / "demo_model"


def load_demo_model(device="cpu", dtype: torch.dtype = torch.float32) -> MultiViewModel:
    """The shipped demo model; raises :class:`DemoModelMissingError` when it is not there yet."""
    d = demo_model_dir()
    if not (d / CONFIG_FILE).is_file() or not (d / WEIGHTS_FILE).is_file():
        raise DemoModelMissingError(
            f"the demo model is not installed: expected {d}/{CONFIG_FILE} and {WEIGHTS_FILE}. It is produced by "
            "the demo-model trainer (magicboost_core.train) and shipped with the package; reinstall the pack or "
            "train it."
        )
    return MultiViewModel.from_pretrained(d, device=device, dtype=dtype)


#: The demo model's UNet, as shipped in ``assets/demo_model`` (config.json "unet"): pixel space (3 channels),
#: patch-token IP path, tiny widths, v-prediction (issue #13: a model this small samples from noise only with
#: v; the official model and :class:`~magicboost_core.model.config.MultiViewUNetConfig`'s default are eps). The
#: one source of the demo architecture: :func:`build_demo_model` and the trainer (whose ``TrainConfig.unet``
#: holds overrides of it) both build from it; ``ip_in_dim`` = 3 * patch².
DEMO_UNET = dict(
    in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 1, 2), num_res_blocks=1,
    attention_resolutions=(2, 4), num_head_channels=32, context_dim=64, ip_tokens=8, resampler_depth=1,
    resampler_heads=2, resampler_dim_head=16, resampler_ff_mult=2, camera_dim=10,
    prediction_type="v_prediction",
)


def default_demo_unet_config(patch: int = 8, **overrides):
    """The demo UNet config (:data:`DEMO_UNET`, ``ip_in_dim = 3 * patch²``) with ``overrides`` (config fields)."""
    from .config import MultiViewUNetConfig

    return MultiViewUNetConfig(**{**DEMO_UNET, "ip_in_dim": 3 * patch * patch, **overrides})


def build_demo_model(config=None, image_size: int = 32, patch: int = 8,
                     name: str = "magic-boost-demo") -> MultiViewModel:
    """The demo architecture with random weights: pixel codec (``image_size`` px, 3 channels), patch image
    encoder (``patch``), a tiny UNet (``config``, default :func:`default_demo_unet_config`) and zero text
    embeddings of shape (1, context_dim)."""
    from .unet import MultiViewUNet

    config = config or default_demo_unet_config(patch)
    if config.in_channels != 3 or config.out_channels != 3:
        raise ValueError(f"demo model: the UNet must have 3 in/out channels (pixel space), got "
                         f"{config.in_channels}/{config.out_channels}.")
    if config.ip_in_dim != 3 * patch * patch:
        raise ValueError(f"demo model: UNet ip_in_dim must be 3*patch^2 = {3 * patch * patch}, got {config.ip_in_dim}.")
    z = torch.zeros(1, config.context_dim)
    info = ModelInfo(name=name, kind="demo", codec="pixel", image_size=image_size, default_preset="instant3d",
                     prompt="", negative_prompt="", text_source="zeros")
    return MultiViewModel(MultiViewUNet(config), PixelCodec(image_size, 3), PatchImageEncoder(image_size, patch),
                          z, z.clone(), info)
