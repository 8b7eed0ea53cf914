"""What the UNet predicts, and the one place that turns a prediction into eps / x0 (or a training target).

The forward process is ``x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε`` (official schedule, :mod:`.schedule`). A model
declares in its UNet config (:class:`~magicboost_core.model.config.MultiViewUNetConfig` ``prediction_type``)
which of these its output is:

* ``"epsilon"`` — the noise ε (the official Magic-Boost / SD-2.1-base parameterisation, the default);
* ``"v_prediction"`` — ``v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x0`` (Salimans & Ho 2022); then
  ``ε = sqrt(ᾱ_t) v + sqrt(1 − ᾱ_t) x_t`` and ``x0 = sqrt(ᾱ_t) x_t − sqrt(1 − ᾱ_t) v``;
* ``"sample"`` — the clean sample x0; then ``ε = (x_t − sqrt(ᾱ_t) x0) / sqrt(1 − ᾱ_t)``.

The names are diffusers' ``prediction_type`` values. Everything downstream (DDIM, SDS, AIU) works with ε:
:class:`~magicboost_core.model.denoiser.MultiViewDenoiser` converts with :func:`to_epsilon`, the trainer
builds its regression target with :func:`training_target`. All conversions are affine in the prediction for a
fixed ``x_t``, so classifier-free guidance gives the same ε whether it mixes raw predictions or ε.

Shapes: ``prediction``, ``x_t``, ``x0``, ``eps`` are (B, C, h, w) (any (B, ...) works); ``alpha_bar`` is a
float, a 0-d tensor or a (B,) tensor of ᾱ_t, broadcast over the non-batch dimensions. Arithmetic runs in the
prediction's dtype (float64 coefficients are cast).
"""
from __future__ import annotations

import torch

__all__ = ["PREDICTION_TYPES", "DEFAULT_PREDICTION_TYPE", "check_prediction_type", "to_epsilon", "to_x0",
           "training_target", "loss_weights_to_match"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
DEFAULT_PREDICTION_TYPE = "epsilon"


def check_prediction_type(prediction_type) -> str:
    """Return ``prediction_type`` if it is one of :data:`PREDICTION_TYPES`; raise a ``ValueError`` naming the fix."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {list(PREDICTION_TYPES)}, got {prediction_type!r}; set "
                         "it in the model's config.json (unet.prediction_type) to what the UNet was trained to "
                         "output ('epsilon' for the official Magic-Boost checkpoint).")
    return prediction_type


def _coefficients(alpha_bar, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sqrt(ᾱ), sqrt(1 − ᾱ)) shaped (B, 1, ..., 1) or 0-d, on ``like``'s device and dtype."""
    a = torch.as_tensor(alpha_bar, dtype=torch.float64)
    if a.dim() > 0:
        if a.numel() not in (1, like.shape[0]):
            raise ValueError(f"alpha_bar has {a.numel()} values for a batch of {like.shape[0]}; give one per item.")
        a = a.reshape((-1,) + (1,) * (like.dim() - 1))
    if bool(((a <= 0) | (a >= 1)).any()):
        raise ValueError("alpha_bar must lie in (0, 1) (a diffusion timestep of the schedule).")
    sa, sb = a.sqrt(), (1.0 - a).sqrt()
    return sa.to(like.device, like.dtype), sb.to(like.device, like.dtype)


#: ε and x0 from a prediction as ``(a · x_t + b · prediction) / c``, per (prediction type, wanted type), with
#: ``s = sqrt(ᾱ)``, ``r = sqrt(1 − ᾱ)``: from ``x_t = s x0 + r ε`` and ``v = s ε − r x0``.
_CONVERSIONS = {
    ("epsilon", "sample"): lambda s, r: (1.0, -r, s),       # x0 = (x_t − r ε) / s
    ("v_prediction", "epsilon"): lambda s, r: (r, s, 1.0),  # ε = r x_t + s v
    ("v_prediction", "sample"): lambda s, r: (s, -r, 1.0),  # x0 = s x_t − r v
    ("sample", "epsilon"): lambda s, r: (1.0, -s, r),       # ε = (x_t − s x0) / r
}


def _convert(prediction: torch.Tensor, x_t: torch.Tensor, alpha_bar, prediction_type: str, wanted: str):
    check_prediction_type(prediction_type)
    if prediction_type == wanted:
        return prediction
    a, b, c = _CONVERSIONS[prediction_type, wanted](*_coefficients(alpha_bar, prediction))
    return (a * x_t.to(prediction.dtype) + b * prediction) / c


def to_epsilon(prediction: torch.Tensor, x_t: torch.Tensor, alpha_bar, prediction_type: str) -> torch.Tensor:
    """The noise ε implied by a model output ``prediction`` of type ``prediction_type`` at ``x_t``, ᾱ_t."""
    return _convert(prediction, x_t, alpha_bar, prediction_type, "epsilon")


def to_x0(prediction: torch.Tensor, x_t: torch.Tensor, alpha_bar, prediction_type: str) -> torch.Tensor:
    """The clean-sample estimate x0 implied by a model output ``prediction`` at ``x_t``, ᾱ_t."""
    return _convert(prediction, x_t, alpha_bar, prediction_type, "sample")


def training_target(x0: torch.Tensor, eps: torch.Tensor, alpha_bar, prediction_type: str) -> torch.Tensor:
    """What a model of ``prediction_type`` should output for ``x_t = sqrt(ᾱ) x0 + sqrt(1 − ᾱ) eps``."""
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "sample":
        return x0
    sa, sb = _coefficients(alpha_bar, eps)
    return sa * eps - sb * x0.to(eps.dtype)


def loss_weights_to_match(alpha_bar: torch.Tensor, prediction_type: str, objective: str) -> torch.Tensor:
    """Per-timestep weights w(t) with ``w · ‖pred − target‖² = ‖error in the objective's space‖²``.

    ``objective`` is ``"v"`` (‖v̂ − v‖²) or ``"eps"`` (‖ε̂ − ε‖²); errors of the three parameterisations at the
    same x_t are related by ``ε-err = sqrt(ᾱ) v-err = sqrt(ᾱ / (1 − ᾱ)) x0-err``. ``alpha_bar``: (T,) float64.
    Returns (T,) float64, **not** normalised.
    """
    check_prediction_type(prediction_type)
    a = torch.as_tensor(alpha_bar, dtype=torch.float64)
    to_eps = {"epsilon": torch.ones_like(a), "v_prediction": a, "sample": a / (1.0 - a)}[prediction_type]
    if objective == "eps":
        return to_eps
    if objective == "v":
        return to_eps / a
    raise ValueError(f"objective must be 'v' or 'eps', got {objective!r}.")
