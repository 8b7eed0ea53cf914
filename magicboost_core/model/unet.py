"""The official-compatible Magic-Boost multi-view UNet (reference §1.2, §2), on diffusers.

Design
------
``MultiViewUNet`` wraps a stock ``diffusers.UNet2DConditionModel`` configured as SD-2.1-base
(linear proj_in/out, heads = channels / num_head_channels, resnet GroupNorm eps 1e-5, transformer
GroupNorm eps 1e-6, sinusoid ``[cos | sin]``) plus three Magic-Boost extras:

* the camera MLP is diffusers' ``class_embed_type="projection"`` embedding (Linear 10->4mc, SiLU,
  Linear), whose output diffusers adds to the time embedding -- exactly the official
  ``emb = time_embed(t) + camera_embed(camera)``;
* the multi-view behaviour lives only in attention processors (``attention.py``): attn1 = multi-view
  self-attention with an optional anchor K/V cache, attn2 = decoupled text + image-token
  cross-attention (holds ``to_k_ip``/``to_v_ip``);
* the IP-Adapter-Plus resampler (``resampler.py``) turns raw CLIP tokens into 16 context tokens that are
  appended to the text tokens.

The diffusers route did not fight: ResBlocks, up/downsampling, norms and GEGLU feed-forward are
numerically the official ones, so the whole UNet stays a stock diffusers model and a checkpoint maps
onto it by renaming keys (``convert_unet.py``).  Differences kept on purpose: diffusers GroupNorm runs
in the working dtype (the official ``GroupNorm32`` upcasts to float32); this only matters in fp16/bf16.

Frames
------
An object is F = 1 + A frames: frame 0 = the noisy target, frames 1..A = clean anchor latents that
always run at timestep 0.  Per-frame conditions: text tokens, CLIP image tokens, camera code
(``camera_dim`` = 10) and a condition-strength label (2 numbers added into camera slots 2:4).

Entry points
------------
* ``forward`` -- the high-level call: target (B,C,H,W) + anchors (B,A,C,H,W) -> eps of the target.
  Full pass over B*F rows, or, with an ``AnchorCache``, a pass over the B target rows only.
* ``encode_anchors`` -- runs the B*A anchor rows once and records every attn1's anchor K/V.  Exact,
  because anchors never attend to the target and always run at t = 0.
* ``forward_frames`` -- the official argument layout (rows ``b*F + f``), returns all frames; used
  for parity with the official fixtures.  Never mutates its inputs (the official forward does).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import DecoupledIPCrossAttnProcessor, FramePass, MultiViewSelfAttnProcessor
from .config import MultiViewUNetConfig
from .resampler import Resampler

__all__ = ["AnchorCache", "MultiViewUNet", "UNetInputError", "diffusers_unet_kwargs"]


class UNetInputError(ValueError):
    """A tensor passed to the multi-view UNet has the wrong shape, dtype or device."""


def diffusers_unet_kwargs(config: MultiViewUNetConfig) -> dict:
    """``UNet2DConditionModel`` constructor kwargs reproducing the official topology.

    Note diffusers' legacy naming: ``attention_head_dim`` there is the NUMBER of heads per level."""
    levels = range(len(config.channel_mult))
    down = tuple("CrossAttnDownBlock2D" if config.level_has_attention(lv) else "DownBlock2D" for lv in levels)
    up = tuple("CrossAttnUpBlock2D" if config.level_has_attention(lv) else "UpBlock2D" for lv in reversed(levels))
    return dict(
        sample_size=32,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        center_input_sample=False,
        flip_sin_to_cos=True,
        freq_shift=0,
        down_block_types=down,
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=up,
        only_cross_attention=False,
        block_out_channels=config.block_channels,
        layers_per_block=config.num_res_blocks,
        downsample_padding=1,
        mid_block_scale_factor=1.0,
        dropout=0.0,
        act_fn="silu",
        norm_num_groups=32,
        norm_eps=1e-5,
        cross_attention_dim=config.context_dim,
        transformer_layers_per_block=1,
        attention_head_dim=config.heads_per_level(),
        dual_cross_attention=False,
        use_linear_projection=True,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=config.camera_dim,
        upcast_attention=False,
        resnet_time_scale_shift="default",
        time_embedding_type="positional",
        conv_in_kernel=3,
        conv_out_kernel=3,
    )


