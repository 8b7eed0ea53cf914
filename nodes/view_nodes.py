"""Camera Poses, Encode Views and Novel View Sample."""
from __future__ import annotations

import torch

from magicboost_core.geometry.presets import custom_preset, get_preset
from magicboost_core.images import split_grid
from magicboost_core.masks import is_placeholder_mask
from magicboost_core.model.conditioning import encode_views, novel_view_conditioning, with_novel_view_prompts
from magicboost_core.model.sampling import sample_novel_views
from magicboost_core.validate import finite_number, number_list

from . import comfy_compat
from .common import (CAMERAS, MODEL, PRESET_CHOICES, VIEWS, EncodedViews, Node, NodeInputError, check_cameras,
                     check_model, check_views, image_batch, mask_batch, to_comfy_image)
from .spec import inp, seed_input

LAYOUTS = {"views (batch)": None, "instant3d 2x2": (2, 2), "zero123++ 3x2": (3, 2)}
LAYOUT_PRESET = {"instant3d 2x2": "instant3d", "zero123++ 3x2": "instantmesh"}
#: Novel View Sample conditioning modes -> official demo (True) or refinement (False) conditioning.
NOVEL_VIEW_MODES = {"official demo": True, "refinement": False}


class MagicBoostCameraPoses(Node):
    """Camera poses on an orbit around the object (z-up world, degrees): a coarse generator's preset (Instant3D 4
    views, InstantMesh/Zero123++ 6 views) or custom elevation/azimuth lists. Use it for the condition views of
    Encode Views, the targets of Novel View Sample, or Render Views."""

    OUTPUTS = ((CAMERAS, "cameras", "The camera poses (elevations, azimuths, distance, field of view)."),)
    FUNCTION = "make"
    REQUIRED = {
        "preset": inp(PRESET_CHOICES + ["custom"], "Preset of a coarse generator, or 'custom' to use the lists "
                      "below (the lists are ignored for presets).", default="custom"),
        "elevations": inp("STRING", "custom: comma-separated elevations in degrees (one value is used for all "
                          "views).", default="10", multiline=False),
        "azimuths": inp("STRING", "custom: comma-separated azimuths in degrees, 0 = front (+x), counter-"
                        "clockwise seen from above.", default="45", multiline=False),
        "distance": inp("FLOAT", "custom: camera distance from the object centre (world units).", default=1.5,
                        min=0.1, max=100.0, step=0.01),
        "fov": inp("FLOAT", "custom: vertical field of view in degrees.", default=49.134, min=1.0, max=170.0,
                   step=0.01),
    }

    def make(self, preset, elevations="10", azimuths="45", distance=1.5, fov=49.134):
        if preset != "custom":
            if preset not in PRESET_CHOICES:
                raise NodeInputError("Camera Poses", "preset", f"unknown preset {preset!r}.",
                                     f"Choose one of {PRESET_CHOICES + ['custom']}.")
            return (get_preset(preset),)
        lists = {}
        for name, text, lo, hi in (("elevations", elevations, -90.0, 90.0), ("azimuths", azimuths, -360.0, 360.0)):
            try:
                lists[name] = number_list(text, name, lo, hi)
            except ValueError as e:
                raise NodeInputError("Camera Poses", name, str(e)) from e
            if not lists[name]:
                raise NodeInputError("Camera Poses", name, "no numbers given.",
                                     "Write numbers separated by commas, e.g. '0, 90, 180, 270'.")
        for name, value, lo, hi in (("distance", distance, 0.1, 100.0), ("fov", fov, 1.0, 170.0)):
            try:
                finite_number(value, name, lo, hi)
            except ValueError as e:
                raise NodeInputError("Camera Poses", name, str(e)) from e
        el, az = lists["elevations"], lists["azimuths"]
        if len(el) not in (1, len(az)):
            raise NodeInputError("Camera Poses", "elevations", f"{len(el)} elevations for {len(az)} azimuths.",
                                 "Give one elevation (used for all views) or one per azimuth.")
        try:
            return (custom_preset(el, az, distance, fov),)
        except ValueError as e:
            raise NodeInputError("Camera Poses", "elevations", str(e)) from e


