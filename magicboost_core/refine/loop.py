"""``refine_mesh``: the Magic-Boost objective (reference §5.2) applied directly to a textured mesh.

The run is a sequence of named steps (one function each):

1. **Views** (:func:`_prepare_views`): condition images/masks at the render resolution and their cameras.
2. **Frame** (:func:`_prepare_frame`): the frame contract (:mod:`.frame_check`): the coarse mesh must already
   sit where the preset cameras saw the object (silhouette IoU per condition view); with ``config.align``
   scale, offset and axis permutation are fitted to the silhouettes first. A mesh is never rescaled while
   the views are not (``normalize="always"`` is the explicit exception).
3. **Representation** (:func:`_prepare_representation`): colours (calibrated to the views by one affine
   colour map, :mod:`.color_match`), optional subdivision, the refinable mesh, the optimiser and the
   geometry parametrisation (:class:`_GeometryUpdate`).
4. Per step (:func:`_one_step`): **AIU** (:func:`_aiu_update`) at its scheduled steps; **reconstruction**
   (:func:`_reconstruction_terms`) on even steps — MSE of the albedo render against the reference view
   (or, inside the pseudo-view window, one of the AIU pseudo views) plus, with ``lambda_anchor_*`` > 0, the
   anchor term over all condition views; **SDS** (:func:`_sds_terms`) on odd steps — random orbit
   cameras, shaded renders, x0-reconstruction SDS + orientation penalty; **regularisers**
   (:func:`_regularizer_terms`) on every step; the **update** (:meth:`_GeometryUpdate.apply`).
5. **Do-no-harm guard** (:func:`_guard_check`): the photometric + silhouette error at the condition views
   is measured on the coarse input and every ``steps / guard_checks`` steps; the best state is what the
   run returns, so the result is never worse there than the input.

Geometry (``geometry_mode = "large_steps"``, the default): the offsets are ``w * (I + lambda L)^-1 u``
(:mod:`.large_steps`, Nicolet et al. 2021) with ``w`` the per-vertex visibility in the condition views
(:mod:`.visibility`): where no view looks the coarse mesh stays (neither SDS nor the silhouette term can
push it), and steps are smooth over the surface, so boxes keep their faces and thin parts do not melt.
The learning rate is ``lr_offsets_edges`` mean edge lengths per step and the Laplacian/offset penalties
are measured in units of the mean edge length (capped at 5 % of the bounding radius for low-poly meshes),
so the same settings fit any mesh resolution and size.

Frames: results are mapped back with the exact inverse of the work frame (alignment, optional z flip of
the InstantMesh preset), so they land in the user's coordinates.

Determinism: every random draw comes from one ``torch.Generator`` seeded with ``config.seed``.
Devices: every tensor follows the device of the guidance (or of the mesh when there is none).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

import torch
import torch.nn.functional as F

from ..geometry.camera import Cameras, orbit_cameras
from ..geometry.mesh import Mesh
from ..geometry.presets import RandomPoseSampler, get_preset
from ..geometry.transform import bounding_sphere
from ..masks import resolve_view_masks, silhouette_available
from . import schedule as S
from .aiu import (PseudoViews, aiu_cameras, condition_pseudo_views, resize_images, sdedit_pseudo_views)
from .color_match import match_colors_to_views
from .config import RefineConfig
from .frame_check import FrameTransform, FrameMismatchError, prepare_frame
from .large_steps import LargeStepsParametrization, mean_edge_length
from .regularizers import (face_adjacency, laplacian_loss, normal_consistency_loss, offset_loss,
                           orientation_loss, pixel_ray_directions, uniform_laplacian)
from .representation import RefinableMesh, prepare_colors, subdivide_midpoint
from .sds import sds_step
from .visibility import vertex_visibility

__all__ = ["refine_mesh", "RefineResult", "RefineInputError", "FrameTransform", "FrameMismatchError",
           "condition_views_from", "anchor_weights", "anchor_losses", "guard_score"]


class RefineInputError(ValueError):
    """Inputs of ``refine_mesh`` do not fit together; the message says what to change."""


# --------------------------------------------------------------------------------------------------
def _hwc(x: torch.Tensor, name: str, channels=(3, 4)) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim == 3:
        x = x[..., None] if channels == (1,) else x[None]
    if x.ndim != 4:
        raise RefineInputError(f"{name} must be a batch of images (A, H, W, C); got shape {tuple(x.shape)}.")
    if x.shape[-1] not in channels and x.shape[1] in channels:
        x = x.permute(0, 2, 3, 1)
    if x.shape[-1] not in channels:
        raise RefineInputError(f"{name} must have {channels} channels last; got shape {tuple(x.shape)}.")
    if x.dtype == torch.uint8:
        x = x.float() / 255
    x = x.float()
    if not torch.isfinite(x).all():
        raise RefineInputError(f"{name} contain NaN or infinite values; check the images feeding the node.")
    return x


def condition_views_from(cond) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (A,H,W,3) on white, masks (A,H,W,1), elevations (A,), azimuths (A,)) from a ViewConditioning.

    Masks by :func:`magicboost_core.masks.resolve_view_masks`: alpha -> ``cond.masks`` -> estimated from a
    uniform background -> none. With none (``silhouette_available(cond)`` False) the masks are all ones and
    serve only the compositing: a caller must not use them as a silhouette target.
    """
    imgs = _hwc(cond.images, "condition images")
    masks = getattr(cond, "masks", None)
    if masks is not None:
        masks = _hwc(masks, "condition masks", channels=(1,))
        if masks.shape[:3] != imgs.shape[:3]:
            raise RefineInputError(f"condition masks {tuple(masks.shape)} do not match the images {tuple(imgs.shape)}.")
        masks = masks[..., 0]
    m = (resolve_view_masks(imgs, masks).masks[..., None] > 0.5).float()
    rgb = imgs[..., :3] * m + (1 - m)
    el = torch.as_tensor(cond.elevations, dtype=torch.float32).reshape(-1)
    az = torch.as_tensor(cond.azimuths, dtype=torch.float32).reshape(-1)
    return rgb, m, el, az


