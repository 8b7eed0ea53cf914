"""Rendered multi-view training data: generation, on-disk cache and batching.

Per procedural object (:func:`~.procedural.make_object`) we render

* the 4 **anchor** views at the Instant3D poses (elevation 0, azimuth 0/90/180/270, distance 1.5,
  fovy 49.134 deg), and
* ``targets_per_object`` random **target** views (azimuth U[-180, 180), elevation U[el_lo, el_hi]),
* optionally (held-out sets) the 4 anchors again at slightly **perturbed poses** (as a coarse
  generator's views are slightly off), for the degraded-condition evaluation.

Views are rendered at ``render_size`` px with the pack's rasterizer on white, then area-downsampled
to ``image_size`` px (antialiasing) and stored as uint8 (H, W, 3), row 0 = top. Objects are rendered
albedo or (with probability ``shaded_prob``) lightly shaded. The cache is a folder of safetensors
shards named by a hash of the :class:`DataConfig`, so a changed config never reads stale data.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..geometry.camera import orbit_cameras
from ..geometry.presets import get_preset
from .procedural import ProceduralConfig, make_object

__all__ = ["DataConfig", "MultiViewData", "render_views", "render_object", "build_cache", "load_data",
           "default_cache_dir", "HELDOUT_FIRST_SEED"]

#: Held-out objects use seeds from here on; training sets must stay below it (disjoint ranges).
HELDOUT_FIRST_SEED = 1_000_000


def default_cache_dir() -> Path:
    """``$MAGICBOOST_CACHE`` or ``<repo>/.cache/magicboost`` (git-ignored)."""
    env = os.environ.get("MAGICBOOST_CACHE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".cache" / "magicboost"


@dataclass(frozen=True)
class DataConfig:
    """What to render. ``first_seed .. first_seed + num_objects - 1`` are the object seeds."""

    num_objects: int = 1500
    first_seed: int = 0
    targets_per_object: int = 4
    """Random target views rendered per object (besides the preset's anchor views)."""
    render_size: int = 64
    image_size: int = 32
    """Views are rendered at ``render_size`` px and area-downsampled to ``image_size`` (a divisor of it)."""
    elevation_range: tuple[float, float] = (-10.0, 30.0)
    """Target elevations, degrees, uniform in this range (azimuths uniform over the circle)."""
    shaded_prob: float = 0.25
    """Probability that an object is lightly shaded instead of flat albedo."""
    perturbed_anchors: bool = False
    perturb_deg: float = 8.0
    """Also render the side anchors from poses off by up to ``perturb_deg`` (azimuth; half that in elevation)."""
    shard_size: int = 250
    """Objects per cache file."""
    preset: str = "instant3d"
    procedural: ProceduralConfig = field(default_factory=ProceduralConfig)

    def __post_init__(self):
        if self.num_objects < 1:
            raise ValueError(f"DataConfig.num_objects must be >= 1, got {self.num_objects}.")
        if self.render_size % self.image_size != 0:
            raise ValueError(
                f"DataConfig.render_size ({self.render_size}) must be a multiple of image_size "
                f"({self.image_size}) for area downsampling."
            )

    def key(self) -> str:
        """Short hash naming this config's cache folder."""
        blob = json.dumps(asdict(self), sort_keys=True, default=str).encode()
        return hashlib.sha1(blob).hexdigest()[:12]


def render_views(mesh, elevations, azimuths, distance: float, fovy_deg: float, render_size: int = 64,
                 image_size: int = 32, shaded: bool = False) -> torch.Tensor:
    """Render ``mesh`` from orbit cameras; returns uint8 (N, image_size, image_size, 3), white background."""
    from ..render import render

    cams = orbit_cameras(elevations, azimuths, distance, fovy_deg, width=render_size)
    out = render(mesh, cams, mode="shaded" if shaded else "albedo", background=1.0, antialias=True)
    rgb = out.rgb.float().clamp(0, 1).permute(0, 3, 1, 2)  # (N, 3, H, W)
    factor = render_size // image_size
    if factor > 1:
        rgb = F.avg_pool2d(rgb, factor)
    return (rgb.permute(0, 2, 3, 1) * 255.0).round().to(torch.uint8)


def _pose_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 2 + 1 + 2**40)


def render_object(seed: int, config: DataConfig) -> dict[str, torch.Tensor]:
    """All views of one object (deterministic in ``seed``): dict of uint8 images and float32 poses."""
    preset = get_preset(config.preset)
    mesh = make_object(seed, config.procedural)
    g = _pose_generator(seed)
    k = config.targets_per_object
    az = -180.0 + 360.0 * torch.rand(k, generator=g, dtype=torch.float64)
    lo, hi = config.elevation_range
    el = lo + (hi - lo) * torch.rand(k, generator=g, dtype=torch.float64)
    shaded = bool(torch.rand((), generator=g) < config.shaded_prob)
    a_el = torch.tensor(preset.elevations, dtype=torch.float64)
    a_az = torch.tensor(preset.azimuths, dtype=torch.float64)
    els, azs = [a_el, el], [a_az, az]
    if config.perturbed_anchors:
        d = config.perturb_deg
        p_el = a_el + d * (2 * torch.rand(len(a_el), generator=g, dtype=torch.float64) - 1) * 0.5
        p_az = a_az + d * (2 * torch.rand(len(a_az), generator=g, dtype=torch.float64) - 1)
        p_el[0], p_az[0] = a_el[0], a_az[0]  # the reference view is the (exact) input image
        els.append(p_el)
        azs.append(p_az)
    imgs = render_views(mesh, torch.cat(els), torch.cat(azs), preset.distance, preset.fovy_deg,
                        config.render_size, config.image_size, shaded)
    a = len(a_el)
    out = {
        "anchors": imgs[:a],
        "targets": imgs[a:a + k],
        "target_elevation": el.float(),
        "target_azimuth": az.float(),
    }
    if config.perturbed_anchors:
        out["anchors_perturbed"] = imgs[a + k:]
    return out