class MagicBoostEncodeViews(Node):
    """Encodes the coarse generator's multi-view images (the condition 'anchor' views) for Magic-Boost: VAE
    latents, CLIP image tokens and camera vectors. Accepts a batch of views or one tiled grid image (Instant3D
    2x2, Zero123++/InstantMesh 3x2). Images are composited on white using the mask."""

    OUTPUTS = ((VIEWS, "views", "Encoded condition views with their camera poses."),)
    FUNCTION = "encode"
    REQUIRED = {
        "mv_model": inp(MODEL, "The model from Magic-Boost Load MV Model."),
        "images": inp("IMAGE", "The condition views: a batch (one image per view, in the preset's order) or one "
                      "grid image (see layout)."),
        "layout": inp(list(LAYOUTS), "How the views are arranged in 'images'.", default="views (batch)"),
        "preset": inp(["auto"] + PRESET_CHOICES, "Camera poses of the views. auto = from the layout, or from the "
                      "number of views (4 = instant3d, 6 = instantmesh). A connected 'cameras' input overrides "
                      "this.", default="auto"),
        "seed": seed_input("Seed of the VAE posterior sample."),
        "sample_posterior": inp("BOOLEAN", "Sample the VAE posterior like the official code (stochastic); off = "
                                "use its mean (deterministic).", default=True),
        "strength_tex": inp("FLOAT", "Condition-strength label for texture of anchors 1.. (0 = official refinement "
                            "setting: 'side views are unreliable'; 1 = trust them).", default=0.0, min=0.0, max=1.0,
                            step=0.05),
        "strength_geo": inp("FLOAT", "Condition-strength label for geometry of anchors 1.. (0 = official "
                            "refinement setting).", default=0.0, min=0.0, max=1.0, step=0.05),
    }
    OPTIONAL = {
        "mask": inp("MASK", "Optional object mask (ComfyUI convention: 1 = background), one per view or one for the "
                    "grid image. Order used: the images' alpha, this mask, a mask estimated from a uniform "
                    "(white/grey) background, else no silhouette term. Load Image's 64x64 placeholder mask of "
                    "images without alpha counts as no mask."),
        "cameras": inp(CAMERAS, "Optional custom poses of the views (Magic-Boost Camera Poses); overrides 'preset'."),
    }

    def encode(self, mv_model, images, layout="views (batch)", preset="auto", seed=0, sample_posterior=True,
               strength_tex=0.0, strength_geo=0.0, mask=None, cameras=None):
        node = "Encode Views"
        check_model(mv_model, node)
        if layout not in LAYOUTS:
            raise NodeInputError(node, "layout", f"unknown layout {layout!r}.", f"Choose one of {list(LAYOUTS)}.")
        imgs, masks = _view_images(node, images, mask, layout)
        views = _view_cameras(node, imgs.shape[0], layout, preset, cameras)
        gen = torch.Generator().manual_seed(int(seed))
        cond = encode_views(mv_model, imgs, list(views.elevations), list(views.azimuths), masks=masks,
                            sample_posterior=bool(sample_posterior), generator=gen,
                            strength_tex=float(strength_tex), strength_geo=float(strength_geo))
        return (EncodedViews(cond=cond, preset=views, images=imgs[..., :3], masks=masks, model_id=id(mv_model)),)


def _view_images(node, images, mask, layout):
    """The condition views (A, H, W, C) and their object masks (A, H, W, 1), 1 = object, or None; a grid image
    (``layout``) is split into its views."""
    imgs = image_batch(images, node, "images")
    b, h, w, _ = imgs.shape
    if mask is not None and is_placeholder_mask(mask, h, w):
        mask = None  # core Load Image's 64x64 stand-in for "this image has no alpha"
    masks = mask_batch(mask, node, "mask", b, h, w) if mask is not None else None
    grid = LAYOUTS[layout]
    if grid is None:
        return imgs, masks
    if b != 1:
        raise NodeInputError(node, "images", f"layout {layout!r} expects ONE grid image, got a batch of {b}.",
                             "Use layout 'views (batch)' for separate images.")
    try:
        return split_grid(imgs[0], *grid), (split_grid(masks[0], *grid) if masks is not None else None)
    except ValueError as e:
        raise NodeInputError(node, "images", str(e), "Check the layout matches the grid image.") from e


def _view_cameras(node, n, layout, preset, cameras):
    """The camera poses of ``n`` views: the ``cameras`` input, else the preset (``auto``: from the layout or
    the number of views); their count must match."""
    if cameras is not None:
        views = check_cameras(cameras, node)
    else:
        name = preset
        if name == "auto":
            name = LAYOUT_PRESET.get(layout) or {4: "instant3d", 6: "instantmesh"}.get(n)
            if name is None:
                raise NodeInputError(node, "preset", f"cannot guess the camera poses of {n} views.",
                                     "Choose a preset or connect Magic-Boost Camera Poses to 'cameras'.")
        elif name not in PRESET_CHOICES:
            raise NodeInputError(node, "preset", f"unknown preset {name!r}.",
                                 f"Choose one of {['auto'] + PRESET_CHOICES}.")
        views = get_preset(name)
    if len(views.azimuths) != n:
        which = "cameras" if cameras is not None else ("layout" if LAYOUTS[layout] is not None else "preset")
        raise NodeInputError(node, which, f"{n} view images but {len(views.azimuths)} camera poses "
                             f"({views.name}).", "Give one image per pose (e.g. 4 for instant3d, 6 for "
                             "instantmesh) or choose matching poses.")
    return views


