"""Cameras: one batched pinhole camera type and the world/camera conventions of the pack.

Conventions (stated once, used everywhere):

* **World** is the official Magic-Boost / threestudio frame: right-handed, **+z up**. Azimuth is
  measured in the xy-plane from **+x toward +y**; elevation is the angle above the xy-plane. An orbit
  camera at (elevation e, azimuth a, distance d) sits at
  ``d * (cos e cos a, cos e sin a, sin e)`` and looks at the origin.
* **Camera** frames are **OpenGL**: the camera looks down its local **-z**, +y is up in the image,
  +x is right. ``c2w`` maps camera coordinates to world coordinates; its columns 0..2 are the
  camera's right, up and backward axes in world coordinates, column 3 its position.
* **Clip space** is OpenGL's: ``clip = P @ inverse(c2w) @ [x, y, z, 1]``, NDC x right, y up,
  depth in [-1, 1] from near to far. Pixel row 0 is the **top** of the image (as in every image
  tensor of the pack), so NDC y = +1 maps to row 0.

Converters to OpenCV (x right, y down, looking down +z) and to glTF / Blender y-up worlds are given
below.  Angles in the public API are **degrees** unless a name says ``_rad``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch

__all__ = [
    "Cameras",
    "look_at",
    "orbit_positions",
    "orbit_cameras",
    "perspective",
    "opengl_to_opencv",
    "opencv_to_opengl",
    "ZUP_TO_YUP",
    "YUP_TO_ZUP",
    "zup_to_yup",
    "yup_to_zup",
]

# Flips between the camera axes of OpenGL (y up, looking down -z) and OpenCV (y down, looking down +z).
_GL_CV_FLIP = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))

#: World change of basis from the pack's z-up frame to glTF/Blender-export y-up (x stays, z-up -> y-up,
#: y -> -z).  Apply as ``p_yup = ZUP_TO_YUP @ p_zup`` (3x3, rotation, det +1).
ZUP_TO_YUP = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
YUP_TO_ZUP = ZUP_TO_YUP.T.contiguous()


def _as_batch(x, n: int | None = None, dtype=torch.float32) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=dtype)
    if t.ndim == 0:
        t = t.reshape(1)
    if n is not None and t.shape[0] == 1 and n > 1:
        t = t.expand(n).clone()
    return t


def orbit_positions(elevation_deg, azimuth_deg, distance) -> torch.Tensor:
    """Camera centres on an orbit around the origin.

    Args: elevation_deg, azimuth_deg, distance: broadcastable to (N,).
    Returns: (N, 3) world positions, z-up, azimuth from +x toward +y.
    """
    el = torch.deg2rad(torch.as_tensor(elevation_deg, dtype=torch.float64))
    az = torch.deg2rad(torch.as_tensor(azimuth_deg, dtype=torch.float64))
    d = torch.as_tensor(distance, dtype=torch.float64)
    el, az, d = torch.broadcast_tensors(el, az, d)
    pos = torch.stack([d * el.cos() * az.cos(), d * el.cos() * az.sin(), d * el.sin()], dim=-1)
    return pos.reshape(-1, 3)


def look_at(eye: torch.Tensor, target: torch.Tensor | None = None, up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """OpenGL camera-to-world matrices that look from ``eye`` at ``target``.

    Args:
        eye: (N, 3) camera centres. target: (N, 3) or (3,) points looked at (default origin).
        up: world up hint (default +z).  When the view direction is parallel to ``up`` (a camera at a
            pole) +y is used as the hint instead, so the result is always a valid rotation.
    Returns: (N, 4, 4) c2w, same dtype as ``eye``.
    """
    eye = torch.as_tensor(eye)
    if not eye.is_floating_point():
        eye = eye.double()
    eye = eye.reshape(-1, 3)
    if target is None:
        target = torch.zeros_like(eye)
    target = torch.as_tensor(target, dtype=eye.dtype).to(eye.device).expand_as(eye)
    upv = torch.as_tensor(up, dtype=eye.dtype).to(eye.device).expand_as(eye)
    forward = target - eye
    norm = forward.norm(dim=-1, keepdim=True)
    if (norm < 1e-12).any():
        raise ValueError("look_at: a camera sits exactly on its target; move it away (distance > 0).")
    forward = forward / norm
    right = torch.cross(forward, upv, dim=-1)
    bad = right.norm(dim=-1) < 1e-8
    if bad.any():
        alt = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype, device=eye.device).expand_as(eye)
        right = torch.where(bad[:, None], torch.cross(forward, alt, dim=-1), right)
    right = right / right.norm(dim=-1, keepdim=True)
    cam_up = torch.cross(right, forward, dim=-1)
    c2w = torch.zeros(eye.shape[0], 4, 4, dtype=eye.dtype, device=eye.device)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = cam_up
    c2w[:, :3, 2] = -forward
    c2w[:, :3, 3] = eye
    c2w[:, 3, 3] = 1.0
    return c2w


def perspective(fovy_deg, aspect: float, near: float, far: float) -> torch.Tensor:
    """OpenGL perspective projection, (N, 4, 4) float32, for vertical field of view ``fovy_deg`` (N,)."""
    fovy = torch.deg2rad(torch.as_tensor(fovy_deg, dtype=torch.float64).reshape(-1))
    f = 1.0 / torch.tan(fovy / 2)
    P = torch.zeros(fovy.shape[0], 4, 4, dtype=torch.float64, device=fovy.device)
    P[:, 0, 0] = f / aspect
    P[:, 1, 1] = f
    P[:, 2, 2] = -(far + near) / (far - near)
    P[:, 2, 3] = -2.0 * far * near / (far - near)
    P[:, 3, 2] = -1.0
    return P.float()


@dataclass(frozen=True)
class Cameras:
    """A batch of N pinhole cameras sharing one image size.

    Attributes:
        c2w: (N, 4, 4) float32 camera-to-world, OpenGL camera axes, z-up world.
        fovy_deg: (N,) float32 vertical field of view in degrees.
        width, height: image size in pixels.
        near, far: clip planes in world units.
        elevation_deg, azimuth_deg, distance: (N,) orbit parameters when the cameras came from an
            orbit (needed for the official camera vector); ``None`` otherwise.
    """

    c2w: torch.Tensor
    fovy_deg: torch.Tensor
    width: int = 256
    height: int = 256
    near: float = 0.01
    far: float = 100.0
    elevation_deg: torch.Tensor | None = None
    azimuth_deg: torch.Tensor | None = None
    distance: torch.Tensor | None = None

    def __post_init__(self):
        c2w = torch.as_tensor(self.c2w, dtype=torch.float32)
        if c2w.ndim == 2:
            c2w = c2w[None]
        if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
            raise ValueError(f"Cameras.c2w must have shape (N, 4, 4); got {tuple(c2w.shape)}.")
        if not torch.isfinite(c2w).all():
            raise ValueError("Cameras.c2w contains NaN or infinite values.")
        n = c2w.shape[0]
        fov = _as_batch(self.fovy_deg, n)
        if fov.shape != (n,):
            raise ValueError(f"Cameras.fovy_deg must have shape ({n},) or be a scalar; got {tuple(fov.shape)}.")
        if not ((fov > 0) & (fov < 180)).all():
            raise ValueError(f"Cameras.fovy_deg must lie in (0, 180) degrees; got {fov.tolist()}.")
        if int(self.width) < 1 or int(self.height) < 1:
            raise ValueError(f"Camera resolution must be positive; got {self.width}x{self.height}.")
        if not (0 < self.near < self.far):
            raise ValueError(f"Cameras need 0 < near < far; got near={self.near}, far={self.far}.")
        object.__setattr__(self, "c2w", c2w)
        object.__setattr__(self, "fovy_deg", fov)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        for name in ("elevation_deg", "azimuth_deg", "distance"):
            v = getattr(self, name)
            if v is not None:
                v = _as_batch(v, n)
                if v.shape != (n,):
                    raise ValueError(f"Cameras.{name} must have shape ({n},); got {tuple(v.shape)}.")
                object.__setattr__(self, name, v)

    # ----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, idx) -> "Cameras":
        if isinstance(idx, int):
            idx = [idx]
        pick = lambda v: None if v is None else v[idx]  # noqa: E731
        return replace(
            self,
            c2w=self.c2w[idx],
            fovy_deg=self.fovy_deg[idx],
            elevation_deg=pick(self.elevation_deg),
            azimuth_deg=pick(self.azimuth_deg),
            distance=pick(self.distance),
        )

    @property
    def has_orbit(self) -> bool:
        return self.elevation_deg is not None and self.azimuth_deg is not None

    @property
    def position(self) -> torch.Tensor:
        """(N, 3) camera centres in world coordinates."""
        return self.c2w[:, :3, 3]

    def with_resolution(self, width: int, height: int | None = None) -> "Cameras":
        return replace(self, width=width, height=width if height is None else height)

    def to(self, device) -> "Cameras":
        mv = lambda v: None if v is None else v.to(device)  # noqa: E731
        return replace(self, c2w=self.c2w.to(device), fovy_deg=self.fovy_deg.to(device),
                       elevation_deg=mv(self.elevation_deg), azimuth_deg=mv(self.azimuth_deg),
                       distance=mv(self.distance))

    @staticmethod
    def cat(cams: Sequence["Cameras"]) -> "Cameras":
        """Concatenate camera batches that share resolution and clip planes."""
        first = cams[0]
        for c in cams[1:]:
            if (c.width, c.height, c.near, c.far) != (first.width, first.height, first.near, first.far):
                raise ValueError("Cameras.cat: all batches must share width, height, near and far.")
        orbit = all(c.has_orbit and c.distance is not None for c in cams)
        return replace(
            first,
            c2w=torch.cat([c.c2w for c in cams]),
            fovy_deg=torch.cat([c.fovy_deg for c in cams]),
            elevation_deg=torch.cat([c.elevation_deg for c in cams]) if orbit else None,
            azimuth_deg=torch.cat([c.azimuth_deg for c in cams]) if orbit else None,
            distance=torch.cat([c.distance for c in cams]) if orbit else None,
        )

    # ----------------------------------------------------------------------------------------------
    def w2c(self) -> torch.Tensor:
        """(N, 4, 4) world-to-camera (view) matrices."""
        return torch.linalg.inv(self.c2w)

    def projection(self) -> torch.Tensor:
        """(N, 4, 4) OpenGL projection matrices."""
        return perspective(self.fovy_deg, self.width / self.height, self.near, self.far).to(self.c2w.device)

    def full_projection(self) -> torch.Tensor:
        """(N, 4, 4) world-to-clip matrices ``P @ w2c``."""
        return self.projection() @ self.w2c()

    def world_to_clip(self, points: torch.Tensor) -> torch.Tensor:
        """Project world points to homogeneous clip space.

        Args: points: (V, 3) shared by all cameras, or (N, V, 3).
        Returns: (N, V, 4) clip-space positions, OpenGL convention (dtype/device of ``points``).
        """
        if points.ndim == 2:
            points = points[None].expand(len(self), -1, -1)
        homo = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)
        mvp = self.full_projection().to(points)
        return homo @ mvp.transpose(1, 2)

    def intrinsics(self) -> torch.Tensor:
        """(N, 3, 3) OpenCV-style pixel intrinsics K (principal point at the image centre)."""
        fy = 0.5 * self.height / torch.tan(torch.deg2rad(self.fovy_deg) / 2)
        K = torch.zeros(len(self), 3, 3, device=self.fovy_deg.device)
        K[:, 0, 0] = fy  # square pixels
        K[:, 1, 1] = fy
        K[:, 0, 2] = self.width / 2
        K[:, 1, 2] = self.height / 2
        K[:, 2, 2] = 1
        return K

    def ray_directions(self) -> torch.Tensor:
        """(N, 3) unit viewing directions (camera -z axis) in world coordinates."""
        return -self.c2w[:, :3, 2]

    # ---- conventions -----------------------------------------------------------------------------
    def to_opencv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(c2w_opencv (N,4,4), K (N,3,3))``: camera axes x right, y down, looking down +z."""
        return opengl_to_opencv(self.c2w), self.intrinsics()

    @classmethod
    def from_opencv(cls, c2w_cv: torch.Tensor, K: torch.Tensor, width: int, height: int, **kw) -> "Cameras":
        """Build cameras from OpenCV c2w (N,4,4) and intrinsics K (N,3,3) (fy used, centred principal point)."""
        K = torch.as_tensor(K, dtype=torch.float32).reshape(-1, 3, 3)
        fovy = torch.rad2deg(2 * torch.atan(0.5 * height / K[:, 1, 1]))
        return cls(c2w=opencv_to_opengl(c2w_cv), fovy_deg=fovy, width=width, height=height, **kw)

    def to_yup(self) -> torch.Tensor:
        """(N, 4, 4) camera-to-world in a glTF / Blender-export y-up world (camera axes stay OpenGL)."""
        return zup_to_yup(self.c2w)


