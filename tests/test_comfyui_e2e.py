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
            return r.status, json.loads(r.read())
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

    def tail() -> str:
        log.flush()
        return (tmp / "server.log").read_text()[-6000:]

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


def test_object_info_lists_our_nodes(server):
    info = _get(server["base"] + "/object_info")
    missing = NODE_IDS - set(info)
    assert not missing, f"nodes missing from /object_info: {sorted(missing)}\n{server['tail']()}"
    n = info["MagicBoostSDSRefineMesh"]
    assert n["category"] == "Magic-Boost" and n["output"] == ["MESH", "IMAGE"]
    assert info["MagicBoostSaveMesh"]["output_node"] is True


@pytest.mark.parametrize("name", ["novel_views", "refine_instant3d", "refine_instantmesh"])
def test_shipped_workflow_runs(server, name):
    prompt = json.loads((REPO / "workflows" / f"{name}_api.json").read_text())
    status, body = _post(server["base"] + "/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
    assert status == 200 and not body.get("node_errors"), f"{status} {body}\n{server['tail']()}"
    pid = body["prompt_id"]
    t0, hist = time.time(), {}
    while time.time() - t0 < RUN_TIMEOUT:
        hist = _get(server["base"] + f"/history/{pid}")
        if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
            if hist[pid]["status"].get("status_str") in ("success", "error"):
                break
        time.sleep(1)
    entry = hist.get(pid)
    assert entry, f"no history for {name} after {RUN_TIMEOUT} s\n{server['tail']()}"
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[-4000:]
    outputs = entry["outputs"]
    files = []
    for ui in outputs.values():
        for key in ("images", "3d"):
            for item in ui.get(key, []):
                if item.get("type") == "output":
                    files.append(server["tmp"] / "output" / item["subfolder"] / item["filename"])
    assert files and all(f.is_file() and f.stat().st_size > 0 for f in files), (files, outputs)
    if name.startswith("refine"):
        glb = [f for f in files if f.suffix == ".glb"]
        assert len(glb) == 1 and glb[0].read_bytes()[:4] == b"glTF"
