"""The one place the pack reaches ComfyUI services; every import here is optional and lazy.

Inside ComfyUI the real modules are used (``folder_paths``, ``comfy.utils``, ``comfy.model_management``,
``comfy_api.latest``). In plain Python (tests, the headless runner ``python -m nodes.runner``) each service
has a small fallback, so the node classes import and run without ComfyUI:

* model folder ``magicboost``: ``<ComfyUI>/models/magicboost``; fallback ``$MAGICBOOST_MODELS_DIR`` or
  ``./models/magicboost``.
* progress bar: ``comfy.utils.ProgressBar``; fallback tqdm (or silent when ``set_progress_enabled(False)``).
* device / interruption: ``comfy.model_management``; fallback CPU / CUDA and a process-local flag the
  runner sets on Ctrl-C.
* output / input / temp directories: ``folder_paths``; fallback ``./output``, ``./input``, a temp dir,
  all overridable with :func:`set_directories` (the runner does this).
* the core ``MESH`` class: ``comfy_api.latest.Types.MESH``; fallback None, so that
  :func:`magicboost_core.geometry.mesh_convert.mesh_to_comfy` uses its own core-MESH-like class.
* autograd inside a node: ComfyUI executes every node under ``torch.inference_mode()``;
  :func:`autograd` and :func:`autograd_ready` let an optimising node leave it (no-ops elsewhere).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import tempfile
import threading

MODEL_FOLDER_KEY = "magicboost"
MODEL_EXTENSIONS = {".safetensors", ".json", "folder"}

_dirs: dict[str, str | None] = {"output": None, "input": None, "temp": None, "models": None}
_interrupt = threading.Event()
_progress_enabled = True


def _optional(name: str):
    """Import a ComfyUI module if we run inside ComfyUI, else None (never raises ImportError)."""
    try:
        return importlib.import_module(name)
    except Exception:  # ImportError, or a broken third-party module of the same name
        return None


def folder_paths():
    fp = _optional("folder_paths")
    # guard against an unrelated module of that name: ComfyUI's has these functions
    if fp is not None and hasattr(fp, "get_output_directory") and hasattr(fp, "folder_names_and_paths"):
        return fp
    return None


def in_comfyui() -> bool:
    return folder_paths() is not None


# ------------------------------------------------------------------------------------------ directories
def set_directories(output: str | None = None, input: str | None = None, temp: str | None = None,
                    models: str | None = None) -> None:
    """Override the fallback directories (used by the headless runner; ignored inside ComfyUI)."""
    for key, value in (("output", output), ("input", input), ("temp", temp), ("models", models)):
        if value is not None:
            _dirs[key] = os.path.abspath(value)


def reset_directories() -> None:
    for key in _dirs:
        _dirs[key] = None


def output_directory() -> str:
    fp = folder_paths()
    if fp is not None:
        return fp.get_output_directory()
    return _dirs["output"] or os.path.abspath("output")


def input_directory() -> str:
    fp = folder_paths()
    if fp is not None:
        return fp.get_input_directory()
    return _dirs["input"] or os.path.abspath("input")


def temp_directory() -> str:
    fp = folder_paths()
    if fp is not None:
        return fp.get_temp_directory()
    if _dirs["temp"] is None:
        _dirs["temp"] = tempfile.mkdtemp(prefix="magicboost_temp_")
    return _dirs["temp"]


def register_model_folder() -> None:
    """Register the ``magicboost`` models folder with ComfyUI (no-op outside ComfyUI)."""
    fp = folder_paths()
    if fp is None:
        return
    default = os.path.join(fp.models_dir, MODEL_FOLDER_KEY)
    entry = fp.folder_names_and_paths.get(MODEL_FOLDER_KEY)
    if entry is None:
        fp.folder_names_and_paths[MODEL_FOLDER_KEY] = ([default], set(MODEL_EXTENSIONS))
    else:  # added by extra_model_paths.yaml: keep its dirs, make sure ours and our extensions are there
        dirs, exts = entry
        if default not in dirs:
            dirs.append(default)
        fp.folder_names_and_paths[MODEL_FOLDER_KEY] = (dirs, set(exts) | MODEL_EXTENSIONS)


def model_directories() -> list[str]:
    """Folders searched for converted Magic-Boost models, in priority order."""
    fp = folder_paths()
    if fp is not None:
        register_model_folder()
        return list(fp.get_folder_paths(MODEL_FOLDER_KEY))
    if _dirs["models"]:
        return [_dirs["models"]]
    env = os.environ.get("MAGICBOOST_MODELS_DIR")
    if env:
        return [d for d in env.split(os.pathsep) if d]
    return [os.path.abspath(os.path.join("models", MODEL_FOLDER_KEY))]


def save_path(filename_prefix: str, output_dir: str | None = None) -> tuple[str, str, int, str]:
    """(folder, base name, next counter, subfolder) for ``<base>_<counter:05>_.<ext>`` files.

    Same naming as ComfyUI's ``get_save_image_path``; refuses prefixes that escape the output folder.
    """
    output_dir = output_dir or output_directory()
    fp = folder_paths()
    if fp is not None:
        folder, base, counter, subfolder, _ = fp.get_save_image_path(filename_prefix, output_dir)
        return folder, base, counter, subfolder
    prefix = os.path.normpath(filename_prefix.strip() or "magicboost")
    subfolder, base = os.path.dirname(prefix), os.path.basename(prefix)
    folder = os.path.abspath(os.path.join(output_dir, subfolder))
    if os.path.commonpath((os.path.abspath(output_dir), folder)) != os.path.abspath(output_dir):
        raise ValueError(f"filename_prefix {filename_prefix!r} points outside the output folder; use a relative "
                         "prefix such as 'magicboost/mesh'.")
    os.makedirs(folder, exist_ok=True)
    counter = 0
    for name in os.listdir(folder):
        if name.startswith(base + "_"):
            digits = name[len(base) + 1:].split("_")[0].split(".")[0]
            if digits.isdigit():
                counter = max(counter, int(digits))
    return folder, base, counter + 1, subfolder


# ------------------------------------------------------------------------------------------ device
def torch_device():
    import torch

    mm = _optional("comfy.model_management")
    if mm is not None and hasattr(mm, "get_torch_device"):
        return mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def gpu_work(model, activation_bytes: int = 2 << 30):
    """Make room on the GPU for a heavy step of ``model`` and tidy up afterwards.

    Inside ComfyUI, on a CUDA device: asks ``comfy.model_management.free_memory`` to offload other
    models until the weights (plus ``activation_bytes`` for activations) fit, and calls
    ``soft_empty_cache`` when done. Headless or on the CPU it does nothing.
    """
    mm = _optional("comfy.model_management")
    device = None
    try:
        device = next(model.parameters()).device
    except (AttributeError, StopIteration):
        pass
    active = mm is not None and device is not None and device.type == "cuda" and hasattr(mm, "free_memory")
    if active:
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        mm.free_memory(weights + int(activation_bytes), device)
    try:
        yield
    finally:
        if active and hasattr(mm, "soft_empty_cache"):
            mm.soft_empty_cache()


# ------------------------------------------------------------------------------------------ interruption
def request_interrupt(value: bool = True) -> None:
    """Set (or clear) the headless interrupt flag (the runner calls this on Ctrl-C)."""
    if value:
        _interrupt.set()
    else:
        _interrupt.clear()


def interrupted() -> bool:
    """True when the user asked to stop (ComfyUI's Cancel button, or Ctrl-C in the runner). Does not reset."""
    mm = _optional("comfy.model_management")
    if mm is not None and hasattr(mm, "processing_interrupted") and mm.processing_interrupted():
        return True
    return _interrupt.is_set()


def clear_interrupt() -> None:
    """Clear the stop flag after a node honoured it by returning its best result so far."""
    _interrupt.clear()
    mm = _optional("comfy.model_management")
    if mm is not None and hasattr(mm, "interrupt_current_processing"):
        mm.interrupt_current_processing(False)


def throw_if_interrupted() -> None:
    """Raise ComfyUI's InterruptProcessingException (a BaseException) if a stop was requested."""
    mm = _optional("comfy.model_management")
    if mm is not None and hasattr(mm, "throw_exception_if_processing_interrupted"):
        mm.throw_exception_if_processing_interrupted()
    elif _interrupt.is_set():
        _interrupt.clear()
        raise KeyboardInterrupt("interrupted")


# ------------------------------------------------------------------------------------------ progress
def set_progress_enabled(enabled: bool) -> None:
    global _progress_enabled
    _progress_enabled = bool(enabled)


class _TqdmBar:
    def __init__(self, total: int, desc: str):
        self._bar = None
        if _progress_enabled:
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc=desc, leave=False)
            except Exception:  # pragma: no cover - tqdm missing
                self._bar = None
        self.total, self.current = total, 0

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
        value = min(value, self.total)
        if self._bar is not None:
            self._bar.update(value - self.current)
        self.current = value

    def update(self, n):
        self.update_absolute(self.current + n)

    def close(self):
        if self._bar is not None:
            self._bar.close()