def opengl_to_opencv(c2w: torch.Tensor) -> torch.Tensor:
    """Flip camera axes (N,4,4): OpenGL c2w -> OpenCV c2w. Its own inverse."""
    return torch.as_tensor(c2w) @ _GL_CV_FLIP.to(torch.as_tensor(c2w))


def opencv_to_opengl(c2w: torch.Tensor) -> torch.Tensor:
    """Flip camera axes (N,4,4): OpenCV c2w -> OpenGL c2w."""
    return opengl_to_opencv(c2w)


def _world_change(c2w: torch.Tensor, R3: torch.Tensor) -> torch.Tensor:
    c2w = torch.as_tensor(c2w)
    M = torch.eye(4, dtype=c2w.dtype)
    M[:3, :3] = R3.to(c2w.dtype)
    return M @ c2w


def zup_to_yup(c2w: torch.Tensor) -> torch.Tensor:
    """Re-express c2w matrices (…,4,4) of the z-up world in the glTF y-up world."""
    return _world_change(c2w, ZUP_TO_YUP)


def yup_to_zup(c2w: torch.Tensor) -> torch.Tensor:
    """Re-express c2w matrices (…,4,4) of a glTF y-up world in the pack's z-up world."""
    return _world_change(c2w, YUP_TO_ZUP)


