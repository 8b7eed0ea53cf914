"""Shipped workflows and the headless runner (``python -m nodes.runner``)."""
from __future__ import annotations

import json
import pathlib

import pytest
import torch

from nodes import comfy_compat, runner
from nodes.runner import WorkflowError

REPO = pathlib.Path(__file__).resolve().parents[1]
WF = REPO / "workflows" / "api"
UI = REPO / "example_workflows"
API_FILES = sorted(WF.glob("*_api.json"))
NAMES = [p.name[: -len("_api.json")] for p in API_FILES]


@pytest.fixture(scope="module")
def registry():
    return runner.default_registry()


def test_three_workflows_shipped():
    assert set(NAMES) == {"refine_instant3d", "refine_instantmesh", "novel_views"}
    for name in NAMES:
        assert (UI / f"{name}.json").is_file()
    size = sum(p.stat().st_size for p in (REPO / "workflows" / "inputs").rglob("*") if p.is_file())
    assert size < 1_000_000


@pytest.mark.parametrize("name", NAMES)
def test_api_workflow_validates(name, registry):
    prompt = runner.load_workflow(WF / f"{name}_api.json")
    runner.validate_workflow(prompt, registry)
    order = runner.execution_order(prompt, registry)
    assert order[0] == "1" and set(order) == set(prompt)


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_matches_api(name, registry):
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_workflows", REPO / "workflows" / "build_workflows.py")
    bw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bw)
    ui = json.loads((UI / f"{name}.json").read_text())
    assert ui["version"] == 0.4 and ui["last_link_id"] == len(ui["links"])
    api = runner.load_workflow(WF / f"{name}_api.json")
    back = bw.ui_to_api(ui, registry)
    assert {k: (v["class_type"], v["inputs"]) for k, v in back.items()} == \
        {k: (v["class_type"], v["inputs"]) for k, v in api.items()}
    assert bw.GRAPHS[name] == api  # the files are up to date with build_workflows.py
    with pytest.raises(WorkflowError, match="UI-format"):
        runner.load_workflow(UI / f"{name}.json")


# ------------------------------------------------------------------------------------------ runner core
class Const:
    CATEGORY = "t"
    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "run"
    calls = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0})}}

    def run(self, value):
        Const.calls.append(value)
        return (value,)


class Add:
    CATEGORY = "t"
    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("NUMBER",), "b": ("NUMBER",)},
                "optional": {"scale": ("INT", {"default": 1, "min": 1, "max": 3}), "mode": (["sum", "max"],),
                             "items": ("LIST_ANY", {})}}

    def run(self, a, b, scale=1, mode="sum", items=None):
        return ((a + b if mode == "sum" else max(a, b)) * scale,)


class Sink:
    CATEGORY = "t"
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    seen = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("NUMBER",)}, "optional": {"tags": ("STRING", {"default": ""})}}

    def run(self, x, tags=""):
        Sink.seen.append((x, tags))
        return {"ui": {"images": [{"filename": "f.png", "subfolder": "s", "type": "output"},
                                  {"filename": "t.png", "subfolder": "", "type": "temp"}]}, "result": ()}


REG = {"Const": Const, "Add": Add, "Sink": Sink}


def _graph():
    return {
        "10": {"class_type": "Sink", "inputs": {"x": ["3", 0]}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0], "scale": 2, "mode": "sum"}},
        "1": {"class_type": "Const", "inputs": {"value": 1.5}},
        "2": {"class_type": "Const", "inputs": {"value": "2"}},
        "9": {"class_type": "Const", "inputs": {"value": 7.0}},  # not needed by any output: never runs
    }


def test_runner_executes_in_order_only_needed(tmp_path):
    Const.calls.clear(), Sink.seen.clear()
    res = runner.run_workflow(_graph(), REG, output_dir=str(tmp_path), progress=False)
    assert Sink.seen == [(7.0, "")] and sorted(Const.calls) == [1.5, 2.0]
    assert set(res.outputs) == {"1", "2", "3", "10"}
    assert res.files == [str(tmp_path / "s" / "f.png")]


def test_runner_value_wrapping_and_overrides(tmp_path):
    Sink.seen.clear()
    g = _graph()
    g["10"]["inputs"]["tags"] = {"__value__": "a"}
    g["3"]["inputs"]["items"] = ["2", 0]  # NUMBER into LIST_ANY: rejected below, then removed
    with pytest.raises(WorkflowError, match="input 'items': expects LIST_ANY"):
        runner.validate_workflow(g, REG)
    del g["3"]["inputs"]["items"]
    g = runner.apply_overrides(g, ["1.value=3", "3.mode=max"])
    runner.run_workflow(g, REG, output_dir=str(tmp_path), progress=False)
    assert Sink.seen == [(6.0, "a")]
    with pytest.raises(WorkflowError, match="NODE.INPUT=VALUE"):
        runner.apply_overrides(g, ["nonsense"])
    with pytest.raises(WorkflowError, match="no node with id or title 'zz'"):
        runner.apply_overrides(g, ["zz.value=1"])


