"""Configuration of mesh refinement: one dataclass tree with the official defaults (reference §5.2).

The official run is 2500 steps of a NeRF. Here the same objective drives a *mesh* (vertex offsets + a
UV texture), and every step-based schedule of the official config is stored as a **fraction of the run
length** so that short runs keep the same shape:

====================================  ===========================  ===============================
official (2500 steps)                 here                         default
====================================  ===========================  ===============================
max_step 0.5 -> 0.3 over steps 0-2000 ``max_step_anneal_fraction``  0.8 (2000 / 2500)
AIU at s >= 500, every 500 steps      ``aiu.start_fraction``,      0.2, 0.2 (500 / 2500)
                                      ``aiu.every_fraction``
pseudo views sampled 500 <= s <= 2000 ``aiu.pseudo_end_fraction``  0.8 (2000 / 2500)
====================================  ===========================  ===============================

Loss weights.  Official: ``2.0 * L_sds + 6000 * L_orient`` on guidance steps, ``1e5 * MSE`` on
reconstruction steps.  The defaults keep these numbers: ``lambda_rgb = 1e5`` multiplies the MSE of a
``render_resolution``² albedo render (mean over pixels, so the value does not depend on the size), and
``lambda_sds = 2`` the latent (or pixel) SDS ``0.5 * sum / B``.  Adam normalises each parameter's
gradient scale, so what matters is the ratio where both losses touch the same parameters; measured on
the sample asset with a pixel-space demo model, lower ``lambda_rgb`` (2e3-2e4) let the weak 32 px prior
desaturate the colours, 1e5 did least harm (see ``benchmarks/refine.py ablation``).
``lambda_mask`` (silhouette MSE of the reference view, and of the condition views in the
``condition_views`` ablation) has no official counterpart (official mask weight 0); it keeps the mesh's
outline on the reference view.  The mesh-only regularisers (Laplacian of the positions, normal
consistency, offset norm) replace the NeRF's sparsity/opacity terms; their weights were chosen on the
sample asset (Chamfer distance to the ground truth after refining its degraded copy).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

__all__ = ["AIUConfig", "RefineConfig", "RefineConfigError", "AIU_MODES", "RECON_VIEW_MODES"]

#: ``sdedit``: the official Anchor Iterative Update (renders SDEdit'ed by the multi-view model).
#: ``condition_views``: ablation "plain L1" — the condition images themselves are the pseudo targets.
AIU_MODES = ("sdedit", "condition_views")
RECON_VIEW_MODES = ("four", "reference")


class RefineConfigError(ValueError):
    """A refinement setting is out of range; the message names the field and the allowed values."""


@dataclass
class AIUConfig:
    """Anchor Iterative Update (reference §5.2, ``get_pseudo_anchor_imgs`` + ``du_forward_fix``)."""

    enabled: bool = True
    mode: str = "sdedit"
    #: SDEdit strength: the first int(num_ddim_steps * strength) DDIM steps are run (official 0.1 of 50
    #: -> 5 steps, from t = 81).
    strength: float = 0.1
    num_ddim_steps: int = 50
    #: First update at ``start_fraction * steps``, then every ``every_fraction * steps`` (official 500/2500).
    start_fraction: float = 0.2
    every_fraction: float = 0.2
    #: Pseudo views are sampled for reconstruction until this fraction of the run (official 2000/2500).
    pseudo_end_fraction: float = 0.8
    #: Sampling probabilities of [reference, pseudo 0, pseudo 1, pseudo 2, pseudo 3] (official; pseudo 0 never).
    view_probabilities: tuple[float, ...] = (0.25, 0.0, 0.25, 0.25, 0.25)
    #: Pseudo-view mask: render alpha above this (replaces the official rembg background removal).
    mask_threshold: float = 0.5
    #: Loss on pseudo views: "mse" (official) or "l1" (used by the ``condition_views`` ablation preset).
    loss: str = "mse"


@dataclass
class RefineConfig:
    """Everything :func:`magicboost_core.refine.loop.refine_mesh` needs besides model, views and mesh."""

    preset: str = "instant3d"
    steps: int = 2500
    seed: int = 0
    batch_size: int = 4
    #: Rasterisation size of SDS/reference renders (resized to the model's codec size before encoding).
    render_resolution: int = 256
    # --- diffusion guidance (reference §5.2 steps 2-6) ---------------------------------------------
    cfg_scale: float = 5.0
    recon_std_rescale: float = 0.2
    min_step_fraction: float = 0.02
    max_step_start: float = 0.5
    max_step_end: float = 0.3
    max_step_anneal_fraction: float = 0.8
    #: "alternate": even steps reconstruction, odd steps SDS (official ``ref_or_guidance``); "sds": SDS only;
    #: "reference": reconstruction only (no diffusion model at all: the plain L1/MSE baseline).
    ref_or_guidance: str = "alternate"
    recon_view_mode: str = "four"
    # --- shading of SDS renders (official ``diffuse-with-point-light``) ------------------------------
    albedo_probability: float = 0.25
    textureless_probability: float = 0.5
    light_distance_range: tuple[float, float] = (0.8, 1.5)
    # --- loss weights ------------------------------------------------------------------------------
    lambda_sds: float = 2.0
    lambda_rgb: float = 1e5
    lambda_mask: float = 2e4
    lambda_orient: float = 6000.0
    lambda_laplacian: float = 5e3
    #: "positions": Laplacian of the refined vertex positions (smooths the coarse generator's noise);
    #: "offsets": Laplacian of the offsets only (keeps the input's own detail).
    laplacian_on: str = "positions"
    lambda_normal_consistency: float = 500.0
    lambda_offset: float = 10.0
    # --- representation ------------------------------------------------------------------------------
    #: "texture": UV texture (xatlas unwrap when missing); "vertex_colors": per-vertex colours.
    color_mode: str = "texture"
    texture_resolution: int = 512
    refine_geometry: bool = True
    #: One level of midpoint subdivision before refining when the mesh has fewer than this many faces
    #: (0 = never).
    subdivide_below_faces: int = 0
    #: Radius of the sphere the mesh is normalised into (instant3d cameras at distance 1.5 see ~0.6).
    normalize_radius: float = 0.55
    # --- optimiser (official: Adam betas (0.9, 0.99), lr 0.01 grid / 0.001 MLPs) ---------------------
    lr_offsets: float = 1e-3
    lr_texture: float = 1e-2
    adam_betas: tuple[float, float] = (0.9, 0.99)
    # --- bookkeeping ---------------------------------------------------------------------------------
    preview_every: int = 0
    preview_resolution: int = 128
    aiu: AIUConfig = field(default_factory=AIUConfig)

    # -----------------------------------------------------------------------------------------------
    def __post_init__(self):
        if isinstance(self.aiu, dict):
            self.aiu = AIUConfig(**self.aiu)
        self.validate()

    def validate(self) -> "RefineConfig":
        def need(cond, msg):
            if not cond:
                raise RefineConfigError(msg)

        need(int(self.steps) >= 1, f"RefineConfig.steps must be >= 1; got {self.steps}.")
        need(int(self.batch_size) >= 1, f"RefineConfig.batch_size must be >= 1; got {self.batch_size}.")
        need(int(self.render_resolution) >= 8, f"RefineConfig.render_resolution must be >= 8; got {self.render_resolution}.")
        need(0.0 < self.min_step_fraction < self.max_step_end <= self.max_step_start <= 1.0,
             "RefineConfig needs 0 < min_step_fraction < max_step_end <= max_step_start <= 1; got "
             f"{self.min_step_fraction}, {self.max_step_end}, {self.max_step_start}.")
        need(0.0 < self.max_step_anneal_fraction <= 1.0,
             f"RefineConfig.max_step_anneal_fraction must be in (0, 1]; got {self.max_step_anneal_fraction}.")
        need(self.ref_or_guidance in ("alternate", "sds", "reference"),
             f"RefineConfig.ref_or_guidance must be 'alternate', 'sds' or 'reference'; got {self.ref_or_guidance!r}.")
        need(self.recon_view_mode in RECON_VIEW_MODES,
             f"RefineConfig.recon_view_mode must be one of {RECON_VIEW_MODES}; got {self.recon_view_mode!r}.")
        need(self.laplacian_on in ("positions", "offsets"),
             f"RefineConfig.laplacian_on must be 'positions' or 'offsets'; got {self.laplacian_on!r}.")
        need(self.color_mode in ("texture", "vertex_colors"),
             f"RefineConfig.color_mode must be 'texture' or 'vertex_colors'; got {self.color_mode!r}.")
        need(16 <= int(self.texture_resolution) <= 4096,
             f"RefineConfig.texture_resolution must be in [16, 4096]; got {self.texture_resolution}.")
        need(self.normalize_radius > 0, f"RefineConfig.normalize_radius must be > 0; got {self.normalize_radius}.")
        need(self.cfg_scale >= 0, f"RefineConfig.cfg_scale must be >= 0; got {self.cfg_scale}.")
        a = self.aiu
        need(a.mode in AIU_MODES, f"AIUConfig.mode must be one of {AIU_MODES}; got {a.mode!r}.")
        need(a.loss in ("mse", "l1"), f"AIUConfig.loss must be 'mse' or 'l1'; got {a.loss!r}.")
        need(0.0 < a.strength <= 1.0, f"AIUConfig.strength must be in (0, 1]; got {a.strength}.")
        need(int(a.num_ddim_steps * a.strength) >= 1,
             f"AIUConfig: num_ddim_steps * strength must give at least one DDIM step; got {a.num_ddim_steps} * {a.strength}.")
        need(0.0 <= a.start_fraction < 1.0 and 0.0 < a.every_fraction <= 1.0,
             f"AIUConfig start_fraction in [0, 1) and every_fraction in (0, 1] required; got {a.start_fraction}, {a.every_fraction}.")
        need(len(a.view_probabilities) == 5 and all(p >= 0 for p in a.view_probabilities) and sum(a.view_probabilities) > 0,
             "AIUConfig.view_probabilities must be 5 non-negative numbers [ref, pseudo0..3] with a positive sum; "
             f"got {a.view_probabilities}.")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RefineConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise RefineConfigError(f"RefineConfig: unknown setting(s) {unknown}; known: {sorted(known)}.")
        d = dict(d)
        if "aiu" in d and isinstance(d["aiu"], dict):
            d["aiu"] = AIUConfig(**d["aiu"])
        return cls(**d)

    def with_(self, **changes) -> "RefineConfig":
        return replace(self, **changes)


def ablation_config(base: RefineConfig, variant: str) -> RefineConfig:
    """The three ablation variants of ``benchmarks/refine.py``.

    ``aiu``: the official objective; ``no_aiu``: AIU off (reference view + SDS only);
    ``plain_l1``: condition views used directly as L1 targets (``aiu.mode = 'condition_views'``).
    """
    if variant == "aiu":
        return base
    if variant == "no_aiu":
        return replace(base, aiu=replace(base.aiu, enabled=False))
    if variant == "plain_l1":
        return replace(base, aiu=replace(base.aiu, mode="condition_views", loss="l1"))
    raise RefineConfigError(f"Unknown ablation variant {variant!r}; choose 'aiu', 'no_aiu' or 'plain_l1'.")


__all__.append("ablation_config")
