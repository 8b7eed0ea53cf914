"""Errors raised by the renderer. All are ``ValueError`` subclasses with messages that name the fix."""
from __future__ import annotations

__all__ = ["RenderError", "RenderBackendError"]


class RenderError(ValueError):
    """Bad input to a render primitive (shape, dtype, NaN, ...); the message names the argument."""


class RenderBackendError(RenderError):
    """The requested render backend cannot run here (no CUDA, nvdiffrast not installed, unknown name)."""
