"""Official Magic-Boost UNet weights (LDM names, prefix ``model.diffusion_model.``) -> ``MultiViewUNet`` names.

The official UNet uses the original SD-2.1 LDM naming (``input_blocks.i.j``, ``middle_block``,
``output_blocks``, ``out``) plus ``camera_embed.*``, ``image_embed.*`` (resampler) and
``attn2.to_k_ip/to_v_ip``.  Ours is a diffusers ``UNet2DConditionModel`` under ``unet.`` (camera MLP =
``unet.class_embedding``; ``to_k_ip``/``to_v_ip`` live in the attn2 processor) and the resampler under
``image_embed.`` with the official names.

The map is generated from the config by walking the LDM topology (the same channel arithmetic the
official constructor uses); ``convert_official_unet`` infers that config from the weights' shapes, so it
needs no yaml.  Tensors are passed through unchanged (no dtype cast, no copy).
"""
from __future__ import annotations

import re


from .config import MultiViewUNetConfig

__all__ = ["UnknownKeyError", "IGNORED_OFFICIAL_UNET_KEYS", "official_unet_key_map", "convert_official_unet",
           "infer_unet_config"]

OFFICIAL_UNET_PREFIX = "model.diffusion_model."
# Official UNet keys dropped on purpose.  None: every official UNet tensor has a home.
IGNORED_OFFICIAL_UNET_KEYS: tuple = ()

