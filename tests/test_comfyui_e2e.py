"""End to end in a real ComfyUI: start it headless on the CPU with this pack, check ``/object_info`` and
run every shipped API workflow over HTTP.

Skipped unless ``COMFYUI_PATH`` points to a ComfyUI checkout (CI cannot install ComfyUI). The server is
started with ``COMFYUI_PYTHON`` (default: this interpreter); that environment needs ComfyUI's
requirements plus this pack's (trimesh, pygltflib, ...). The pack is made visible through an
``extra_model_paths`` yaml whose ``custom_nodes`` folder holds a symlink to this repository, so the
ComfyUI checkout is never modified.
"""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
COMFYUI = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(
    not COMFYUI or not (pathlib.Path(COMFYUI) / "main.py").is_file(),
    reason="set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its venv's python) to run the "
           "ComfyUI end-to-end test",
)
NODE_IDS = {"MagicBoostLoadMVModel", "MagicBoostEncodeViews", "MagicBoostCameraPoses", "MagicBoostNovelViewSample",
            "MagicBoostAIULoss", "MagicBoostSDSRefineMesh", "MagicBoostLoadMesh", "MagicBoostSaveMesh",
            "MagicBoostLoadImages", "MagicBoostRenderViews", "MagicBoostMeshToTrimesh", "MagicBoostTrimeshToMesh"}
