"""Large-steps reparametrisation of vertex offsets (Nicolet, Jacobson, Jakob 2021, "Large Steps in Inverse
Rendering of Geometry", ACM TOG 40(6)).

The optimiser does not move the vertex offsets ``x`` (V, 3) directly but a latent ``u`` with
``x = (I + lambda * L)^-1 u``, ``L = D - A`` the combinatorial (uniform) graph Laplacian of the mesh.
A gradient step on ``u`` becomes a *smooth* step on ``x`` (the inverse operator is a low-pass filter
over the surface), so an image gradient that touches a few vertices moves their neighbourhood with
them instead of pulling single vertices into spikes, and the mesh cannot crumple. ``lambda`` sets the
filter width in edges (the paper uses 10-100).

The linear system is solved with Jacobi-preconditioned conjugate gradients over torch sparse
matrices, so it runs on any device and needs no compiler (the paper's Cholesky solver needs a CUDA
build); the backward pass solves the same (symmetric) system. The last solution warm-starts the next
solve, so after the first step a few iterations suffice. The optimiser works on ``u``: the loop maps the
gradient of the offsets to ``u`` with :meth:`LargeStepsParametrization.from_latent_gradient` and the
updated ``u`` back to offsets with :meth:`LargeStepsParametrization.solve`.
"""
from __future__ import annotations

import torch

__all__ = ["LargeStepsParametrization", "system_matrix", "conjugate_gradient", "mean_edge_length"]


def mean_edge_length(vertices: torch.Tensor, faces: torch.Tensor) -> float:
    """Mean length of the (undirected, deduplicated) edges of the mesh (world units)."""
    f = faces.long()
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 0).sort(1).values
    e = torch.unique(e, dim=0)
    if e.numel() == 0:
        return 0.0
    return float((vertices[e[:, 0]] - vertices[e[:, 1]]).norm(dim=-1).mean())


def system_matrix(faces: torch.Tensor, num_vertices: int, lam: float, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M, diag)``: the sparse (V, V) matrix ``I + lam * (D - A)`` (COO, coalesced, on ``faces``' device)
    and its diagonal (V,) for the Jacobi preconditioner."""
    f = faces.long()
    dev = f.device
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 0)
    e = torch.unique(torch.cat([e, e.flip(1)], 0), dim=0)  # directed, both directions, no duplicates
    deg = torch.bincount(e[:, 0], minlength=num_vertices).to(dtype)
    diag = 1.0 + lam * deg
    ar = torch.arange(num_vertices, device=dev)
    idx = torch.cat([e.T, torch.stack([ar, ar])], 1)
    val = torch.cat([torch.full((e.shape[0],), -lam, dtype=dtype, device=dev), diag])
    M = torch.sparse_coo_tensor(idx, val, (num_vertices, num_vertices), check_invariants=False).coalesce()
    return M, diag


def conjugate_gradient(M: torch.Tensor, diag: torch.Tensor, b: torch.Tensor, x0: torch.Tensor | None = None,
                       tol: float = 1e-6, max_iter: int = 1000) -> torch.Tensor:
    """Solve ``M x = b`` for SPD sparse ``M`` (V, V) and right-hand sides ``b`` (V, K), column-wise
    Jacobi-preconditioned CG. Stops when every column's residual is below ``tol * ||b_k||``."""
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - torch.sparse.mm(M, x)
    z = r / diag[:, None]
    p = z.clone()
    rz = (r * z).sum(0)
    bnorm = b.norm(dim=0).clamp_min(1e-30)
    for it in range(max_iter):
        if it % 4 == 0 and bool((r.norm(dim=0) <= tol * bnorm).all()):
            break
        Ap = torch.sparse.mm(M, p)
        alpha = rz / (p * Ap).sum(0).clamp_min(1e-30)
        x = x + alpha * p
        r = r - alpha * Ap
        z = r / diag[:, None]
        rz_new = (r * z).sum(0)
        p = z + (rz_new / rz.clamp_min(1e-30)) * p
        rz = rz_new
    return x


class LargeStepsParametrization:
    """``x = (I + lam * L)^-1 u`` for per-vertex quantities (V, 3) on a fixed mesh connectivity.

    Args:
        faces: (F, 3) int64 triangle indices into the V vertices (welded: one row per distinct position).
        num_vertices: V.
        lam: smoothing strength ``lambda`` (>= 0; 0 = identity).
        tol: relative residual of the CG solves.
    ``to_latent(x)`` gives the latent of offsets ``x``; ``solve(u)`` the offsets of a latent;
    ``from_latent_gradient(g)`` the latent's gradient from the offsets' gradient.
    """

    def __init__(self, faces: torch.Tensor, num_vertices: int, lam: float, tol: float = 1e-6):
        if lam < 0:
            raise ValueError(f"LargeStepsParametrization: lambda must be >= 0; got {lam}.")
        self.lam = float(lam)
        self.tol = float(tol)
        self.M, self.diag = system_matrix(faces, num_vertices, self.lam)
        self._warm: dict[str, torch.Tensor | None] = {"solve": None, "gradient": None}  # last CG solutions

    def _system(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(M, diag)`` on ``like``'s device and dtype (moved once, then kept there)."""
        if self.M.device != like.device or self.M.dtype != like.dtype:
            self.M = self.M.to(device=like.device, dtype=like.dtype)
            self.diag = self.diag.to(device=like.device, dtype=like.dtype)
        return self.M, self.diag

    def to_latent(self, x: torch.Tensor) -> torch.Tensor:
        """``u = (I + lam L) x`` (V, 3), same device/dtype as ``x``."""
        return torch.sparse.mm(self._system(x)[0], x)

    def _solve_warm(self, b: torch.Tensor, key: str) -> torch.Tensor:
        """``(I + lam L)^-1 b`` (V, 3), warm-started from (and stored back as) the last solution of ``key``."""
        if self.lam == 0:
            return b.clone()
        x = conjugate_gradient(*self._system(b), b, self._warm[key], self.tol)
        self._warm[key] = x
        return x

    def solve(self, u: torch.Tensor) -> torch.Tensor:
        """``x = (I + lam L)^-1 u`` (V, 3), same device/dtype as ``u`` (warm-started from the previous solve)."""
        return self._solve_warm(u, "solve")

    def from_latent_gradient(self, g: torch.Tensor) -> torch.Tensor:
        """``dL/du = (I + lam L)^-T dL/dx = (I + lam L)^-1 dL/dx`` for ``g = dL/dx`` (V, 3)."""
        return self._solve_warm(g, "gradient")
