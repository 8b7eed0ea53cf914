"""Official Magic-Boost checkpoint -> a :class:`~magicboost_core.model.bundle.MultiViewModel` folder.

The official file is a ``LatentDiffusionInterface.state_dict()`` (reference §3):

==============================  ===============================================================
prefix                          becomes
==============================  ===============================================================
``model.diffusion_model.``      the multi-view UNet (``convert_official_unet``)
``vae_model.``                  the SD VAE codec (``first_stage_model.`` accepted too)
``clip_model.model.visual.``    the CLIP ViT-H image encoder
``clip_model.model.`` (text)    embeddings of the fixed prompts (needs a tokenizer folder)
12 schedule buffers             checked against our schedule (warning if different), dropped
==============================  ===============================================================

Any other key is an error. VAE / CLIP-vision / text weights missing from the checkpoint come from the
files ComfyUI users keep (``models/vae``, ``models/clip_vision``, an SD-2.1 text encoder). The input is
read with ``torch.load(weights_only=True)`` (or safetensors): a pickle that carries code is refused.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .bundle import ModelInfo, MultiViewModel
from .codec import SDVAECodec, SDVAEConfig
from .image_encoder import CLIPImageEncoder, CLIPVisionSpec
from .schedule import SCHEDULE_BUFFER_NAMES, official_schedule_buffers
from .text_encoder import (
    CONTEXT_LENGTH, REFINE_NEGATIVE_PROMPT, REFINE_PROMPT, CLIPTextSpec, encode_prompts_from_state_dict,
)
from .weights import WeightsError, format_key_list, load_weights_file

__all__ = ["ConvertError", "ConversionReport", "convert_official_checkpoint", "split_official_state_dict",
           "infer_text_spec", "UNET_PREFIX", "VAE_PREFIXES", "VISUAL_PREFIX", "CLIP_PREFIX"]

log = logging.getLogger(__name__)

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIXES = ("vae_model.", "first_stage_model.")
CLIP_PREFIX = "clip_model.model."
VISUAL_PREFIX = CLIP_PREFIX + "visual."
_TEXT_KEY = re.compile(
    r"(token_embedding\.weight|positional_embedding|text_projection|logit_scale|attn_mask|ln_final\.(weight|bias)"
    r"|transformer\.resblocks\.\d+\..+)"
)


class ConvertError(ValueError):
    """The checkpoint (or a companion file) cannot be converted; the message says why and what to pass."""


@dataclass
class ConversionReport:
    """What the conversion did: where each part came from, notes and warnings (also logged)."""

    output: Path | None = None
    sources: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        log.info(msg)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        log.warning(msg)


@dataclass
class OfficialParts:
    unet: dict
    vae: dict
    visual: dict
    text: dict
    schedule: dict


def split_official_state_dict(sd: dict) -> OfficialParts:
    """Partition an official state dict by prefix; raises :class:`ConvertError` naming foreign keys."""
    parts = OfficialParts({}, {}, {}, {}, {})
    unknown = []
    for k, v in sd.items():
        if k.startswith(UNET_PREFIX):
            parts.unet[k] = v
        elif k.startswith(VAE_PREFIXES):
            parts.vae[k] = v
        elif k.startswith(VISUAL_PREFIX):
            parts.visual[k] = v
        elif k.startswith(CLIP_PREFIX) and _TEXT_KEY.fullmatch(k[len(CLIP_PREFIX):]):
            parts.text[k] = v
        elif k in SCHEDULE_BUFFER_NAMES:
            parts.schedule[k] = v
        else:
            unknown.append(k)
    if unknown:
        raise ConvertError(
            f"{len(unknown)} key(s) that belong to no known part of a Magic-Boost checkpoint: "
            f"{format_key_list(unknown, 10)}. Expected only model.diffusion_model.*, vae_model.*, "
            "clip_model.model.* and the 12 schedule buffers; is this the right file?"
        )
    if not parts.unet:
        raise ConvertError(
            "the checkpoint has no 'model.diffusion_model.*' keys, so it holds no multi-view UNet; give the official "
            "Magic-Boost checkpoint (e.g. magic-boost-4view.pt)."
        )
    return parts


def infer_text_spec(state_dict: dict) -> CLIPTextSpec:
    """Text-tower sizes from weights. OpenCLIP layout (a full tower) uses all blocks but the last; HF layout
    uses all blocks (SD-2.1 ``text_encoder`` already stops at the penultimate one) unless it has 24 (a full
    ViT-H tower). Heads = hidden / 64 (as ViT-H text: 1024 / 16)."""
    tok = [v for k, v in state_dict.items() if k.endswith("token_embedding.weight")]
    if not tok:
        raise ConvertError("text weights without 'token_embedding.weight'; not a CLIP text tower.")
    hf = any(k.endswith("embeddings.token_embedding.weight") for k in state_dict)
    depth = 1 + max((int(m.group(1)) for k in state_dict
                     if (m := re.search(r"(?:resblocks|layers)\.(\d+)\.", k)) and ".visual." not in k), default=-1)
    pos = [v for k, v in state_dict.items() if k.endswith(("positional_embedding", "position_embedding.weight"))]
    fc = [v for k, v in state_dict.items() if k.endswith(("layers.0.mlp.fc1.weight", "resblocks.0.mlp.c_fc.weight"))
          and ".visual." not in k]
    vocab, hidden = tok[0].shape
    used = depth if (hf and depth != 24) else depth - 1
    if used < 1 or not fc or not pos:
        raise ConvertError("the text weights are incomplete (no transformer blocks or position embeddings).")
    return CLIPTextSpec(hidden_size=hidden, num_layers=used, num_heads=max(1, hidden // 64),
                        intermediate_size=fc[0].shape[0], vocab_size=vocab, max_positions=pos[0].shape[0])


def _check_schedule(buffers: dict, report: ConversionReport) -> None:
    ours = official_schedule_buffers()
    for name, value in buffers.items():
        ref = ours[name]
        v = value.detach().double().reshape(-1)
        if v.shape != ref.shape:
            report.warn(f"schedule buffer {name} has shape {tuple(value.shape)}, expected {tuple(ref.shape)}; ignored.")
            continue
        finite = torch.isfinite(ref) & torch.isfinite(v)
        rel = ((v - ref).abs() / ref.abs().clamp(min=1e-8))[finite].max().item() if finite.any() else 0.0
        if rel > 1e-3:
            report.warn(f"schedule buffer {name} differs from the official scaled-linear schedule (max relative "
                        f"difference {rel:.3g}); sampling uses the official schedule regardless.")
    if buffers:
        report.note(f"checked and dropped {len(buffers)} schedule buffer(s).")


def _part(from_ckpt: dict, flag_file, what: str, flag: str, report: ConversionReport) -> dict:
    if flag_file is not None:
        if from_ckpt:
            report.note(f"{what}: using {flag} {flag_file} instead of the checkpoint's own weights.")
        report.sources[what] = str(flag_file)
        return load_weights_file(flag_file, what)
    if from_ckpt:
        report.sources[what] = "checkpoint"
        return from_ckpt
    raise ConvertError(
        f"the checkpoint contains no {what} weights; pass {flag} FILE "
        + ("(the SD 1.x/2.x VAE ComfyUI keeps in models/vae)." if flag == "--vae"
           else "(CLIP-ViT-H-14 from ComfyUI's models/clip_vision).")
    )


def convert_official_checkpoint(checkpoint, out_dir, vae=None, clip_vision=None, text_encoder=None, tokenizer=None,
                                name: str | None = None, num_head_channels: int | None = None,
                                dtype: torch.dtype | None = None, default_preset: str = "instant3d",
                                vae_config: SDVAEConfig | None = None, vision_spec: CLIPVisionSpec | None = None,
                                text_spec: CLIPTextSpec | None = None) -> ConversionReport:
    """Convert ``checkpoint`` (official .pt/.ckpt or .safetensors) into a model folder ``out_dir``.

    Args:
        vae, clip_vision: companion weight files used when the checkpoint lacks those parts (or to override).
        text_encoder, tokenizer: text-tower file (SD-2.1 text_encoder or OpenCLIP ViT-H) and a tokenizer folder
            (vocab.json + merges.txt). With a tokenizer the prompt embeddings are computed from ``text_encoder``
            or the checkpoint's own ``clip_model.model.*`` text tower; without one they are zeros (a warning).
        num_head_channels: UNet attention head width (default: inferred, 64 for the released model).
        dtype: store tensors in this dtype (default: as in the sources).
        vae_config / vision_spec / text_spec: architecture overrides (default: SD VAE, inferred from weights).
    Returns: a :class:`ConversionReport`; ``report.output`` is the written folder. Never overwrites.
    """
    from .convert_unet import convert_official_unet, infer_unet_config
    from .unet import MultiViewUNet
    from .weights import build_and_load

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty; choose a new output folder.")
    if text_encoder is not None and tokenizer is None:
        raise ConvertError("--text-encoder needs --tokenizer DIR (a folder with vocab.json and merges.txt, e.g. "
                           "ComfyUI's comfy/sd1_tokenizer).")
    report = ConversionReport()
    ckpt = Path(checkpoint)
    try:
        sd = load_weights_file(ckpt, "official checkpoint")
    except WeightsError as e:
        raise ConvertError(str(e)) from e
    parts = split_official_state_dict(sd)
    del sd
    _check_schedule(parts.schedule, report)

    # UNet
    try:
        cfg = infer_unet_config(parts.unet, UNET_PREFIX, num_head_channels=num_head_channels)
        unet_sd = convert_official_unet(parts.unet, UNET_PREFIX)
    except ValueError as e:
        raise ConvertError(f"UNet: {e}") from e
    unet = build_and_load(lambda: MultiViewUNet(cfg), unet_sd, "UNet")
    report.sources["unet"] = "checkpoint"
    report.note(f"UNet: {sum(p.numel() for p in unet.parameters()):,} parameters, model_channels "
                f"{cfg.model_channels}, head width {cfg.num_head_channels}.")

    # VAE
    vae_sd = _part(parts.vae, vae, "VAE", "--vae", report)
    try:
        codec = SDVAECodec.from_state_dict(vae_sd, vae_config or SDVAEConfig())
    except WeightsError as e:
        raise ConvertError(f"VAE: {e}") from e

    # CLIP vision
    vis_sd = _part(parts.visual, clip_vision, "CLIP vision", "--clip-vision", report)
    try:
        encoder = CLIPImageEncoder.from_state_dict(vis_sd, vision_spec)
    except WeightsError as e:
        raise ConvertError(f"CLIP vision: {e}") from e

    # Text
    prompts = [REFINE_PROMPT, REFINE_NEGATIVE_PROMPT]
    if tokenizer is not None:
        if text_encoder is not None:
            if parts.text:
                report.note(f"text: using --text-encoder {text_encoder} instead of the checkpoint's text tower.")
            text_sd = load_weights_file(text_encoder, "text encoder")
            report.sources["text"] = str(text_encoder)
        elif parts.text:
            text_sd = parts.text
            report.sources["text"] = "checkpoint"
        else:
            raise ConvertError("--tokenizer was given but there are no text weights: the checkpoint has no "
                               "clip_model.model.* text tower; pass --text-encoder FILE (SD-2.1 text encoder).")
        try:
            emb = encode_prompts_from_state_dict(text_sd, tokenizer, prompts, text_spec or infer_text_spec(text_sd))
        except WeightsError as e:
            raise ConvertError(f"text encoder: {e}") from e
        text_source = "clip_text"
    else:
        if parts.text:
            report.note("text: the checkpoint's text tower is ignored because no --tokenizer was given.")
        report.warn("no tokenizer given: the prompt embeddings are ZEROS, which weakens guidance. Pass --tokenizer "
                    "DIR (ComfyUI: comfy/sd1_tokenizer) and, if the checkpoint has no text tower, --text-encoder FILE.")
        emb = torch.zeros(2, CONTEXT_LENGTH, cfg.context_dim)
        text_source = "zeros"
    if emb.shape[-1] != cfg.context_dim:
        raise ConvertError(f"text embeddings are {emb.shape[-1]}-d but the UNet expects {cfg.context_dim}; wrong "
                           "text encoder (Magic-Boost uses the SD-2.1 / OpenCLIP ViT-H text tower).")

    info = ModelInfo(name=name or ckpt.stem, kind="official", codec="sd_vae", image_size=codec.image_size,
                     default_preset=default_preset, prompt=prompts[0], negative_prompt=prompts[1],
                     text_source=text_source, notes="converted from " + ckpt.name)
    try:
        model = MultiViewModel(unet, codec, encoder, emb[0], emb[1], info)
    except WeightsError as e:
        raise ConvertError(str(e)) from e
    report.output = model.save_pretrained(out, dtype=dtype)
    report.note(f"wrote {report.output}")
    return report
