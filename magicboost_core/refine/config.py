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

Anchor reconstruction (``lambda_anchor_rgb``, ``lambda_anchor_mask``, ``anchor_side_weight``; not in the
official method).  Officially the side/back condition views reach the 3D model only through the
diffusion model (as conditioning of SDS and of the AIU's SDEdit); only the reference view (anchor 0)
is a direct reconstruction target.  The anchor term makes every condition view a direct target from
step 0: on each reconstruction step the views are rendered at their own preset poses (e.g. Instant3D
el 0, az 0/90/180/270) and compared with the condition images (MSE) and masks (silhouette MSE),
weighted 1 for anchor 0 and ``anchor_side_weight`` for the side views (how far the coarse generator's
side views can be trusted; they are generated, not observed).  It differs from the ``condition_views``
AIU ablation ("plain L1"), which *replaces* the SDEdit'ed pseudo views by the condition views inside
the official view sampling.  **Library default: off** (``lambda_anchor_* = 0``), so ``RefineConfig()``
stays the official objective; ``anchor_side_weight`` defaults to 1.0 so that switching the term on
trusts all views equally.  The demo (``demo.run.demo_config``) switches it on (1e5 / 1e5, side
weight 1.0, i.e. the same weight as the official ``lambda_rgb``): with the small 32 px demo prior the
SDS gradients and AIU pseudo views alone cannot carry the sides/back of the object.  With a full-size
Magic-Boost model, try ``anchor_side_weight`` around 0.3 when the coarse generator's side views are
inconsistent.

Geometry, frame and guard (issue #11; not in the official method, on by default because they only keep
a mesh from getting worse): ``geometry_mode = "large_steps"`` (Nicolet et al. 2021 reparametrisation,
``large_steps_lambda``, ``lr_offsets_edges`` mean edge lengths per step, visibility attachment
``attach_unseen``; ``"direct"`` is the previous behaviour with ``lr_offsets`` in world units);
``frame_check_iou`` / ``align`` (the frame contract, :mod:`.frame_check`); ``guard_checks`` (the
do-no-harm guard); ``project_views`` (texture projection at the end); ``color_mode = "auto"``.

Which values a run uses is the model's business: :mod:`.profiles` holds the profile of each model kind
(the official checkpoint runs the defaults below, the demo model its measured best), and
:func:`parse_settings` / :func:`load_config_file` / :func:`merge_settings` turn ``--set field=value``,
``--config file.json`` and the node's ``config`` input into validated settings. Upper bounds:
``steps <= MAX_STEPS``, ``render_resolution <= MAX_RENDER_RESOLUTION``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from ..validate import InputError

__all__ = ["AIUConfig", "RefineConfig", "RefineConfigError", "AIU_MODES", "RECON_VIEW_MODES", "GEOMETRY_MODES",
           "MAX_STEPS", "MAX_RENDER_RESOLUTION", "parse_settings", "load_config_file"]

#: ``sdedit``: the official Anchor Iterative Update (renders SDEdit'ed by the multi-view model).
#: ``condition_views``: ablation "plain L1" — the condition images themselves are the pseudo targets.
AIU_MODES = ("sdedit", "condition_views")
RECON_VIEW_MODES = ("four", "reference")
GEOMETRY_MODES = ("large_steps", "direct")
#: "auto": "texture" when the input has a UV texture, else "vertex_colors".
COLOR_MODES = ("texture", "vertex_colors", "auto")
#: Upper bounds (a typo like 250000 steps or 8192 px would otherwise run for days or exhaust memory).
MAX_STEPS = 20000
MAX_RENDER_RESOLUTION = 1024


class RefineConfigError(InputError):
    """A refinement setting is out of range; the message names the field and the allowed values, ``field``
    the setting (``"steps"``, ``"aiu.strength"``; None when not one setting is to blame)."""


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
    #: Anchor reconstruction (no official counterpart, off by default): on every reconstruction step the
    #: condition views themselves, at their own preset poses, are rendered and compared with the
    #: condition images (MSE, ``lambda_anchor_rgb``) and masks (silhouette MSE, ``lambda_anchor_mask``).
    #: Anchor 0 (the reference) has weight 1, the side anchors ``anchor_side_weight`` (reliability of the
    #: coarse generator's side/back views; 0 = reference only); the term is the weighted mean over views.
    lambda_anchor_rgb: float = 0.0
    lambda_anchor_mask: float = 0.0
    anchor_side_weight: float = 1.0
    lambda_orient: float = 6000.0
    lambda_laplacian: float = 5e3
    #: "positions": Laplacian of the refined vertex positions (smooths the coarse generator's noise);
    #: "offsets": Laplacian of the offsets only (keeps the input's own detail).
    laplacian_on: str = "positions"
    lambda_normal_consistency: float = 500.0
    lambda_offset: float = 10.0
    # --- geometry parametrisation (see ``refine.loop`` and ``refine.large_steps``) ---------------------
    #: "large_steps": Adam on a latent ``u``, offsets ``= w * (I + lambda L)^-1 u`` (Nicolet et al. 2021) with
    #: ``w`` the visibility in the condition views; learning rate ``lr_offsets_edges`` mean edge lengths per
    #: step; Laplacian/offset penalties measured in mean edge lengths. "direct": Adam on the offsets
    #: (``lr_offsets`` world units per step, absolute penalties; the behaviour before large steps).
    geometry_mode: str = "large_steps"
    large_steps_lambda: float = 10.0
    lr_offsets_edges: float = 0.02
    #: Visibility-weighted attachment: vertices that no condition view sees from the front keep the coarse
    #: position (a smooth ramp between seen and unseen; large-steps mode only).
    attach_unseen: bool = True
    #: Colours change only where a condition view sees the surface frontally (cos > ~0.3 between normal
    #: and view ray); elsewhere they keep the (calibrated) coarse colours. Adam normalises each texel's
    #: step, so even a weak prior's SDS gradient, or a grazing view's smeared pixels, would otherwise
    #: repaint every such texel at the full learning rate.
    colors_where_seen: bool = False
    # --- frame contract and do-no-harm guard -----------------------------------------------------------
    #: Minimum silhouette IoU of the coarse mesh vs each condition view's mask before refining (0 = no
    #: check); below it ``FrameMismatchError`` names the likely cause (scale, offset, axes) and the fix.
    frame_check_iou: float = 0.6
    #: Fit scale, offset and axis permutation of the mesh to the views' silhouettes before refining
    #: (the result is mapped back to the input's frame).
    align: bool = False
    #: Number of evaluations of the photometric + silhouette error at the condition views during the run
    #: (plus one of the input); the best state is returned (0 = off: the final state is returned).
    guard_checks: int = 10
    # --- representation ------------------------------------------------------------------------------
    #: "texture": UV texture (xatlas unwrap when missing); "vertex_colors": per-vertex colours; "auto":
    #: the input's own kind (texture when it has one, else vertex colours).
    color_mode: str = "texture"
    #: After the optimisation, project the condition views at their full resolution onto the UV texture
    #: (``refine.texture_projection``: visibility and view-angle weights, seam blending; unseen texels
    #: kept). Texture mode only; kept unless it raises the condition-view error by more than 2 % (guard).
    project_views: bool = True
    #: Before refining, calibrate the coarse colours to the condition views with one affine colour map
    #: (``refine.color_match``): fixes global colour errors (dull saturation, tint) also where no view sees.
    match_colors: bool = True
    texture_resolution: int = 512
    refine_geometry: bool = True
    #: One level of midpoint subdivision before refining when the mesh has fewer than this many faces
    #: (0 = never). Vertex-colour mode only (it raises the colour resolution; a texture has its own).
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
        def need(name, cond, msg):
            if not cond:
                raise RefineConfigError(msg, name)

        need("steps", 1 <= int(self.steps) <= MAX_STEPS,
             f"RefineConfig.steps must be in [1, {MAX_STEPS}]; got {self.steps}.")
        need("batch_size", 1 <= int(self.batch_size) <= 64,
             f"RefineConfig.batch_size must be in [1, 64]; got {self.batch_size}.")
        need("render_resolution", 8 <= int(self.render_resolution) <= MAX_RENDER_RESOLUTION,
             f"RefineConfig.render_resolution must be in [8, {MAX_RENDER_RESOLUTION}]; got {self.render_resolution}.")
        need("geometry_mode", self.geometry_mode in GEOMETRY_MODES,
             f"RefineConfig.geometry_mode must be one of {GEOMETRY_MODES}; got {self.geometry_mode!r}.")
        need("large_steps_lambda", self.large_steps_lambda >= 0,
             f"RefineConfig.large_steps_lambda must be >= 0; got {self.large_steps_lambda}.")
        for name in ("lr_offsets", "lr_offsets_edges", "lr_texture"):
            need(name, getattr(self, name) >= 0,
                 "RefineConfig learning rates (lr_offsets, lr_offsets_edges, lr_texture) must be >= 0; got "
                 f"{self.lr_offsets}, {self.lr_offsets_edges}, {self.lr_texture}.")
        need("frame_check_iou", 0.0 <= self.frame_check_iou < 1.0,
             f"RefineConfig.frame_check_iou must be in [0, 1) (0 = no check); got {self.frame_check_iou}.")
        need("guard_checks", 0 <= int(self.guard_checks) <= 1000,
             f"RefineConfig.guard_checks must be in [0, 1000] (0 = off); got {self.guard_checks}.")
        for name in ("lambda_sds", "lambda_rgb", "lambda_mask", "lambda_orient", "lambda_laplacian",
                     "lambda_normal_consistency", "lambda_offset"):
            need(name, getattr(self, name) >= 0, f"RefineConfig.{name} must be >= 0; got {getattr(self, name)}.")
        for name in ("albedo_probability", "textureless_probability"):
            need(name, 0.0 <= getattr(self, name) <= 1.0,
                 "RefineConfig.albedo_probability and textureless_probability must be in [0, 1].")
        need("subdivide_below_faces", int(self.subdivide_below_faces) >= 0,
             f"RefineConfig.subdivide_below_faces must be >= 0; got {self.subdivide_below_faces}.")
        need(None, 0.0 < self.min_step_fraction < self.max_step_end <= self.max_step_start <= 1.0,
             "RefineConfig needs 0 < min_step_fraction < max_step_end <= max_step_start <= 1; got "
             f"{self.min_step_fraction}, {self.max_step_end}, {self.max_step_start}.")
        need("max_step_anneal_fraction", 0.0 < self.max_step_anneal_fraction <= 1.0,
             f"RefineConfig.max_step_anneal_fraction must be in (0, 1]; got {self.max_step_anneal_fraction}.")
        need("ref_or_guidance", self.ref_or_guidance in ("alternate", "sds", "reference"),
             f"RefineConfig.ref_or_guidance must be 'alternate', 'sds' or 'reference'; got {self.ref_or_guidance!r}.")
        need("recon_view_mode", self.recon_view_mode in RECON_VIEW_MODES,
             f"RefineConfig.recon_view_mode must be one of {RECON_VIEW_MODES}; got {self.recon_view_mode!r}.")
        need("laplacian_on", self.laplacian_on in ("positions", "offsets"),
             f"RefineConfig.laplacian_on must be 'positions' or 'offsets'; got {self.laplacian_on!r}.")
        need("color_mode", self.color_mode in COLOR_MODES,
             f"RefineConfig.color_mode must be one of {COLOR_MODES}; got {self.color_mode!r}.")
        need("texture_resolution", 16 <= int(self.texture_resolution) <= 4096,
             f"RefineConfig.texture_resolution must be in [16, 4096]; got {self.texture_resolution}.")
        need("normalize_radius", self.normalize_radius > 0,
             f"RefineConfig.normalize_radius must be > 0; got {self.normalize_radius}.")
        for name in ("lambda_anchor_rgb", "lambda_anchor_mask"):
            need(name, getattr(self, name) >= 0, "RefineConfig.lambda_anchor_rgb and lambda_anchor_mask must be >= 0; "
                 f"got {self.lambda_anchor_rgb}, {self.lambda_anchor_mask}.")
        need("anchor_side_weight", self.anchor_side_weight >= 0,
             f"RefineConfig.anchor_side_weight must be >= 0 (0 = reference anchor only); got {self.anchor_side_weight}.")
        need("cfg_scale", self.cfg_scale >= 0, f"RefineConfig.cfg_scale must be >= 0; got {self.cfg_scale}.")
        a = self.aiu
        need("aiu.mode", a.mode in AIU_MODES, f"AIUConfig.mode must be one of {AIU_MODES}; got {a.mode!r}.")
        need("aiu.loss", a.loss in ("mse", "l1"), f"AIUConfig.loss must be 'mse' or 'l1'; got {a.loss!r}.")
        need("aiu.strength", 0.0 < a.strength <= 1.0, f"AIUConfig.strength must be in (0, 1]; got {a.strength}.")
        need("aiu.strength", int(a.num_ddim_steps * a.strength) >= 1,
             f"AIUConfig: num_ddim_steps * strength must give at least one DDIM step; got {a.num_ddim_steps} * {a.strength}.")
        fractions = (f"AIUConfig start_fraction in [0, 1) and every_fraction in (0, 1] required; got {a.start_fraction}, "
                     f"{a.every_fraction}.")
        need("aiu.start_fraction", 0.0 <= a.start_fraction < 1.0, fractions)
        need("aiu.every_fraction", 0.0 < a.every_fraction <= 1.0, fractions)
        need("aiu.view_probabilities",
             len(a.view_probabilities) == 5 and all(p >= 0 for p in a.view_probabilities) and sum(a.view_probabilities) > 0,
             "AIUConfig.view_probabilities must be 5 non-negative numbers [ref, pseudo0..3] with a positive sum; "
             f"got {a.view_probabilities}.")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RefineConfig":
        d = dict(d)
        if "aiu" in d and isinstance(d["aiu"], dict):
            d["aiu"] = AIUConfig(**{k: _coerce(AIUConfig, k, v, prefix="aiu.") for k, v in d["aiu"].items()})
        d = {k: (v if k == "aiu" else _coerce(cls, k, v)) for k, v in d.items()}
        return cls(**d)

    def with_(self, **changes) -> "RefineConfig":
        return replace(self, **changes)


#: Variants of :func:`ablation_config`, in table order.
ABLATION_VARIANTS = ("aiu", "no_aiu", "plain_l1", "reference_only")


def ablation_config(base: RefineConfig, variant: str) -> RefineConfig:
    """The ablation variants of ``benchmarks/refine.py`` (every other setting, e.g. the anchor term, kept).

    ``aiu``: ``base`` as is (SDS + Anchor Iterative Update); ``no_aiu``: AIU off (reconstruction + SDS);
    ``plain_l1``: condition views used directly as L1 pseudo targets (``aiu.mode = 'condition_views'``);
    ``reference_only``: no diffusion model at all (``ref_or_guidance = 'reference'``, AIU off) — the floor.
    """
    if variant == "aiu":
        return base
    if variant == "no_aiu":
        return replace(base, aiu=replace(base.aiu, enabled=False))
    if variant == "plain_l1":
        return replace(base, aiu=replace(base.aiu, mode="condition_views", loss="l1"))
    if variant == "reference_only":
        return replace(base, ref_or_guidance="reference", aiu=replace(base.aiu, enabled=False))
    raise RefineConfigError(f"Unknown ablation variant {variant!r}; choose one of {ABLATION_VARIANTS}.")


__all__ += ["ablation_config", "ABLATION_VARIANTS"]


# --------------------------------------------------------------------------------------------------
# Settings from text: ``--set field=value``, ``--config file.json`` and the node's ``config`` input.
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _check_known(cls, name: str, prefix: str = "") -> None:
    """Raise :class:`RefineConfigError` when ``name`` is not a setting of ``cls``, naming the known ones."""
    known = sorted(f.name for f in fields(cls) if f.name != "aiu")
    if name not in known:
        tail = " and aiu.<field>." if cls is RefineConfig else "."
        raise RefineConfigError(f"unknown setting {prefix + name!r}; known: {known}{tail}", field=prefix + name)


def _coerce(cls, name: str, value, strict: bool = False, prefix: str = ""):
    """``value`` for the setting ``cls.name`` (unknown names raise). By default converted to the field's
    declared type (text such as ``"300"``, ``"true"`` or ``"0.9,0.99"`` from ``--set``); with ``strict``
    (JSON values of a batch manifest) it must already be of that type: an int for an int field, any number
    for a float, a list of the default's length for a tuple."""
    _check_known(cls, name, prefix)
    field_ = {f.name: f for f in fields(cls)}[name]
    kind, where = str(field_.type), prefix + name
    try:
        return (_exact_type if strict else _converted)(kind, value, field_.default)
    except (TypeError, ValueError):
        if strict:
            message = (f"config {where!r} must be {kind} like its default "
                       f"{field_.default!r}; got {value!r}.")
        else:
            message = f"{cls.__name__}.{name} expects a value of type {kind}; got {value!r}."
        raise RefineConfigError(message, field=where) from None


def _converted(kind: str, value, default):
    """``value`` converted to the declared type ``kind`` (``"bool"``, ``"int"``, ...); ValueError if it is not one."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in _TRUE + _FALSE:
            return str(value).strip().lower() in _TRUE
        raise ValueError
    if kind == "int":
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(float(value)) if isinstance(value, str) else int(value)
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError
        return value
    if kind.startswith("tuple"):
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").replace("[", "").replace("]", "").split(",")
                     if v.strip()]
        return tuple(float(v) for v in value)
    return value


def _exact_type(kind: str, value, default):
    """``value`` unchanged when it already has the type of the field ``kind`` / its ``default`` (no
    conversion from text); a float field takes any number, a list of the default's length becomes a tuple.
    ValueError otherwise."""
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind == "str":
        ok = isinstance(value, str)
    elif kind.startswith("tuple"):
        ok = isinstance(value, (list, tuple)) and len(value) == len(default)
        value = tuple(value) if ok else value
    else:
        ok = True
    if not ok:
        raise ValueError
    return value


def parse_settings(pairs) -> dict:
    """``["steps=300", "aiu.strength=0.2", "adam_betas=0.9,0.99"]`` -> a nested dict of typed values for
    :meth:`RefineConfig.from_dict` (unknown names and bad values raise :class:`RefineConfigError`)."""
    out: dict = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise RefineConfigError(f"setting {pair!r} must look like field=value (e.g. steps=300).")
        key, value = (x.strip() for x in pair.split("=", 1))
        if key.startswith("aiu."):
            out.setdefault("aiu", {})[key[4:]] = _coerce(AIUConfig, key[4:], value, prefix="aiu.")
        else:
            out[key] = _coerce(RefineConfig, key, value)
    return out


def load_config_file(path) -> dict:
    """The settings dict of a JSON file (a partial RefineConfig: any subset of fields, ``aiu`` nested)."""
    import json
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise RefineConfigError(f"config file {str(p)!r} does not exist.")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise RefineConfigError(f"config file {str(p)!r} is not valid JSON: {e}.") from None
    if not isinstance(d, dict):
        raise RefineConfigError(f"config file {str(p)!r} must hold a JSON object of RefineConfig fields.")
    return d


def _merge_group(current: dict, cls, settings: dict, strict: bool, prefix: str = "") -> None:
    """Put ``settings`` into ``current`` (the dict of a ``cls`` instance); unknown names raise. Values are
    type-checked here when ``strict``, else converted by :meth:`RefineConfig.from_dict`."""
    for key, value in settings.items():
        if strict:
            current[key] = _coerce(cls, key, value, strict=True, prefix=prefix)
        else:
            _check_known(cls, key, prefix)
            current[key] = value


def merge_settings(base: "RefineConfig", settings: dict, *, strict: bool = False) -> "RefineConfig":
    """``base`` with ``settings`` applied and validated: the one merge of every settings layer (profiles,
    ``--config`` files, ``--set``, node widgets, batch manifests).

    ``settings`` is a partial dict of RefineConfig fields; ``aiu`` a partial dict of AIUConfig fields (or an
    AIUConfig). Unknown names raise :class:`RefineConfigError` naming the known ones. Values are converted to
    the field's declared type (text such as ``"300"`` or ``"true"`` from ``--set``); with ``strict`` (JSON
    values of a batch manifest) they must already have the default's type instead (an int for an int field,
    a number for a float, a list of the same length for a tuple).
    """
    d = base.to_dict()
    settings = dict(settings)
    aiu = settings.pop("aiu", None)
    _merge_group(d, RefineConfig, settings, strict)
    if isinstance(aiu, AIUConfig):
        d["aiu"] = asdict(aiu)
    elif isinstance(aiu, dict):
        _merge_group(d["aiu"], AIUConfig, aiu, strict, prefix="aiu.")
    elif aiu is not None:
        raise RefineConfigError("config 'aiu' must be a group of settings, e.g. {\"enabled\": false}.")
    return RefineConfig.from_dict(d)


__all__ += ["merge_settings"]
