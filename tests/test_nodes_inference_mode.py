"""ComfyUI executes every node under ``torch.inference_mode()``: the nodes must work that way without ComfyUI.

Regression for the first real ComfyUI run, where SDS Refine Mesh failed with "element 0 of tensors does not
require grad" (no autograd in inference mode) and would then have hit "Inference tensors cannot be saved for
backward" (weights and inputs created by earlier nodes under inference mode).
"""
from __future__ import annotations

import dataclasses
import functools

import torch

from nodes import comfy_compat, runner
from nodes.engine import PACK_ROOT


@dataclasses.dataclass
class _Holder:
    a: torch.Tensor
    b: list
    name: str = "x"


def test_autograd_ready_replaces_only_inference_tensors():
    with torch.inference_mode():
        inf = torch.ones(3)
        lin = torch.nn.Linear(2, 2)
        lin.weight = torch.nn.Parameter(torch.ones(2, 2), requires_grad=False)
    plain = torch.zeros(2)
    holder = _Holder(a=inf, b=[plain, (inf, 5)])
    with comfy_compat.autograd():
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        new, model, same = comfy_compat.autograd_ready((holder, lin, _Holder(a=plain, b=[])))
    assert not new.a.is_inference() and torch.equal(new.a, inf)
    assert new.b[0] is plain and new.b[1][0] is new.a and new.b[1][1] == 5  # shared tensor copied once
    assert holder.a is inf  # the input dataclass is not modified
    assert model is lin and not any(p.is_inference() for p in lin.parameters())
    assert lin.weight.requires_grad is False and lin.bias.requires_grad is True
    assert same.a is plain  # nothing to replace: the same tensor object
    x = torch.ones(1, 2, requires_grad=True)
    lin(x).sum().backward()  # the converted weights can be saved for backward
    assert x.grad is not None


def test_autograd_outside_comfyui_only_enables_grad():
    with torch.no_grad():
        with comfy_compat.autograd():
            assert torch.is_grad_enabled()
        assert not torch.is_grad_enabled()
    t = torch.ones(2)
    assert comfy_compat.autograd_ready(t) is t


def _under_inference_mode(cls):
    """A subclass whose node function runs under torch.inference_mode(), as ComfyUI's executor calls it."""
    fn = getattr(cls, cls.FUNCTION)

    @functools.wraps(fn)
    def call(self, *args, **kwargs):
        with torch.inference_mode():
            return fn(self, *args, **kwargs)

    return type(cls.__name__, (cls,), {cls.FUNCTION: call})


def test_refine_workflow_runs_under_inference_mode(tmp_path):
    registry = {k: _under_inference_mode(v) for k, v in runner.default_registry().items()}
    prompt = runner.load_workflow(PACK_ROOT / "workflows" / "api" / "refine_instant3d_api.json")
    prompt["6"]["inputs"].update(steps=2, resolution=32)
    prompt["1"]["inputs"]["device"] = "cpu"
    result = runner.run_workflow(prompt, registry, output_dir=tmp_path, progress=False, compat=comfy_compat)
    glb = [f for f in result.files if f.endswith(".glb")]
    assert len(glb) == 1
    with open(glb[0], "rb") as f:
        assert f.read(4) == b"glTF"