@dataclass
class RefineResult:
    """Output of :func:`refine_mesh`. Meshes are in the caller's coordinate frame.

    ``mesh``: the returned state: with the do-no-harm guard on (default) the state with the lowest
    condition-view error seen (the coarse input if nothing beat it), else the final state (on interrupt:
    the best state so far); ``best_mesh``: the guard's best state; ``losses``: one dict per step;
    ``previews``: (step, (4, H, W, 3)) renders; ``log``: notes and warnings (frame, colours, guard,
    interrupts); ``guard``: {"coarse": error of the input, "best": error returned, "checks": [(step, error)]};
    ``frame_iou``: silhouette IoU per condition view of the input (after alignment when asked).
    """

    mesh: Mesh
    best_mesh: Mesh
    losses: list = field(default_factory=list)
    previews: list = field(default_factory=list)
    log: list = field(default_factory=list)
    interrupted: bool = False
    steps_done: int = 0
    best_step: int = -1
    seconds: float = 0.0
    frame: FrameTransform | None = None
    pseudo_views: PseudoViews | None = None
    guard: dict = field(default_factory=dict)
    frame_iou: list = field(default_factory=list)


def anchor_weights(num_views: int, side_weight: float) -> torch.Tensor:
    """(A,) float32 reliability weights of the condition views: 1 for anchor 0 (the reference),
    ``side_weight`` for the side anchors."""
    w = torch.full((num_views,), float(side_weight), dtype=torch.float32)
    w[0] = 1.0
    return w


