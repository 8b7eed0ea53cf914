"""The frame contract between a coarse mesh and its condition views, checked before refining.

Contract: the condition views are renders (or generations) of the object from the preset's cameras,
which look at the world origin from ``preset.distance`` (Instant3D/InstantMesh: 1.5 / 4.0 units) with
z up. The coarse mesh must sit in that same frame: z up, centred where the views show it, at the size
they show it (Instant3D: bounding radius about 0.5-0.6). Nothing is rescaled behind the user's back: a
mesh that is off is reported, not silently moved while the views stay where they are.

:func:`prepare_frame` renders the mesh's silhouettes at the condition poses and compares them with the
views' masks (IoU per view). Below ``min_iou`` it raises :class:`FrameMismatchError` whose ``cause`` is
``"scale"``, ``"offset"``, ``"axes"`` (a GLB stored z-up lies on its side after the glTF y-up import)
or ``"shape"`` (the views show something else, or the wrong preset/view order), with the fix in the
message. ``align=True`` instead fits a uniform scale, an offset and one of the 24 axis permutations
(:func:`align_to_silhouettes`) and refines in that frame; the result is mapped back exactly.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch

from ..geometry import transform as T
from ..geometry.mesh import Mesh
from ..validate import InputError

__all__ = ["FrameTransform", "FrameMismatchError", "silhouette_iou", "align_to_silhouettes", "prepare_frame",
           "axis_rotations"]


class FrameMismatchError(InputError):
    """The coarse mesh does not sit where the condition views see the object. ``cause``: "scale",
    "offset", "axes" or "shape"; ``ious``: IoU per view; the message names the fix; ``field``: "mesh"."""

    def __init__(self, message: str, cause: str, ious: list[float]):
        super().__init__(message, "mesh")
        self.cause = cause
        self.ious = ious


@dataclass
class FrameTransform:
    """``p_work = scale * (R @ flip(p_user) - center)``; ``invert`` maps work-frame meshes back exactly.

    ``flip``: z negated (InstantMesh convention, :func:`~magicboost_core.geometry.transform.flip_z`: the face
    winding swapped); then the similarity :attr:`similarity` (a
    :class:`~magicboost_core.geometry.transform.Normalization`) with ``rotation``: (3, 3) proper rotation
    (an axis permutation from alignment) or None. A mesh that is moved comes out without vertex normals:
    the renderer computes them from the moved vertices, as for every refined state.
    """

    center: torch.Tensor  # (3,) float64
    scale: float
    flip_z: bool = False
    rotation: torch.Tensor | None = field(default=None)

    @property
    def similarity(self) -> T.Normalization:
        return T.Normalization(self.center, self.scale, self.rotation)

    @property
    def _moves(self) -> bool:
        return not (self.scale == 1.0 and bool((self.center == 0).all()) and self.rotation is None)

    @property
    def is_identity(self) -> bool:
        return not self.flip_z and not self._moves

    def apply(self, mesh: Mesh) -> Mesh:
        m = T.flip_z(mesh) if self.flip_z else mesh
        m = self.similarity.apply(m) if self._moves else m
        return m if m is mesh else m.replace(vertex_normals=None)

    def invert(self, mesh: Mesh) -> Mesh:
        m = self.similarity.invert(mesh) if self._moves else mesh
        m = T.flip_z(m) if self.flip_z else m
        return m if m is mesh else m.replace(vertex_normals=None)


def axis_rotations(dtype=torch.float64, device=None) -> list[torch.Tensor]:
    """The 24 proper rotations that permute and sign-flip the axes (identity first), (3, 3) each."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            R = torch.zeros(3, 3, dtype=dtype, device=device)
            for i, j in enumerate(perm):
                R[i, j] = signs[i]
            if torch.det(R) > 0:
                out.append(R)
    out.sort(key=lambda R: -float(torch.trace(R)))  # identity first
    return out


@torch.no_grad()
def _silhouettes(vertices: torch.Tensor, faces: torch.Tensor, cameras) -> torch.Tensor:
    from ..render.renderer import render

    out = render(Mesh(vertices=vertices.float(), faces=faces), cameras, mode="albedo", antialias=False)
    return (out.alpha > 0.5).float()


