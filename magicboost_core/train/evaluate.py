"""Novel-view evaluation of a multi-view model on held-out procedural objects.

* :func:`sample_targets` — batched DDIM (:func:`~magicboost_core.model.sampling.ddim_sample`: official
  "uniform" timesteps, eta 0) with classifier-free guidance; every item is its own object
  (:class:`ItemConditionDenoiser`), the unconditional branch is the official one (zero anchors, zero image
  features, zero labels, same camera).
* :func:`nearest_anchor` — the baseline: copy the condition view closest in azimuth to the target.
* :func:`degrade_anchors` — what coarse generators produce: side views (1..A-1) blurred, noisy, and
  rendered from slightly wrong poses (from the data set's ``anchors_perturbed``).
* :func:`evaluate` — PSNR / SSIM of the model and the baseline against the rendered ground truth.

Images are float [0, 1]; model inputs channel-first, metrics channel-last.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..eval.image_metrics import psnr, ssim
from ..geometry.presets import get_preset
from ..model.prediction import to_epsilon, to_x0
from ..model.sampling import ddim_sample
from ..model.schedule import alphas_cumprod, seeded_randn
from .dataset import MultiViewData
from .trainer import condition_batch

__all__ = ["ItemConditionDenoiser", "sample_targets", "nearest_anchor", "degrade_anchors", "evaluate",
           "side_labels", "denoise_psnr"]


class ItemConditionDenoiser:
    """The ``denoiser`` of :func:`~magicboost_core.model.sampling.ddim_sample` for a batch of different objects.

    Unlike :class:`~magicboost_core.model.denoiser.MultiViewDenoiser` (one object, any target cameras), item ``i``
    has its own condition views, target camera and labels, laid out as in training
    (:func:`~magicboost_core.train.trainer.condition_batch`, zero text). The anchors sit at t = 0 and never see
    the target, so their keys/values are computed once. CFG: one 2B batch, conditional first, then the official
    unconditional branch (zero anchors, zero image features, zero labels, same camera); the raw outputs are
    mixed, then turned into ε with ᾱ_t rounded to float32 (as the evaluation always has).

    Args:
        model: a :class:`~magicboost_core.model.bundle.MultiViewModel`.
        anchor_images: (B, A, 3, H, W) [0, 1] condition views; view 0 also gives the image tokens.
        camera: (B, 1 + A, 10) camera codes, target first; they fix the target views, so :meth:`predict` takes
            its angles for the interface only.
        labels: (B, 1 + A, 2) condition-strength labels or None (zeros).
        cfg: guidance scale; 1.0 runs the conditional branch only.
    """

    def __init__(self, model, anchor_images: torch.Tensor, camera: torch.Tensor, labels: torch.Tensor | None,
                 cfg: float):
        unet, codec = model.unet, model.codec
        self.model, self.unet, self.cfg = model, unet, float(cfg)
        self.device = dev = next(unet.parameters()).device
        self.alphas_cumprod = alphas_cumprod()
        b, a = anchor_images.shape[:2]
        imgs = anchor_images.to(dev)
        anchors = codec.encode(imgs.reshape(b * a, *imgs.shape[2:]))
        anchors = anchors.reshape(b, a, *anchors.shape[1:])
        tokens = model.image_encoder(imgs[:, 0])
        camera = camera.to(dev)
        labels = (torch.zeros(b, 1 + a, 2) if labels is None else labels).to(dev)
        text = torch.zeros(b, 1, unet.config.context_dim, device=dev)
        if self.cfg != 1.0:
            anchors = torch.cat([anchors, torch.zeros_like(anchors)])
            tokens = torch.cat([tokens, torch.zeros_like(tokens)])
            camera = torch.cat([camera, camera])
            labels = torch.cat([labels, torch.zeros_like(labels)])
            text = torch.cat([text, text])
        self._kwargs = dict(text=text, image_tokens=tokens, camera=camera, labels=labels)
        self._cache = unet.encode_anchors(anchors, text, tokens, camera, labels)

    @torch.no_grad()
    def predict(self, z_t: torch.Tensor, t, target_elev=None, target_az=None, drop_mask=None):
        """``(eps_cfg, eps_cond)``, both (B, C, h, w) float32, for the noisy targets z_t (B, C, h, w) at t (B,)."""
        kind = self.unet.config.prediction_type
        n = 1 if self.cfg == 1.0 else 2
        t = torch.as_tensor(t, dtype=torch.long).reshape(-1)
        xin = z_t if n == 1 else torch.cat([z_t, z_t])  # keeps z_t's memory format (same numbers as before)
        tt = t.to(self.device).repeat(n)
        dm = None if drop_mask is None else torch.as_tensor(drop_mask).to(self.device).repeat(n, 1)
        out = self.unet(xin, tt, None, anchor_cache=self._cache, drop_mask=dm, **self._kwargs).float()
        cond = out[:z_t.shape[0]]
        guided = cond if n == 1 else out[z_t.shape[0]:] + self.cfg * (cond - out[z_t.shape[0]:])
        ab = self.alphas_cumprod[t.cpu()].float()
        return to_epsilon(guided, z_t, ab, kind), to_epsilon(cond, z_t, ab, kind)


def side_labels(b: int, a: int, tex: float, geo: float) -> torch.Tensor:
    """Labels (B, 1 + A, 2): zeros for target and anchor 0, (tex, geo) for anchors 1..A-1."""
    lab = torch.zeros(b, 1 + a, 2)
    lab[:, 2:, 0] = tex
    lab[:, 2:, 1] = geo
    return lab


@torch.no_grad()
def sample_targets(model, anchor_images: torch.Tensor, elevation: torch.Tensor, azimuth: torch.Tensor,
                   steps: int = 25, cfg: float = 2.0, seed: int = 0, labels: torch.Tensor | None = None,
                   preset: str = "instant3d", batch_size: int = 64, clip_x0: bool = True, init: str = "noise",
                   strength: float = 1.0) -> torch.Tensor:
    """Sample one target view per item.

    ``init``: "noise" (pure noise, official; ``strength`` must be 1) or "nearest_view" (SDEdit: the nearest anchor
    in azimuth, noised to the first of the ``int(steps * strength)`` lowest DDIM timesteps).

    ``clip_x0``: clamp each step's x0 estimate to the codec's range [-1, 1] (DDPM's pixel-space practice,
    diffusers' ``clip_sample``); the official latent-space sampler does not clip.

    anchor_images (B, A, 3, H, W) [0, 1]; elevation / azimuth (B,) degrees; labels (B, 1 + A, 2) or
    None (zeros). Returns (B, 3, H, W) float [0, 1].
    """
    if init not in ("noise", "nearest_view"):
        raise ValueError(f"sample_targets: init must be 'noise' or 'nearest_view', got {init!r}.")
    outs = []
    for s in range(0, anchor_images.shape[0], batch_size):
        sl = slice(s, s + batch_size)
        start = None if init == "noise" else nearest_anchor(anchor_images[sl], azimuth[sl], preset)
        outs.append(_sample_chunk(model, anchor_images[sl], elevation[sl], azimuth[sl], steps, cfg, seed + s,
                                  None if labels is None else labels[sl], preset, clip_x0, start, strength))
    return torch.cat(outs)


def _sample_chunk(model, anchor_images, elevation, azimuth, steps, cfg, seed, labels, preset, clip_x0,
                  start_images=None, strength=1.0):
    codec = model.codec
    dev = next(model.unet.parameters()).device
    b = anchor_images.shape[0]
    camera = condition_batch(elevation, azimuth, preset)
    denoiser = ItemConditionDenoiser(model, anchor_images, camera, labels, cfg)
    noise = seeded_randn((b, codec.latent_channels, codec.latent_size, codec.latent_size),
                         torch.Generator().manual_seed(int(seed)), device=dev)
    start = None if start_images is None else codec.encode(start_images.to(dev))
    z = ddim_sample(denoiser, elevation, azimuth, num_steps=steps, noise=noise, init_latents=start,
                    strength=strength, clip_x0=clip_x0)
    return codec.decode(z).float().clamp(0, 1).cpu()


def nearest_anchor(anchor_images: torch.Tensor, azimuth: torch.Tensor, preset: str = "instant3d") -> torch.Tensor:
    """Baseline: for each item the anchor whose azimuth is closest to the target's. (B, 3, H, W)."""
    p = get_preset(preset)
    az = torch.tensor(p.azimuths, dtype=torch.float64)
    d = torch.remainder(azimuth.double()[:, None] - az[None] + 180.0, 360.0) - 180.0
    idx = d.abs().argmin(1)
    return anchor_images[torch.arange(anchor_images.shape[0]), idx]


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with replicate padding."""
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=img.dtype)
    w = torch.exp(-(x**2) / (2 * sigma**2))
    w = w / w.sum()
    c = img.shape[1]
    img = F.pad(img, (r, r, r, r), mode="replicate")
    img = F.conv2d(img, w.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(img, w.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def degrade_anchors(anchor_images: torch.Tensor, seed: int = 0, blur_sigma: float = 0.8,
                    noise_std: float = 0.04) -> torch.Tensor:
    """Blur + add Gaussian noise to side anchors 1..A-1 of (B, A, 3, H, W) [0, 1]; anchor 0 unchanged."""
    g = torch.Generator().manual_seed(int(seed))
    out = anchor_images.clone()
    b, a = out.shape[:2]
    side = out[:, 1:].reshape(b * (a - 1), *out.shape[2:])
    side = gaussian_blur(side, blur_sigma) + noise_std * torch.randn(side.shape, generator=g)
    out[:, 1:] = side.clamp(0, 1).reshape(b, a - 1, *out.shape[2:])
    return out


def evaluate(model, data: MultiViewData, num: int | None = None, steps: int = 25, cfg: float = 2.0,
             degraded: bool = False, labels: tuple[float, float] = (0.0, 0.0), seed: int = 0,
             batch_size: int = 64, clip_x0: bool = True, init: str = "noise", strength: float = 1.0) -> dict:
    """Mean PSNR / SSIM of the model and of the nearest-anchor baseline on target view 0 of each object.

    ``degraded``: side anchors come from perturbed poses (needs ``anchors_perturbed``) and are blurred
    and noised. ``labels`` = (n0, n1) given to anchors 1..A-1. ``init`` / ``strength``: see :func:`sample_targets`.
    """
    n = len(data) if num is None else min(num, len(data))
    obj = torch.arange(n)
    view = torch.zeros(n, dtype=torch.long)
    batch = data.batch(obj, view, perturbed=degraded)
    anchors = batch["anchors"]
    if degraded:
        clean0 = data.batch(obj, view)["anchors"][:, 0]
        anchors[:, 0] = clean0
        anchors = degrade_anchors(anchors, seed=seed + 7)
    lab = side_labels(n, anchors.shape[1], *labels)
    pred = sample_targets(model, anchors, batch["elevation"], batch["azimuth"], steps, cfg, seed, lab,
                          batch_size=batch_size, clip_x0=clip_x0, init=init, strength=strength)
    base = nearest_anchor(anchors, batch["azimuth"])
    gt = batch["target"].permute(0, 2, 3, 1)
    pred, base = pred.permute(0, 2, 3, 1), base.permute(0, 2, 3, 1)
    return {
        "n": n,
        "psnr": float(psnr(pred, gt).mean()), "ssim": float(ssim(pred, gt).mean()),
        "baseline_psnr": float(psnr(base, gt).mean()), "baseline_ssim": float(ssim(base, gt).mean()),
    }


@torch.no_grad()
def denoise_psnr(model, data: MultiViewData, t: int = 500, num: int | None = None, degraded: bool = False,
                 labels: tuple[float, float] = (0.0, 0.0), seed: int = 0) -> float:
    """Mean PSNR of the one-step x0 estimate of target view 0 noised to timestep ``t``.

    x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps; x0_hat from the UNet's output (its ``prediction_type``), clamped
    to [-1, 1]. Measures how well the model uses the condition views at a given noise level, without the
    error accumulation of a full sampler (useful for small, briefly trained models).
    """
    n = len(data) if num is None else min(num, len(data))
    obj, view = torch.arange(n), torch.zeros(n, dtype=torch.long)
    batch = data.batch(obj, view, perturbed=degraded)
    anchors = batch["anchors"]
    if degraded:
        anchors[:, 0] = data.batch(obj, view)["anchors"][:, 0]
        anchors = degrade_anchors(anchors, seed=seed + 7)
    unet, codec, enc = model.unet, model.codec, model.image_encoder
    dev = next(unet.parameters()).device
    b, a = anchors.shape[:2]
    lat = codec.encode(anchors.flatten(0, 1).to(dev))
    lat = lat.reshape(b, a, *lat.shape[1:])
    x0 = codec.encode(batch["target"].to(dev))
    g = torch.Generator().manual_seed(int(seed))
    eps = torch.randn(x0.shape, generator=g).to(dev)
    ab = alphas_cumprod().float()[t]
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    text = torch.zeros(b, 1, unet.config.context_dim, device=dev)
    camera = condition_batch(batch["elevation"], batch["azimuth"]).to(dev)
    e = unet(xt, torch.full((b,), t, device=dev), lat, text, enc(anchors[:, 0].to(dev)), camera,
             side_labels(b, a, *labels).to(dev))
    x0h = to_x0(e.float(), xt, ab, unet.config.prediction_type).clamp(-1, 1)
    return float(psnr(codec.decode(x0h).permute(0, 2, 3, 1).cpu(), batch["target"].permute(0, 2, 3, 1)).mean())