class Progress:
    """Progress reporting for one node run: ComfyUI's ProgressBar (with previews) or tqdm.

    ``update(value, total, preview_image)`` never raises ComfyUI's interrupt exception: when a stop was
    requested it skips the update, so the refinement loop can notice (``interrupted()``) and return its
    best result instead of losing everything.
    """

    def __init__(self, total: int, desc: str = "Magic-Boost"):
        cu = _optional("comfy.utils")
        self._comfy = cu is not None and hasattr(cu, "ProgressBar")
        self._bar = cu.ProgressBar(total) if self._comfy else _TqdmBar(total, desc)

    def update(self, value: int, total: int | None = None, preview=None) -> None:
        if interrupted():
            return
        payload = None
        if preview is not None and self._comfy:
            payload = _preview_payload(preview)
        self._bar.update_absolute(value, total, payload)

    def close(self) -> None:
        if hasattr(self._bar, "close"):
            self._bar.close()


def _preview_payload(image):
    """ComfyUI preview tuple ("JPEG", PIL image, max size) from an (H, W, 3) float [0, 1] tensor / array."""
    try:
        import numpy as np
        from PIL import Image

        arr = image.detach().float().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
        if arr.ndim == 4:
            arr = arr[0]
        arr = (np.clip(arr[..., :3], 0, 1) * 255).round().astype("uint8")
        return ("JPEG", Image.fromarray(arr), 512)
    except Exception:  # previews are best-effort
        return None


