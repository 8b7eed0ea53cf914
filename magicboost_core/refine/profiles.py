"""Refinement profiles: the settings that suit a model, carried by the model bundle.

A profile is a partial :class:`~magicboost_core.refine.config.RefineConfig` (a dict of fields over the
library defaults). A model bundle names its profile in ``config.json`` (``info.refine_profile``, empty
= by ``info.kind``) and may add ``info.refine_settings`` on top. Every entry point resolves a run's
settings the same way, with :func:`resolve_config`:

    library defaults  <-  the model's profile  <-  the bundle's refine_settings  <-  the preset
    <-  a settings file (``--config file.json`` / the node's ``config`` input)  <-  single settings
    (``--set field=value``, the node's widgets when not left at "auto")

so ``magicboost refine`` with no tuning flags, the SDS Refine Mesh node with its widgets at "auto" and
``python -m nodes.runner`` on such a workflow all run the best known setting for the loaded model.

Profiles:

* ``official`` — the converted Magic-Boost checkpoint: the official objective and schedule (reference
  §5.2: 2500 steps, SDS weight 2, reconstruction 1e5, AIU every 500 steps), with the mesh-side safety
  of this implementation (large-steps geometry, visibility attachment, Laplacian of the offsets, frame
  check, colour calibration, texture projection, do-no-harm guard). Not measured here: the official
  weights are not redistributable; the demo profile's findings suggest ``colors_where_seen`` and a
  smaller ``lr_offsets_edges`` if a run repaints unseen parts or moves flat faces.
* ``demo`` — the shipped 32 px demo model on a CPU: what measured best for it on varied assets (see
  the docstring of :data:`DEMO_PROFILE` and BENCHMARKS.md).
"""
from __future__ import annotations

from .config import RefineConfig, RefineConfigError, merge_settings

__all__ = ["PROFILES", "DEMO_PROFILE", "OFFICIAL_PROFILE", "profile_name_for", "profile_settings",
           "resolve_config"]

#: The official objective: the library defaults of :class:`RefineConfig` (SDS, reconstruction, AIU and
#: their schedules as in reference §5.2), with one mesh-only change: the Laplacian acts on the offsets,
#: not the positions (in large-steps mode the positional Laplacian, measured in edge units, rounds and
#: shrinks flat-faced and thin parts, the damage issue #11 traced to the regularisers).
OFFICIAL_PROFILE: dict = {"laplacian_on": "offsets"}

#: The demo model (32 px, pixel space, trained on procedural objects) is a weak prior; measured on the
#: sample toy, boxes, a thin-winged plane, a smooth ellipsoid and the procedural objects
#: (``benchmarks/quality.py``):
#:
#: * 200 steps at 128 px renders (~1 min per asset on 2 CPU cores);
#: * ``lambda_sds = 0.2``: the prior nudges, reconstruction leads;
#: * anchor reconstruction on all condition views (``lambda_anchor_rgb = lambda_anchor_mask = 1e5``): the
#:   sides and back are supervised by the user's images, not by the weak prior alone;
#: * per-vertex colours on a once-subdivided mesh (converge faster than a UV texture in 200 steps);
#: * geometry: large steps (lambda 10) at 0.001 mean edge lengths per step (edge capped at 5 % of the radius), unseen parts attached, and no
#:   other regulariser: the Laplacian of the positions rounded and shrank flat-faced objects, normal
#:   consistency bevelled their edges, and the orientation penalty (meant for the official NeRF's
#:   density) only deformed a mesh under the weak prior. The geometry only settles onto the views'
#:   silhouettes: with 0.02 edges per step the crate's Chamfer rose 6 %, with 0.005 a box's 9 %, and a
#:   98-vertex crate moved 0.004 on average at 0.003 uncapped edges (its mean edge is 0.2), and at 0.003
#:   capped edges a 642-vertex pebble still rose 4.6 % (a low-poly smooth shape matches the views'
#:   silhouettes with its chords only by pushing its vertices outside the true surface);
#:   the demo model cannot tell more about the shape than the coarse mesh already does;
#: * SDS renders follow the demo model's training distribution (75 % albedo, no textureless renders);
#: * colours change only where a view sees the surface frontally (``colors_where_seen``): the weak prior
#:   and grazing views painted noise on unseen texels (an airplane's wing tops); there the calibrated
#:   coarse colours stay. Re-measured with the v-prediction demo model (issue #13): still needed (without
#:   it the crate lost 2.2 dB and the nut 7.7 dB), and ``lambda_sds`` 0.5 measured the same as 0.2.
DEMO_PROFILE: dict = dict(
    steps=200, render_resolution=128, texture_resolution=256, batch_size=4,
    color_mode="auto", subdivide_below_faces=8000,
    albedo_probability=0.75, textureless_probability=0.0,
    lambda_sds=0.2, lambda_anchor_rgb=1e5, lambda_anchor_mask=1e5, anchor_side_weight=1.0,
    lr_offsets=3e-4, colors_where_seen=True,
    lr_offsets_edges=0.001, lambda_orient=0.0, lambda_laplacian=0.0, lambda_normal_consistency=0.0,
    lambda_offset=0.0,
    preview_every=0, preview_resolution=96,
)

PROFILES: dict[str, dict] = {"official": OFFICIAL_PROFILE, "demo": DEMO_PROFILE}


def profile_name_for(model) -> str:
    """The profile a model asks for: ``model.info.refine_profile``, else its ``kind`` ("official"/"demo");
    "official" when there is no model (e.g. ``ref_or_guidance='reference'``)."""
    info = getattr(model, "info", None)
    name = (getattr(info, "refine_profile", "") or getattr(info, "kind", "") or "official") if info else "official"
    if name not in PROFILES:
        raise RefineConfigError(f"the model asks for refinement profile {name!r}, which this version does not know; "
                                f"known profiles: {sorted(PROFILES)}. Set info.refine_profile in the model's "
                                "config.json to one of them.")
    return name


def profile_settings(model) -> tuple[str, dict]:
    """(profile name, settings dict): the profile plus the bundle's own ``info.refine_settings``."""
    name = profile_name_for(model)
    settings = dict(PROFILES[name])
    extra = getattr(getattr(model, "info", None), "refine_settings", None) or {}
    if not isinstance(extra, dict):
        raise RefineConfigError(f"the model's info.refine_settings must be a JSON object; got {type(extra).__name__}.")
    settings.update(extra)
    return name, settings


def resolve_config(model=None, preset: str | None = None, file_settings: dict | None = None,
                   settings: dict | None = None, profile: str | None = None) -> RefineConfig:
    """The RefineConfig of a run (module docstring for the order of precedence); validated.

    Args:
        model: the loaded ``MultiViewModel`` (or None); its bundle chooses the profile.
        preset: view preset name ("instant3d", "instantmesh"), or None for the profile's.
        file_settings: a partial settings dict (``--config`` file or the node's ``config`` input).
        settings: single settings (``--set`` pairs already parsed, explicit CLI flags or node widgets).
        profile: force a profile by name instead of the model's.
    """
    if profile is not None:
        if profile not in PROFILES:
            raise RefineConfigError(f"unknown refinement profile {profile!r}; known: {sorted(PROFILES)}.")
        base = dict(PROFILES[profile])
    else:
        base = profile_settings(model)[1]
    cfg = merge_settings(RefineConfig(), base)
    if preset is not None:
        cfg = merge_settings(cfg, {"preset": preset})
    for layer in (file_settings, settings):
        if layer:
            cfg = merge_settings(cfg, layer)
    return cfg