def anchor_losses(rgb: torch.Tensor, alpha: torch.Tensor, images: torch.Tensor, masks: torch.Tensor,
                  weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor reconstruction: weighted mean over the A condition views of the per-view MSE.

    Args:
        rgb: (A, H, W, 3) renders at the condition poses, on white; alpha: (A, H, W, 1) their coverage.
        images: (A, H, W, 3) condition images composited on white; masks: (A, H, W, 1) in {0, 1}.
        weights: (A,) non-negative view weights (:func:`anchor_weights`).
    Returns:
        (rgb loss, mask loss), float32 scalars: ``sum_i w_i * mean((x_i - y_i)^2) / sum_i w_i``.
    """
    w = weights.to(rgb.device, torch.float32)
    norm = w.sum().clamp_min(1e-12)
    l_rgb = ((rgb - images).pow(2).flatten(1).mean(1) * w).sum() / norm
    l_mask = ((alpha - masks).pow(2).flatten(1).mean(1) * w).sum() / norm
    return l_rgb, l_mask


def guard_score(rgb: torch.Tensor, alpha: torch.Tensor, images: torch.Tensor, masks: torch.Tensor | None) -> float:
    """Do-no-harm error at the condition views: mean photometric MSE + mean silhouette MSE.

    rgb (A, H, W, 3) renders on white, alpha (A, H, W, 1); images (A, H, W, 3) on white, masks (A, H, W, 1),
    or None when the views carry no silhouette (then the photometric term alone).
    """
    err = (rgb - images).pow(2).mean()
    if masks is not None:
        err = err + (alpha - masks).pow(2).mean()
    return float(err)


def _shade(out, light_dir: torch.Tensor, diffuse: float, textureless: bool) -> torch.Tensor:
    """Diffuse + ambient shading (``diffuse-with-point-light``, soft shading) of an albedo render on white."""
    a = out.alpha.float()
    albedo = out.rgb.float() - (1 - a)  # premultiplied albedo (render composited on white)
    if textureless:
        albedo = a.expand_as(albedo)
    n = F.normalize(out.normal.float(), dim=-1)
    lam = (n * light_dir[:, None, None, :]).sum(-1, keepdim=True).clamp_min(0)
    shade = (1 - diffuse) + diffuse * lam
    return albedo * shade + (1 - a)


def _validate(mesh, cond, preset, guidance_needed, model, normalize):
    if not isinstance(mesh, Mesh):
        raise RefineInputError(f"refine_mesh needs a magicboost Mesh; got {type(mesh).__name__}. Load it with load_mesh().")
    if guidance_needed and model is None:
        raise RefineInputError("refine_mesh: a multi-view model is required unless ref_or_guidance='reference'.")
    n = len(torch.as_tensor(cond.azimuths).reshape(-1))
    if n != preset.num_views:
        raise RefineInputError(
            f"{n} condition views were given but the {preset.name!r} preset expects {preset.num_views} "
            f"(azimuths {list(preset.azimuths)}); pick the preset that matches the coarse generator."
        )
    if normalize not in ("auto", "always", "never"):
        raise RefineInputError(f"normalize must be 'auto', 'always' or 'never'; got {normalize!r}.")


# --------------------------------------------------------------------------------------------------
class _GeometryUpdate:
    """How the vertex offsets move: ``direct`` (Adam on the offsets) or ``large_steps`` (Adam on a latent
    ``u``; offsets ``= w * (I + lambda L)^-1 u`` with ``w`` the per-vertex visibility, see module docstring).

    In large-steps mode the renders still see ``rep.offsets`` (a leaf); after ``backward`` the gradient is
    carried to ``u`` (``dL/du = (I + lambda L)^-1 (w * dL/dx)``, the matrix is symmetric) and after the
    optimiser step the offsets are recomputed from ``u``.
    """

    def __init__(self, rep: RefinableMesh, cfg: RefineConfig, visibility: torch.Tensor | None, edge: float):
        self.rep, self.mode = rep, cfg.geometry_mode
        self.weight = None if visibility is None else visibility[:, None].to(rep.offsets)
        self.latent = None
        self.param = None
        if cfg.refine_geometry and self.mode == "large_steps":
            faces = rep.welded_faces.to(rep.offsets.device)  # the system matrix lives where the offsets do
            self.param = LargeStepsParametrization(faces, rep.offsets.shape[0], cfg.large_steps_lambda)
            self.latent = torch.nn.Parameter(torch.zeros_like(rep.offsets))
            self.lr = cfg.lr_offsets_edges * edge
        else:
            self.lr = cfg.lr_offsets

    def parameter(self) -> torch.nn.Parameter:
        return self.latent if self.latent is not None else self.rep.offsets

    def apply(self, opt: torch.optim.Optimizer) -> None:
        """Optimiser step after ``backward`` (gradients moved to the latent in large-steps mode)."""
        off = self.rep.offsets
        if self.latent is not None and off.grad is not None:
            g = off.grad if self.weight is None else off.grad * self.weight
            self.latent.grad = self.param.from_latent_gradient(g)
            off.grad = None
        elif self.weight is not None and off.grad is not None:
            off.grad.mul_(self.weight)
        opt.step()
        if self.latent is not None:
            with torch.no_grad():
                x = self.param.solve(self.latent.detach())
                if bool(torch.isfinite(x).all()):
                    off.copy_(x if self.weight is None else x * self.weight)
        self.rep.clamp_()


@dataclass
class _Run:
    """Everything one refinement run holds between steps (work frame, on ``device``)."""

    cfg: RefineConfig
    preset: object
    device: torch.device
    gen: torch.Generator
    log: list
    guidance: object
    cams: Cameras          # condition cameras (A) at the render resolution
    images: torch.Tensor   # (A, R, R, 3) condition images on white
    masks: torch.Tensor    # (A, R, R, 1) in {0, 1}; all ones when the views have no silhouette
    azimuths: torch.Tensor  # (A,) degrees
    full: tuple = None     # (cameras, images (A,H,W,3), masks (A,H,W,1)) at the views' own resolution
    rep: RefinableMesh = None
    opt: torch.optim.Optimizer = None
    geometry: _GeometryUpdate = None
    edge: float = 1.0
    laplacian: tuple = None
    pairs: torch.Tensor = None
    sampler: RandomPoseSampler = None
    aiu_steps: set = field(default_factory=set)
    pseudo: PseudoViews | None = None
    anchor_w: torch.Tensor = None
    color_seen: torch.Tensor | None = None  # (H, W, 1) texels or (V, 1) vertices a condition view sees frontally
    best: tuple = (math.inf, None, -1)   # (guard error, snapshot, step)
    guard_log: list = field(default_factory=list)
    silhouette: bool = True  # the masks are real silhouettes (masks.silhouette_available), not a placeholder

    @property
    def silhouette_masks(self) -> torch.Tensor | None:
        """(A, R, R, 1) silhouette targets, or None when the views carry none (never an all-ones target)."""
        return self.masks if self.silhouette else None

    @property
    def use_sds(self) -> bool:
        return self.cfg.ref_or_guidance != "reference"

    @property
    def use_anchor(self) -> bool:
        return self.cfg.lambda_anchor_rgb > 0 or self.cfg.lambda_anchor_mask > 0


# ---- 1. views ------------------------------------------------------------------------------------
def _prepare_views(cond, reference_views, cfg: RefineConfig, preset, device) -> tuple:
    """(cameras (A) at R px, images (A,R,R,3), masks (A,R,R,1), azimuths (A,), full-resolution
    (cameras, images, masks)) on ``device``."""
    R = int(cfg.render_resolution)
    cimg, cmask, cel, caz = condition_views_from(cond)
    if reference_views is not None:
        full_img, full_mask = reference_views
        cimg, cmask, _, _ = condition_views_from(SimpleNamespace(images=full_img, masks=full_mask,
                                                                 elevations=cel, azimuths=caz))
        if cimg.shape[0] != cel.numel():
            raise RefineInputError(f"reference_views has {cimg.shape[0]} images for {cel.numel()} condition views.")
    cams = orbit_cameras(cel.tolist(), caz.tolist(), preset.distance, preset.fovy_deg, width=R).to(device)
    img = resize_images(cimg.permute(0, 3, 1, 2), R).permute(0, 2, 3, 1).to(device)
    msk = (resize_images(cmask.permute(0, 3, 1, 2), R, mode="nearest").permute(0, 2, 3, 1) > 0.5).float().to(device)
    H, W = cimg.shape[1:3]
    full_cams = orbit_cameras(cel.tolist(), caz.tolist(), preset.distance, preset.fovy_deg, width=W, height=H)
    return cams, img, msk, caz, (full_cams.to(device), cimg.to(device), cmask.to(device))


# ---- 2. frame ------------------------------------------------------------------------------------
def _prepare_frame(run: _Run, mesh: Mesh, normalize: str) -> tuple[FrameTransform, Mesh, list]:
    """(frame, work-frame mesh on the run's device, IoU per view); raises :class:`FrameMismatchError`."""
    cfg = run.cfg
    frame, ious = prepare_frame(mesh, run.cams, run.masks, flip_z=run.preset.flip_z, align=cfg.align,
                                normalize=normalize, radius=cfg.normalize_radius,
                                min_iou=cfg.frame_check_iou, log=run.log,
                                preset_name=run.preset.name)
    return frame, frame.apply(mesh), ious


# ---- 3. representation ---------------------------------------------------------------------------
def _prepare_representation(run: _Run, work: Mesh, input_faces: int) -> None:
    """Colours, subdivision, the refinable mesh, regulariser operators, optimiser and geometry update."""
    cfg, dev = run.cfg, run.device
    mode = cfg.color_mode if cfg.color_mode != "auto" else ("texture" if work.has_texture else "vertex_colors")
    if mode != cfg.color_mode:
        run.cfg = cfg = cfg.with_(color_mode=mode)
        run.log.append(f"color_mode auto: the input has {'a UV texture' if mode == 'texture' else 'no texture'}; "
                       f"refining {mode.replace('_', ' ')}.")
    if mode == "vertex_colors" and cfg.subdivide_below_faces and work.num_faces < cfg.subdivide_below_faces:
        work = subdivide_midpoint(work)
        run.log.append(f"mesh has {input_faces} faces (< {cfg.subdivide_below_faces}): one midpoint subdivision "
                       f"-> {work.num_faces} faces.")
    work = prepare_colors(work, cfg.color_mode, cfg.texture_resolution,
                          condition=(run.cams.to(work.device), run.images.to(work.device),
                                     run.masks.to(work.device)), notes=run.log)
    if cfg.match_colors:
        work = match_colors_to_views(work.to(dev), run.cams, run.images, run.masks, log=run.log)
    rep = RefinableMesh(work.to(dev), cfg.color_mode, cfg.refine_geometry).to(dev)
    run.rep = rep
    run.edge = _length_unit(rep.welded_base, rep.welded_faces)
    vis = None
    if cfg.refine_geometry and cfg.geometry_mode == "large_steps" and cfg.attach_unseen:
        vis = vertex_visibility(rep.welded_base, rep.welded_faces, run.cams)
        run.log.append(f"visibility: {float((vis > 0.5).float().mean()) * 100:.0f} % of the vertices are seen by a "
                       "condition view; the rest stay attached to the coarse surface.")
    run.geometry = _GeometryUpdate(rep, cfg, vis, run.edge)
    params = [{"params": [rep.colors], "lr": cfg.lr_texture}]
    if cfg.refine_geometry:
        params.append({"params": [run.geometry.parameter()], "lr": run.geometry.lr})
    run.opt = torch.optim.Adam(params, betas=tuple(cfg.adam_betas), eps=1e-8)
    run.laplacian = tuple(x.to(dev) for x in uniform_laplacian(rep.welded_faces, rep.offsets.shape[0]))
    run.pairs = face_adjacency(rep.welded_faces).to(dev)
    run.sampler = RandomPoseSampler.for_preset(run.preset, resolution=int(cfg.render_resolution), generator=run.gen)
    if cfg.aiu.enabled:
        run.aiu_steps = set(S.aiu_steps(cfg.steps, cfg.aiu.start_fraction, cfg.aiu.every_fraction))
    run.anchor_w = anchor_weights(run.cams.c2w.shape[0], cfg.anchor_side_weight).to(dev)
    if cfg.colors_where_seen:
        run.color_seen = _colors_seen(rep, run.cams)


def _colors_seen(rep: RefinableMesh, cams: Cameras, cos_min: float = 0.25, cos_full: float = 0.5) -> torch.Tensor:
    """(texels (H, W, 1) | vertices (V, 1)) {0, 1} mask of the colours that some condition view's render
    shows frontally: pixels are weighted by a ramp of ``cos`` (surface normal vs the ray to the camera) from 0
    at ``cos_min`` to 1 at ``cos_full``; a colour is seen when its gradient under that weighting is nonzero."""
    rep.colors.grad = None
    out = rep.render(cams, background=1.0)
    cos = -(out.normal.detach().float() * pixel_ray_directions(cams)).sum(-1, keepdim=True)
    w = ((cos - cos_min) / (cos_full - cos_min)).clamp(0, 1) * out.alpha.detach()
    (out.rgb * w).sum().backward()
    seen = (rep.colors.grad.abs().sum(-1, keepdim=True) > 0).to(rep.colors.dtype)
    rep.colors.grad = None
    rep.offsets.grad = None
    return seen


def _length_unit(vertices: torch.Tensor, faces: torch.Tensor) -> float:
    """The mesh's own length unit for geometry steps and penalties: the mean edge length, at most 5 % of the
    bounding radius (a low-poly mesh's few long edges would otherwise allow huge steps)."""
    radius = bounding_sphere(vertices)[1]
    return max(min(mean_edge_length(vertices, faces), 0.05 * radius), 1e-8)


# ---- 4. per-step terms ---------------------------------------------------------------------------
def _aiu_update(run: _Run, step: int, losses: dict) -> bool:
    """Anchor Iterative Update at its scheduled steps (refreshes ``run.pseudo``); True when it ran."""
    if step not in run.aiu_steps:
        return False
    cfg, preset = run.cfg, run.preset
    if cfg.aiu.mode == "sdedit":
        cams = aiu_cameras(preset.distance, preset.fovy_deg, int(cfg.render_resolution)).to(run.device)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=run.gen))
        run.pseudo = sdedit_pseudo_views(run.guidance, run.rep, cams, run.azimuths.tolist(), cfg.aiu.strength,
                                         cfg.aiu.num_ddim_steps, cfg.aiu.mask_threshold, seed=seed)
    else:
        run.pseudo = condition_pseudo_views(run.images, run.masks, run.cams)
    losses["aiu"] = 1.0
    return True


