"""AIU Loss settings and SDS Refine Mesh."""
from __future__ import annotations

import json
import logging

import torch

from magicboost_core.geometry.presets import PRESETS
from magicboost_core.refine.config import AIUConfig, RefineConfigError
from magicboost_core.refine.frame_check import FrameMismatchError
from magicboost_core.refine.loop import refine_mesh
from magicboost_core.refine.profiles import resolve_config

from . import comfy_compat
from .common import (AIU_CONFIG, MODEL, VIEWS, Node, NodeInputError, check_model, check_views, meshes_from_input,
                     meshes_to_output, single_mesh, to_comfy_image)
from .spec import inp, seed_input

log = logging.getLogger("magicboost")

AIU_MODES = ["sdedit", "condition_views"]


class MagicBoostAIULoss(Node):
    """Settings of the Anchor Iterative Update (AIU): during refinement the mesh is re-rendered from four anchor
    cameras, lightly re-noised and denoised by the model (SDEdit), and these pseudo views become extra
    reconstruction targets. Connect to SDS Refine Mesh."""

    OUTPUTS = ((AIU_CONFIG, "aiu_config", "AIU settings for SDS Refine Mesh."),)
    FUNCTION = "make"
    REQUIRED = {
        "enabled": inp("BOOLEAN", "Turn the Anchor Iterative Update on or off.", default=True),
        "start_fraction": inp("FLOAT", "When the first update happens, as a fraction of the refinement steps "
                              "(official: step 500 of 2500 = 0.2).", default=0.2, min=0.0, max=1.0, step=0.01),
        "every_fraction": inp("FLOAT", "Interval between updates as a fraction of the refinement steps "
                              "(official: every 500 of 2500 = 0.2).", default=0.2, min=0.01, max=1.0, step=0.01),
        "strength": inp("FLOAT", "SDEdit strength: fraction of the 50 DDIM steps that re-noise and denoise the "
                        "renders (official: 0.1).", default=0.1, min=0.02, max=1.0, step=0.01),
        "mode": inp(AIU_MODES, "sdedit = official AIU (renders refreshed by the model); condition_views = "
                    "ablation: the condition images themselves are the targets.", default="sdedit"),
    }

    def make(self, enabled=True, start_fraction=0.2, every_fraction=0.2, strength=0.1, mode="sdedit"):
        if mode not in AIU_MODES:
            raise NodeInputError("AIU Loss", "mode", f"unknown mode {mode!r}.", f"Choose one of {AIU_MODES}.")
        return (AIUConfig(enabled=bool(enabled), mode=mode, strength=float(strength),
                          start_fraction=float(start_fraction), every_fraction=float(every_fraction)),)


FRAME_CONTRACT = ("Frame contract: the mesh must sit where the preset cameras saw the object: z up, centred on the "
                  "origin, at the size the views show it (Instant3D: bounding radius about 0.5-0.6). Before "
                  "refining, its silhouettes are compared with the views' masks; a mismatch stops with an error "
                  "naming the cause (scale, offset or axes) and the fix.")