# ------------------------------------------------------------------------------------------ mesh type
def core_mesh_class():
    """ComfyUI's ``Types.MESH`` class inside ComfyUI, else None (``mesh_to_comfy`` then builds its own
    core-MESH-like class)."""
    latest = _optional("comfy_api.latest")
    return getattr(getattr(latest, "Types", None), "MESH", None)


# ------------------------------------------------------------------------------------------ autograd
@contextlib.contextmanager
def autograd():
    """Leave ComfyUI's inference mode and enable gradients, for an optimisation run inside a node.

    ComfyUI executes every node under ``torch.inference_mode()``: no gradients are recorded there, and the
    tensors created there ("inference tensors": node outputs, loaded weights) cannot take part in a backward
    pass later. Pass the node's inputs through :func:`autograd_ready` inside this block. Outside ComfyUI
    (tests, the headless runner) this only enables gradients.
    """
    import torch

    with outside_inference_mode(), torch.enable_grad():
        yield


@contextlib.contextmanager
def outside_inference_mode():
    """Leave ComfyUI's ``torch.inference_mode()`` (grad mode unchanged), so the tensors created in the block
    (e.g. a model's weights) are ordinary tensors that a later optimisation can use."""
    import torch

    with torch.inference_mode(False):
        yield


def autograd_ready(obj, _memo: dict | None = None):
    """``obj`` with every inference tensor replaced by an ordinary copy (call inside :func:`autograd`).

    Walks tensors, dataclasses (a copy through ``dataclasses.replace``, only if a field changed), dicts, lists
    and tuples; the parameters and buffers of a ``torch.nn.Module`` are replaced **in place** (so a model
    cached by ComfyUI is converted once; ``requires_grad`` and weight sharing are kept). Ordinary tensors and
    other objects are returned as they are, so outside ComfyUI nothing is copied.
    """
    import torch

    memo = {} if _memo is None else _memo
    if isinstance(obj, torch.Tensor):
        if not obj.is_inference():
            return obj
        if id(obj) not in memo:
            copy = obj.clone()
            if isinstance(obj, torch.nn.Parameter):
                copy = torch.nn.Parameter(copy, requires_grad=obj.requires_grad)
            memo[id(obj)] = copy
        return memo[id(obj)]
    if isinstance(obj, torch.nn.Module):
        for module in obj.modules():
            for table in (module._parameters, module._buffers):
                for name, value in list(table.items()):
                    if value is not None and value.is_inference():
                        table[name] = autograd_ready(value, memo)
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changed = {}
        for f in dataclasses.fields(obj):
            if f.init:
                value = getattr(obj, f.name)
                new = autograd_ready(value, memo)
                if new is not value:
                    changed[f.name] = new
        return dataclasses.replace(obj, **changed) if changed else obj
    if isinstance(obj, dict):
        new = {k: autograd_ready(v, memo) for k, v in obj.items()}
        return obj if all(new[k] is v for k, v in obj.items()) else type(obj)(new) if type(obj) is dict else new
    if isinstance(obj, (list, tuple)):
        items = [autograd_ready(v, memo) for v in obj]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        return type(obj)(items) if type(obj) in (list, tuple) else items
    return obj