def _pick_reconstruction_view(run: _Run, step: int) -> int:
    """0 = the reference view; k > 0 = pseudo view k - 1 (official probabilities, pseudo-view window only)."""
    cfg, pseudo = run.cfg, run.pseudo
    if not (pseudo is not None and cfg.recon_view_mode == "four"
            and S.pseudo_views_active(step, cfg.steps, cfg.aiu.start_fraction, cfg.aiu.pseudo_end_fraction)):
        return 0
    probs = torch.tensor(cfg.aiu.view_probabilities, dtype=torch.float64)
    n_p = pseudo.images.shape[0]
    p = torch.zeros(1 + n_p, dtype=torch.float64)
    p[0] = probs[0]
    if n_p == probs.numel() - 1:
        p[1:] = probs[1:]
    else:  # other pseudo-view counts: pseudo 0 excluded, the rest share the side weight evenly
        p[2:] = probs[1:].sum() / max(1, n_p - 1)
    return int(torch.multinomial(p, 1, generator=run.gen))


def _reconstruction_terms(run: _Run, step: int, losses: dict) -> torch.Tensor:
    """Weighted reconstruction loss of one step (sampled view, its silhouette, the anchor term)."""
    cfg = run.cfg
    view = _pick_reconstruction_view(run, step)
    if view == 0:
        cam, target, tmask = run.cams[[0]], run.images[:1], run.masks[:1]
    else:
        p = run.pseudo
        cam, target, tmask = p.cameras[[view - 1]], p.images[view - 1:view], p.masks[view - 1:view]
    # one render serves the sampled view (index 0) and, with the anchor term on, the condition views (1..A)
    out = run.rep.render(Cameras.cat([cam, run.cams]) if run.use_anchor else cam, background=1.0)
    rgb, alpha = out.rgb.float(), out.alpha.float()
    diff = rgb[:1] - target
    l_rgb = diff.abs().mean() if (view > 0 and cfg.aiu.loss == "l1") else diff.pow(2).mean()
    total = cfg.lambda_rgb * l_rgb
    losses["rgb"], losses["view"] = l_rgb.item(), float(view)
    if cfg.lambda_mask > 0 and run.silhouette and (view == 0 or run.pseudo.source == "condition_views"):
        l_mask = (alpha[:1] - tmask).pow(2).mean()
        total = total + cfg.lambda_mask * l_mask
        losses["mask"] = l_mask.item()
    if run.use_anchor:
        l_arg, l_am = anchor_losses(rgb[1:], alpha[1:], run.images, run.masks, run.anchor_w)
        total = total + cfg.lambda_anchor_rgb * l_arg
        if run.silhouette:
            total = total + cfg.lambda_anchor_mask * l_am
        losses["anchor_rgb"], losses["anchor_mask"] = l_arg.item(), l_am.item()
    return total