START_TIMEOUT = float(os.environ.get("COMFYUI_START_TIMEOUT", 240))
RUN_TIMEOUT = float(os.environ.get("COMFYUI_RUN_TIMEOUT", 600))
WORKFLOWS = ["novel_views", "refine_instant3d", "refine_instantmesh"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _post(url: str, body: dict):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("comfyui")
    (tmp / "custom_nodes").mkdir()
    (tmp / "custom_nodes" / "ComfyUI-MagicBoost").symlink_to(REPO, target_is_directory=True)
    yaml = tmp / "extra_model_paths.yaml"
    yaml.write_text(f"magicboost_e2e:\n  base_path: {tmp}\n  custom_nodes: custom_nodes\n")
    for d in ("output", "input", "temp", "user"):
        (tmp / d).mkdir()
    port = _free_port()
    log = open(tmp / "server.log", "w")
    cmd = [os.environ.get("COMFYUI_PYTHON", sys.executable), "main.py", "--cpu", "--listen", "127.0.0.1", "--port",
           str(port), "--disable-auto-launch", "--disable-api-nodes", "--output-directory", str(tmp / "output"),
           "--input-directory", str(tmp / "input"), "--temp-directory", str(tmp / "temp"), "--user-directory",
           str(tmp / "user"), "--extra-model-paths-config", str(yaml)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen(cmd, cwd=COMFYUI, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"

    def tail(n: int | None = 6000) -> str:
        log.flush()
        text = (tmp / "server.log").read_text(errors="replace")
        return text if n is None else text[-n:]

    try:
        t0 = time.time()
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with code {proc.returncode} during startup:\n{tail()}")
            try:
                _get(base + "/system_stats")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.time() - t0 > START_TIMEOUT:
                    pytest.fail(f"ComfyUI did not start within {START_TIMEOUT} s:\n{tail()}")
                time.sleep(1)
        yield {"base": base, "tmp": tmp, "tail": tail}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _run(server, prompt: dict, what: str) -> dict:
    """POST ``prompt`` to /prompt, wait for it in /history and return the node outputs (``{node id: ui}``)."""
    status, body = _post(server["base"] + "/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
    assert status == 200 and not body.get("node_errors"), f"{what}: {status} {body}\n{server['tail']()}"
    pid = body["prompt_id"]
    t0, hist = time.time(), {}
    while time.time() - t0 < RUN_TIMEOUT:
        hist = _get(server["base"] + f"/history/{pid}")
        if hist.get(pid, {}).get("status", {}).get("status_str") in ("success", "error"):
            break
        time.sleep(0.5)
    entry = hist.get(pid)
    assert entry, f"{what}: no history after {RUN_TIMEOUT} s\n{server['tail']()}"
    assert entry["status"]["status_str"] == "success", f"{what}: {_execution_error(entry['status'])}"
    return entry["outputs"]


def _execution_error(status: dict) -> str:
    """The ``execution_error`` message of a history status: node, exception and traceback (not the inputs)."""
    for event, data in status.get("messages", []):
        if event == "execution_error":
            return (f"node {data.get('node_id')} ({data.get('node_type')}) raised {data.get('exception_type')}: "
                    f"{data.get('exception_message')}\n" + "".join(data.get("traceback", []))[-4000:])
    return json.dumps(status)[-4000:]


def _output_files(server, outputs: dict, key: str) -> list:
    """Files listed under ``key`` ("images" / "3d") in the outputs, checked to exist in the output folder."""
    files = [server["tmp"] / "output" / item["subfolder"] / item["filename"]
             for ui in outputs.values() for item in ui.get(key, []) if item.get("type") == "output"]
    assert all(f.is_file() and f.stat().st_size > 0 for f in files), (files, outputs)
    return files


def test_pack_imports_and_object_info_lists_our_nodes(server):
    log = server["tail"](None)
    ours = [line for line in log.splitlines() if "ComfyUI-MagicBoost" in line]
    assert ours and not any("IMPORT FAILED" in line for line in ours), "\n".join(ours) or log[-6000:]
    info = _get(server["base"] + "/object_info")
    missing = NODE_IDS - set(info)
    assert not missing, f"nodes missing from /object_info: {sorted(missing)}\n{server['tail']()}"
    assert all(info[i]["category"] == "Magic-Boost" for i in NODE_IDS)
    assert all(info[i]["python_module"] == "custom_nodes.ComfyUI-MagicBoost" for i in NODE_IDS)
    n = info["MagicBoostSDSRefineMesh"]
    assert n["output"] == ["MESH", "IMAGE"]
    assert info["MagicBoostSaveMesh"]["output_node"] is True
    assert "demo (bundled)" in json.dumps(info["MagicBoostLoadMVModel"]["input"]["required"]["model_name"])


def test_template_browser_lists_each_ui_workflow_once(server):
    """ComfyUI scans example_workflows/ and workflows/ (one level deep): only the three UI files, once each."""
    templates = _get(server["base"] + "/api/workflow_templates")
    ours = templates.get("ComfyUI-MagicBoost", [])
    assert sorted(ours) == WORKFLOWS, ours


@pytest.mark.parametrize("name", WORKFLOWS)
def test_ui_workflow_uses_only_listed_nodes(server, name):
    """The UI-format workflow (what a user drags into the editor) names only node types the server knows."""
    info = _get(server["base"] + "/object_info")
    ui = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
    unknown = {n["type"] for n in ui["nodes"]} - set(info)
    assert not unknown, f"{name}.json uses node types ComfyUI does not list: {sorted(unknown)}"


@pytest.mark.parametrize("name", WORKFLOWS)
def test_shipped_workflow_runs(server, name):
    prompt = json.loads((REPO / "workflows" / "api" / f"{name}_api.json").read_text())
    outputs = _run(server, prompt, name)
    images, glbs = _output_files(server, outputs, "images"), _output_files(server, outputs, "3d")
    assert images, outputs
    if name.startswith("refine"):
        assert len(glbs) == 1 and glbs[0].read_bytes()[:4] == b"glTF"
    # the files are served back over HTTP, as the editor fetches them
    item = next(i for ui in outputs.values() for i in ui.get("images", []))
    query = urllib.parse.urlencode({k: item[k] for k in ("filename", "subfolder", "type")})
    with urllib.request.urlopen(f"{server['base']}/view?{query}", timeout=30) as r:
        assert r.status == 200 and r.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("source", ["loaded", "refined"])
def test_core_save_glb_accepts_our_mesh(server, source):
    """Our MESH output feeds ComfyUI's own Save 3D Model (SaveGLB), which writes a valid GLB of the same mesh."""
    import trimesh
    prompt = json.loads((REPO / "workflows" / "api" / "refine_instant3d_api.json").read_text())
    mesh_node = next(k for k, v in prompt.items() if v["class_type"] == (
        "MagicBoostLoadMesh" if source == "loaded" else "MagicBoostSDSRefineMesh"))
    if source == "loaded":  # only the load node is needed
        prompt = {mesh_node: prompt[mesh_node]}
    else:  # keep the refinement chain, drop the pack's own savers
        prompt = {k: v for k, v in prompt.items() if v["class_type"] not in ("MagicBoostSaveMesh", "SaveImage")}
    prompt["900"] = {"class_type": "SaveGLB", "inputs": {"mesh": [mesh_node, 0],
                                                         "filename_prefix": f"core_save_glb/{source}"}}
    glbs = _output_files(server, _run(server, prompt, f"core SaveGLB ({source})"), "3d")
    assert len(glbs) == 1 and glbs[0].read_bytes()[:4] == b"glTF"
    saved = trimesh.load(glbs[0], force="mesh", process=False)
    coarse = trimesh.load(REPO / "workflows" / "inputs" / "coarse_sphere.glb", force="mesh", process=False)
    assert len(saved.faces) > 0 and saved.vertices.shape[1] == 3
    if source == "loaded":
        assert len(saved.faces) == len(coarse.faces)
        assert abs(saved.bounds - coarse.bounds).max() < 1e-4


def test_cancel_returns_best_mesh_so_far(server):
    """ComfyUI's Cancel (POST /interrupt) during SDS Refine Mesh stops it early; the prompt still succeeds and the
    following Save Mesh writes the best mesh so far."""
    prompt = json.loads((REPO / "workflows" / "api" / "refine_instant3d_api.json").read_text())
    sds = next(k for k, v in prompt.items() if v["class_type"] == "MagicBoostSDSRefineMesh")
    prompt[sds]["inputs"]["steps"] = 20000  # far more than can finish before the interrupt
    for v in prompt.values():
        if "filename_prefix" in v["inputs"]:
            v["inputs"]["filename_prefix"] = "cancel/" + v["inputs"]["filename_prefix"].split("/")[-1]
    status, body = _post(server["base"] + "/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
    assert status == 200 and not body.get("node_errors"), f"{status} {body}"
    pid, t0 = body["prompt_id"], time.time()
    while not any(item[1] == pid for item in _get(server["base"] + "/queue")["queue_running"]):
        assert time.time() - t0 < 60, "the prompt did not start"
        time.sleep(0.2)
    time.sleep(5)  # the loader nodes are cached from the other tests: the refinement is running by now
    assert _post(server["base"] + "/interrupt", {})[0] == 200
    t1, hist = time.time(), {}
    while time.time() - t1 < 120 and hist.get(pid, {}).get("status", {}).get("status_str") not in ("success", "error"):
        time.sleep(0.5)
        hist = _get(server["base"] + f"/history/{pid}")
    assert hist.get(pid), f"the interrupted prompt did not finish within 120 s\n{server['tail']()}"
    assert hist[pid]["status"]["status_str"] == "success", _execution_error(hist[pid]["status"])
    glbs = _output_files(server, hist[pid]["outputs"], "3d")
    assert len(glbs) == 1 and glbs[0].read_bytes()[:4] == b"glTF"
    assert "refinement interrupted after" in server["tail"](None)