_WB = ("weight", "bias")
_RESBLOCK = [("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("emb_layers.1", "time_emb_proj"),
             ("out_layers.0", "norm2"), ("out_layers.3", "conv2")]
_TRANSFORMER = (
    [(f"{m}.{p}", f"{m}.{p}") for m in ("norm", "proj_in", "proj_out") for p in _WB]
    + [(f"transformer_blocks.0.attn1.{m}.weight", f"transformer_blocks.0.attn1.{m}.weight")
       for m in ("to_q", "to_k", "to_v")]
    + [(f"transformer_blocks.0.attn1.to_out.0.{p}", f"transformer_blocks.0.attn1.to_out.0.{p}") for p in _WB]
    + [(f"transformer_blocks.0.attn2.{m}.weight", f"transformer_blocks.0.attn2.{m}.weight")
       for m in ("to_q", "to_k", "to_v")]
    + [(f"transformer_blocks.0.attn2.{m}.weight", f"transformer_blocks.0.attn2.processor.{m}.weight")
       for m in ("to_k_ip", "to_v_ip")]
    + [(f"transformer_blocks.0.attn2.to_out.0.{p}", f"transformer_blocks.0.attn2.to_out.0.{p}") for p in _WB]
    + [(f"transformer_blocks.0.{m}.{p}", f"transformer_blocks.0.{m}.{p}")
       for m in ("ff.net.0.proj", "ff.net.2", "norm1", "norm2", "norm3") for p in _WB]
)


class UnknownKeyError(ValueError):
    """State-dict keys that have no place in the multi-view UNet.  ``.keys`` lists all of them."""

    def __init__(self, keys, context: str = ""):
        self.keys = sorted(keys)
        shown = ", ".join(self.keys[:50]) + (f", ... ({len(self.keys)} in all)" if len(self.keys) > 50 else "")
        super().__init__(f"{len(self.keys)} unknown UNet key(s){context}: {shown}. Is this an official Magic-Boost "
                         f"UNet state dict (keys 'model.diffusion_model.*' in LDM naming)?")


def _pairs(official: str, ours: str, leaves) -> dict:
    return {f"{official}.{a}": f"{ours}.{b}" for a, b in leaves}


def _resblock(official: str, ours: str, ch_in: int, ch_out: int) -> dict:
    leaves = [(f"{a}.{p}", f"{b}.{p}") for a, b in _RESBLOCK for p in _WB]
    if ch_in != ch_out:
        leaves += [(f"skip_connection.{p}", f"conv_shortcut.{p}") for p in _WB]
    return _pairs(official, ours, leaves)


def official_unet_key_map(config: MultiViewUNetConfig) -> dict:
    """Every official UNet key (without prefix) -> our ``MultiViewUNet.state_dict()`` key."""
    cfg = config
    km = {}
    km.update(_pairs("time_embed", "unet.time_embedding", [(f"0.{p}", f"linear_1.{p}") for p in _WB]
                     + [(f"2.{p}", f"linear_2.{p}") for p in _WB]))
    km.update(_pairs("camera_embed", "unet.class_embedding", [(f"0.{p}", f"linear_1.{p}") for p in _WB]
                     + [(f"2.{p}", f"linear_2.{p}") for p in _WB]))
    km.update(_pairs("input_blocks.0.0", "unet.conv_in", [(p, p) for p in _WB]))

    mc = cfg.model_channels
    nrb = cfg.num_res_blocks
    last = len(cfg.channel_mult) - 1
    ch = mc
    skip_chans = [mc]
    i = 1
    for level, mult in enumerate(cfg.channel_mult):
        for j in range(nrb):
            out = mc * mult
            km.update(_resblock(f"input_blocks.{i}.0", f"unet.down_blocks.{level}.resnets.{j}", ch, out))
            if cfg.level_has_attention(level):
                km.update(_pairs(f"input_blocks.{i}.1", f"unet.down_blocks.{level}.attentions.{j}", _TRANSFORMER))
            ch = out
            skip_chans.append(ch)
            i += 1
        if level != last:
            km.update(_pairs(f"input_blocks.{i}.0.op", f"unet.down_blocks.{level}.downsamplers.0.conv",
                             [(p, p) for p in _WB]))
            skip_chans.append(ch)
            i += 1

    km.update(_resblock("middle_block.0", "unet.mid_block.resnets.0", ch, ch))
    km.update(_pairs("middle_block.1", "unet.mid_block.attentions.0", _TRANSFORMER))
    km.update(_resblock("middle_block.2", "unet.mid_block.resnets.1", ch, ch))

    i = 0
    for up, level in enumerate(reversed(range(len(cfg.channel_mult)))):
        attn = cfg.level_has_attention(level)
        for j in range(nrb + 1):
            out = mc * cfg.channel_mult[level]
            km.update(_resblock(f"output_blocks.{i}.0", f"unet.up_blocks.{up}.resnets.{j}", ch + skip_chans.pop(), out))
            ch = out
            if attn:
                km.update(_pairs(f"output_blocks.{i}.1", f"unet.up_blocks.{up}.attentions.{j}", _TRANSFORMER))
            if level and j == nrb:
                km.update(_pairs(f"output_blocks.{i}.{2 if attn else 1}.conv", f"unet.up_blocks.{up}.upsamplers.0.conv",
                                 [(p, p) for p in _WB]))
            i += 1

    km.update(_pairs("out", "unet", [(f"0.{p}", f"conv_norm_out.{p}") for p in _WB]
                     + [(f"2.{p}", f"conv_out.{p}") for p in _WB]))

    res = ["latents"] + [f"{m}.{p}" for m in ("proj_in", "proj_out", "norm_out") for p in _WB]
    for d in range(cfg.resampler_depth):
        res += [f"layers.{d}.0.{m}.{p}" for m in ("norm1", "norm2") for p in _WB]
        res += [f"layers.{d}.0.{m}.weight" for m in ("to_q", "to_kv", "to_out")]
        res += [f"layers.{d}.1.0.{p}" for p in _WB] + [f"layers.{d}.1.1.weight", f"layers.{d}.1.3.weight"]
    km.update({f"image_embed.{k}": f"image_embed.{k}" for k in res})
    return km


def _unet_part(state_dict: dict, prefix: str) -> dict:
    """Keys under ``prefix`` (stripped); a bare UNet dict (no key has the prefix) is taken whole."""
    if prefix and any(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return dict(state_dict)


def infer_unet_config(state_dict: dict, prefix: str = OFFICIAL_UNET_PREFIX, num_head_channels: int | None = None,
                      ip_weight: float = 1.0) -> MultiViewUNetConfig:
    """Sizes of an official UNet from its weights' shapes.

    The head count is not stored in weights: pass ``num_head_channels`` (the released model: 64); None
    picks 64 when it divides every width, else ``model_channels`` (enough for key mapping)."""
    sd = _unet_part(state_dict, prefix)

    def shape(key):
        if key not in sd:
            raise ValueError(f"not an official Magic-Boost UNet state dict: key {prefix}{key} is missing")
        return tuple(sd[key].shape)

    conv_in = shape("input_blocks.0.0.weight")
    mc, in_ch = conv_in[0], conv_in[1]
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"input_blocks\.(\d+)\.", k))}
    downs = sorted(int(m.group(1)) for k in sd if (m := re.match(r"input_blocks\.(\d+)\.0\.op\.weight$", k)))
    nrb = downs[0] - 1 if downs else max(blocks)
    if nrb < 1:
        raise ValueError("not an official Magic-Boost UNet state dict: cannot find the ResBlocks of level 0")
    mults, attn = [], []
    for level in range(len(downs) + 1):
        first = 1 + level * (nrb + 1)
        mults.append(shape(f"input_blocks.{first}.0.out_layers.3.weight")[0] // mc)
        if f"input_blocks.{first}.1.proj_in.weight" in sd:
            attn.append(2 ** level)
    context_dim = shape("middle_block.1.transformer_blocks.0.attn2.to_k.weight")[1]
    latents = shape("image_embed.latents")
    dim = latents[2]
    depth = len({int(m.group(1)) for k in sd if (m := re.match(r"image_embed\.layers\.(\d+)\.", k))})
    inner = shape("image_embed.layers.0.0.to_q.weight")[0]
    dim_head = 64 if inner % 64 == 0 else inner
    if num_head_channels is None:
        num_head_channels = 64 if all(mc * m % 64 == 0 for m in mults) else mc
    return MultiViewUNetConfig(
        in_channels=in_ch, out_channels=shape("out.2.weight")[0], model_channels=mc, channel_mult=tuple(mults),
        num_res_blocks=nrb, attention_resolutions=tuple(sorted(attn, reverse=True)),
        num_head_channels=num_head_channels, context_dim=context_dim, ip_in_dim=shape("image_embed.proj_in.weight")[1],
        ip_tokens=latents[1], resampler_depth=depth, resampler_heads=inner // dim_head, resampler_dim_head=dim_head,
        resampler_ff_mult=shape("image_embed.layers.0.1.1.weight")[0] // dim,
        camera_dim=shape("camera_embed.0.weight")[1], ip_weight=ip_weight)


def convert_official_unet(state_dict: dict, prefix: str = OFFICIAL_UNET_PREFIX) -> dict:
    """Official UNet weights -> ``MultiViewUNet`` state dict (same tensors, new names).

    ``state_dict`` may be a whole ``LatentDiffusionInterface`` checkpoint (only keys under ``prefix`` are
    taken; ``vae_model.*``, ``clip_model.*`` and schedule buffers are left alone) or a bare UNet dict.
    Raises ``UnknownKeyError`` naming every UNet key that has no place in the model.
    """
    sd = _unet_part(state_dict, prefix)
    key_map = official_unet_key_map(infer_unet_config(state_dict, prefix))
    unknown = [k for k in sd if k not in key_map and k not in IGNORED_OFFICIAL_UNET_KEYS]
    if unknown:
        raise UnknownKeyError([prefix + k if prefix and any(s.startswith(prefix) for s in state_dict) else k
                               for k in unknown])
    return {key_map[k]: v for k, v in sd.items() if k in key_map}
