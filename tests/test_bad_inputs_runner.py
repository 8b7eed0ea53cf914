"""Bad and hostile workflows for the headless runner (``nodes.runner``, ``python -m nodes.runner``).

Each case asserts a :class:`WorkflowError` (never a TypeError / RecursionError / traceback) whose message
names the node or file and the fix; parallel runs into one folder keep every result.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

import hostile_files as H
from nodes import runner
from nodes.runner import WorkflowError

REPO = pathlib.Path(__file__).resolve().parents[1]
MESH = REPO / "workflows" / "inputs" / "coarse_sphere.glb"
WORKFLOW = REPO / "workflows" / "api" / "novel_views_api.json"


def run_cli(argv, capsys):
    """``python -m nodes.runner ARGV`` in this process: (exit code, stderr); never a traceback."""
    code = runner.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


class Source:
    CATEGORY = "t"
    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0}),
                             "count": ("INT", {"default": 1, "min": 0, "max": 5}),
                             "mode": (["a", "b"], {})}}

    def run(self, value, count, mode):
        return (value,)


class Step:
    CATEGORY = "t"
    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("NUMBER", {})}}

    def run(self, x):
        return (x + 1,)


class Sink:
    CATEGORY = "t"
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    seen = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("NUMBER", {})}}

    def run(self, x):
        Sink.seen.append(x)
        return ()


REGISTRY = {"Source": Source, "Step": Step, "Sink": Sink}


def _ok():
    return {"1": {"class_type": "Source", "inputs": {"value": 1.0, "count": 1, "mode": "a"}},
            "2": {"class_type": "Sink", "inputs": {"x": ["1", 0]}}}


def _with(node_id, **changes):
    p = _ok()
    p[node_id].update(changes)
    return p


def _input(node_id, name, value):
    p = _ok()
    p[node_id]["inputs"][name] = value
    return p


@pytest.mark.parametrize("prompt, words", [
    (_with("1", class_type=["Source"]), ["node 1", "'class_type' must be", "as text"]),
    (_with("1", class_type=7), ["node 1", "'class_type' must be"]),
    (_with("1", class_type=""), ["node 1", "'class_type' must be"]),
    (_with("1", inputs=[1, 2]), ["node 1 (Source)", "'inputs' must be an object"]),
    (_with("1", inputs="value=1"), ["node 1 (Source)", "'inputs' must be an object"]),
    ({"1": "Source", "2": _ok()["2"]}, ["node 1", "expected an object"]),
    (_input("1", "valeu", 2.0), ["node 1 (Source)", "no input 'valeu'", "Did you mean 'value'"]),
    (_input("1", "value", float("nan")), ["node 1 (Source)", "'value'", "not a finite number"]),
    (_input("1", "value", float("inf")), ["'value'", "not a finite number"]),
    (_input("1", "value", 11), ["'value'", "above the maximum 10"]),
    (_input("1", "count", "many"), ["'count'", "expected INT"]),
    (_input("1", "count", [1, 2, 3]), ["'count'", "expected a number"]),
    (_input("1", "mode", "c"), ["'mode'", "not one of the allowed values"]),
    (_input("2", "x", ["9", 0]), ["node 2 (Sink)", "linked to node 9", "not in the workflow"]),
    (_input("2", "x", ["1", 3]), ["node 2 (Sink)", "has no output 3"]),
    (_with("1", class_type="Mystery"), ["Unknown node class type", "Mystery", "ComfyUI itself"]),
    ({"1": _ok()["1"]}, ["no output node", "Save"]),
])
def test_malformed_workflows_are_clear_errors(prompt, words):
    with pytest.raises(WorkflowError) as e:
        runner.validate_workflow(prompt, REGISTRY)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def _chain(n: int, cycle: bool = False) -> dict:
    p = {"1": {"class_type": "Source", "inputs": {"value": 0.0, "count": 1, "mode": "a"}}}
    for i in range(2, n + 1):
        p[str(i)] = {"class_type": "Step", "inputs": {"x": [str(i - 1), 0]}}
    if cycle:
        p["2"]["inputs"]["x"] = [str(n), 0]
    p[str(n + 1)] = {"class_type": "Sink", "inputs": {"x": [str(n), 0]}}
    return p


def test_a_2000_node_chain_runs_without_recursion_error(tmp_path):
    Sink.seen.clear()
    prompt = _chain(2000)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(400)  # the CLI's default limit (1000) is what broke; any recursion over nodes fails here
    try:
        order = runner.execution_order(prompt, REGISTRY)
        with pytest.raises(WorkflowError, match="cycle"):
            runner.execution_order(_chain(2000, cycle=True), REGISTRY)
    finally:
        sys.setrecursionlimit(limit)
    assert len(order) == 2001 and order[0] == "1" and order[-1] == "2001"
    runner.run_workflow(prompt, REGISTRY, output_dir=str(tmp_path / "out"), progress=False)
    assert Sink.seen == [1999.0]


@pytest.mark.parametrize("n", [3, 2000])
def test_cycles_are_reported_not_recursed(n):
    with pytest.raises(WorkflowError, match="cycle") as e:
        runner.execution_order(_chain(n, cycle=True), REGISTRY)
    assert "Remove one of the links" in str(e.value)


@pytest.mark.parametrize("content, words", [
    (b"", ["not valid JSON"]),
    (b"[1, 2]", ["not an API-format workflow", "Export (API)"]),
    (b"{\"nodes\": [], \"links\": []}", ["UI-format workflow", "Export (API)"]),
    (b"[" * 100000 + b"]" * 100000, ["nested too deeply"]),
    (b"\xff\xfe{}", ["not UTF-8"]),
    (json.dumps({"1": {"class_type": ["x"], "inputs": {}}}).encode(), ["'class_type' must be", "Export (API)"]),
])
def test_bad_workflow_files(tmp_path, content, words):
    path = tmp_path / "w.json"
    path.write_bytes(content)
    with pytest.raises(WorkflowError) as e:
        runner.load_workflow(path)
    assert "w.json" in str(e.value) or "workflow" in str(e.value)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


@pytest.mark.parametrize("make, words", [
    (lambda t: H.fifo(t / "w.json"), ["FIFO", "regular file"]),
    (lambda t: pathlib.Path("/dev/zero"), ["device", "regular file"]),
    (lambda t: t, ["is a folder"]),
    (lambda t: t / "missing.json", ["not found", "Check the path"]),
], ids=["fifo", "device", "folder", "missing"])
def test_workflow_paths_that_are_not_files(tmp_path, make, words):
    with pytest.raises(WorkflowError) as e:
        runner.load_workflow(make(tmp_path))
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_oversized_workflow_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MAGICBOOST_MAX_WORKFLOW_BYTES", "100")
    path = tmp_path / "w.json"
    path.write_text(json.dumps({str(i): {"class_type": "Source", "inputs": {}} for i in range(20)}))
    with pytest.raises(WorkflowError, match="MAGICBOOST_MAX_WORKFLOW_BYTES"):
        runner.load_workflow(path)


@pytest.mark.parametrize("sets, words", [
    (["1.valeu=2"], ["no input 'valeu'", "Did you mean 'value'"]),
    (["nope.value=2"], ["no node with id or title 'nope'"]),
    (["1value2"], ["write NODE.INPUT=VALUE"]),
])
def test_bad_overrides(sets, words):
    with pytest.raises(WorkflowError) as e:
        runner.validate_workflow(runner.apply_overrides(_ok(), sets), REGISTRY)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_output_dir_is_checked_before_any_node_runs(tmp_path):
    Sink.seen.clear()
    (tmp_path / "out").write_text("x")
    with pytest.raises(WorkflowError, match="--output-dir .* existing file"):
        runner.run_workflow(_ok(), REGISTRY, output_dir=str(tmp_path / "out"), progress=False)
    assert Sink.seen == []


def _save_workflow(prefix="magicboost/par"):
    return {"1": {"class_type": "MagicBoostLoadMesh", "inputs": {"mesh_file": "(none)", "path": str(MESH)}},
            "2": {"class_type": "MagicBoostSaveMesh", "inputs": {"mesh": ["1", 0], "filename_prefix": prefix}}}


def test_four_parallel_runs_into_one_folder_keep_all_results(tmp_path):
    wf = tmp_path / "w_api.json"
    wf.write_text(json.dumps(_save_workflow()))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "nodes.runner", str(wf), "--output-dir", str(out),
                               "--quiet"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(4)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [r[1].decode()[-500:] for r in results]
    files = sorted((out / "magicboost").glob("par_*_.glb"))
    assert len(files) == 4 and all(f.stat().st_size > 1000 for f in files)
    assert not any(b"overwrite=True" in r[1] for r in results)


def test_run_saves_next_to_earlier_results_without_replacing_them(tmp_path):
    out = tmp_path / "out"
    (out / "magicboost").mkdir(parents=True)
    (out / "magicboost" / "par_00001_.glb").write_bytes(b"earlier")
    result = runner.run_workflow(_save_workflow(), output_dir=str(out), progress=False)
    assert (out / "magicboost" / "par_00001_.glb").read_bytes() == b"earlier"
    assert [pathlib.Path(f).name for f in result.files] == ["par_00002_.glb"]


@pytest.mark.parametrize("prefix, words", [
    ("bad\x00name", ["filename_prefix", "'\\x00'", "cannot be part of a file name"]),
    ("../escape", ["filename_prefix", "outside the output folder"]),
    ("/abs/mesh", ["filename_prefix", "absolute path"]),
])
def test_runner_reports_bad_prefixes_per_node(tmp_path, prefix, words):
    with pytest.raises(WorkflowError) as e:
        runner.run_workflow(_save_workflow(prefix), output_dir=str(tmp_path / "out"), progress=False)
    assert "node 2 (MagicBoostSaveMesh)" in str(e.value)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    assert not (tmp_path / "escape").exists()


# ------------------------------------------------------------------------------------------ command line
@pytest.mark.parametrize("value, ok", [("4,2", True), (" 2 ", True), ("abc", False), ("0", False)])
def test_omp_num_threads(monkeypatch, capsys, value, ok):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    before = torch.get_num_threads()
    try:
        code, err = run_cli([WORKFLOW, "--dry-run"], capsys)
    finally:
        torch.set_num_threads(before)
    if ok:
        assert code == 0
    else:
        assert code == 2 and "OMP_NUM_THREADS" in err and ("whole number" in err or "at least 1" in err)


def test_threads_option_below_one(capsys):
    code, err = run_cli(["--threads", "0", WORKFLOW, "--dry-run"], capsys)
    assert code == 2 and "--threads" in err and "at least 1" in err


@pytest.mark.parametrize("kind, words", [
    ("folder", ["is a folder", "file itself"]),
    ("latin1", ["not UTF-8", "save it as UTF-8"]),
    ("device", ["/dev/zero", "device"]),
    ("bad_json", ["not valid JSON", "line 1"]),
])
def test_run_rejects_bad_workflow_files(tmp_path, capsys, kind, words):
    path = {"folder": tmp_path, "device": pathlib.Path("/dev/zero")}.get(kind, tmp_path / "w.json")
    if kind == "latin1":
        path.write_bytes('{"1": {"class_type": "Caf\u00e9"}}'.encode("latin-1"))
    elif kind == "bad_json":
        path.write_text("{nope")
    code, err = run_cli([path, "--dry-run"], capsys)
    assert code == 1 and "workflow file" in err
    for w in words:
        assert w in err, (w, err)


def test_run_set_with_a_misspelt_input_is_an_error(capsys):
    code, err = run_cli([WORKFLOW, "--dry-run", "--set", "6.stpes=50"], capsys)
    assert code == 1 and "'stpes'" in err and "Did you mean 'steps'" in err


def test_run_output_dir_that_is_a_file_is_found_first(tmp_path, capsys):
    (tmp_path / "out").write_text("x")
    code, err = run_cli([WORKFLOW, "--output-dir", tmp_path / "out", "--quiet"], capsys)
    assert code == 1 and "--output-dir" in err and "existing file" in err
