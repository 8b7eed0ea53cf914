"""Attention processors of the multi-view UNet (reference §2.3, §2.4), in diffusers' processor style.

The diffusers ``Attention`` modules keep their projections (``to_q/to_k/to_v/to_out``); these
processors change only *what attends to what*.  The UNet hands every processor the same
``FramePass`` object through ``cross_attention_kwargs={"mv": frame_pass}``; it says how the rows of
the batch are laid out and where anchor keys/values are read from or written to.

Row layouts (``n`` = h*w tokens of the current level, ``C`` = channels):

* ``"full"``    rows = B*F, row ``b*F + f``; frame 0 = target, frames 1..A = anchors.
* ``"anchors"`` rows = B*A, anchors only (row ``b*A + a`` = frame ``a+1``); their K/V are recorded.
* ``"cached"``  rows = B, the target only; anchor K/V come from the recorded cache.

attn1 (``MultiViewSelfAttnProcessor``): anchors attend to their own n tokens; the target's queries
attend over the keys/values of all F frames (F*n tokens), minus frames removed by ``keep_frames``.
Exactness of the cache: anchor rows never see the target, so their K/V do not depend on it.

attn2 (``DecoupledIPCrossAttnProcessor``): the context is ``cat[text (L tokens), image (ip_tokens)]``;
``out = attn(q, to_k(text), to_v(text)) + ip_weight * attn(q, to_k_ip(img), to_v_ip(img))``, then ``to_out``.

All attention goes through ``torch.nn.functional.scaled_dot_product_attention`` (scale dim_head^-1/2).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FramePass", "MultiViewSelfAttnProcessor", "DecoupledIPCrossAttnProcessor"]


@dataclass
class FramePass:
    """Per-forward description of the batch layout, shared by all processors of one UNet call.

    Attributes:
        mode: "full" | "anchors" | "cached" (see module docstring).
        num_frames: F = 1 + A.
        keep_frames: optional (B, F) bool; False removes that frame from the target's attn1 keys/values
            (None = keep all; the UNet passes None rather than an all-True mask).
        anchor_keys / anchor_values: layer name -> (B, A*n, C).  Written in "anchors" mode, read in "cached".
        detach: store detached K/V in "anchors" mode.
    """

    mode: Literal["full", "anchors", "cached"]
    num_frames: int
    keep_frames: torch.Tensor | None = None
    anchor_keys: dict = field(default_factory=dict)
    anchor_values: dict = field(default_factory=dict)
    detach: bool = True


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(R, n, heads*d) -> (R, heads, n, d)."""
    r, n, c = t.shape
    return t.view(r, n, heads, c // heads).transpose(1, 2)


def _merge(t: torch.Tensor) -> torch.Tensor:
    """(R, heads, n, d) -> (R, n, heads*d)."""
    r, h, n, d = t.shape
    return t.transpose(1, 2).reshape(r, n, h * d)


def _key_mask(keep_frames: torch.Tensor | None, tokens_per_frame: int) -> torch.Tensor | None:
    """(B, F) bool -> SDPA boolean mask (B, 1, 1, F*n); None stays None (every frame kept)."""
    if keep_frames is None:
        return None
    return keep_frames.repeat_interleave(tokens_per_frame, dim=1)[:, None, None, :]


def _finish(attn, out: torch.Tensor) -> torch.Tensor:
    out = attn.to_out[0](out)
    return attn.to_out[1](out)  # dropout (identity in eval / p=0)


class MultiViewSelfAttnProcessor:
    """attn1: multi-view self-attention (official ``use_sep_selfattn`` mode 3).

    Without a ``FramePass`` (``mv=None``) it is plain per-row self-attention."""

    def __init__(self, name: str):
        self.name = name  # key of this layer in the anchor K/V cache

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None,
                 mv: FramePass | None = None) -> torch.Tensor:
        if hidden_states.ndim != 3:
            raise ValueError(f"{self.name}: expected (rows, tokens, channels) hidden states, "
                             f"got {tuple(hidden_states.shape)}")
        rows, n, _ = hidden_states.shape
        heads = attn.heads
        q = attn.to_q(hidden_states)
        k = attn.to_k(hidden_states)
        v = attn.to_v(hidden_states)

        if mv is None or mv.mode == "anchors":
            out = F.scaled_dot_product_attention(_heads(q, heads), _heads(k, heads), _heads(v, heads))
            if mv is not None:
                num_anchors = mv.num_frames - 1
                b = rows // num_anchors
                kk, vv = (k.detach(), v.detach()) if mv.detach else (k, v)
                mv.anchor_keys[self.name] = kk.reshape(b, num_anchors * n, -1)
                mv.anchor_values[self.name] = vv.reshape(b, num_anchors * n, -1)
            return _finish(attn, _merge(out))

        mask = _key_mask(mv.keep_frames, n)
        if mv.mode == "cached":
            try:
                ck, cv = mv.anchor_keys[self.name], mv.anchor_values[self.name]
            except KeyError:
                raise ValueError(f"anchor cache has no entry for layer {self.name}; it was built by another "
                                 f"model, rebuild it with encode_anchors") from None
            if ck.shape[0] != rows or ck.shape[1] != (mv.num_frames - 1) * n:
                raise ValueError(f"{self.name}: anchor cache holds {tuple(ck.shape)} keys, but this call has "
                                 f"{rows} rows of {n} tokens and {mv.num_frames - 1} anchors; rebuild the cache "
                                 f"for this batch with encode_anchors")
            keys = torch.cat([k, ck.to(k.dtype)], dim=1)
            values = torch.cat([v, cv.to(v.dtype)], dim=1)
            out = F.scaled_dot_product_attention(_heads(q, heads), _heads(keys, heads), _heads(values, heads),
                                                 attn_mask=mask)
            return _finish(attn, _merge(out))

        # "full": rows = B*F
        nf = mv.num_frames
        b = rows // nf
        c = q.shape[-1]
        q5, k5, v5 = (t.view(b, nf, n, c) for t in (q, k, v))
        # target: queries of frame 0 over the tokens of all frames
        out_t = F.scaled_dot_product_attention(
            _heads(q5[:, 0], heads), _heads(k.view(b, nf * n, c), heads), _heads(v.view(b, nf * n, c), heads),
            attn_mask=mask)
        # anchors: ordinary per-frame self-attention
        qa, ka, va = (t[:, 1:].reshape(b * (nf - 1), n, c) for t in (q5, k5, v5))
        out_a = F.scaled_dot_product_attention(_heads(qa, heads), _heads(ka, heads), _heads(va, heads))
        out = torch.cat([_merge(out_t).view(b, 1, n, c), _merge(out_a).view(b, nf - 1, n, c)], dim=1)
        return _finish(attn, out.view(rows, n, c))


