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
known extras                    reported and skipped: ``model_ema.*`` (EMA copy of the UNet),
                                ``logvar``, ``lvlb_weights`` (training-only LDM buffers)
==============================  ===============================================================

Any other key is an error unless ``allow_extra_keys`` (``--allow-extra-keys``); the official loader uses
``strict=False`` and so ignores extras silently, which would hide a wrong file.

Prompts: the official refinement always encodes its prompts. The converter encodes the refinement pair and
the novel-view demo pair with the text tower (``--text-encoder`` or the checkpoint's ``clip_model.model.*``)
and a CLIP tokenizer it finds itself (:func:`~magicboost_core.model.text_encoder.find_tokenizer`) unless one is
given; when either is missing it stops with an error naming what to pass. Zero embeddings only with
``allow_zero_prompts`` (``--allow-zero-prompts``), and such a model is refused for refinement.

VAE / CLIP-vision / text weights missing from the checkpoint come from the files ComfyUI users keep
(``models/vae``, ``models/clip_vision``, an SD-2.1 text encoder). The input is read with
``torch.load(weights_only=True)`` (or safetensors): a pickle that carries code is refused.
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
    CONTEXT_LENGTH, NOVEL_VIEW_NEGATIVE_PROMPT, NOVEL_VIEW_PROMPT, REFINE_NEGATIVE_PROMPT, REFINE_PROMPT,
    CLIPTextSpec, TextEncoderError, encode_prompts_from_state_dict, find_tokenizer,
)
from .weights import WeightsError, format_key_list, load_weights_file

__all__ = ["ConvertError", "ConversionReport", "convert_official_checkpoint", "split_official_state_dict",
           "infer_text_spec", "UNET_PREFIX", "VAE_PREFIXES", "VISUAL_PREFIX", "CLIP_PREFIX", "KNOWN_EXTRA_KEYS",
           "describe_extra_keys"]

log = logging.getLogger(__name__)

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIXES = ("vae_model.", "first_stage_model.")
CLIP_PREFIX = "clip_model.model."
VISUAL_PREFIX = CLIP_PREFIX + "visual."
_TEXT_KEY = re.compile(
    r"(token_embedding\.weight|positional_embedding|text_projection|logit_scale|attn_mask|ln_final\.(weight|bias)"
    r"|transformer\.resblocks\.\d+\..+)"
)


#: Keys of training checkpoints that carry nothing the model needs (prefixes end with "."; others are exact).
KNOWN_EXTRA_KEYS = ("model_ema.", "logvar", "lvlb_weights")


def _is_known_extra(key: str) -> bool:
    return any(key.startswith(k) if k.endswith(".") else key == k for k in KNOWN_EXTRA_KEYS)


def describe_extra_keys(keys) -> str:
    """'model_ema.* (3), logvar (1)': skipped keys grouped by their first name part."""
    groups: dict[str, int] = {}
    for k in keys:
        g = k.split(".", 1)[0] + (".*" if "." in k else "")
        groups[g] = groups.get(g, 0) + 1
    return ", ".join(f"{g} ({n})" for g, n in sorted(groups.items()))


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
    extras: list = field(default_factory=list)