def _channels_first_float(img_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) in [0, 1]."""
    return img_u8.float().div(255.0).movedim(-1, -3)


@dataclass
class MultiViewData:
    """All views of a set of objects, in memory (uint8 images, float32 degrees).

    anchors (N, A, H, W, 3), targets (N, K, H, W, 3), target_elevation / target_azimuth (N, K),
    anchors_perturbed (N, A, H, W, 3) or None; anchor poses from the preset.
    """

    anchors: torch.Tensor
    targets: torch.Tensor
    target_elevation: torch.Tensor
    target_azimuth: torch.Tensor
    anchors_perturbed: torch.Tensor | None = None

    def __len__(self) -> int:
        """The number of objects N."""
        return self.anchors.shape[0]

    @property
    def targets_per_object(self) -> int:
        """K target views per object."""
        return self.targets.shape[1]

    def batch(self, obj: torch.Tensor, view: torch.Tensor, perturbed: bool = False) -> dict[str, torch.Tensor]:
        """Images of objects ``obj`` (B,) with target view ``view`` (B,) as float [0, 1] channel-first.

        Returns anchors (B, A, 3, H, W), target (B, 3, H, W), elevation / azimuth (B,) of the target.
        """
        src = self.anchors_perturbed if perturbed else self.anchors
        if src is None:
            raise ValueError("This data set has no perturbed anchors; build it with perturbed_anchors=True.")
        return {
            "anchors": _channels_first_float(src[obj]),
            "target": _channels_first_float(self.targets[obj, view]),
            "elevation": self.target_elevation[obj, view],
            "azimuth": self.target_azimuth[obj, view],
        }


def build_cache(config: DataConfig, cache_dir: str | os.PathLike | None = None, progress: bool = True,
                workers: int = 1) -> Path:
    """Render ``config``'s objects into safetensors shards (skipping shards already there); ``workers`` > 1
    renders shards in that many processes (the same shards, byte for byte: each object has its own seed).

    Returns the cache folder ``<cache_dir>/data-<key>``.
    """
    from tqdm.auto import tqdm

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / f"data-{config.key()}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(asdict(config), indent=1, default=str))
    n = config.num_objects
    todo = [s for s in range(0, n, config.shard_size) if not (folder / f"shard-{s:07d}.safetensors").exists()]
    bar = tqdm(total=sum(min(config.shard_size, n - s) for s in todo), desc="rendering objects",
               disable=not progress, unit="obj")
    if workers <= 1 or len(todo) <= 1:
        for s in todo:
            bar.update(_render_shard(config, s, folder))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=torch.set_num_threads, initargs=(1,)) as pool:
            for done in pool.map(_render_shard, [config] * len(todo), todo, [folder] * len(todo)):
                bar.update(done)
    bar.close()
    return folder


def _render_shard(config: DataConfig, start: int, folder: Path) -> int:
    """Render objects ``start .. start + shard_size - 1`` into ``folder/shard-<start>.safetensors`` (written
    under a temporary name, then renamed); returns how many objects it rendered."""
    from safetensors.torch import save_file

    rows = [render_object(config.first_seed + i, config)
            for i in range(start, min(start + config.shard_size, config.num_objects))]
    shard = {key: torch.stack([r[key] for r in rows]).contiguous() for key in rows[0]}
    tmp = folder / f"shard-{start:07d}.tmp"
    save_file(shard, str(tmp))
    tmp.rename(folder / f"shard-{start:07d}.safetensors")
    return len(rows)


def load_data(config: DataConfig, cache_dir: str | os.PathLike | None = None, progress: bool = True,
              workers: int = 1) -> MultiViewData:
    """Build (if needed; ``workers`` processes) and load the whole data set of ``config`` into memory."""
    from safetensors.torch import load_file

    folder = build_cache(config, cache_dir, progress, workers)
    shards = [load_file(str(p)) for p in sorted(folder.glob("shard-*.safetensors"))]
    cat = {k: torch.cat([s[k] for s in shards]) for k in shards[0]}
    return MultiViewData(
        anchors=cat["anchors"], targets=cat["targets"], target_elevation=cat["target_elevation"],
        target_azimuth=cat["target_azimuth"], anchors_perturbed=cat.get("anchors_perturbed"),
    )