class MagicBoostNovelViewSample(Node):
    """Generates new views of the object from the encoded condition views (DDIM sampling with classifier-free
    guidance), one image per target camera, conditioned like the official demo (condition-strength labels 0,
    each anchor its own CLIP tokens, the prompt 'a , 3d asset'). Useful to check the model and the views before
    refining."""

    OUTPUTS = (("IMAGE", "images", "One generated view per target camera, [N, H, W, 3]."),)
    FUNCTION = "sample"
    REQUIRED = {
        "mv_model": inp(MODEL, "The model from Magic-Boost Load MV Model."),
        "views": inp(VIEWS, "Encoded condition views from Magic-Boost Encode Views."),
        "cameras": inp(CAMERAS, "Target camera poses to generate (Magic-Boost Camera Poses)."),
        "steps": inp("INT", "DDIM steps (official: 50).", default=50, min=1, max=1000),
        "cfg": inp("FLOAT", "Classifier-free guidance scale (official: 5.0).", default=5.0, min=0.0, max=30.0,
                   step=0.1),
        "seed": seed_input(),
    }
    OPTIONAL = {
        "init": inp(["noise", "nearest_view"], "Start from pure noise (official) or from the condition view nearest "
                    "to each target camera, noised and denoised again (SDEdit).", default="noise"),
        "init_strength": inp("FLOAT", "nearest_view: fraction of the DDIM steps to run (1 = from almost pure noise, "
                             "small = stay close to the nearest view).", default=0.6, min=0.02, max=1.0, step=0.01),
    }

    def sample(self, mv_model, views, cameras, steps=50, cfg=5.0, seed=0, init="noise", init_strength=0.6,
               conditioning="official demo"):
        """``conditioning`` (Python callers only; no widget, so saved workflows keep their layout): "official
        demo" = as the official novel-view script (labels 0, every anchor its own CLIP tokens, the prompt
        'a , 3d asset' when the model stores it); "refinement" = the views' labels, the reference view's tokens
        and the refinement prompts."""
        node = "Novel View Sample"
        views = check_views(views, mv_model, node)
        targets = check_cameras(cameras, node)
        if init not in ("noise", "nearest_view"):
            raise NodeInputError(node, "init", f"unknown init {init!r}.", "Choose 'noise' or 'nearest_view'.")
        strength = float(init_strength) if init == "nearest_view" else 1.0
        if not 0.0 < strength <= 1.0 or int(int(steps) * strength) < 1:
            raise NodeInputError(node, "init_strength", f"{init_strength} leaves no DDIM step of {steps}.",
                                 "Raise init_strength (or steps); it must be in (0, 1].")
        if conditioning not in NOVEL_VIEW_MODES:
            raise NodeInputError(node, "conditioning", f"unknown mode {conditioning!r}.",
                                 f"Choose one of {list(NOVEL_VIEW_MODES)}.")
        cond, model = views.cond, mv_model
        if NOVEL_VIEW_MODES[conditioning]:
            try:
                cond = novel_view_conditioning(cond)
            except ValueError as e:
                raise NodeInputError(node, "views", str(e), "Re-run Magic-Boost Encode Views.") from e
            model = with_novel_view_prompts(mv_model)
        progress = comfy_compat.Progress(int(steps), "novel views")
        try:
            with comfy_compat.gpu_work(mv_model):
                out = sample_novel_views(model, cond, list(targets.elevations), list(targets.azimuths),
                                         steps=int(steps), cfg=float(cfg), seed=int(seed), init=init,
                                         strength=strength,
                                         progress=lambda i, n=int(steps), *a: progress.update(i, n))
        finally:
            progress.close()
        return (to_comfy_image(out),)


NODE_CLASS_MAPPINGS = {
    "MagicBoostCameraPoses": MagicBoostCameraPoses,
    "MagicBoostEncodeViews": MagicBoostEncodeViews,
    "MagicBoostNovelViewSample": MagicBoostNovelViewSample,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MagicBoostCameraPoses": "Magic-Boost Camera Poses",
    "MagicBoostEncodeViews": "Magic-Boost Encode Views",
    "MagicBoostNovelViewSample": "Magic-Boost Novel View Sample",
}
