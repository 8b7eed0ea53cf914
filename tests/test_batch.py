"""``magicboost batch``: manifests, config hash, local worker processes, resume, broken assets, summary.

Tiny assets (``demo.batch_examples``: 32 px views, 6 refinement steps, AIU off) keep every run to seconds.
The Ray mode has its own file (``test_batch_ray.py``).
"""
import json
import shutil
from pathlib import Path

import pytest
import torch

from magicboost_core.batch import BatchJob, ManifestError, plan_manifest, read_manifest, run_batch
from magicboost_core.batch.adapter import resolve_config
from magicboost_core.refine.pipeline import read_views
from magicboost_core.demo.batch_examples import write_example_assets
from magicboost_core.batch.plan import plan_batch
from magicboost_core.geometry.presets import get_preset
from magicboost_core.refine.config import RefineConfigError

TINY = {"steps": 6, "render_resolution": 32, "texture_resolution": 64, "aiu": {"enabled": False}}
JOB = BatchJob(eval_resolution=32, eval_points=1000, threads=1)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """2 example assets (with ground truth) + a broken mesh + an invalid row, as a JSONL manifest."""
    folder = tmp_path_factory.mktemp("batch_assets")
    manifest = write_example_assets(folder, count=2, resolution=32, config=TINY)
    (folder / "broken.glb").write_bytes(b"this is not a GLB file")
    rows = manifest.read_text().splitlines()
    broken = json.loads(rows[0])
    broken.update(id="broken", mesh="broken.glb")
    invalid = dict(broken, id="invalid", views=["missing_view.png"])
    manifest.write_text("\n".join(rows + [json.dumps(broken), json.dumps(invalid)]) + "\n")
    return manifest


@pytest.fixture(scope="module")
def first_run(assets, tmp_path_factory):
    """The assets refined in this process (``workers=0``): (output folder, summary rows)."""
    out = tmp_path_factory.mktemp("batch_out")
    rows = run_batch(assets, out, JOB, workers=0, progress=False)
    return out, rows


def _glb(out, asset_id) -> bytes:
    return (Path(out) / asset_id / "refined.glb").read_bytes()


# ---------------------------------------------------------------------------------------------------
# manifests
def test_csv_and_jsonl_manifests_give_the_same_assets(tmp_path, assets):
    folder = assets.parent
    csv_text = ("id,mesh,views,preset,config,config.steps\n"
                "a0,asset00_coarse.glb,asset00_view0.png;asset00_view1.png;asset00_view2.png;asset00_view3.png,"
                'instant3d,"{""render_resolution"": 32, ""aiu"": {""enabled"": false}}",5\n')
    (folder / "m.csv").write_text(csv_text)
    jsonl = {"id": "a0", "mesh": "asset00_coarse.glb", "views": [f"asset00_view{i}.png" for i in range(4)],
             "config": {"render_resolution": 32, "aiu.enabled": False}, "config.steps": 5}
    (folder / "m.jsonl").write_text(json.dumps(jsonl) + "\n")
    a = plan_batch(read_manifest(folder / "m.csv"), None, {}, JOB.evaluation)
    b = plan_batch(read_manifest(folder / "m.jsonl"), None, {}, JOB.evaluation)
    assert a[0].error is None and b[0].error is None
    assert a[0].views == b[0].views and Path(a[0].mesh).is_absolute()
    assert a[0].config["steps"] == 5 and a[0].config["aiu"]["enabled"] is False
    assert a[0].config_hash == b[0].config_hash


def test_broken_rows_get_their_own_errors(tmp_path, assets):
    folder = assets.parent
    good = {"mesh": "asset00_coarse.glb", "views": [f"asset00_view{i}.png" for i in range(4)]}
    lines = [
        dict(good, id="ok"),
        dict(good, id="nomesh", mesh="nothing.glb"),
        dict(good, id="threeviews", views=good["views"][:3]),
        dict(good, id="unknownkey", config={"stepz": 3}),
        dict(good, id="badtype", config={"steps": "many"}),
        dict(good, id="badrange", config={"steps": 0}),
        dict(good, id="badpreset", preset="zero456"),
        dict(good, id="ok"),
        dict(good, mesh="my chair (v2).glb"),
    ]
    shutil.copy(folder / "asset00_coarse.glb", folder / "my chair (v2).glb")
    text = "\n".join(json.dumps(x) for x in lines) + "\n{not json\n"
    (folder / "bad.jsonl").write_text(text)
    specs = plan_batch(read_manifest(folder / "bad.jsonl"), None, {}, JOB.evaluation)
    errors = {s.row: s.error for s in specs}
    assert errors[1] is None
    assert "row 2" in errors[2] and "mesh" in errors[2] and "nothing.glb" in errors[2]
    assert "3 view images" in errors[3] and "needs 4" in errors[3]
    assert "stepz" in errors[4] and "known" in errors[4]
    assert "'steps'" in errors[5] and "int" in errors[5]
    assert "steps must be in [1, 20000]" in errors[6]
    assert "zero456" in errors[7]
    assert "already used by row 1" in errors[8]
    assert errors[9] is None and specs[8].id == "my_chair_v2_"
    assert "row 10" in errors[10] and "not valid JSON" in errors[10]