class MagicBoostSDSRefineMesh(Node):
    DESCRIPTION = ("Refines a coarse mesh with Magic-Boost: score distillation (SDS) from the multi-view model "
                   "conditioned on the encoded views, a reconstruction loss on the reference view and, optionally, "
                   "the Anchor Iterative Update. Settings default to the loaded model's refinement profile (the "
                   "best known setting for it); widgets left at 'auto' (0 or -1) keep the profile's value. "
                   "The result is never worse at the condition views than the input (do-no-harm guard). "
                   + FRAME_CONTRACT + " Shows progress and preview renders; Cancel stops early and returns the "
                   "best mesh so far.")
    OUTPUTS = (("MESH", "mesh", "The refined mesh (core MESH)."),
               ("IMAGE", "preview", "Preview renders of the refined mesh."))
    FUNCTION = "refine"
    REQUIRED = {
        "mv_model": inp(MODEL, "The model from Magic-Boost Load MV Model; its refinement profile sets the defaults."),
        "views": inp(VIEWS, "Encoded condition views (Magic-Boost Encode Views) of the same object."),
        "mesh": inp("MESH", "The coarse mesh to refine (core MESH, ComfyUI-3D-Pack mesh, or Load Mesh). "
                    + FRAME_CONTRACT),
        "steps": inp("INT", "Optimisation steps; 0 = the model's profile (official model: 2500; demo model: 200).",
                     default=0, min=0, max=20000),
        "lr_geometry": inp("FLOAT", "Learning rate of the geometry: mean edge lengths per step (the default "
                           "large-steps geometry) or world units per step (geometry_mode 'direct'); -1 = the "
                           "model's profile.", default=-1.0, min=-1.0, max=1.0, step=1e-4, round=1e-6),
        "lr_texture": inp("FLOAT", "Learning rate of the colours/texture; -1 = the model's profile.",
                          default=-1.0, min=-1.0, max=1.0, step=1e-4, round=1e-6),
        "resolution": inp("INT", "Render resolution during refinement; 0 = the model's profile.",
                          default=0, min=0, max=1024, step=32),
        "seed": seed_input(),
    }
    OPTIONAL = {
        "aiu_config": inp(AIU_CONFIG, "Anchor Iterative Update settings (Magic-Boost AIU Loss); without it the "
                          "model's profile is used."),
        "condition_view_weight": inp(
            "FLOAT", "Also fit the condition views at their own camera poses, with this weight relative to the "
            "reference-view reconstruction. 0 = official Magic-Boost (side views reach the mesh only through the "
            "diffusion model); 1 = as strongly as the reference view; -1 = the model's profile (the demo model "
            "uses 1).", default=-1.0, min=-1.0, max=10.0, step=0.05),
        "align": inp("BOOLEAN", "Fit the mesh's scale, offset and axis permutation (e.g. a z-up GLB lying on its "
                     "side) to the views' silhouettes before refining; the result is returned in the mesh's own "
                     "frame.", default=False),
        "config": inp("STRING", "Any refinement settings as a JSON object of RefineConfig fields, applied over the "
                      "model's profile, e.g. {\"lambda_sds\": 0.5, \"aiu\": {\"strength\": 0.2}}. Widgets not "
                      "left at 'auto' win over it.", default="", multiline=True),
    }

    def refine(self, mv_model, views, mesh, steps=0, lr_geometry=-1.0, lr_texture=-1.0, resolution=0, seed=0,
               aiu_config=None, condition_view_weight=-1.0, align=False, config=""):
        node = "SDS Refine Mesh"
        views = check_views(views, check_model(mv_model, node), node)
        coarse = single_mesh(meshes_from_input(mesh, node, "mesh"), node, "mesh")
        cfg = make_refine_config(node, steps=int(steps), lr_geometry=float(lr_geometry),
                                 lr_texture=float(lr_texture), resolution=int(resolution), seed=int(seed),
                                 preset=views.preset, aiu=aiu_config,
                                 condition_view_weight=float(condition_view_weight), model=mv_model,
                                 config_text=config, align=bool(align))
        progress = comfy_compat.Progress(int(cfg.steps), "refine")
        last_preview = {}

        def on_progress(step, total=None, *args):
            progress.update(int(step), int(total or cfg.steps))

        def on_preview(step, image, *args):
            last_preview["image"] = image
            progress.update(int(step), int(cfg.steps), preview=image)

        try:
            # ComfyUI runs nodes under torch.inference_mode(); the optimisation needs autograd and ordinary tensors
            with comfy_compat.autograd(), comfy_compat.gpu_work(mv_model):
                model, cond, coarse = comfy_compat.autograd_ready((mv_model, views.cond, coarse))
                result = refine_mesh(model, cond, coarse, cfg, progress=on_progress, preview=on_preview,
                                     should_stop=comfy_compat.interrupted)
        except FrameMismatchError as e:
            raise NodeInputError(node, "mesh", str(e), "Or switch on the 'align' input.") from e
        finally:
            progress.close()
        if getattr(result, "interrupted", False) or comfy_compat.interrupted():
            # honour Cancel by returning the best mesh so far; clear the flag so a Save node still writes it
            log.warning("Magic-Boost: refinement interrupted after %s steps; returning the best mesh so far.",
                        getattr(result, "steps_done", "?"))
            comfy_compat.clear_interrupt()
        return (meshes_to_output([result.mesh]), to_comfy_image(_last_preview(result, last_preview.get("image"))))


def _last_preview(result, streamed):
    """The last preview of the run (``result.previews``: images or (step, image) pairs), else the last one
    streamed to the progress bar, else a white (1, 64, 64, 3) placeholder."""
    previews = [p[1] if isinstance(p, tuple) else p for p in (getattr(result, "previews", None) or [])]
    if previews:
        return previews[-1]
    return streamed if streamed is not None else torch.ones(1, 64, 64, 3)