def orbit_cameras(
    elevation_deg,
    azimuth_deg,
    distance=1.5,
    fovy_deg=49.134,
    width: int = 256,
    height: int | None = None,
    near: float = 0.01,
    far: float = 100.0,
) -> Cameras:
    """Cameras on an orbit around the origin looking at it (up = +z).

    ``elevation_deg``, ``azimuth_deg``, ``distance``, ``fovy_deg`` are scalars or (N,) sequences
    that broadcast to one length N.
    """
    el = torch.as_tensor(elevation_deg, dtype=torch.float64).reshape(-1)
    az = torch.as_tensor(azimuth_deg, dtype=torch.float64).reshape(-1)
    d = torch.as_tensor(distance, dtype=torch.float64).reshape(-1)
    fov = torch.as_tensor(fovy_deg, dtype=torch.float64).reshape(-1)
    try:
        el, az, d, fov = torch.broadcast_tensors(el, az, d, fov)
    except RuntimeError as e:
        raise ValueError(
            "orbit_cameras: elevation, azimuth, distance and fov lists must have the same length "
            f"(or length 1); got {el.numel()}, {az.numel()}, {d.numel()}, {fov.numel()}."
        ) from e
    if not torch.isfinite(torch.stack([el, az, d, fov])).all():
        raise ValueError("orbit_cameras: elevation/azimuth/distance/fov contain NaN or infinity.")
    if (d <= 0).any():
        raise ValueError(f"orbit_cameras: distance must be > 0; got {d.tolist()}.")
    c2w = look_at(orbit_positions(el, az, d))
    if near >= float(d.min()):
        near = float(d.min()) * 0.05
    return Cameras(
        c2w=c2w.float(), fovy_deg=fov.float(), width=width, height=width if height is None else height,
        near=near, far=far, elevation_deg=el.float(), azimuth_deg=az.float(), distance=d.float(),
    )
