"""``magicboost batch --ray``: on a local Ray instance (2 CPUs), a worker killed in the middle of an asset
is retried and completes; meshes equal the local mode's; a broken asset is a row with its error;
resume skips finished assets. Skipped when Ray is not installed (``pip install .[ray]``)."""
import json
import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

import magicboost_core  # noqa: E402
from magicboost_core.batch import BatchJob, run_batch  # noqa: E402
from magicboost_core.demo.batch_examples import write_example_assets  # noqa: E402

TINY = {"steps": 6, "render_resolution": 32, "texture_resolution": 64, "aiu": {"enabled": False}}
REPO = Path(magicboost_core.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """A private Ray instance with 2 CPUs whose workers import this checkout's ``magicboost_core``."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    old = os.environ.get("RAY_USAGE_STATS_ENABLED")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    try:
        yield
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("RAY_USAGE_STATS_ENABLED", None)
        else:
            os.environ["RAY_USAGE_STATS_ENABLED"] = old


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray_assets")
    manifest = write_example_assets(folder, count=2, resolution=32, config=TINY)
    (folder / "broken.glb").write_bytes(b"not a mesh")
    first = json.loads(manifest.read_text().splitlines()[0])
    broken = dict(first, id="broken", mesh="broken.glb")
    manifest.write_text(manifest.read_text() + json.dumps(broken) + "\n")
    return manifest


def _job(**kw):
    return BatchJob(eval_resolution=32, eval_points=1000, threads=1, **kw)


def test_ray_retries_a_killed_worker_and_matches_local_mode(ray_cluster, assets, tmp_path):
    local = run_batch(assets, tmp_path / "local", _job(), workers=1, progress=False)
    marker = tmp_path / "killed.txt"
    rows = run_batch(assets, tmp_path / "ray", _job(crash_once=("asset01", 3, str(marker))), ray_address="auto",
                     max_retries=2, progress=False)
    assert marker.exists() and "step 3/6" in marker.read_text()  # the worker really died mid-asset
    status = {r["id"]: r["status"] for r in rows}
    assert status == {"asset00": "ok", "asset01": "ok", "broken": "failed"} == {r["id"]: r["status"] for r in local}
    broken = next(r for r in rows if r["id"] == "broken")
    assert "broken.glb" in broken["error"]
    for i in ("asset00", "asset01"):
        ray_mesh, local_mesh = (tmp_path / m / i / "refined.glb" for m in ("ray", "local"))
        assert ray_mesh.read_bytes() == local_mesh.read_bytes()
        record = json.loads((tmp_path / "ray" / i / "result.json").read_text())
        assert record["status"] == "ok" and record["steps"] == TINY["steps"]
        assert record["metrics"]["refined"]["psnr"] > 10
    # resume: nothing is submitted again, the failed asset is retried (and fails again)
    again = run_batch(assets, tmp_path / "ray", _job(), ray_address="auto", progress=False)
    assert [r["status"] for r in again] == ["skipped", "skipped", "failed"]


def test_ray_refuses_gpus_the_cluster_does_not_have(ray_cluster, assets, tmp_path):
    with pytest.raises(ValueError, match="GPUs"):
        run_batch(assets, tmp_path / "out", _job(), ray_address="auto", num_gpus=0.5, progress=False)
