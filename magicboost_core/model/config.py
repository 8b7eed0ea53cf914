"""Size configuration of the official-compatible multi-view UNet (reference §1.2).

``MultiViewUNetConfig`` holds every size that shapes parameters; nothing here depends on the number
of frames (one checkpoint serves 4 and 6 anchors).  ``full()`` is the released Magic-Boost model
(SD-2.1-base topology, 941,665,220 parameters), ``tiny()`` the parity fixture's sizes
(``/work/shared/fixtures/official-unet-tiny``).

Conventions: ``channel_mult`` is per resolution level (level ``l`` runs at downsampling factor
``ds = 2**l``), ``attention_resolutions`` lists the ``ds`` values that get a spatio-temporal
transformer (the middle block always has one), heads = channels / ``num_head_channels``.
``prediction_type`` shapes no parameter but says how the output is read ("epsilon" = official;
see :mod:`~magicboost_core.model.prediction`); configs written before it existed mean "epsilon".
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

__all__ = ["MultiViewUNetConfig", "UnsupportedConfigError"]


class UnsupportedConfigError(ValueError):
    """An official constructor kwarg has a value this implementation does not reproduce."""


# Official kwargs that must hold exactly these values: every released config uses them, and other
# values would select code paths (temporal convs, non-linear proj_in, ...) we do not implement.
_REQUIRED_OFFICIAL_VALUES = {
    "use_spatial_transformer": True,
    "use_linear_in_transformer": True,
    "transformer_depth": 1,
    "legacy": False,
    "with_ip": True,
    "ip_mode": "plus",
    "use_sep_selfattn": True,
    "use_onetime_anchor": True,
    "use_split_noise_embedding": False,
    "use_scale_shift_norm": False,
    "resblock_updown": False,
    "conv_resample": True,
    "dims": 2,
    "num_heads": -1,
    "camera_emb_mode": "time_emb",
    "camera_depth": 2,
    "dropout": 0,
}
# Official kwargs without influence on parameters or on the forward we reproduce.
_IGNORED_OFFICIAL_KWARGS = {
    "image_size", "use_checkpoint", "use_fp16", "use_bf16", "frame_num", "anchor_infer_once",
    "num_heads_upsample", "use_new_attention_order", "disable_self_attentions", "num_attention_blocks",
    "disable_middle_self_attn", "attention_block", "temporal_attn_mode", "no_pos_bias",
    "temporal_attention_resolutions", "n_embed", "num_classes", "adm_in_channels",
}


@dataclass
class MultiViewUNetConfig:
    """Sizes of the multi-view UNet; defaults = the released model (``full()``).

    Attributes:
        in_channels / out_channels: latent channels (4).
        model_channels: width of level 0 (320); time/camera embedding width is 4x this.
        channel_mult: width multiplier per level.
        num_res_blocks: ResBlocks per level on the way down (one more on the way up).
        attention_resolutions: downsampling factors with a transformer.
        num_head_channels: channels per attention head (64).
        context_dim: width of text tokens and of the resampled image tokens (1024).
        ip_in_dim: width of the raw CLIP image tokens fed to the resampler (1280, ViT-H/14).
        ip_tokens: learned resampler queries = image tokens per frame in attn2 (16).
        resampler_depth / resampler_heads / resampler_dim_head / resampler_ff_mult: Perceiver sizes
            (fixed in the official code: 4, 12, 64, 4).
        camera_dim: camera code length (10).
        ip_weight: weight of the image-token attention in attn2 (1.0).
        prediction_type: what the output is: "epsilon" (official), "v_prediction" or "sample"
            (:mod:`~magicboost_core.model.prediction`; shapes no parameter, but decides how the output is read).
    """

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple = (4, 2, 1)
    num_head_channels: int = 64
    context_dim: int = 1024
    ip_in_dim: int = 1280
    ip_tokens: int = 16
    resampler_depth: int = 4
    resampler_heads: int = 12
    resampler_dim_head: int = 64
    resampler_ff_mult: int = 4
    camera_dim: int = 10
    ip_weight: float = 1.0
    prediction_type: str = "epsilon"

    def __post_init__(self):
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)
        self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def full(cls) -> "MultiViewUNetConfig":
        """The released Magic-Boost UNet (mvc_instant3d.yaml / mvc_instantmesh.yaml)."""
        return cls()

    @classmethod
    def tiny(cls) -> "MultiViewUNetConfig":
        """The sizes of the ``official-unet-tiny`` parity fixture (1,976,324 parameters)."""
        return cls(model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                   attention_resolutions=(2, 1), num_head_channels=16, context_dim=32)

    @classmethod
    def from_official_kwargs(cls, kwargs: dict) -> "MultiViewUNetConfig":
        """Build from the official ``UNetModelSpaceTime`` constructor kwargs (yaml ``unet_config.params``
        or the fixture's ``config.json["constructor_kwargs"]``).

        Raises ``UnsupportedConfigError`` for flags whose value we do not reproduce; unknown keys
        are ignored with a warning.
        """
        kw = dict(kwargs)
        for key, want in _REQUIRED_OFFICIAL_VALUES.items():
            if key in kw and kw[key] != want:
                raise UnsupportedConfigError(
                    f"official UNet kwarg {key}={kw[key]!r} is not supported (only {want!r}, as in the "
                    f"released Magic-Boost configs)")
        if kw.get("ip_weight", 1.0) is None:
            kw["ip_weight"] = 1.0
        known = set(_REQUIRED_OFFICIAL_VALUES) | _IGNORED_OFFICIAL_KWARGS | {
            "in_channels", "out_channels", "model_channels", "channel_mult", "num_res_blocks",
            "attention_resolutions", "num_head_channels", "context_dim", "ip_dim", "ip_weight", "camera_dim"}
        unknown = sorted(k for k in kw if k not in known)
        if unknown:
            warnings.warn(f"MultiViewUNetConfig.from_official_kwargs: ignoring unknown kwargs {unknown}",
                          stacklevel=2)
        if kw.get("num_head_channels", 64) in (None, -1):
            raise UnsupportedConfigError("official UNet kwarg num_head_channels must be set (heads = channels / "
                                         "num_head_channels); num_heads-based configs are not supported")
        ctx = kw.get("context_dim", 1024)
        if isinstance(ctx, (list, tuple)):
            if len(set(ctx)) != 1:
                raise UnsupportedConfigError(f"per-level context_dim {ctx} is not supported")
            ctx = ctx[0]
        base = cls()
        return cls(
            in_channels=int(kw.get("in_channels", base.in_channels)),
            out_channels=int(kw.get("out_channels", base.out_channels)),
            model_channels=int(kw.get("model_channels", base.model_channels)),
            channel_mult=tuple(kw.get("channel_mult", base.channel_mult)),
            num_res_blocks=int(kw.get("num_res_blocks", base.num_res_blocks)),
            attention_resolutions=tuple(kw.get("attention_resolutions", base.attention_resolutions)),
            num_head_channels=int(kw.get("num_head_channels", base.num_head_channels)),
            context_dim=int(ctx),
            ip_tokens=int(kw.get("ip_dim", base.ip_tokens)),
            ip_weight=float(kw.get("ip_weight", base.ip_weight)),
            camera_dim=int(kw.get("camera_dim", base.camera_dim)),
        )

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become lists)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "MultiViewUNetConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"MultiViewUNetConfig.from_dict: unknown fields {unknown}; known: {sorted(names)}")
        return cls(**d)

    # ------------------------------------------------------------------ derived sizes
    @property
    def block_channels(self) -> tuple:
        """Channels per level, e.g. (320, 640, 1280, 1280)."""
        return tuple(self.model_channels * m for m in self.channel_mult)

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    def level_has_attention(self, level: int) -> bool:
        return (2 ** level) in self.attention_resolutions

    def heads_per_level(self) -> tuple:
        """Attention heads per level (channels / num_head_channels)."""
        return tuple(max(1, c // self.num_head_channels) for c in self.block_channels)

    def validate(self) -> None:
        from .prediction import check_prediction_type

        check_prediction_type(self.prediction_type)
        if not self.channel_mult:
            raise ValueError("MultiViewUNetConfig: channel_mult must not be empty")
        for name in ("in_channels", "out_channels", "model_channels", "num_res_blocks", "num_head_channels",
                     "context_dim", "ip_in_dim", "ip_tokens", "resampler_depth", "resampler_heads",
                     "resampler_dim_head", "resampler_ff_mult", "camera_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"MultiViewUNetConfig: {name} must be >= 1, got {getattr(self, name)}")
        if self.camera_dim < 4:
            raise ValueError("MultiViewUNetConfig: camera_dim must be >= 4 (labels are added into slots 2:4)")
        for c in self.block_channels:
            if c % 32:
                raise ValueError(f"MultiViewUNetConfig: channels {c} not divisible by 32 GroupNorm groups")
        for level, c in enumerate(self.block_channels):
            if self.level_has_attention(level) and c % self.num_head_channels:
                raise ValueError(f"MultiViewUNetConfig: level {level} has {c} channels, not divisible by "
                                 f"num_head_channels={self.num_head_channels}")
        if self.block_channels[-1] % self.num_head_channels:
            raise ValueError(f"MultiViewUNetConfig: middle block channels {self.block_channels[-1]} not "
                             f"divisible by num_head_channels={self.num_head_channels}")
        valid = {2 ** level for level in range(len(self.channel_mult))}
        bad = [r for r in self.attention_resolutions if r not in valid]
        if bad:
            raise ValueError(f"MultiViewUNetConfig: attention_resolutions {bad} are not downsampling factors of "
                             f"this UNet ({sorted(valid)})")
