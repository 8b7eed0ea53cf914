"""Choice of the rasterization backend: pure PyTorch (``"torch"``) or nvdiffrast (``"nvdiffrast"``).

Rules (applied by :func:`get_backend`):

* an explicit ``backend="torch"`` / ``"nvdiffrast"`` argument wins;
* otherwise (``"auto"``) the environment variable ``MAGICBOOST_RENDER_BACKEND`` (``torch``,
  ``nvdiffrast`` or ``auto``) is honoured;
* otherwise nvdiffrast is used when the tensors live on CUDA and ``import nvdiffrast.torch`` works,
  the torch backend in every other case.

Forcing ``nvdiffrast`` for CPU tensors, or without nvdiffrast installed, raises
:class:`~.errors.RenderBackendError`. The chosen backend is logged once per (backend, device type)
on the ``"magicboost"`` logger. nvdiffrast's ``RasterizeCudaContext`` is created lazily on first use
and cached per CUDA device.
"""
from __future__ import annotations

import logging
import os
import threading

import torch

from .errors import RenderBackendError

__all__ = ["BACKENDS", "ENV_VAR", "get_backend", "nvdiffrast_available", "nvdiffrast_context"]

BACKENDS = ("auto", "torch", "nvdiffrast")
ENV_VAR = "MAGICBOOST_RENDER_BACKEND"

_log = logging.getLogger("magicboost")
_logged: set[tuple[str, str]] = set()
_contexts: dict[str, object] = {}
_lock = threading.Lock()
_nvdr_module = None
_nvdr_error: str | None = None


def _import_nvdiffrast():
    """Import ``nvdiffrast.torch`` once; return the module or ``None`` (reason kept for messages)."""
    global _nvdr_module, _nvdr_error
    if _nvdr_module is None and _nvdr_error is None:
        try:
            import nvdiffrast.torch as dr  # noqa: PLC0415 (optional heavy dependency)

            _nvdr_module = dr
        except Exception as e:  # ImportError, or a failing CUDA plugin build
            _nvdr_error = f"{type(e).__name__}: {e}"
    return _nvdr_module


def nvdiffrast_available() -> bool:
    """True when ``import nvdiffrast.torch`` works and CUDA is available."""
    return torch.cuda.is_available() and _import_nvdiffrast() is not None


def nvdiffrast_context(device: torch.device):
    """The cached ``nvdiffrast.torch.RasterizeCudaContext`` of a CUDA ``device`` (created on first use)."""
    dr = _import_nvdiffrast()
    if dr is None:
        raise RenderBackendError(f"nvdiffrast is not importable ({_nvdr_error}); install it or use backend='torch'.")
    device = torch.device(device)
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = str(device)
    with _lock:
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = dr.RasterizeCudaContext(device=device)
            _contexts[key] = ctx
    return ctx


def _requested(backend: str | None) -> str:
    name = "auto" if backend is None else str(backend).strip().lower()
    if name not in BACKENDS:
        raise RenderBackendError(f"Unknown render backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    if name == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env:
            if env not in BACKENDS:
                raise RenderBackendError(
                    f"Environment variable {ENV_VAR}={env!r} is not a render backend; use one of {', '.join(BACKENDS)}."
                )
            name = env
    return name


def get_backend(backend: str | None = "auto", device: torch.device | str | None = None) -> str:
    """Resolve a backend request to ``"torch"`` or ``"nvdiffrast"`` for tensors on ``device``.

    Args:
        backend: ``"auto"`` (default), ``"torch"`` or ``"nvdiffrast"``; ``None`` means ``"auto"``.
        device: device of the tensors to render (default CPU).
    Raises:
        RenderBackendError: unknown name, or nvdiffrast forced where it cannot run.
    """
    device = torch.device("cpu" if device is None else device)
    name = _requested(backend)
    if name == "auto":
        name = "nvdiffrast" if device.type == "cuda" and _import_nvdiffrast() is not None else "torch"
    elif name == "nvdiffrast":
        if device.type != "cuda":
            raise RenderBackendError(
                f"Render backend 'nvdiffrast' needs CUDA tensors, but the inputs are on {device}. "
                "Move mesh and cameras to a GPU, or use backend='torch' (pure PyTorch, CPU and GPU)."
            )
        if _import_nvdiffrast() is None:
            raise RenderBackendError(
                f"Render backend 'nvdiffrast' was requested but `import nvdiffrast.torch` failed ({_nvdr_error}). "
                "Install nvdiffrast (pip install diffrp-nvdiffrast, or build NVlabs/nvdiffrast) or use backend='torch'."
            )
    key = (name, device.type)
    if key not in _logged:
        _logged.add(key)
        _log.info("magicboost render: using the %s backend for %s tensors", name, device.type)
    return name
