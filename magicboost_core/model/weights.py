"""Reading weight files and loading them into freshly built modules, with clear errors.

Supported files: ``.safetensors`` and plain PyTorch weight pickles (``.pt``/``.pth``/``.ckpt``/``.bin``) read with
``torch.load(weights_only=True)``, which refuses any pickle that carries code or custom objects.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

__all__ = [
    "WeightsError", "WeightsFileNotFoundError", "load_weights_file", "strip_prefix", "split_by_prefix",
    "build_and_load", "format_key_list",
]


class WeightsError(ValueError):
    """A weights file is missing, unreadable, or does not fit the module it is loaded into."""


class WeightsFileNotFoundError(WeightsError, FileNotFoundError):
    """A weights file or model folder does not exist."""


def format_key_list(keys, limit: int = 5) -> str:
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    # Lightning / LDM checkpoints wrap the state dict.
    while isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a dict of tensors (a state dict), found {type(obj).__name__}.")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(
            f"{path}: entries that are not tensors: {format_key_list(map(str, bad))}. Save the model's "
            "state_dict() (a flat dict of tensors) instead."
        )
    return dict(obj)


def load_weights_file(path, what: str = "weights") -> dict[str, torch.Tensor]:
    """Read a flat ``{name: tensor}`` dict from ``path`` on the CPU.

    Raises ``WeightsFileNotFoundError`` when the file is missing and ``WeightsError`` when it is not a plain
    weights file (corrupt, not safetensors, a pickle carrying code/objects, not a dict of tensors).
    """
    path = Path(path)
    if not path.exists():
        raise WeightsFileNotFoundError(f"{what} file not found: {path}. Check the path.")
    if path.is_dir():
        raise WeightsError(f"{what}: {path} is a folder; give the weights file itself.")
    from ..validate import check_regular_file

    try:  # a FIFO or a device (/dev/zero) would block or never end: refuse it before reading
        check_regular_file(path, what)
    except ValueError as e:
        raise WeightsError(str(e)) from None
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises SafetensorError / OSError / ValueError
            raise WeightsError(
                f"{what}: {path} is not a readable .safetensors file ({type(e).__name__}: {e}). The file may be "
                "truncated or corrupt; download or export it again."
            ) from e
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        detail = next((ln.strip() for ln in msg.splitlines() if "GLOBAL" in ln or "Unsupported" in ln),
                      msg.splitlines()[0] if msg else "UnpicklingError")
        if "GLOBAL" in msg:
            raise WeightsError(
                f"{what}: {path} is not a plain weights checkpoint: it references code or custom objects "
                f"({detail}), which are refused for safety. Re-save only the state_dict (a dict of tensors), or "
                "convert it to .safetensors."
            ) from e
        raise WeightsError(
            f"{what}: could not read {path} as a PyTorch weights file ({detail}); it is corrupt or not a checkpoint."
        ) from e
    except Exception as e:
        raise WeightsError(
            f"{what}: could not read {path} as a PyTorch weights file ({type(e).__name__}: {e}). The file may be "
            "truncated or corrupt."
        ) from e
    return _unwrap(obj, path)


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keys that start with ``prefix``, with the prefix removed."""
    n = len(prefix)
    return {k[n:]: v for k, v in state_dict.items() if k.startswith(prefix)}


def split_by_prefix(state_dict: Mapping[str, torch.Tensor], prefixes) -> tuple[dict[str, dict], dict]:
    """Partition ``state_dict`` by the first matching prefix -> ({prefix: {rest: tensor}}, leftovers)."""
    parts: dict[str, dict] = {p: {} for p in prefixes}
    rest = {}
    for k, v in state_dict.items():
        for p in prefixes:
            if k.startswith(p):
                parts[p][k[len(p):]] = v
                break
        else:
            rest[k] = v
    return parts, rest


def build_and_load(build: Callable[[], nn.Module], state_dict: Mapping[str, torch.Tensor], what: str,
                   dtype: torch.dtype | None = None) -> nn.Module:
    """Build a module with ``build()`` and load ``state_dict`` strictly, skipping random initialisation.

    The module is built on the ``meta`` device and the tensors are assigned (no second copy, no init cost).
    Shape mismatches, missing and unexpected keys raise ``WeightsError`` naming a few keys. A module that
    keeps non-persistent buffers (not in any state dict) is rebuilt normally instead.
    """
    with torch.device("meta"):
        module = build()
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        msg = [f"{what}: the weights do not match the model."]
        if missing:
            msg.append(f"missing {len(missing)} key(s): {format_key_list(missing)}")
        if unexpected:
            msg.append(f"unexpected {len(unexpected)} key(s): {format_key_list(unexpected)}")
        msg.append("Is this the right file for this part, and does the config match the weights?")
        raise WeightsError(" ".join(msg))
    bad = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(t.shape)}"
        for k, t in expected.items() if tuple(state_dict[k].shape) != tuple(t.shape)
    ]
    if bad:
        raise WeightsError(
            f"{what}: {len(bad)} tensor shape(s) differ between the weights and the config: "
            + "; ".join(bad[:4]) + ("; ..." if len(bad) > 4 else "")
            + ". The config (config.json or the built-in one) does not describe these weights."
        )
    sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v) for k, v in state_dict.items()}
    leftover_meta = [n for n, b in module.named_buffers() if n not in expected]
    if leftover_meta:
        module = build()
        module.load_state_dict(sd, strict=True)
        return module.to(dtype) if dtype is not None else module
    module.load_state_dict(sd, strict=True, assign=True)
    if dtype is not None:
        module = module.to(dtype)
    return module