def test_csv_row_with_comma_separated_views_is_explained(assets):
    folder = assets.parent
    (folder / "commas.csv").write_text("id,mesh,views\n\n"
                                       "a,asset00_coarse.glb,asset00_view0.png,asset00_view1.png\n"
                                       "b,asset00_coarse.glb,asset00_view0.png\n")
    a, b = plan_batch(read_manifest(folder / "commas.csv"), None, {}, JOB.evaluation)
    assert a.row == 3 and "row 3" in a.error and "';'" in a.error
    assert b.row == 4 and b.error is None and len(b.views) == 1  # one image = the 2x2 grid of the preset

def test_unreadable_manifests_raise(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "none.csv")
    (tmp_path / "m.txt").write_text("mesh,views\n")
    with pytest.raises(ManifestError, match=r"\.csv.*\.jsonl"):
        read_manifest(tmp_path / "m.txt")
    (tmp_path / "m.csv").write_text("mesh,views,colour\na.glb,b.png,red\n")
    with pytest.raises(ManifestError, match="colour"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "n.csv").write_text("file,views\na.glb,b.png\n")
    with pytest.raises(ManifestError, match="'mesh' and 'views'"):
        read_manifest(tmp_path / "n.csv")


def test_config_overrides_are_validated_by_refine_config():
    cfg = resolve_config(None, "instantmesh", {"steps": 7, "lambda_sds": 1, "aiu": {"strength": 0.2},
                                               "adam_betas": [0.8, 0.9]})
    assert (cfg.preset, cfg.steps, cfg.lambda_sds, cfg.aiu.strength, cfg.adam_betas) == ("instantmesh", 7, 1.0, 0.2,
                                                                                         (0.8, 0.9))
    with pytest.raises(RefineConfigError, match="color_mode"):
        resolve_config(None, "instant3d", {"color_mode": "paint"})
    with pytest.raises(RefineConfigError, match="aiu.mood"):
        resolve_config(None, "instant3d", {"aiu": {"mood": "happy"}})


def test_config_hash_follows_config_and_inputs(tmp_path, assets):
    folder = tmp_path / "copy"
    shutil.copytree(assets.parent, folder)
    manifest = folder / assets.name
    base = plan_batch(read_manifest(manifest), None, {}, JOB.evaluation)
    again = plan_batch(read_manifest(manifest), None, {}, JOB.evaluation)
    seeded = plan_batch(read_manifest(manifest), None, {"seed": 1}, JOB.evaluation)
    (folder / "asset01_view2.png").write_bytes((folder / "asset00_view2.png").read_bytes())
    edited = plan_batch(read_manifest(manifest), None, {}, JOB.evaluation)
    assert [s.config_hash for s in base] == [s.config_hash for s in again]
    assert all(a.config_hash != b.config_hash for a, b in zip(base[:2], seeded[:2]))
    assert edited[0].config_hash == base[0].config_hash and edited[1].config_hash != base[1].config_hash


def test_one_grid_image_equals_the_separate_views(tmp_path):
    preset = get_preset("instant3d")
    separate = write_example_assets(tmp_path / "a", count=1, resolution=32, ground_truth=False)
    grid = write_example_assets(tmp_path / "b", count=1, resolution=32, ground_truth=False, grid=True)
    a = plan_batch(read_manifest(separate), None, {}, JOB.evaluation)[0]
    b = plan_batch(read_manifest(grid), None, {}, JOB.evaluation)[0]
    assert a.error is None and b.error is None and len(b.views) == 1
    va, vb = read_views(a.views, preset), read_views(b.views, preset)
    assert va.shape == (4, 32, 32, 4) and torch.equal(va, vb)
    with pytest.raises(ValueError, match="3 view images given; preset 'instant3d' needs 4"):
        read_views(a.views[:3], preset)


# ---------------------------------------------------------------------------------------------------
# running
def test_batch_reports_every_asset_and_writes_outputs(first_run):
    out, rows = first_run
    by_id = {r["id"]: r for r in rows}
    assert [r["id"] for r in rows] == ["asset00", "asset01", "broken", "invalid"]
    assert by_id["asset00"]["status"] == by_id["asset01"]["status"] == "ok"
    assert by_id["broken"]["status"] == "failed" and "broken.glb" in by_id["broken"]["error"]
    assert by_id["invalid"]["status"] == "invalid" and "missing_view.png" in by_id["invalid"]["error"]
    for i in ("asset00", "asset01"):
        record = json.loads((out / i / "result.json").read_text())
        assert record["status"] == "ok" and record["config_hash"] == by_id[i]["config_hash"]
        assert record["steps"] == TINY["steps"] and _glb(out, i)[:4] == b"glTF"
        assert 10 < by_id[i]["psnr"] < 60 and 0 < by_id[i]["chamfer"] < 0.1 and by_id[i]["psnr_coarse"] != ""
    broken = json.loads((out / "broken" / "result.json").read_text())
    assert broken["status"] == "failed" and "MeshError" in broken["traceback"]
    assert not (out / "broken" / "refined.glb").exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # atomic writes leave no temp files
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("id,status,seconds") and len(summary) == 5
    md = (out / "summary.md").read_text()
    assert "4 assets: 2 ok, 1 failed, 1 invalid" in md and "| asset01 | ok |" in md