def split_official_state_dict(sd: dict, allow_extra_keys: bool = False) -> OfficialParts:
    """Partition an official state dict by prefix. Known extras (:data:`KNOWN_EXTRA_KEYS`) go to
    ``parts.extras`` (skipped); any other foreign key raises :class:`ConvertError` naming it, unless
    ``allow_extra_keys`` (then it is skipped too)."""
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
        elif _is_known_extra(k):
            parts.extras.append(k)
        else:
            unknown.append(k)
    if unknown and not allow_extra_keys:
        raise ConvertError(
            f"{len(unknown)} key(s) that belong to no known part of a Magic-Boost checkpoint: "
            f"{format_key_list(unknown, 10)}. Expected only model.diffusion_model.*, vae_model.*, "
            "clip_model.model.*, the 12 schedule buffers and training extras (model_ema.*, logvar); is this the "
            "right file? If it is, pass --allow-extra-keys to skip them."
        )
    parts.extras.extend(unknown)
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
                                text_spec: CLIPTextSpec | None = None, allow_extra_keys: bool = False,
                                allow_zero_prompts: bool = False) -> ConversionReport:
    """Convert ``checkpoint`` (official .pt/.ckpt or .safetensors) into a model folder ``out_dir``.

    Args:
        vae, clip_vision: companion weight files used when the checkpoint lacks those parts (or to override).
        text_encoder, tokenizer: text-tower file (SD-2.1 text_encoder or OpenCLIP ViT-H; default: the checkpoint's
            own ``clip_model.model.*`` tower) and a tokenizer (folder with vocab.json + merges.txt or a CLIP BPE
            file; default: found by :func:`find_tokenizer`). The refinement and novel-view prompt embeddings are
            computed with them; a missing part is an error.
        allow_extra_keys: skip unknown keys instead of refusing the file (known extras are always skipped).
        allow_zero_prompts: when the text tower or the tokenizer is missing, store zero prompt embeddings
            (a warning) instead of failing; refinement refuses such a model.
        num_head_channels: UNet attention head width (default: inferred, 64 for the released model).
        dtype: store tensors in this dtype (default: as in the sources).
        vae_config / vision_spec / text_spec: architecture overrides (default: SD VAE, inferred from weights).
    Returns: a :class:`ConversionReport`; ``report.output`` is the written folder. Never overwrites.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty; choose a new output folder.")
    report = ConversionReport()
    ckpt = Path(checkpoint)
    parts = _read_official_parts(ckpt, allow_extra_keys, report)
    unet = _convert_unet(parts.unet, num_head_channels, report)
    vae_sd = _part(parts.vae, vae, "VAE", "--vae", report)
    codec = _convert_part("VAE", lambda: SDVAECodec.from_state_dict(vae_sd, vae_config or SDVAEConfig()))
    vis_sd = _part(parts.visual, clip_vision, "CLIP vision", "--clip-vision", report)
    encoder = _convert_part("CLIP vision", lambda: CLIPImageEncoder.from_state_dict(vis_sd, vision_spec))
    emb, text_source = _prompt_embeddings(parts.text, text_encoder, tokenizer, text_spec, unet.config.context_dim,
                                          allow_zero_prompts, report)
    info = ModelInfo(name=name or ckpt.stem, kind="official", codec="sd_vae", image_size=codec.image_size,
                     default_preset=default_preset, prompt=REFINE_PROMPT, negative_prompt=REFINE_NEGATIVE_PROMPT,
                     text_source=text_source, notes="converted from " + ckpt.name,
                     novel_view_prompt=NOVEL_VIEW_PROMPT, novel_view_negative_prompt=NOVEL_VIEW_NEGATIVE_PROMPT)
    model = _convert_part(None, lambda: MultiViewModel(unet, codec, encoder, emb[0], emb[1], info,
                                                       novel_view_text=(emb[2], emb[3])))
    report.output = model.save_pretrained(out, dtype=dtype)
    report.note(f"wrote {report.output}")
    return report


def _read_official_parts(ckpt: Path, allow_extra_keys: bool, report: ConversionReport) -> OfficialParts:
    """Load the checkpoint file, split it into parts, note the skipped keys and check the schedule buffers."""
    try:
        sd = load_weights_file(ckpt, "official checkpoint")
    except WeightsError as e:
        raise ConvertError(str(e)) from e
    parts = split_official_state_dict(sd, allow_extra_keys=allow_extra_keys)
    del sd
    if parts.extras:
        report.note(f"skipped {len(parts.extras)} key(s) the model does not use: {describe_extra_keys(parts.extras)}.")
    _check_schedule(parts.schedule, report)
    return parts


def _convert_unet(unet_weights: dict, num_head_channels: int | None, report: ConversionReport):
    """The multi-view UNet from the checkpoint's ``model.diffusion_model.*`` weights (config inferred)."""
    from .convert_unet import convert_official_unet, infer_unet_config
    from .unet import MultiViewUNet
    from .weights import build_and_load

    try:
        cfg = infer_unet_config(unet_weights, UNET_PREFIX, num_head_channels=num_head_channels)
        unet_sd = convert_official_unet(unet_weights, UNET_PREFIX)
    except ValueError as e:
        raise ConvertError(f"UNet: {e}") from e
    unet = build_and_load(lambda: MultiViewUNet(cfg), unet_sd, "UNet")
    report.sources["unet"] = "checkpoint"
    report.note(f"UNet: {sum(p.numel() for p in unet.parameters()):,} parameters, model_channels "
                f"{cfg.model_channels}, head width {cfg.num_head_channels}.")
    return unet


def _convert_part(what: str | None, build):
    """``build()``, a ``WeightsError`` turned into a :class:`ConvertError` ("what: message")."""
    try:
        return build()
    except WeightsError as e:
        raise ConvertError(f"{what}: {e}" if what else str(e)) from e


def _prompt_embeddings(ckpt_text: dict, text_encoder, tokenizer, text_spec, context_dim: int,
                       allow_zero_prompts: bool, report: ConversionReport) -> tuple[torch.Tensor, str]:
    """(4, 77, D) embeddings of [refine prompt, refine negative, novel-view prompt, novel-view negative] and
    their source ("clip_text" | "zeros")."""
    prompts = [REFINE_PROMPT, REFINE_NEGATIVE_PROMPT, NOVEL_VIEW_PROMPT, NOVEL_VIEW_NEGATIVE_PROMPT]
    problem = None
    if text_encoder is not None:
        if ckpt_text:
            report.note(f"text: using --text-encoder {text_encoder} instead of the checkpoint's text tower.")
        text_sd, source = load_weights_file(text_encoder, "text encoder"), str(text_encoder)
    elif ckpt_text:
        text_sd, source = ckpt_text, "checkpoint"
    else:
        text_sd, source = None, None
        problem = ("the checkpoint has no clip_model.model.* text tower; pass --text-encoder FILE (the SD-2.1 text "
                   "encoder, e.g. ComfyUI models/text_encoders/sd2.1 'open_clip' weights or "
                   "stable-diffusion-2-1-base/text_encoder/model.safetensors)")
    tok = None
    if problem is None:
        try:
            tok, how = find_tokenizer(tokenizer)
            report.note(f"tokenizer: {tok} ({how}).")
        except TextEncoderError as e:
            problem = str(e)
    if problem is None:
        try:
            emb = encode_prompts_from_state_dict(text_sd, tok, prompts, text_spec or infer_text_spec(text_sd))
        except (WeightsError, TextEncoderError) as e:
            raise ConvertError(f"text encoder: {e}") from e
        report.sources["text"] = source
        if emb.shape[-1] != context_dim:
            raise ConvertError(f"text embeddings are {emb.shape[-1]}-d but the UNet expects {context_dim}; wrong text "
                               "encoder (Magic-Boost uses the SD-2.1 / OpenCLIP ViT-H text tower).")
        return emb, "clip_text"
    if not allow_zero_prompts:
        raise ConvertError(f"cannot encode the prompts: {problem}. The official refinement always uses its prompts; "
                           "pass --allow-zero-prompts only to build a model for tests (refinement refuses it).")
    report.warn(f"prompt embeddings are ZEROS ({problem}); refinement refuses this model, novel views are weak.")
    return torch.zeros(len(prompts), CONTEXT_LENGTH, context_dim), "zeros"
