"""``refine_mesh``: the Magic-Boost objective (reference §5.2) applied directly to a textured mesh.

Per step ``s`` (``ref_or_guidance = "alternate"``): even steps are *reconstruction* steps (MSE of the
albedo render against the reference view, or — inside the pseudo-view window, once the Anchor
Iterative Update has run — against one of the pseudo views, picked with probabilities
[ref 0.25, pseudo1..3 0.25 each]); odd steps are *SDS* steps (a batch of random orbit cameras, shaded
renders, x0-reconstruction SDS + orientation penalty). AIU steps force reconstruction. With
``lambda_anchor_rgb`` / ``lambda_anchor_mask`` > 0 every reconstruction step also renders the condition
views at their own poses (same render call as the sampled view) and adds the *anchor reconstruction*
term (:func:`anchor_losses`; side anchors weighted by ``anchor_side_weight``). Mesh
regularisers (Laplacian of the offsets, normal consistency, offset norm) apply on every step.

Frames: the loop works in a *normalised* frame. By default (``normalize="auto"``) a mesh already
inside the preset's working volume (centred, bounding radius 0.2-1.0) is left as is — the condition
images were rendered in that frame, so rescaling would misalign them; any other mesh is moved to the
origin and scaled to ``normalize_radius``, with a warning in the log. Results are mapped back with the
exact inverse, so they land in the user's coordinates. For presets with ``flip_z`` (InstantMesh) the
official z flip is applied on the way in and undone on the way out.

Determinism: every random draw comes from one ``torch.Generator`` seeded with ``config.seed``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ..geometry.camera import Cameras, orbit_cameras
from ..geometry.mesh import Mesh
from ..geometry.presets import RandomPoseSampler, get_preset
from . import schedule as S
from .aiu import (PseudoViews, aiu_cameras, condition_pseudo_views, resize_images, sdedit_pseudo_views)
from .config import RefineConfig
from .regularizers import (face_adjacency, laplacian_loss, normal_consistency_loss, offset_loss,
                           orientation_loss, pixel_ray_directions, uniform_laplacian)
from .representation import RefinableMesh, prepare_colors, subdivide_midpoint
from .sds import sds_step

__all__ = ["refine_mesh", "RefineResult", "RefineInputError", "FrameTransform", "condition_views_from",
           "anchor_weights", "anchor_losses"]


class RefineInputError(ValueError):
    """Inputs of ``refine_mesh`` do not fit together; the message says what to change."""


# --------------------------------------------------------------------------------------------------
@dataclass
class FrameTransform:
    """``p_work = scale * (flip(p_user) - center)``; ``invert`` maps work-frame meshes back exactly."""

    center: torch.Tensor  # (3,) float64
    scale: float
    flip_z: bool = False

    @property
    def is_identity(self) -> bool:
        return (not self.flip_z) and self.scale == 1.0 and bool((self.center == 0).all())

    def _flip(self, mesh: Mesh) -> Mesh:
        v = mesh.vertices * torch.tensor([1.0, 1.0, -1.0], device=mesh.device)
        kw = dict(vertices=v, faces=mesh.faces[:, [0, 2, 1]])
        if mesh.uv_faces is not None:
            kw["uv_faces"] = mesh.uv_faces[:, [0, 2, 1]]
        return mesh.replace(**kw)

    def apply(self, mesh: Mesh) -> Mesh:
        m = self._flip(mesh) if self.flip_z else mesh
        if self.scale == 1.0 and bool((self.center == 0).all()):
            return m
        v = (m.vertices.double() - self.center.to(m.device)) * self.scale
        return m.replace(vertices=v.float())

    def invert(self, mesh: Mesh) -> Mesh:
        m = mesh
        if not (self.scale == 1.0 and bool((self.center == 0).all())):
            v = mesh.vertices.double() / self.scale + self.center.to(mesh.device)
            m = mesh.replace(vertices=v.float())
        return self._flip(m) if self.flip_z else m


def _frame_for(mesh: Mesh, mode: str, radius: float, flip_z: bool, log: list) -> FrameTransform:
    v = mesh.vertices.double()
    if flip_z:
        v = v * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64, device=v.device)
        log.append("preset uses flipped z (InstantMesh convention): z negated for refinement, restored on export.")
    lo, hi = v.min(0).values, v.max(0).values
    center = 0.5 * (lo + hi)
    r = float((v - center).norm(dim=1).max())
    r0 = float(v.norm(dim=1).max())
    off = float(center.norm())
    zero = torch.zeros(3, dtype=torch.float64, device=v.device)
    if mode == "never":
        return FrameTransform(zero, 1.0, flip_z)
    inside = off <= 0.1 and 0.2 <= r0 <= 1.0
    if mode == "auto" and inside:
        return FrameTransform(zero, 1.0, flip_z)
    if r <= 0:
        raise RefineInputError("The mesh is degenerate (all vertices at one point); nothing to refine.")
    if mode == "auto":
        why = []
        if off > 0.1:
            why.append(f"its centre is at ({center[0]:.3g}, {center[1]:.3g}, {center[2]:.3g}), far from the origin")
        if not (0.2 <= r0 <= 1.0):
            why.append(f"its bounding radius is {r0:.3g} (the preset's cameras expect about {radius:g})")
        log.append("WARNING: input mesh is not in the preset's working volume: " + "; ".join(why) +
                   f". It was recentred and scaled by {radius / r:.4g} for refinement and mapped back afterwards; "
                   "make sure the condition views show the object at the same framing.")
    return FrameTransform(center, radius / r, flip_z)


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
    from ..masks import resolve_view_masks

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

    ``mesh``: the final state (on interrupt: the best state so far); ``best_mesh``: lowest reference
    reconstruction loss seen; ``losses``: one dict per step; ``previews``: (step, (4, H, W, 3)) renders;
    ``log``: notes and warnings (frame normalisation, colour initialisation, interrupts).
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


def _validate(mesh, cond, preset, guidance_needed, model):
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


def refine_mesh(model, cond, mesh: Mesh, config: RefineConfig | None = None,
                progress: Callable | None = None, preview: Callable | None = None,
                should_stop: Callable | None = None, guidance=None, normalize: str = "auto",
                reference_views=None) -> RefineResult:
    """Refine ``mesh`` (geometry offsets + colours) against the condition views in ``cond``.

    Args:
        model: a ``MultiViewModel`` (or ``None`` with ``ref_or_guidance='reference'`` or a ``guidance``).
        cond: ``ViewConditioning`` (images (A,H,W,3|4) [0,1], masks, elevations (A,), azimuths (A,) degrees).
        mesh: the coarse mesh, any frame (see module docstring), z-up.
        config: :class:`RefineConfig` (official defaults).
        progress: ``progress(step, total, losses: dict)`` after every step.
        preview: ``preview(step, images (4, H, W, 3) float [0, 1])`` every ``config.preview_every`` steps.
        should_stop: polled every step; True ends the run early (like KeyboardInterrupt) with the best state.
        guidance: optional pre-built :class:`~magicboost_core.refine.guidance.Guidance` (tests, custom models).
        normalize: "auto" | "always" | "never" (module docstring).
        reference_views: optional full-resolution condition views ``(images (A,H,W,3|4), masks (A,H,W[,1]) or
            None)`` for the reconstruction targets and texture projection (``cond`` holds them only at the
            model's input size, e.g. 32 px for the demo model).
    """
    cfg = (config or RefineConfig()).validate()
    t0 = time.time()
    log: list[str] = []
    preset = get_preset(cfg.preset)
    use_sds = cfg.ref_or_guidance != "reference"
    need_model = use_sds or (cfg.aiu.enabled and cfg.aiu.mode == "sdedit")
    _validate(mesh, cond, preset, need_model and guidance is None, model)
    if normalize not in ("auto", "always", "never"):
        raise RefineInputError(f"normalize must be 'auto', 'always' or 'never'; got {normalize!r}.")

    device = torch.device("cpu")
    if guidance is None and model is not None and need_model:
        from .guidance import MultiViewGuidance

        guidance = MultiViewGuidance(model, cond, cfg_scale=cfg.cfg_scale)
    if guidance is not None:
        device = guidance.device
    gen = torch.Generator().manual_seed(int(cfg.seed))

    # ---- frame, colours, representation -----------------------------------------------------------
    frame = _frame_for(mesh.to("cpu"), normalize, cfg.normalize_radius, preset.flip_z, log)
    work = frame.apply(mesh.to("cpu"))
    if cfg.subdivide_below_faces and work.num_faces < cfg.subdivide_below_faces:
        work = subdivide_midpoint(work)
        log.append(f"mesh has {mesh.num_faces} faces (< {cfg.subdivide_below_faces}): one midpoint subdivision "
                   f"-> {work.num_faces} faces.")
    R = int(cfg.render_resolution)
    cimg, cmask, cel, caz = condition_views_from(cond)
    if reference_views is not None:
        from types import SimpleNamespace

        full_img, full_mask = reference_views
        cimg, cmask, _, _ = condition_views_from(SimpleNamespace(images=full_img, masks=full_mask,
                                                                 elevations=cel, azimuths=caz))
        if cimg.shape[0] != cel.numel():
            raise RefineInputError(f"reference_views has {cimg.shape[0]} images for {cel.numel()} condition views.")
    cams_cond = orbit_cameras(cel.tolist(), caz.tolist(), preset.distance, preset.fovy_deg, width=R).to(device)
    cimg_r = resize_images(cimg.permute(0, 3, 1, 2), R).permute(0, 2, 3, 1).to(device)
    cmask_r = (resize_images(cmask.permute(0, 3, 1, 2), R, mode="nearest").permute(0, 2, 3, 1) > 0.5).float().to(device)
    work = prepare_colors(work, cfg.color_mode, cfg.texture_resolution,
                          condition=(cams_cond.to("cpu"), cimg_r.cpu(), cmask_r.cpu()), notes=log)
    rep = RefinableMesh(work.to(device), cfg.color_mode, cfg.refine_geometry).to(device)

    params = [{"params": [rep.colors], "lr": cfg.lr_texture}]
    if cfg.refine_geometry:
        params.append({"params": [rep.offsets], "lr": cfg.lr_offsets})
    opt = torch.optim.Adam(params, betas=tuple(cfg.adam_betas), eps=1e-8)
    L = tuple(x.to(device) for x in uniform_laplacian(rep.welded_faces, rep.offsets.shape[0]))
    pairs = face_adjacency(rep.welded_faces).to(device)

    sampler = RandomPoseSampler.for_preset(preset, resolution=R, generator=gen)
    ref_cam = cams_cond[[0]]
    ref_img, ref_mask = cimg_r[:1], cmask_r[:1]
    aiu_set = set(S.aiu_steps(cfg.steps, cfg.aiu.start_fraction, cfg.aiu.every_fraction)) if cfg.aiu.enabled else set()
    pseudo: PseudoViews | None = None
    probs = torch.tensor(cfg.aiu.view_probabilities, dtype=torch.float64)
    use_anchor = cfg.lambda_anchor_rgb > 0 or cfg.lambda_anchor_mask > 0
    anchor_w = anchor_weights(cams_cond.c2w.shape[0], cfg.anchor_side_weight).to(device)
    preview_cams = aiu_cameras(preset.distance, preset.fovy_deg, cfg.preview_resolution).to(device)

    result = RefineResult(mesh=mesh, best_mesh=mesh, log=log, frame=frame)
    best = (math.inf, None, -1)
    step = 0
    try:
        for step in range(cfg.steps):
            if should_stop is not None and should_stop():
                result.interrupted = True
                log.append(f"stopped on request at step {step}/{cfg.steps}; returning the best state so far.")
                break
            losses: dict[str, float] = {}
            aiu_now = step in aiu_set
            if aiu_now:
                if cfg.aiu.mode == "sdedit":
                    cams = aiu_cameras(preset.distance, preset.fovy_deg, R).to(device)
                    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
                    pseudo = sdedit_pseudo_views(guidance, rep, cams, caz.tolist(), cfg.aiu.strength,
                                                 cfg.aiu.num_ddim_steps, cfg.aiu.mask_threshold, seed=seed)
                else:
                    pseudo = condition_pseudo_views(cimg_r, cmask_r, cams_cond)
                losses["aiu"] = 1.0
            do_ref = S.is_reconstruction_step(step, cfg.ref_or_guidance) or aiu_now or not use_sds
            opt.zero_grad(set_to_none=True)
            total = torch.zeros((), device=device)
            if do_ref:
                view = 0
                if (pseudo is not None and cfg.recon_view_mode == "four"
                        and S.pseudo_views_active(step, cfg.steps, cfg.aiu.start_fraction, cfg.aiu.pseudo_end_fraction)):
                    n_p = pseudo.images.shape[0]
                    p = torch.zeros(1 + n_p, dtype=torch.float64)
                    p[0] = probs[0]
                    if n_p == probs.numel() - 1:
                        p[1:] = probs[1:]
                    else:  # other pseudo-view counts: pseudo 0 excluded, the rest share the side weight evenly
                        p[2:] = probs[1:].sum() / max(1, n_p - 1)
                    view = int(torch.multinomial(p, 1, generator=gen))
                if view == 0:
                    cam, target, tmask = ref_cam, ref_img, ref_mask
                else:
                    cam, target, tmask = pseudo.cameras[[view - 1]], pseudo.images[view - 1:view], pseudo.masks[view - 1:view]
                # One render serves the sampled view (index 0) and, with the anchor term on, the condition
                # views at their own poses (indices 1..A).
                out = rep.render(Cameras.cat([cam, cams_cond]) if use_anchor else cam, background=1.0)
                rgb, alpha = out.rgb.float(), out.alpha.float()
                diff = rgb[:1] - target
                use_l1 = view > 0 and cfg.aiu.loss == "l1"
                l_rgb = diff.abs().mean() if use_l1 else diff.pow(2).mean()
                total = total + cfg.lambda_rgb * l_rgb
                losses["rgb"] = l_rgb.item()
                losses["view"] = float(view)
                if cfg.lambda_mask > 0 and (view == 0 or pseudo.source == "condition_views"):
                    l_mask = (alpha[:1] - tmask).pow(2).mean()
                    total = total + cfg.lambda_mask * l_mask
                    losses["mask"] = l_mask.item()
                if use_anchor:
                    l_arg, l_am = anchor_losses(rgb[1:], alpha[1:], cimg_r, cmask_r, anchor_w)
                    total = total + cfg.lambda_anchor_rgb * l_arg + cfg.lambda_anchor_mask * l_am
                    losses["anchor_rgb"] = l_arg.item()
                    losses["anchor_mask"] = l_am.item()
                if view == 0 and losses["rgb"] < best[0]:
                    best = (losses["rgb"], rep.snapshot(), step)
            else:
                cams = sampler.sample(cfg.batch_size).to(device)
                out = rep.render(cams, background=1.0)
                u = torch.rand(3, generator=gen)
                if float(u[0]) < cfg.albedo_probability:
                    img = out.rgb.float()
                else:
                    lp = cams.position.cpu() + torch.randn(cams.position.shape, generator=gen)
                    lo, hi = cfg.light_distance_range
                    ld = F.normalize(lp, dim=-1) * (lo + (hi - lo) * float(u[2]))
                    img = _shade(out, F.normalize(ld, dim=-1).to(device), float(u[1]),
                                 textureless=bool(torch.rand((), generator=gen) < cfg.textureless_probability))
                t = S.sample_timestep(step, cfg.steps, gen, min_fraction=cfg.min_step_fraction,
                                      start=cfg.max_step_start, end=cfg.max_step_end,
                                      anneal_fraction=cfg.max_step_anneal_fraction)
                small = resize_images(img.permute(0, 3, 1, 2), guidance.image_size)
                sds = sds_step(guidance, small, cams.elevation_deg, cams.azimuth_deg, t, gen, cfg.recon_std_rescale)
                total = total + cfg.lambda_sds * sds.loss
                losses["sds"] = sds.loss.item()
                losses["t"] = float(t)
                if cfg.refine_geometry and cfg.lambda_orient > 0:
                    l_or = orientation_loss(out.normal.float(), out.alpha.float(), pixel_ray_directions(cams))
                    total = total + cfg.lambda_orient * l_or
                    losses["orient"] = l_or.item()
            if cfg.refine_geometry:
                verts = rep.vertices()
                if cfg.lambda_laplacian > 0:
                    l_lap = laplacian_loss(rep.offsets + rep.welded_base if cfg.laplacian_on == "positions" else rep.offsets, L)
                    total = total + cfg.lambda_laplacian * l_lap
                    losses["laplacian"] = l_lap.item()
                if cfg.lambda_normal_consistency > 0:
                    l_nc = normal_consistency_loss(verts, rep.faces, pairs)
                    total = total + cfg.lambda_normal_consistency * l_nc
                    losses["normal_consistency"] = l_nc.item()
                if cfg.lambda_offset > 0:
                    total = total + cfg.lambda_offset * offset_loss(rep.offsets)
            if not torch.isfinite(total):
                log.append(f"non-finite loss at step {step}; stopping and returning the best state so far.")
                result.interrupted = True
                break
            total.backward()
            opt.step()
            rep.clamp_()
            losses["total"] = total.item()
            result.losses.append(losses)
            result.steps_done = step + 1
            if progress is not None:
                progress(step + 1, cfg.steps, losses)
            if cfg.preview_every and ((step + 1) % cfg.preview_every == 0 or step + 1 == cfg.steps):
                with torch.no_grad():
                    imgs = rep.render(preview_cams, background=1.0, grad=False).rgb.float().clamp(0, 1).cpu()
                result.previews.append((step + 1, imgs))
                if preview is not None:
                    preview(step + 1, imgs)
    except KeyboardInterrupt:
        result.interrupted = True
        log.append(f"interrupted at step {step}/{cfg.steps}; returning the best state so far.")

    final = rep.to_mesh()
    best_mesh = rep.to_mesh(best[1]) if best[1] is not None else final
    if result.interrupted and best[1] is not None:
        final = best_mesh
    result.mesh = frame.invert(final.to("cpu"))
    result.best_mesh = frame.invert(best_mesh.to("cpu"))
    result.best_step = best[2]
    result.pseudo_views = pseudo
    result.seconds = time.time() - t0
    return result