class DecoupledIPCrossAttnProcessor(nn.Module):
    """attn2: text cross-attention plus a separately projected image-token attention (IP-Adapter).

    Holds the image key/value projections ``to_k_ip``/``to_v_ip`` (Linear, no bias,
    ``cross_attention_dim -> hidden_size``).  The last ``num_ip_tokens`` context tokens are the image tokens.
    """

    def __init__(self, hidden_size: int, cross_attention_dim: int, num_ip_tokens: int = 16, ip_weight: float = 1.0):
        super().__init__()
        self.num_ip_tokens = num_ip_tokens
        self.ip_weight = ip_weight
        self.to_k_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask=None, mv: FramePass | None = None) -> torch.Tensor:
        if encoder_hidden_states is None or encoder_hidden_states.shape[1] <= self.num_ip_tokens:
            got = None if encoder_hidden_states is None else tuple(encoder_hidden_states.shape)
            raise ValueError(f"attn2 expects context (rows, L + {self.num_ip_tokens}, D) with L >= 1 text tokens "
                             f"followed by {self.num_ip_tokens} image tokens, got {got}")
        heads = attn.heads
        text = encoder_hidden_states[:, :-self.num_ip_tokens]
        image = encoder_hidden_states[:, -self.num_ip_tokens:]
        q = _heads(attn.to_q(hidden_states), heads)
        out = F.scaled_dot_product_attention(q, _heads(attn.to_k(text), heads), _heads(attn.to_v(text), heads))
        out_ip = F.scaled_dot_product_attention(q, _heads(self.to_k_ip(image), heads),
                                                _heads(self.to_v_ip(image), heads))
        return _finish(attn, _merge(out + self.ip_weight * out_ip))