@pytest.mark.parametrize("mutate,message", [
    (lambda g: g["1"].update(class_type="Nope"), r"Unknown node class type\(s\) \['Nope'\]"),
    (lambda g: g["1"]["inputs"].pop("value"), r"node 1 \(Const\): required input 'value' is missing"),
    (lambda g: g["1"]["inputs"].update(value=11), r"node 1 \(Const\) input 'value': 11.0 is above the maximum 10"),
    (lambda g: g["1"]["inputs"].update(value="abc"), r"node 1 \(Const\) input 'value': expected FLOAT"),
    (lambda g: g["3"]["inputs"].update(mode="min"), r"node 3 \(Add\) input 'mode': 'min' is not one of"),
    (lambda g: g["3"]["inputs"].update(scale=0), r"node 3 \(Add\) input 'scale': 0 is below the minimum 1"),
    (lambda g: g["3"]["inputs"].update(a=["42", 0]), r"node 3 \(Add\) input 'a': linked to node 42"),
    (lambda g: g["3"]["inputs"].update(a=["1", 3]), r"node 3 \(Add\) input 'a': node 1 has no output 3"),
    (lambda g: g["3"]["inputs"].update(a=5), r"node 3 \(Add\) input 'a': a NUMBER input must be linked"),
    (lambda g: g.pop("10"), r"no output node"),
    (lambda g: g["1"]["inputs"].update(value=["3", 0]), r"cycle|expects FLOAT"),
])
def test_runner_validation_errors_name_node_and_input(mutate, message):
    g = _graph()
    mutate(g)
    with pytest.raises(WorkflowError, match=message):
        runner.run_workflow(g, REG, progress=False)


def test_runner_type_mismatch_and_node_failure(tmp_path):
    class Img:
        CATEGORY, RETURN_TYPES, FUNCTION = "t", ("IMAGE",), "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        def run(self):
            raise ValueError("boom: input 'x' is bad")

    reg = {**REG, "Img": Img}
    g = {"1": {"class_type": "Img", "inputs": {}}, "2": {"class_type": "Sink", "inputs": {"x": ["1", 0]}}}
    with pytest.raises(WorkflowError, match=r"node 2 \(Sink\) input 'x': expects NUMBER, but node 1 output 0 is IMAGE"):
        runner.run_workflow(g, reg, progress=False)
    g["2"]["class_type"] = "Sink"
    Sink.INPUT_TYPES  # noqa: B018
    g2 = {"1": {"class_type": "Img", "inputs": {}}, "2": {"class_type": "Sink", "inputs": {"x": ["1", 0]}}}
    reg2 = {**reg, "Sink": type("AnySink", (Sink,), {"INPUT_TYPES": classmethod(
        lambda cls: {"required": {"x": ("*",)}})})}
    with pytest.raises(WorkflowError, match=r"node 1 \(Img\) failed: ValueError: boom"):
        runner.run_workflow(g2, reg2, output_dir=str(tmp_path), progress=False)


def test_runner_cli_dry_run_and_errors(tmp_path, capsys):
    from nodes.runner import main

    assert main([str(WF / "novel_views_api.json"), "--dry-run"]) == 0
    assert "workflow is valid" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"1": {"class_type": "Whatever", "inputs": {}}}))
    assert main([str(bad), "--output-dir", str(tmp_path / "o")]) == 1
    assert "Unknown node class type(s) ['Whatever']" in capsys.readouterr().err
    assert main([str(WF / "novel_views_api.json"), "--dry-run", "--set", "6.steps=0"]) == 1
    assert "node 6 (MagicBoostNovelViewSample) input 'steps'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("name", NAMES)
def test_runner_executes_shipped_workflow(name, tmp_path):
    prompt = runner.load_workflow(WF / f"{name}_api.json")
    prompt = runner.apply_overrides(prompt, ["1.device=\"cpu\""])
    res = runner.run_workflow(prompt, output_dir=str(tmp_path / "out"), progress=False)
    assert res.files and all(pathlib.Path(f).is_file() for f in res.files)
    glbs = [f for f in res.files if f.endswith(".glb")]
    pngs = [f for f in res.files if f.endswith(".png")]
    assert pngs
    from PIL import Image

    for p in pngs:
        with Image.open(p) as im:
            assert im.size[0] >= 16 and im.mode in ("RGB", "RGBA")
    if name.startswith("refine"):
        from magicboost_core.geometry.mesh_io import load_mesh

        assert len(glbs) == 1
        mesh = load_mesh(glbs[0])
        assert mesh.num_faces > 100 and torch.isfinite(mesh.vertices).all()
    comfy_compat.reset_directories()