def _sds_terms(run: _Run, step: int, losses: dict) -> torch.Tensor:
    """SDS on a batch of random orbit renders (official shading mix) + the orientation penalty."""
    cfg, gen, dev = run.cfg, run.gen, run.device
    cams = run.sampler.sample(cfg.batch_size).to(dev)
    out = run.rep.render(cams, background=1.0)
    u = torch.rand(3, generator=gen)
    if float(u[0]) < cfg.albedo_probability:
        img = out.rgb.float()
    else:
        lp = cams.position.cpu() + torch.randn(cams.position.shape, generator=gen)
        lo, hi = cfg.light_distance_range
        ld = F.normalize(lp, dim=-1) * (lo + (hi - lo) * float(u[2]))
        img = _shade(out, F.normalize(ld, dim=-1).to(dev), float(u[1]),
                     textureless=bool(torch.rand((), generator=gen) < cfg.textureless_probability))
    t = S.sample_timestep(step, cfg.steps, gen, min_fraction=cfg.min_step_fraction, start=cfg.max_step_start,
                          end=cfg.max_step_end, anneal_fraction=cfg.max_step_anneal_fraction)
    small = resize_images(img.permute(0, 3, 1, 2), run.guidance.image_size)
    sds = sds_step(run.guidance, small, cams.elevation_deg, cams.azimuth_deg, t, gen, cfg.recon_std_rescale)
    total = cfg.lambda_sds * sds.loss
    losses["sds"], losses["t"] = sds.loss.item(), float(t)
    if cfg.refine_geometry and cfg.lambda_orient > 0:
        l_or = orientation_loss(out.normal.float(), out.alpha.float(), pixel_ray_directions(cams))
        total = total + cfg.lambda_orient * l_or
        losses["orient"] = l_or.item()
    return total