def silhouette_iou(vertices: torch.Tensor, faces: torch.Tensor, cameras, masks: torch.Tensor) -> torch.Tensor:
    """(A,) IoU of the mesh's silhouettes at ``cameras`` (A views) with ``masks`` (A, H, W, 1) in {0, 1}
    (the cameras must have the masks' resolution)."""
    sil = _silhouettes(vertices, faces, cameras)
    m = (masks > 0.5).float().to(sil.device)
    inter = (sil * m).flatten(1).sum(1)
    union = ((sil + m) > 0).float().flatten(1).sum(1)
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def _bbox(sil: torch.Tensor) -> torch.Tensor:
    """(A, 4) pixel boxes (x0, x1, y0, y1) of (A, H, W, 1) masks; empty masks give the image centre."""
    A, H, W, _ = sil.shape
    out = torch.zeros(A, 4, dtype=torch.float64)
    for i in range(A):
        ys, xs = torch.nonzero(sil[i, ..., 0] > 0.5, as_tuple=True)
        if ys.numel() == 0:
            out[i] = torch.tensor([W / 2, W / 2, H / 2, H / 2], dtype=torch.float64)
        else:
            out[i] = torch.tensor([xs.min(), xs.max() + 1, ys.min(), ys.max() + 1], dtype=torch.float64)
    return out


def _fit_scale_offset(v: torch.Tensor, faces: torch.Tensor, cameras, masks: torch.Tensor, iterations: int = 4):
    """Uniform scale ``s`` and offset ``t`` (3,) so that ``s * v + t`` matches the masks' bounding boxes
    (v: (V, 3) float64, centred). Returns (s, t (3,) float64)."""
    target = _bbox(masks)
    f = 0.5 * cameras.height / math.tan(math.radians(float(cameras.fovy_deg[0])) / 2)
    dist = cameras.position.double().norm(dim=-1).cpu()  # (A,)
    right, up = cameras.c2w[:, :3, 0].double().cpu(), cameras.c2w[:, :3, 1].double().cpu()
    t_size = (target[:, 1] - target[:, 0]) + (target[:, 3] - target[:, 2])
    s, t = 1.0, torch.zeros(3, dtype=torch.float64)
    for _ in range(iterations):
        box = _bbox(_silhouettes((s * v + t.to(v)), faces, cameras))
        r_size = (box[:, 1] - box[:, 0]) + (box[:, 3] - box[:, 2])
        ok = (r_size > 0) & (t_size > 0)
        if ok.any():
            s *= float((t_size[ok] / r_size[ok]).median())
        dx = 0.5 * (target[:, 0] + target[:, 1] - box[:, 0] - box[:, 1])  # pixels, right
        dy = -0.5 * (target[:, 2] + target[:, 3] - box[:, 2] - box[:, 3])  # pixels, up
        # world shift d with (d . right, d . up) = (dx, dy) * dist / f in every view (least squares)
        A = torch.cat([right, up], 0)
        b = torch.cat([dx, dy], 0) * torch.cat([dist, dist], 0) / f
        t = t + torch.linalg.lstsq(A, b[:, None]).solution[:, 0]
    # boxes are quantised to pixels: settle the scale on the silhouettes themselves
    best = max((float(silhouette_iou(s * k * v + t.to(v), faces, cameras, masks).mean()), s * k)
               for k in (0.96, 0.98, 1.0, 1.02, 1.04))
    return best[1], t


def align_to_silhouettes(vertices: torch.Tensor, faces: torch.Tensor, cameras, masks: torch.Tensor):
    """Best (rotation (3,3) or None, scale, offset (3,), IoU per view (A,)) over the 24 axis permutations.

    ``vertices`` (V, 3) in the user's frame (after the preset's flip); the fitted work-frame positions are
    ``scale * (R @ v - c) + offset`` with ``c`` the centre of the bounding box of ``R @ v`` — returned
    folded into a :class:`FrameTransform` by :func:`prepare_frame`.
    """
    v0 = vertices.double()
    best = None
    for R in axis_rotations(device=v0.device):
        v = v0 @ R.T
        c, r = T.bounding_sphere(v)
        s0 = 0.5 / max(r, 1e-12)
        vc = (v - c) * s0  # start at bounding radius 0.5, inside every preset's view
        s, t = _fit_scale_offset(vc, faces, cameras, masks)
        s = s * s0
        vc = v - c
        iou = silhouette_iou(s * vc + t.to(vc), faces, cameras, masks)
        if best is None or float(iou.mean()) > float(best[4].mean()) + 1e-6:
            best = (R, c, s, t, iou)
    R, c, s, t, iou = best
    return R, c, s, t, iou


