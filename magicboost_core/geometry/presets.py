"""View presets of the coarse generators Magic-Boost refines, and the SDS random-pose sampler.

All angles are degrees, z-up world (see :mod:`magicboost_core.geometry.camera`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .camera import Cameras, orbit_cameras

__all__ = ["ViewPreset", "PRESETS", "get_preset", "custom_preset", "RandomPoseSampler", "AIU_ANCHOR_AZIMUTHS"]


@dataclass(frozen=True)
class ViewPreset:
    """The condition (anchor) views of one coarse generator.

    ``elevations``/``azimuths`` list the anchors in the order the generator emits them; anchor 0 is the
    reference view. ``grid`` is (rows, cols) of the generator's tiled multi-view image, row-major in
    anchor order; ``sds_elevation_range`` is the official range of random SDS elevations.
    """

    name: str
    elevations: tuple[float, ...]
    azimuths: tuple[float, ...]
    distance: float
    fovy_deg: float
    grid: tuple[int, int] | None = None
    sds_elevation_range: tuple[float, float] = (0.0, 0.0)
    flip_z: bool = False

    def __post_init__(self):
        if len(self.elevations) != len(self.azimuths):
            raise ValueError(
                f"preset {self.name!r}: {len(self.elevations)} elevations but {len(self.azimuths)} azimuths."
            )
        if len(self.azimuths) < 1:
            raise ValueError(f"preset {self.name!r}: needs at least one view.")

    @property
    def num_views(self) -> int:
        return len(self.azimuths)

    def cameras(self, resolution: int = 256) -> Cameras:
        """(A,) anchor cameras of this preset at ``resolution``² pixels."""
        return orbit_cameras(self.elevations, self.azimuths, self.distance, self.fovy_deg, width=resolution)


PRESETS: dict[str, ViewPreset] = {
    "instant3d": ViewPreset(
        name="instant3d", elevations=(0.0, 0.0, 0.0, 0.0), azimuths=(0.0, 90.0, 180.0, 270.0),
        distance=1.5, fovy_deg=49.134, grid=(2, 2), sds_elevation_range=(0.0, 0.0),
    ),
    # Zero123++ v1.2 / InstantMesh: 6 views, 3 rows x 2 columns of 320 px, elevations +20/-10 alternating.
    "instantmesh": ViewPreset(
        name="instantmesh", elevations=(20.0, -10.0, 20.0, -10.0, 20.0, -10.0),
        azimuths=(30.0, 90.0, 150.0, 210.0, 270.0, 330.0), distance=4.0, fovy_deg=30.0, grid=(3, 2),
        sds_elevation_range=(-10.0, 20.0), flip_z=True,
    ),
}

#: Cameras re-rendered by the Anchor Iterative Update (both presets, elevation 0, reference §5.2).
AIU_ANCHOR_AZIMUTHS = (0.0, 90.0, 180.0, 270.0)


def get_preset(name: str) -> ViewPreset:
    key = name.lower().replace("-", "").replace("_", "").replace("zero123++", "instantmesh")
    key = {"zero123pp": "instantmesh", "zero123plusplus": "instantmesh"}.get(key, key)
    if key not in PRESETS:
        raise ValueError(f"Unknown view preset {name!r}; choose one of {sorted(PRESETS)} or use 'custom'.")
    return PRESETS[key]


def _parse_list(v) -> tuple[float, ...]:
    if isinstance(v, str):
        parts = [p for p in v.replace(";", ",").replace(" ", ",").split(",") if p.strip()]
        try:
            return tuple(float(p) for p in parts)
        except ValueError as e:
            raise ValueError(f"Could not read a list of numbers from {v!r}: {e}") from e
    return tuple(float(x) for x in v)


def custom_preset(elevations, azimuths, distance: float = 1.5, fovy_deg: float = 49.134,
                  grid: tuple[int, int] | None = None, name: str = "custom") -> ViewPreset:
    """A preset from explicit lists (sequences or comma-separated strings). One elevation is broadcast."""
    el, az = _parse_list(elevations), _parse_list(azimuths)
    if len(el) == 1 and len(az) > 1:
        el = el * len(az)
    if len(el) != len(az):
        raise ValueError(f"custom views: {len(el)} elevations but {len(az)} azimuths; give one or the same count.")
    if not all(math.isfinite(x) for x in el + az):
        raise ValueError("custom views: elevations and azimuths must be finite numbers.")
    if distance <= 0:
        raise ValueError(f"custom views: distance must be > 0, got {distance}.")
    lo = min(el)
    hi = max(el)
    return ViewPreset(name=name, elevations=el, azimuths=az, distance=float(distance), fovy_deg=float(fovy_deg),
                      grid=grid, sds_elevation_range=(lo, hi))


@dataclass
class RandomPoseSampler:
    """Random SDS cameras with the official ranges (reference §5.2).

    Azimuth ~ U[-180, 180); elevation in ``elevation_range``: half the time uniform in degrees, half
    uniform on the sphere (uniform in sin(elevation)); fixed distance and fov, no perturbation.
    """

    elevation_range: tuple[float, float] = (0.0, 0.0)
    distance: float = 1.5
    fovy_deg: float = 49.134
    resolution: int = 256
    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    generator: torch.Generator | None = field(default=None, repr=False)

    @classmethod
    def for_preset(cls, preset: ViewPreset, resolution: int = 256, generator=None) -> "RandomPoseSampler":
        return cls(preset.sds_elevation_range, preset.distance, preset.fovy_deg, resolution, generator=generator)

    def sample(self, n: int) -> Cameras:
        g = self.generator
        u = torch.rand(n, generator=g, dtype=torch.float64)
        lo, hi = self.azimuth_range
        az = lo + (hi - lo) * u
        e0, e1 = self.elevation_range
        if torch.rand((), generator=g) < 0.5:
            el = e0 + (e1 - e0) * torch.rand(n, generator=g, dtype=torch.float64)
        else:
            s0, s1 = math.sin(math.radians(e0)), math.sin(math.radians(e1))
            el = torch.rad2deg(torch.asin(s0 + (s1 - s0) * torch.rand(n, generator=g, dtype=torch.float64)))
        return orbit_cameras(el, az, self.distance, self.fovy_deg, width=self.resolution)
