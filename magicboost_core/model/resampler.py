"""IP-Adapter-Plus Perceiver resampler: raw CLIP image tokens -> ``ip_tokens`` context tokens (reference §1.2).

Own module (not diffusers' ``IPAdapterPlusImageProjection``) because the official one differs in ways
that matter for parity and for loading weights unchanged:

* the key/value projection is one fused ``to_kv`` Linear (output = [k | v]);
* q and k are each scaled by ``dim_head ** -0.25`` before the product (not the logits by ``dim_head ** -0.5``);
* the softmax always runs in float32 and is cast back to the working dtype (also for float64 inputs,
  as the official code does).

Parameter names equal the official ``image_embed.*`` names, so checkpoint conversion is the identity.

Shapes: input ``(N, T, in_dim)`` CLIP tokens (real model: T = 257 tokens of OpenCLIP ViT-H/14 penultimate
layer, in_dim = 1280); output ``(N, num_queries, dim)`` (16 x 1024), LayerNorm-ed.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["PerceiverAttention", "PerceiverFeedForward", "Resampler"]


class PerceiverAttention(nn.Module):
    """Latents attend to ``cat[image features, latents]``; returns the update for the latents (N, Q, dim)."""

    def __init__(self, dim: int, dim_head: int = 64, heads: int = 12):
        super().__init__()
        self.dim_head = dim_head
        self.heads = heads
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)  # on the image features
        self.norm2 = nn.LayerNorm(dim)  # on the latents
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        n, length, _ = t.shape
        return t.reshape(n, length, self.heads, self.dim_head).transpose(1, 2)  # (N, heads, length, dim_head)

    def forward(self, features: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        features = self.norm1(features)
        latents = self.norm2(latents)
        n, q_len, _ = latents.shape
        q = self._split_heads(self.to_q(latents))
        k, v = self.to_kv(torch.cat([features, latents], dim=1)).chunk(2, dim=-1)
        k, v = self._split_heads(k), self._split_heads(v)
        scale = self.dim_head ** -0.25
        logits = (q * scale) @ (k * scale).transpose(-2, -1)
        weights = torch.softmax(logits.float(), dim=-1).to(logits.dtype)
        out = (weights @ v).transpose(1, 2).reshape(n, q_len, self.heads * self.dim_head)
        return self.to_out(out)


class PerceiverFeedForward(nn.Sequential):
    """LayerNorm -> Linear(dim, mult*dim, no bias) -> GELU (erf) -> Linear(mult*dim, dim, no bias).

    Indices 0/1/3 are the official parameter names (``layers.i.1.{0,1,3}``)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(),
                         nn.Linear(dim * mult, dim, bias=False))


class Resampler(nn.Module):
    """Perceiver resampler (IP-Adapter-Plus).

    Args:
        dim: latent width = output width (the UNet's ``context_dim``).
        depth, dim_head, heads, ff_mult: Perceiver sizes (official: 4, 64, 12, 4).
        num_queries: learned latents = output tokens (16).
        in_dim: width of the input CLIP tokens (1280).
    """

    def __init__(self, dim: int = 1024, depth: int = 4, dim_head: int = 64, heads: int = 12,
                 num_queries: int = 16, in_dim: int = 1280, ff_mult: int = 4):
        super().__init__()
        self.in_dim = in_dim
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim ** 0.5)
        self.proj_in = nn.Linear(in_dim, dim)
        self.proj_out = nn.Linear(dim, dim)
        self.norm_out = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, dim_head, heads), PerceiverFeedForward(dim, ff_mult)])
            for _ in range(depth))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N, T, in_dim) -> (N, num_queries, dim)."""
        if tokens.ndim != 3 or tokens.shape[-1] != self.in_dim:
            raise ValueError(f"Resampler: expected image tokens (N, T, {self.in_dim}), got {tuple(tokens.shape)}")
        latents = self.latents.expand(tokens.shape[0], -1, -1)
        features = self.proj_in(tokens)
        for attn, ff in self.layers:
            latents = attn(features, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))