def _regularizer_terms(run: _Run, losses: dict) -> torch.Tensor:
    """Laplacian, normal consistency and offset penalties. In large-steps mode the Laplacian and offset
    terms are measured in mean edge lengths (``x / edge``), so their weights do not depend on the mesh size."""
    cfg, rep = run.cfg, run.rep
    total = torch.zeros((), device=rep.offsets.device)
    if not cfg.refine_geometry:
        return total
    unit = run.edge if cfg.geometry_mode == "large_steps" else 1.0
    if cfg.lambda_laplacian > 0:
        x = rep.offsets + rep.welded_base if cfg.laplacian_on == "positions" else rep.offsets
        l_lap = laplacian_loss(x / unit, run.laplacian)
        total = total + cfg.lambda_laplacian * l_lap
        losses["laplacian"] = l_lap.item()
    if cfg.lambda_normal_consistency > 0:
        l_nc = normal_consistency_loss(rep.vertices(), rep.faces, run.pairs)
        total = total + cfg.lambda_normal_consistency * l_nc
        losses["normal_consistency"] = l_nc.item()
    if cfg.lambda_offset > 0:
        total = total + cfg.lambda_offset * offset_loss(rep.offsets / unit)
    return total


def _one_step(run: _Run, step: int) -> dict | None:
    """One optimisation step; returns its losses, or None when the loss was not finite (nothing changed)."""
    losses: dict[str, float] = {}
    aiu_now = _aiu_update(run, step, losses)
    run.opt.zero_grad(set_to_none=True)
    run.rep.offsets.grad = None
    sds_now = not (S.is_reconstruction_step(step, run.cfg.ref_or_guidance) or aiu_now or not run.use_sds)
    total = _sds_terms(run, step, losses) if sds_now else _reconstruction_terms(run, step, losses)
    total = total + _regularizer_terms(run, losses)
    if not torch.isfinite(total):
        return None
    total.backward()
    if run.color_seen is not None and run.rep.colors.grad is not None:
        run.rep.colors.grad.mul_(run.color_seen)
    if not _gradients_finite(run.rep):  # e.g. a degenerate triangle's normal: skip the update, keep the state
        losses["skipped"] = 1.0
        return losses
    run.geometry.apply(run.opt)
    losses["total"] = total.item()
    return losses


