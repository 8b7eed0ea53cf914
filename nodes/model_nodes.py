"""Load MV Model: the multi-view conditioned diffusion model (UNet + VAE + CLIP image encoder)."""
from __future__ import annotations

import os

from magicboost_core.model import bundle
from magicboost_core.model.bundle import MultiViewModel, demo_model_dir

from . import comfy_compat
from .common import MODEL, Node, NodeInputError
from .spec import file_fingerprint, inp

DEMO_CHOICE = "demo (bundled)"
DTYPES = ["auto", "float32", "float16", "bfloat16"]
DEVICES = ["auto", "cpu", "cuda"]


def list_converted_models() -> list[str]:
    """Names of converted models in the ``magicboost`` model folders: model folders (with a config.json
    or .safetensors inside) and single .safetensors files. Sorted, without duplicates."""
    names = set()
    for root in comfy_compat.model_directories():
        if not os.path.isdir(root):
            continue
        for entry in os.listdir(root):
            full = os.path.join(root, entry)
            if os.path.isdir(full):
                inside = os.listdir(full)
                if "config.json" in inside or any(f.endswith(".safetensors") for f in inside):
                    names.add(entry)
            elif entry.endswith(".safetensors"):
                names.add(entry)
    return sorted(names)


def resolve_model_path(name: str) -> str | None:
    for root in comfy_compat.model_directories():
        full = os.path.join(root, name)
        if os.path.exists(full):
            return full
    return None


def _torch_dtype(name: str, device):
    import torch

    if name == "auto":
        return torch.float16 if getattr(device, "type", str(device)) == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def _torch_device(name: str):
    import torch

    if name == "auto":
        return comfy_compat.torch_device()
    if name == "cuda" and not torch.cuda.is_available():
        raise NodeInputError("Load MV Model", "device", "CUDA was requested but no CUDA GPU is available.",
                             "Choose 'auto' or 'cpu'.")
    return torch.device(name)


def _external_state_dict(obj, kind: str):
    """State dict of a ComfyUI VAE (``.first_stage_model``) or CLIP_VISION (``.model``) object."""
    node, name = "Load MV Model", "vae" if kind == "vae" else "clip_vision"
    for attr in (("first_stage_model",) if kind == "vae" else ("model",)) + ("state_dict",):
        target = getattr(obj, attr, None) if attr != "state_dict" else obj
        if target is not None and hasattr(target, "state_dict"):
            try:
                return target.state_dict()
            except Exception:  # pragma: no cover - exotic wrappers
                continue
    raise NodeInputError(node, name, f"cannot read weights from a {type(obj).__name__} object.",
                         "Connect the output of ComfyUI's Load VAE / Load CLIP Vision, or leave it empty to use "
                         "the encoders stored with the Magic-Boost model.")


def attach_external_encoders(model, vae_state_dict=None, clip_state_dict=None):
    """The engine's :func:`~magicboost_core.model.bundle.attach_external_encoders` (the model's VAE / CLIP
    image encoder replaced by ones built from ComfyUI's weights), after checking that the model has those
    parts; that error names the node input."""
    for sd, attr, input_name in ((vae_state_dict, "codec", "vae"), (clip_state_dict, "image_encoder", "clip_vision")):
        if sd is not None and not hasattr(model, attr):
            raise NodeInputError("Load MV Model", input_name, f"this model type ({type(model).__name__}) cannot take "
                                 "an external encoder.", "Leave the input empty.")
    return bundle.attach_external_encoders(model, vae_state_dict=vae_state_dict, clip_state_dict=clip_state_dict)


class MagicBoostLoadMVModel(Node):
    """Loads the Magic-Boost multi-view diffusion model (converted with `magicboost convert`, from
    ComfyUI/models/magicboost) or the tiny bundled demo model. Optionally replaces its VAE / CLIP image encoder
    with ones loaded by ComfyUI (SD 2.1 VAE, OpenCLIP ViT-H)."""

    OUTPUTS = ((MODEL, "mv_model", "The loaded multi-view model; connect it to Encode Views, Novel View Sample and "
                "SDS Refine."),)
    FUNCTION = "load"
    OPTIONAL = {
        "vae": inp("VAE", "Optional SD-2.1 VAE from ComfyUI's Load VAE; replaces the model's own VAE."),
        "clip_vision": inp("CLIP_VISION", "Optional OpenCLIP ViT-H from ComfyUI's Load CLIP Vision; "
                           "replaces the model's own image encoder."),
    }

    @classmethod
    def INPUT_TYPES(cls):  # the model list is read at each call
        return {"required": {
            "model_name": inp([DEMO_CHOICE] + list_converted_models(),
                              "Converted model in models/magicboost, or the bundled tiny demo model (runs "
                              "anywhere, low quality - for testing workflows).", default=DEMO_CHOICE),
            "dtype": inp(DTYPES, "Weight precision. auto = float16 on CUDA, float32 on CPU.", default="auto"),
            "device": inp(DEVICES, "Where to run the model. auto = ComfyUI's device (GPU if present).",
                          default="auto"),
        }, "optional": dict(cls.OPTIONAL)}

    @classmethod
    def IS_CHANGED(cls, model_name=DEMO_CHOICE, **kwargs):
        if model_name == DEMO_CHOICE:
            return DEMO_CHOICE
        return file_fingerprint(resolve_model_path(model_name))

    def load(self, model_name, dtype="auto", device="auto", vae=None, clip_vision=None):
        dev = _torch_device(device)
        if dtype not in DTYPES:
            raise NodeInputError("Load MV Model", "dtype", f"unknown dtype {dtype!r}.", f"Choose one of {DTYPES}.")
        dt = _torch_dtype(dtype, dev)
        if model_name == DEMO_CHOICE:
            path = demo_model_dir()
        else:
            path = resolve_model_path(model_name)
            if path is None:
                dirs = ", ".join(comfy_compat.model_directories())
                raise NodeInputError("Load MV Model", "model_name", f"model {model_name!r} not found in {dirs}.",
                                     "Convert the official checkpoint with `magicboost convert` into that folder, "
                                     "or choose 'demo (bundled)'.")
        with comfy_compat.outside_inference_mode():  # ordinary weights: SDS Refine Mesh backpropagates through them
            model = MultiViewModel.from_pretrained(path, device=dev, dtype=dt)
            model = self._attach_encoders(model, vae, clip_vision)
        return (model.requires_grad_(False),)  # inference only: no weight gradients during refinement

    @staticmethod
    def _attach_encoders(model, vae, clip_vision):
        if vae is not None or clip_vision is not None:
            try:
                model = attach_external_encoders(
                    model, _external_state_dict(vae, "vae") if vae is not None else None,
                    _external_state_dict(clip_vision, "clip") if clip_vision is not None else None)
            except NodeInputError:
                raise
            except (ValueError, KeyError, RuntimeError) as e:
                which = "vae" if vae is not None else "clip_vision"
                raise NodeInputError("Load MV Model", which, f"these weights do not fit Magic-Boost: {e}",
                                     "Use the SD 2.1 VAE and the OpenCLIP ViT-H/14 CLIP vision model, or leave the "
                                     "input empty.") from e
        return model


NODE_CLASS_MAPPINGS = {"MagicBoostLoadMVModel": MagicBoostLoadMVModel}
NODE_DISPLAY_NAME_MAPPINGS = {"MagicBoostLoadMVModel": "Magic-Boost Load MV Model"}
