"""Classifier-free-guided noise prediction of the multi-view UNet for given condition views (reference §2,
§4, §5.2).

Conditional branch: prompt embedding ``text.cond``, the reference view's image tokens, the anchor latents and
the condition-strength labels. Unconditional branch: ``text.uncond``, **zero** image tokens (still fed through
the UNet's resampler), **zero** anchor latents (still at t = 0), zero labels. Both branches share the
cameras: target = (elevation, azimuth) of the target view, anchors = their own angles, radius 0, coded by
:func:`~magicboost_core.geometry.camera_vector.camera_vectors` relative to anchor 0.

``ε = ε_u + s (ε_c − ε_u)`` with ``s = cfg_scale``. Models that predict v or x0 (``unet.config.prediction_type``)
are converted to ε here (:func:`~magicboost_core.model.prediction.to_epsilon`), so every caller sees ε.
"""
from __future__ import annotations

import contextlib

import torch

from ..geometry.camera_vector import camera_vectors
from .conditioning import ViewConditioning
from .prediction import to_epsilon
from .schedule import alphas_cumprod

__all__ = ["MultiViewDenoiser"]


class MultiViewDenoiser:
    """Noise prediction for targets seen from arbitrary cameras, conditioned on fixed anchor views.

    Args:
        model: a :class:`~magicboost_core.model.bundle.MultiViewModel`.
        cond: the encoded anchor views (:func:`~magicboost_core.model.conditioning.encode_views`).
        cfg_scale: guidance scale (official 5.0); 1.0 skips the unconditional branch.
        use_anchor_cache: compute the anchors' attention keys/values once (exact, as the official
            ``anchor_infer_once``) and run only the target rows afterwards.
        autocast_dtype: e.g. ``torch.bfloat16`` to run the UNet under CUDA autocast (ignored on CPU).

    ``alphas_cumprod``: (1000,) float64 CPU ᾱ_t of the noise schedule the model was trained with (the official
    one, :mod:`.schedule`); the samplers and the refinement read it here.
    """

    def __init__(self, model, cond: ViewConditioning, cfg_scale: float = 5.0, use_anchor_cache: bool = True,
                 autocast_dtype: torch.dtype | None = None):
        self.model = model
        self.unet = model.unet
        self.cfg_scale = float(cfg_scale)
        self.use_anchor_cache = bool(use_anchor_cache)
        self.autocast_dtype = autocast_dtype
        self.alphas_cumprod = alphas_cumprod()
        p = next(self.unet.parameters())
        self.device, self.dtype = p.device, p.dtype
        a = cond.num_anchors
        if cond.labels.shape != (a + 1, 2):
            raise ValueError(f"cond.labels must be ({a + 1}, 2) for {a} anchors, got {tuple(cond.labels.shape)}.")
        self.num_anchors = a
        el, az = cond.elevations.double(), cond.azimuths.double()
        self._reference = (float(el[0]), float(az[0]), 0.0)
        self._anchor_codes = camera_vectors(el, az, None, torch.zeros(a, dtype=torch.bool), self._reference,
                                            device=self.device)
        dev, dt = self.device, self.dtype
        lat = cond.anchor_latents.to(dev, dt)
        tok = cond.image_tokens.to(dev, dt)
        # Branch tensors, index 0 = conditional, 1 = unconditional.
        self._text = torch.stack([model.text_cond, model.text_uncond]).to(dev, dt)
        self._tokens = torch.stack([tok, torch.zeros_like(tok)])
        self._anchors = torch.stack([lat, torch.zeros_like(lat)])
        self._labels = torch.stack([cond.labels, torch.zeros_like(cond.labels)]).to(dev, dt)
        self._base_cache = None
        self._cache = None
        self._cache_key = None

    # ---- cache -------------------------------------------------------------------------------------------------
    def reset_cache(self) -> None:
        """Forget the anchor keys/values (call after changing the model's weights)."""
        self._base_cache = self._cache = self._cache_key = None

    def _camera(self, target_elev, target_az) -> torch.Tensor:
        tel = torch.as_tensor(target_elev, dtype=torch.float64).reshape(-1).to(self.device)
        taz = torch.as_tensor(target_az, dtype=torch.float64).reshape(-1).to(self.device)
        tgt = camera_vectors(tel, taz, None, torch.ones(tel.numel(), dtype=torch.bool), self._reference,
                             device=self.device)
        anc = self._anchor_codes[None].expand(tel.numel(), -1, -1)
        return torch.cat([tgt[:, None], anc], dim=1).to(self.device, self.dtype)  # (B, F, 10)

    def _branch_cache(self, branches: list[int], batch: int):
        key = (tuple(branches), batch)
        if self._cache_key == key:
            return self._cache
        if self._base_cache is None:
            # Two rows (cond, uncond); the target entries of camera/labels are not used by the anchors.
            cam = self._camera([0.0, 0.0], [0.0, 0.0])
            self._base_cache = self.unet.encode_anchors(self._anchors, self._text, self._tokens, cam, self._labels)
        rows = [b for b in branches for _ in range(batch)]
        self._cache = self._base_cache.select(rows)
        self._cache_key = key
        return self._cache

    def _autocast(self):
        if self.autocast_dtype is not None and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=self.autocast_dtype)
        return contextlib.nullcontext()

    def _as_epsilon(self, pred: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor, n: int) -> torch.Tensor:
        """(n*B, C, h, w) float UNet outputs for ``n`` branches of z_t (B, C, h, w) at t (B,) -> eps, per the
        model's ``prediction_type`` (:mod:`.prediction`)."""
        kind = self.unet.config.prediction_type
        if kind == "epsilon":
            return pred
        ab = self.alphas_cumprod[t.cpu()].repeat(n)
        return to_epsilon(pred, z_t.to(pred.device, pred.dtype).repeat(n, 1, 1, 1), ab, kind)

    # ---- prediction --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, z_t: torch.Tensor, t, target_elev, target_az, drop_mask=None):
        """Noise prediction of the target views.

        Args:
            z_t: (B, C, h, w) noisy target latents.
            t: (B,) integer timesteps (or one int for all).
            target_elev, target_az: (B,) degrees of the target cameras.
            drop_mask: optional (B, A-1) {0,1}: 1 hides anchor 1+j from the target (AIU; anchor 0 always kept).
        Returns: ``(eps_cfg, eps_cond)``, both (B, C, h, w) in ``z_t``'s dtype.
        """
        b = z_t.shape[0]
        t = torch.as_tensor(t, dtype=torch.long).reshape(-1)
        if t.numel() == 1:
            t = t.expand(b)
        if t.numel() != b:
            raise ValueError(f"predict: {t.numel()} timesteps for {b} latents.")
        cam = self._camera(target_elev, target_az)
        if cam.shape[0] != b:
            raise ValueError(f"predict: {cam.shape[0]} target cameras for {b} latents; give one elevation and "
                             "azimuth per latent.")
        branches = [0] if self.cfg_scale == 1.0 else [0, 1]
        idx = torch.tensor([br for br in branches for _ in range(b)], device=self.device)
        n = len(branches)
        sample = z_t.to(self.device, self.dtype).repeat(n, 1, 1, 1)
        dm = None
        if drop_mask is not None:
            dm = torch.as_tensor(drop_mask).to(self.device).reshape(b, -1).repeat(n, 1)
        kwargs = dict(text=self._text[idx], image_tokens=self._tokens[idx], camera=cam.repeat(n, 1, 1),
                      labels=self._labels[idx], drop_mask=dm)
        with self._autocast():
            if self.use_anchor_cache:
                cache = self._branch_cache(branches, b)
                eps = self.unet(sample, t.to(self.device).repeat(n), None, anchor_cache=cache, **kwargs)
            else:
                eps = self.unet(sample, t.to(self.device).repeat(n), self._anchors[idx], **kwargs)
        eps = self._as_epsilon(eps.float(), z_t, t, n)
        eps_c = eps[:b]
        eps_cfg = eps_c if n == 1 else eps[b:] + self.cfg_scale * (eps_c - eps[b:])
        return eps_cfg.to(z_t.dtype), eps_c.to(z_t.dtype)