def _gradients_finite(rep: RefinableMesh) -> bool:
    grads = [p.grad for p in (rep.offsets, rep.colors) if p.grad is not None]
    return all(bool(torch.isfinite(g).all()) for g in grads)


# ---- 5. do-no-harm guard -------------------------------------------------------------------------
@torch.no_grad()
def _guard_check(run: _Run, step: int) -> float:
    """Score the current state at the condition views; keep it when it is the best so far."""
    out = run.rep.render(run.cams, background=1.0, grad=False)
    err = guard_score(out.rgb.float(), out.alpha.float(), run.images, run.silhouette_masks)
    run.guard_log.append((step, err))
    if err < run.best[0]:
        run.best = (err, run.rep.snapshot(), step)
    return err


def _guard_due(run: _Run, step: int) -> bool:
    every = max(1, run.cfg.steps // max(1, run.cfg.guard_checks))
    return run.cfg.guard_checks > 0 and ((step + 1) % every == 0 or step + 1 == run.cfg.steps)


# ---- driver --------------------------------------------------------------------------------------
def _optimise(run: _Run, result: RefineResult, progress, preview, should_stop) -> None:
    """The step loop with its bookkeeping (progress, previews, guard, stop requests)."""
    cfg = run.cfg
    preview_cams = aiu_cameras(run.preset.distance, run.preset.fovy_deg, cfg.preview_resolution).to(run.device)
    for step in range(cfg.steps):
        if should_stop is not None and should_stop():
            result.interrupted = True
            run.log.append(f"stopped on request at step {step}/{cfg.steps}; returning the best state so far.")
            return
        losses = _one_step(run, step)
        if losses is None:
            run.log.append(f"non-finite loss at step {step}; stopping and returning the best state so far.")
            result.interrupted = True
            return
        result.losses.append(losses)
        result.steps_done = step + 1
        if _guard_due(run, step):
            losses["guard"] = _guard_check(run, step + 1)
        if progress is not None:
            progress(step + 1, cfg.steps, losses)
        if cfg.preview_every and ((step + 1) % cfg.preview_every == 0 or step + 1 == cfg.steps):
            with torch.no_grad():
                imgs = run.rep.render(preview_cams, background=1.0, grad=False).rgb.float().clamp(0, 1).cpu()
            result.previews.append((step + 1, imgs))
            if preview is not None:
                preview(step + 1, imgs)


def _finish(run: _Run, result: RefineResult, frame: FrameTransform, t0: float) -> RefineResult:
    """Pick the returned state (guard best, else the final one) and map it back to the user's frame."""
    final = run.rep.to_mesh()
    if run.cfg.guard_checks > 0 and result.steps_done > 0 and run.guard_log[-1][0] != result.steps_done:
        _guard_check(run, result.steps_done)  # the state at an interrupt competes too
    best_err, snap, best_step = run.best
    best_mesh = run.rep.to_mesh(snap) if snap is not None else final
    if run.cfg.guard_checks > 0 or result.interrupted:
        final = best_mesh
    if run.cfg.project_views and final.has_texture:
        final = _project_views(run, final)
        best_mesh = final if run.cfg.guard_checks > 0 else best_mesh
    if run.cfg.guard_checks > 0 and run.guard_log:
        coarse_err = run.guard_log[0][1]
        result.guard = {"coarse": coarse_err, "best": best_err, "best_step": best_step, "checks": run.guard_log}
        run.log.append(f"do-no-harm guard: condition-view error {coarse_err:.5f} (input) -> {best_err:.5f} "
                       f"(returned state, step {best_step}).")
    result.mesh = frame.invert(final.to("cpu"))
    result.best_mesh = frame.invert(best_mesh.to("cpu"))
    result.best_step = best_step
    result.pseudo_views = run.pseudo
    result.seconds = time.time() - t0
    return result


@torch.no_grad()
def _project_views(run: _Run, mesh: Mesh) -> Mesh:
    """``mesh`` with the full-resolution condition views projected onto its texture
    (:func:`~.texture_projection.project_views_to_texture`), kept unless it raises the condition-view error at
    the render resolution (where the optimised texture fits best by construction) by more than 2 %, and only
    when it stays below the input's error (the do-no-harm guard)."""
    from ..render.renderer import render
    from .texture_projection import project_views_to_texture

    cams, images, masks = run.full
    projected = project_views_to_texture(mesh, cams, images, masks)

    def err(m):
        out = render(m, run.cams, mode="albedo", background=1.0)
        return guard_score(out.rgb.float(), out.alpha.float(), run.images, run.silhouette_masks)

    before, after = err(mesh), err(projected)
    coarse = run.guard_log[0][1] if run.guard_log else math.inf
    if after <= 1.02 * before and after < coarse:  # sharper texture; the render-resolution fit may differ by noise
        run.log.append(f"texture projection: condition views projected onto a {projected.texture.shape[0]}^2 texture "
                       f"(condition-view error {before:.5f} -> {after:.5f}).")
        return projected
    run.log.append(f"texture projection skipped: it raised the condition-view error ({before:.5f} -> {after:.5f}).")
    return mesh


def _device_of(guidance, mesh: Mesh) -> torch.device:
    return guidance.device if guidance is not None else mesh.device


def refine_mesh(model, cond, mesh: Mesh, config: RefineConfig | None = None,
                progress: Callable | None = None, preview: Callable | None = None,
                should_stop: Callable | None = None, guidance=None, normalize: str = "auto",
                reference_views=None) -> RefineResult:
    """Refine ``mesh`` (geometry offsets + colours) against the condition views in ``cond``.

    Args:
        model: a ``MultiViewModel`` (or ``None`` with ``ref_or_guidance='reference'`` or a ``guidance``).
        cond: ``ViewConditioning`` (images (A,H,W,3|4) [0,1], masks, elevations (A,), azimuths (A,) degrees).
        mesh: the coarse mesh, z-up, in the preset's frame (see the frame contract in :mod:`.frame_check`;
            ``config.align`` fits scale/offset/axes to the views first).
        config: :class:`RefineConfig` (library defaults; see :mod:`.profiles` for a model's best setting).
        progress: ``progress(step, total, losses: dict)`` after every step.
        preview: ``preview(step, images (4, H, W, 3) float [0, 1])`` every ``config.preview_every`` steps.
        should_stop: polled every step; True ends the run early (like KeyboardInterrupt) with the best state.
        guidance: optional pre-built :class:`~magicboost_core.refine.guidance.Guidance` (tests, custom models).
        normalize: "auto" (keep the user's frame; the frame check enforces the contract), "always"
            (explicitly recentre and rescale the mesh to ``normalize_radius`` — only right when the views
            were rendered from the normalised object) or "never" (no frame check).
        reference_views: optional full-resolution condition views ``(images (A,H,W,3|4), masks (A,H,W[,1]) or
            None)`` for the reconstruction targets (``cond`` holds them at the model's input size).
    Raises:
        RefineInputError: inconsistent inputs; FrameMismatchError: the mesh does not sit where the views see it.
    """
    cfg = (config or RefineConfig()).validate()
    t0 = time.time()
    preset = get_preset(cfg.preset)
    need_model = cfg.ref_or_guidance != "reference" or (cfg.aiu.enabled and cfg.aiu.mode == "sdedit")
    _validate(mesh, cond, preset, need_model and guidance is None, model, normalize)
    if guidance is None and model is not None and need_model:
        from .guidance import MultiViewGuidance

        guidance = MultiViewGuidance(model, cond, cfg_scale=cfg.cfg_scale)
    device = _device_of(guidance, mesh)
    log: list[str] = []
    cams, images, masks, azimuths, full = _prepare_views(cond, reference_views, cfg, preset, device)
    run = _Run(cfg=cfg, preset=preset, device=device, gen=torch.Generator().manual_seed(int(cfg.seed)), log=log,
               guidance=guidance, cams=cams, images=images, masks=masks, azimuths=azimuths, full=full,
               silhouette=silhouette_available(cond))
    if not run.silhouette:
        log.append("the condition views carry no silhouette (no alpha, no MASK, no uniform background): "
                   "silhouette terms are off; only colours are fitted at the condition views.")
    frame, work, ious = _prepare_frame(run, mesh.to(device), normalize)
    _prepare_representation(run, work, mesh.num_faces)
    result = RefineResult(mesh=mesh, best_mesh=mesh, log=log, frame=frame, frame_iou=ious)
    if cfg.guard_checks > 0:
        _guard_check(run, 0)
    try:
        _optimise(run, result, progress, preview, should_stop)
    except KeyboardInterrupt:
        result.interrupted = True
        log.append(f"interrupted at step {result.steps_done}/{cfg.steps}; returning the best state so far.")
    return _finish(run, result, frame, t0)