def _node_settings(base, *, steps, lr_geometry, lr_texture, resolution, seed, aiu,
                   condition_view_weight, align) -> dict:
    """The widgets that are not at 'auto' as RefineConfig settings (``base``: the profile + config input)."""
    out = {"seed": seed}
    if steps > 0:
        out["steps"] = steps
    if resolution > 0:
        out["render_resolution"] = resolution
    if lr_geometry >= 0:
        out["lr_offsets_edges" if base.geometry_mode == "large_steps" else "lr_offsets"] = lr_geometry
    if lr_texture >= 0:
        out["lr_texture"] = lr_texture
    if condition_view_weight >= 0:
        lam = condition_view_weight * base.lambda_rgb
        out.update(lambda_anchor_rgb=lam, lambda_anchor_mask=lam)
    if align:
        out["align"] = True
    if aiu is not None:
        out["aiu"] = aiu
    return out


#: RefineConfig field (``RefineConfigError.field``) -> the widget of SDS Refine Mesh that sets it.
WIDGET_OF_FIELD = {"steps": "steps", "render_resolution": "resolution", "lr_offsets": "lr_geometry",
                   "lr_offsets_edges": "lr_geometry", "lr_texture": "lr_texture",
                   "lambda_anchor_rgb": "condition_view_weight", "lambda_anchor_mask": "condition_view_weight"}


def _config_input(node, config_text):
    """The ``config`` input: None when empty, else the JSON object it holds."""
    if not config_text or not config_text.strip():
        return None
    try:
        settings = json.loads(config_text)
    except json.JSONDecodeError as e:
        raise NodeInputError(node, "config", f"not valid JSON ({e}).",
                             'Write a JSON object, e.g. {"lambda_sds": 0.5}.') from e
    if not isinstance(settings, dict):
        raise NodeInputError(node, "config", "must be a JSON object of RefineConfig fields.",
                             'Write a JSON object, e.g. {"lambda_sds": 0.5}.')
    return settings


def make_refine_config(node, *, steps, lr_geometry, lr_texture, resolution, seed, preset, aiu,
                       condition_view_weight=-1.0, model=None, config_text="", align=False):
    """The engine's RefineConfig from the node inputs: the model's profile (``refine.profiles.resolve_config``,
    the same resolution as ``magicboost refine``), the ``config`` JSON, then the widgets not left at 'auto'.
    Errors name the node input."""
    if getattr(preset, "name", None) not in PRESETS:
        raise NodeInputError(node, "views", f"refinement needs the views of a known generator preset "
                             f"({sorted(PRESETS)}), got custom cameras.",
                             "In Encode Views choose preset 'instant3d' or 'instantmesh' instead of custom cameras.")
    if aiu is not None and not isinstance(aiu, AIUConfig):
        raise NodeInputError(node, "aiu_config", f"expected MAGICBOOST_AIU_CONFIG, got {type(aiu).__name__}.",
                             "Connect Magic-Boost AIU Loss.")
    file_settings = _config_input(node, config_text)
    try:
        base = resolve_config(model, preset=preset.name, file_settings=file_settings)
    except ValueError as e:
        raise NodeInputError(node, "config", str(e)) from e
    settings = _node_settings(base, steps=steps, lr_geometry=lr_geometry, lr_texture=lr_texture,
                              resolution=resolution, seed=seed, aiu=aiu,
                              condition_view_weight=condition_view_weight, align=align)
    try:
        cfg = resolve_config(model, preset=preset.name, file_settings=file_settings, settings=settings)
    except RefineConfigError as e:  # the profile and the config input passed above: a widget is to blame
        field = e.field or ""
        which = "aiu_config" if field.startswith("aiu.") else WIDGET_OF_FIELD.get(field, "config")
        raise NodeInputError(node, which, str(e)) from e
    if not cfg.preview_every:
        cfg = cfg.with_(preview_every=max(1, cfg.steps // 10))
    return cfg


NODE_CLASS_MAPPINGS = {
    "MagicBoostAIULoss": MagicBoostAIULoss,
    "MagicBoostSDSRefineMesh": MagicBoostSDSRefineMesh,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MagicBoostAIULoss": "Magic-Boost AIU Loss",
    "MagicBoostSDSRefineMesh": "Magic-Boost SDS Refine Mesh",
}