@dataclass
class AnchorCache:
    """Anchor keys/values of every attn1 layer, recorded by ``MultiViewUNet.encode_anchors``.

    Attributes:
        keys / values: attn1 layer name -> (B, A*n, C) in the model dtype (n = h*w of that level,
            anchors in order 1..A).
        num_anchors: A.
        batch_size: B; a cached forward must use the same B and the same row order.
        latent_size: (H, W) of the anchor latents.
        anchor_camera: (B, A, camera_dim) effective camera codes (camera + labels) of the anchors; a
            cached forward checks that its anchor cameras/labels match.
    """

    keys: dict
    values: dict
    num_anchors: int
    batch_size: int
    latent_size: tuple
    anchor_camera: torch.Tensor

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for d in (self.keys, self.values) for t in d.values())

    def to(self, device=None, dtype=None) -> "AnchorCache":
        def mv(t):
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)
        return AnchorCache({k: mv(v) for k, v in self.keys.items()}, {k: mv(v) for k, v in self.values.items()},
                           self.num_anchors, self.batch_size, self.latent_size, mv(self.anchor_camera))

    def select(self, index) -> "AnchorCache":
        """Batch rows ``index`` (int list, slice, or LongTensor) of the cache."""
        if isinstance(index, int):
            index = [index]
        idx = torch.arange(self.batch_size)[index]
        dev = self.anchor_camera.device
        pick = {k: v[idx.to(v.device)] for k, v in self.keys.items()}
        pickv = {k: v[idx.to(v.device)] for k, v in self.values.items()}
        return AnchorCache(pick, pickv, self.num_anchors, int(idx.numel()), self.latent_size,
                           self.anchor_camera[idx.to(dev)])

    @staticmethod
    def cat(caches: list) -> "AnchorCache":
        """Concatenate caches along the batch (e.g. conditional ‖ unconditional)."""
        first = caches[0]
        for c in caches[1:]:
            if c.num_anchors != first.num_anchors or tuple(c.latent_size) != tuple(first.latent_size) \
                    or c.keys.keys() != first.keys.keys():
                raise ValueError("AnchorCache.cat: caches differ in anchor count, latent size or layers")
        return AnchorCache({k: torch.cat([c.keys[k] for c in caches]) for k in first.keys},
                           {k: torch.cat([c.values[k] for c in caches]) for k in first.values},
                           first.num_anchors, sum(c.batch_size for c in caches), first.latent_size,
                           torch.cat([c.anchor_camera for c in caches]))