def test_resume_skips_finished_assets_and_reruns_changed_ones(first_run, assets, tmp_path):
    out, _ = first_run
    resumed = tmp_path / "out"
    shutil.copytree(out, resumed)
    stamp = (resumed / "asset00" / "result.json").stat().st_mtime_ns
    manifest = tmp_path / "manifest.jsonl"
    lines = [json.loads(x) for x in assets.read_text().splitlines()]
    for x in lines:
        for key in ("mesh", "ground_truth"):
            x[key] = str(assets.parent / x[key])
        x["views"] = [str(assets.parent / v) for v in x["views"]]
    lines[1]["config"] = dict(TINY, steps=4)  # asset01 changed
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    rows = run_batch(manifest, resumed, JOB, workers=0, progress=False)
    status = {r["id"]: r["status"] for r in rows}
    assert status == {"asset00": "skipped", "asset01": "ok", "broken": "failed", "invalid": "invalid"}
    assert (resumed / "asset00" / "result.json").stat().st_mtime_ns == stamp
    assert json.loads((resumed / "asset01" / "result.json").read_text())["steps"] == 4
    rows = run_batch(manifest, resumed, JOB, workers=0, progress=False)
    assert [r["status"] for r in rows] == ["skipped", "skipped", "failed", "invalid"]


def test_worker_processes_retry_a_dead_worker_and_match_in_process(first_run, assets, tmp_path):
    """Local mode, 1 spawned worker: asset00's worker is killed (SIGKILL) at step 3 of 6; the asset is
    retried on a fresh worker and gives the same mesh as the in-process run (same seed, one thread)."""
    out, _ = first_run
    marker = tmp_path / "killed.txt"
    job = BatchJob(eval_resolution=32, eval_points=1000, threads=1, crash_once=("asset00", 3, str(marker)))
    messages = []
    rows = run_batch(assets, tmp_path / "out", job, workers=1, max_retries=1, progress=False, log=messages.append)
    by_id = {r["id"]: r for r in rows}
    assert marker.exists() and "step 3/6" in marker.read_text()
    assert any("'asset00'" in m and "exit code -9" in m and "retrying" in m for m in messages)
    assert by_id["asset00"]["status"] == "ok" and by_id["asset00"]["attempts"] == 2
    assert by_id["asset01"]["status"] == "ok" and by_id["asset01"]["attempts"] == 1
    assert by_id["broken"]["status"] == "failed"
    for i in ("asset00", "asset01"):
        assert _glb(tmp_path / "out", i) == _glb(out, i)


def test_a_worker_dying_on_every_try_is_reported_and_the_rest_go_on(assets, tmp_path):
    marker = tmp_path / "killed.txt"
    job = BatchJob(eval_resolution=32, eval_points=1000, threads=1, crash_once=("asset00", 2, str(marker)))
    rows = run_batch(assets, tmp_path / "out", job, workers=2, max_retries=0, progress=False)
    by_id = {r["id"]: r for r in rows}
    assert by_id["asset00"]["status"] == "crashed" and "exit code -9" in by_id["asset00"]["error"]
    assert by_id["asset01"]["status"] == "ok"
    assert not (tmp_path / "out" / "asset00" / "refined.glb").exists()


def test_cli_batch_check_and_run(first_run, assets, tmp_path, capsys):
    from magicboost_core.cli import main

    out, _ = first_run
    assert main(["batch", str(assets), "--out", str(out), "--check", "--eval-resolution", "32",
                 "--eval-points", "1000"]) == 1  # the invalid row
    printed = capsys.readouterr().out
    assert "asset00: skipped" in printed and "broken: to run" in printed and "invalid: invalid" in printed
    rc = main(["batch", str(assets), "--out", str(tmp_path / "o"), "--workers", "0", "--no-progress",
               "--set", "steps=2", "--eval-resolution", "32", "--eval-points", "1000"])
    printed = capsys.readouterr().out
    assert rc == 1 and "| asset00 | ok |" in printed and "summary.csv" in printed
    # the row's own config (steps 6) wins over --set
    assert json.loads((tmp_path / "o" / "asset00" / "result.json").read_text())["steps"] == 6
    specs, _ = plan_manifest(assets, tmp_path / "o", JOB, {"steps": 2})
    assert specs[0].config["steps"] == 6


def test_cli_bad_set_value_is_a_clear_error(assets, tmp_path, capsys):
    from magicboost_core.cli import main

    assert main(["batch", str(assets), "--out", str(tmp_path), "--set", "steps"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_ray_mode_without_ray_says_how_to_install(assets, tmp_path, capsys, monkeypatch):
    from magicboost_core.cli import main

    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # `import ray` now raises ImportError
    assert main(["batch", str(assets), "--out", str(tmp_path), "--ray", "--no-progress"]) == 2
    assert "pip install 'magicboost[ray]'" in capsys.readouterr().err