def _diagnose(vertices, faces, cameras, masks, ious, min_iou, preset_name) -> FrameMismatchError:
    R, c, s, t, iou_fit = align_to_silhouettes(vertices, faces, cameras, masks)
    v = vertices.double()
    radius = float((v - 0.5 * (v.min(0).values + v.max(0).values)).norm(dim=1).max())
    centre = 0.5 * (v.min(0).values + v.max(0).values)
    want_centre = c - t.to(c) / s  # user-frame point that should sit at the origin (identity rotation)
    head = (f"The coarse mesh does not sit where the condition views show the object: silhouette IoU per view "
            f"{[round(float(x), 3) for x in ious]} (threshold {min_iou}).")
    fix_align = " Or refine with --align (node input 'align', setting align=true) to fit scale, offset and axes first."
    if float(iou_fit.min()) < min_iou:
        return FrameMismatchError(
            head + " Likely cause: shape — even the best scale/offset/axis fit reaches only IoU "
            f"{[round(float(x), 3) for x in iou_fit]}, so the views show a different object or pose. Fix: check "
            f"that the views belong to this mesh and come in the {preset_name!r} preset's order.", "shape", ious)
    if not torch.equal(R, torch.eye(3, dtype=R.dtype, device=R.device)):
        return FrameMismatchError(
            head + f" Likely cause: axes — the mesh matches the views after the axis permutation "
            f"{R.to(torch.int64).tolist()} (a GLB exported z-up lies on its side after the glTF y-up import). "
            "Fix: re-export the mesh with the glTF y-up convention (Blender: '+Y Up' on), or rotate it so that "
            "its up axis is z." + fix_align, "axes", ious)
    if abs(math.log(max(s, 1e-12))) > math.log(1.15):
        return FrameMismatchError(
            head + f" Likely cause: scale — the mesh is {1 / s:.3g}x the size of the object in the views "
            f"(bounding radius {radius:.3g}). Fix: scale the mesh by {s:.4g} about its centre (the views were "
            f"rendered with the object at bounding radius about {radius * s:.3g})." + fix_align, "scale", ious)
    return FrameMismatchError(
        head + f" Likely cause: offset — the mesh's centre ({', '.join(f'{x:.3g}' for x in centre.tolist())}) "
        f"is off by ({', '.join(f'{x:.3g}' for x in (centre - want_centre).tolist())}) from where the views show "
        "the object. Fix: move the mesh by the opposite amount (the views' object is centred on the world "
        "origin)." + fix_align, "offset", ious)


def prepare_frame(mesh: Mesh, cameras, masks: torch.Tensor, *, flip_z: bool = False, align: bool = False,
                  normalize: str = "auto", radius: float = 0.55, min_iou: float = 0.6,
                  log: list | None = None, preset_name: str = "instant3d") -> tuple[FrameTransform, list[float]]:
    """The work frame of ``mesh`` for the condition ``cameras`` (A, at the masks' resolution) and ``masks``
    (A, H, W, 1), and the silhouette IoU per view in it; raises :class:`FrameMismatchError` (module docstring).

    ``normalize="always"``: recentre and rescale to ``radius`` (explicit; skips alignment);
    ``"never"``: no check at all.
    """
    log = log if log is not None else []
    zero = torch.zeros(3, dtype=torch.float64, device=mesh.device)
    frame = FrameTransform(zero, 1.0, flip_z)
    if flip_z:
        log.append("preset uses flipped z (InstantMesh convention): z negated for refinement, restored on export.")
    v = frame.apply(mesh).vertices
    if normalize == "always":
        c, r = T.bounding_sphere(v.double())
        if r <= 0:
            raise ValueError("The mesh is degenerate (all vertices at one point); nothing to refine.")
        frame = FrameTransform(c, radius / r, flip_z)
        log.append(f"normalize='always': mesh recentred and scaled by {radius / r:.4g} (the views must show the "
                   "normalised object).")
    if normalize == "never" or (min_iou <= 0 and not align):
        return frame, []
    cover = (masks > 0.5).float().flatten(1).mean(1)
    if bool(((cover > 0.9) | (cover < 1e-4)).all()):
        log.append("frame check skipped: the condition views carry no usable masks (no alpha channel and no "
                   "background to remove), so the mesh's silhouettes cannot be compared with them.")
        return frame, []
    faces = mesh.faces
    if align and normalize != "always":
        R, c, s, t, iou = align_to_silhouettes(v, faces, cameras, masks)
        frame = FrameTransform(c - t.to(c) / s, s, flip_z, None if torch.equal(R, torch.eye(3).to(R)) else R)
        log.append(f"align: fitted scale {s:.4g}, offset {[round(x, 4) for x in (t / s - c).tolist()]}"
                   + ("" if frame.rotation is None else f", axes {R.to(torch.int64).tolist()}")
                   + f"; silhouette IoU per view {[round(float(x), 3) for x in iou]}.")
    work = frame.apply(mesh).vertices
    ious = silhouette_iou(work, faces, cameras, masks)
    if min_iou > 0 and float(ious.min()) < min_iou:
        raise _diagnose(v, faces, cameras, masks, ious.tolist(), min_iou, preset_name)
    return frame, [float(x) for x in ious]