class MultiViewUNet(nn.Module):
    """Magic-Boost multi-view UNet: a diffusers SD-2.1-base UNet + camera MLP + IP resampler + multi-view
    attention processors.

    Submodules: ``unet`` (``diffusers.UNet2DConditionModel``; camera MLP = ``unet.class_embedding``),
    ``image_embed`` (``Resampler``).  Build from weights with ``convert_unet.convert_official_unet``.
    """

    def __init__(self, config: MultiViewUNetConfig):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.config = config
        self.unet = UNet2DConditionModel(**diffusers_unet_kwargs(config))
        self.image_embed = Resampler(dim=config.context_dim, depth=config.resampler_depth,
                                     dim_head=config.resampler_dim_head, heads=config.resampler_heads,
                                     num_queries=config.ip_tokens, in_dim=config.ip_in_dim,
                                     ff_mult=config.resampler_ff_mult)
        self._install_processors()

    def _install_processors(self) -> None:
        processors = {}
        for name in self.unet.attn_processors:
            layer = name[: -len(".processor")]
            attn = self.unet.get_submodule(layer)
            if layer.endswith("attn1"):
                processors[name] = MultiViewSelfAttnProcessor(layer)
            elif layer.endswith("attn2"):
                processors[name] = DecoupledIPCrossAttnProcessor(
                    attn.inner_dim, attn.cross_attention_dim, self.config.ip_tokens, self.config.ip_weight)
            else:  # pragma: no cover - SD topology has only attn1/attn2
                raise RuntimeError(f"unexpected attention layer {layer}")
        self.unet.set_attn_processor(processors)

    # ------------------------------------------------------------------ properties
    @property
    def dtype(self) -> torch.dtype:
        return self.unet.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.conv_in.weight.device

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()

    def load_official(self, state_dict: dict, strict: bool = True):
        """Convert official (``model.diffusion_model.*``) weights and load them."""
        from .convert_unet import convert_official_unet

        return self.load_state_dict(convert_official_unet(state_dict), strict=strict)

    # ------------------------------------------------------------------ public calls
    def forward(self, sample, timestep, anchors, text, image_tokens, camera, labels, drop_mask=None,
                anchor_cache: AnchorCache | None = None) -> torch.Tensor:
        """eps of the target frame.

        Args:
            sample: (B, C, H, W) noisy target latents, model dtype and device.
            timestep: (B,) or scalar diffusion step of the target (anchors always use 0).
            anchors: (B, A, C, H, W) clean anchor latents (VAE latent x 0.18215), A >= 1; may be None when
                ``anchor_cache`` is given (then it is ignored apart from a shape check).
            text: (B, L, D) tokens shared by all frames, or (B, F, L, D) per frame; D = context_dim.
            image_tokens: (B, T, ip_in_dim) raw CLIP tokens shared by all frames, or (B, F, T, ip_in_dim).
            camera: (B, F, camera_dim) camera codes, frame 0 = target.
            labels: (B, F, 2) condition-strength labels, added to camera[..., 2:4].
            drop_mask: optional (B, A-1) {0,1}: 1 removes anchor 2..A from the target's attention
                (anchor 1 = the reference view is always kept).
            anchor_cache: from ``encode_anchors`` on the same anchors/conditions and batch layout; then only
                the B target rows run through the network.
        Returns: (B, C, H, W) eps of the target, model dtype.
        """
        b, h, w = self._check_latent(sample, "sample")
        t = self._timesteps(timestep, b, sample.device)
        if anchor_cache is None:
            if anchors is None:
                raise UNetInputError("forward: anchors is None and no anchor_cache was given; pass the anchor "
                                     "latents (B, A, C, H, W) or a cache from encode_anchors")
            num_anchors = self._check_anchors(anchors, b, h, w)
        else:
            num_anchors = anchor_cache.num_anchors
            if anchors is not None:
                self._check_anchors(anchors, b, h, w, expect_anchors=num_anchors)
            if anchor_cache.batch_size != b or tuple(anchor_cache.latent_size) != (h, w):
                raise UNetInputError(
                    f"forward: anchor_cache was built for batch {anchor_cache.batch_size} at latent size "
                    f"{tuple(anchor_cache.latent_size)}, but sample is {tuple(sample.shape)}; rebuild it with "
                    f"encode_anchors for this batch")
        nf = num_anchors + 1
        text, tokens, cam = self._conditions(b, nf, text, image_tokens, camera, labels)
        keep = self._keep_frames(drop_mask, b, num_anchors)
        if anchor_cache is None:
            return self._full_pass(sample, t, anchors, text, tokens, cam, keep)[:, 0]

        cached_cam = anchor_cache.anchor_camera.to(device=cam.device, dtype=cam.dtype)
        if cached_cam.shape != cam[:, 1:].shape or not torch.allclose(cached_cam, cam[:, 1:], rtol=1e-3, atol=1e-3):
            raise UNetInputError("forward: the anchors' camera codes / labels differ from those the anchor_cache "
                                 "was built with; rebuild it with encode_anchors")
        ctx = self._context(text, tokens, slice(0, 1), 1)
        frame_pass = FramePass("cached", nf, keep, anchor_cache.keys, anchor_cache.values)
        return self._run(sample, t, cam[:, 0], ctx, frame_pass)

    def encode_anchors(self, anchors, text, image_tokens, camera, labels, detach: bool = True) -> AnchorCache:
        """Run the anchor frames once (t = 0) and record every attn1's anchor keys/values.

        Args as in ``forward`` (camera/labels/text/tokens with F = A + 1 frames; frame 0's entries are
        not used).  ``detach=True`` (default) runs without autograd and stores detached tensors.
        Memory (full model, 32x32 latents): about 23 MB per anchor row in fp32.
        """
        if not torch.is_tensor(anchors) or anchors.ndim != 5:
            raise UNetInputError(f"encode_anchors: anchors must be (B, A, C, H, W), got "
                                 f"{tuple(anchors.shape) if torch.is_tensor(anchors) else type(anchors)}")
        b, num_anchors, _, h, w = anchors.shape
        self._check_anchors(anchors, b, h, w)
        self._check_device(anchors, "anchors")
        nf = num_anchors + 1
        text, tokens, cam = self._conditions(b, nf, text, image_tokens, camera, labels)
        x = anchors.to(self.dtype).flatten(0, 1)
        t = torch.zeros(b * num_anchors, dtype=torch.long, device=x.device)
        ctx = self._context(text, tokens, slice(1, None), num_anchors)
        frame_pass = FramePass("anchors", nf, detach=detach)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach):
            self._run(x, t, cam[:, 1:].flatten(0, 1), ctx, frame_pass)
        return AnchorCache(frame_pass.anchor_keys, frame_pass.anchor_values, num_anchors, b, (h, w),
                           cam[:, 1:].detach())

    def forward_frames(self, x, timesteps, context, camera, ip, ext_ip_img, noise_embed, drop_mask=None,
                       num_frames=None) -> torch.Tensor:
        """The official ``UNetModelSpaceTime.forward`` in the official layout (rows ``n = b*F + f``).

        Args:
            x: (B*F, C, H, W); rows f >= 1 are replaced by ``ext_ip_img`` (values ignored).
            timesteps: (B*F,) or scalar; rows f >= 1 are set to 0.
            context: (B*F, L, D) text tokens.  camera: (B*F, camera_dim).  ip: (B*F, T, ip_in_dim).
            ext_ip_img: (B, A, C, H, W) anchor latents.  noise_embed: (B*F, 2).
            drop_mask: optional (B, A-1).  num_frames: F (default A + 1; must equal it).
        Returns: (B*F, C, H, W) eps of every frame (anchor rows as the network computes them).
        Inputs are not modified.
        """
        if not torch.is_tensor(ext_ip_img) or ext_ip_img.ndim != 5:
            raise UNetInputError("forward_frames: ext_ip_img must be the anchor latents (B, A, C, H, W)")
        b, num_anchors = ext_ip_img.shape[:2]
        nf = num_anchors + 1
        if num_frames is not None and int(num_frames) != nf:
            raise UNetInputError(f"forward_frames: num_frames={num_frames} but ext_ip_img holds {num_anchors} "
                                 f"anchors (F must be A + 1 = {nf})")
        if not torch.is_tensor(x) or x.ndim != 4 or x.shape[0] != b * nf:
            raise UNetInputError(f"forward_frames: x must be (B*F, C, H, W) = ({b * nf}, C, H, W) for B={b}, "
                                 f"F={nf}, got {tuple(x.shape) if torch.is_tensor(x) else type(x)}")
        _, h, w = self._check_latent(x, "x")
        self._check_anchors(ext_ip_img, b, h, w)
        t = torch.as_tensor(timesteps, device=x.device)
        if t.ndim == 0:
            t = t.expand(b * nf)
        if t.shape != (b * nf,):
            raise UNetInputError(f"forward_frames: timesteps must be ({b * nf},), got {tuple(t.shape)}")

        def rows(name, tensor, ndim):
            if not torch.is_tensor(tensor) or tensor.ndim != ndim or tensor.shape[0] != b * nf:
                raise UNetInputError(f"forward_frames: {name} must have {ndim} dims with {b * nf} rows (B*F), got "
                                     f"{tuple(tensor.shape) if torch.is_tensor(tensor) else type(tensor)}")
            return tensor.reshape(b, nf, *tensor.shape[1:])

        text, tokens, cam = self._conditions(b, nf, rows("context", context, 3), rows("ip", ip, 3),
                                             rows("camera", camera, 2), rows("noise_embed", noise_embed, 2))
        keep = self._keep_frames(drop_mask, b, num_anchors)
        sample = x.reshape(b, nf, *x.shape[1:])[:, 0]
        out = self._full_pass(sample, t.reshape(b, nf)[:, 0], ext_ip_img, text, tokens, cam, keep)
        return out.flatten(0, 1)

    # ------------------------------------------------------------------ internals
    def _run(self, x, t, cam, ctx, frame_pass: FramePass) -> torch.Tensor:
        return self.unet(x, t, encoder_hidden_states=ctx, class_labels=cam,
                         cross_attention_kwargs={"mv": frame_pass}, return_dict=False)[0]

    def _full_pass(self, sample, t, anchors, text, tokens, cam, keep) -> torch.Tensor:
        """All B*F rows at once -> (B, F, C, H, W)."""
        b = sample.shape[0]
        num_anchors = anchors.shape[1]
        nf = num_anchors + 1
        x = torch.cat([sample[:, None], anchors.to(sample.dtype)], dim=1).flatten(0, 1)
        t_rows = torch.cat([t[:, None], torch.zeros_like(t)[:, None].expand(b, num_anchors)], dim=1).flatten()
        ctx = self._context(text, tokens, slice(None), nf)
        out = self._run(x, t_rows, cam.flatten(0, 1), ctx, FramePass("full", nf, keep))
        return out.view(b, nf, *out.shape[1:])

    def _context(self, text, tokens, frames: slice, count: int) -> torch.Tensor:
        """cat[text, resampled image tokens] for the selected frames -> (B*count, L + ip_tokens, D).

        text (B, 1|F, L, D) and tokens (B, 1|F, T, ip_in_dim); shared entries (size-1 frame axis) are
        resampled once and broadcast."""
        text = text if text.shape[1] == 1 else text[:, frames]
        tokens = tokens if tokens.shape[1] == 1 else tokens[:, frames]
        image = self.image_embed(tokens.flatten(0, 1)).unflatten(0, tokens.shape[:2])
        b = text.shape[0]
        text = text.expand(b, count, *text.shape[2:])
        image = image.expand(b, count, *image.shape[2:])
        return torch.cat([text, image], dim=2).flatten(0, 1)

    def _check_device(self, tensor, name):
        if tensor.device != self.device and self.device.type != "meta":
            raise UNetInputError(f"{name} is on {tensor.device} but the model is on {self.device}; move it with "
                                 f".to({str(self.device)!r})")

    def _check_latent(self, sample, name):
        if not torch.is_tensor(sample) or sample.ndim != 4:
            raise UNetInputError(f"{name} must be a (B, C, H, W) latent tensor, got "
                                 f"{tuple(sample.shape) if torch.is_tensor(sample) else type(sample)}")
        b, c, h, w = sample.shape
        if c != self.config.in_channels:
            raise UNetInputError(f"{name} has {c} channels, the UNet expects {self.config.in_channels}")
        if sample.dtype != self.dtype:
            raise UNetInputError(f"{name} dtype {sample.dtype} does not match the model dtype {self.dtype}; "
                                 f"cast it with .to({self.dtype}) (or the model with .to(dtype))")
        self._check_device(sample, name)
        return b, h, w

    def _check_anchors(self, anchors, b, h, w, expect_anchors=None) -> int:
        if not torch.is_tensor(anchors) or anchors.ndim != 5:
            raise UNetInputError(f"anchors must be (B, A, C, H, W), got "
                                 f"{tuple(anchors.shape) if torch.is_tensor(anchors) else type(anchors)}")
        ab, na, c, ah, aw = anchors.shape
        if ab != b or c != self.config.in_channels or (ah, aw) != (h, w) or na < 1:
            raise UNetInputError(f"anchors {tuple(anchors.shape)} do not fit the target: expected "
                                 f"({b}, A>=1, {self.config.in_channels}, {h}, {w})")
        if expect_anchors is not None and na != expect_anchors:
            raise UNetInputError(f"anchors hold {na} views but the anchor_cache was built with {expect_anchors}")
        if not anchors.is_floating_point():
            raise UNetInputError(f"anchors must be floating point, got {anchors.dtype}")
        return na

    @staticmethod
    def _timesteps(timestep, b, device) -> torch.Tensor:
        t = torch.as_tensor(timestep, device=device)
        if t.ndim == 0 or t.shape == (1,):
            t = t.reshape(()).expand(b)
        if t.shape != (b,):
            raise UNetInputError(f"timestep must be a scalar or ({b},), got {tuple(t.shape)}")
        return t

    def _conditions(self, b, nf, text, image_tokens, camera, labels):
        """Validate per-frame conditions -> text (B,1|F,L,D), tokens (B,1|F,T,ip_in_dim), effective camera (B,F,cd)."""
        cfg = self.config
        text = self._per_frame(text, b, nf, "text", 2)
        if text.shape[-1] != cfg.context_dim or text.shape[-2] < 1:
            raise UNetInputError(f"text tokens must be (..., L>=1, {cfg.context_dim}), got {tuple(text.shape)}")
        tokens = self._per_frame(image_tokens, b, nf, "image_tokens", 2)
        if tokens.shape[-1] != cfg.ip_in_dim or tokens.shape[-2] < 1:
            raise UNetInputError(f"image_tokens width {tokens.shape[-1]} != ip_in_dim {cfg.ip_in_dim} (expected raw "
                                 f"CLIP tokens (..., T, {cfg.ip_in_dim})), got {tuple(tokens.shape)}")
        for name, value, width in (("camera", camera, cfg.camera_dim), ("labels", labels, 2)):
            if not torch.is_tensor(value) or value.shape != (b, nf, width):
                got = tuple(value.shape) if torch.is_tensor(value) else type(value)
                raise UNetInputError(f"{name} must be (B, F, {width}) = ({b}, {nf}, {width}) with F = 1 + anchors "
                                     f"(frame 0 = target), got {got}")
        for name, value in (("text", text), ("image_tokens", tokens), ("camera", camera), ("labels", labels)):
            self._check_device(value, name)
        cam = camera + F.pad(labels.to(camera.dtype), (2, cfg.camera_dim - 4))
        return text.to(self.dtype), tokens.to(self.dtype), cam.to(self.dtype)

    @staticmethod
    def _per_frame(value, b, nf, name, trailing) -> torch.Tensor:
        """(B, *trail) -> (B, 1, *trail); (B, F, *trail) kept."""
        if not torch.is_tensor(value) or value.ndim not in (trailing + 1, trailing + 2):
            raise UNetInputError(f"{name} must have {trailing + 1} dims (shared by all frames) or {trailing + 2} "
                                 f"dims (per frame), got {tuple(value.shape) if torch.is_tensor(value) else type(value)}")
        if value.shape[0] != b:
            raise UNetInputError(f"{name} batch {value.shape[0]} != sample batch {b}")
        if value.ndim == trailing + 1:
            return value[:, None]
        if value.shape[1] != nf:
            raise UNetInputError(f"{name} has {value.shape[1]} frames, expected F = 1 + anchors = {nf}")
        return value

    def _keep_frames(self, drop_mask, b, num_anchors):
        """drop_mask (B, A-1) {0,1} -> keep mask (B, F) bool, or None when nothing is dropped."""
        if drop_mask is None:
            return None
        drop_mask = torch.as_tensor(drop_mask)
        if drop_mask.shape != (b, num_anchors - 1):
            raise UNetInputError(f"drop_mask must be (B, A-1) = ({b}, {num_anchors - 1}) (anchors 2..A; the first "
                                 f"anchor is never dropped), got {tuple(drop_mask.shape)}")
        if not bool(((drop_mask == 0) | (drop_mask == 1)).all()):
            raise UNetInputError("drop_mask values must be 0 (keep) or 1 (drop)")
        if not bool(drop_mask.any()):
            return None
        keep = torch.cat([torch.ones(b, 2, dtype=torch.bool, device=drop_mask.device), drop_mask == 0], dim=1)
        return keep.to(self.device)
