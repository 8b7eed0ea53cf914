"""Bad and hostile input to the ComfyUI nodes (imported as tests/test_nodes.py does: ``import nodes``).

Each case asserts a ``NodeInputError`` naming the node, the input and the fix (or the right warning), that
device files / FIFOs are never read, and that nothing is written outside the output folder.
"""
from __future__ import annotations

import io
import math
import os
import pathlib
import warnings

import numpy as np
import pytest
import torch

import hostile_files as H
import nodes
from nodes import comfy_compat
from nodes.common import NodeInputError

REPO = pathlib.Path(__file__).resolve().parents[1]
GLB = REPO / "workflows" / "inputs" / "coarse_sphere.glb"
N = nodes.NODE_CLASS_MAPPINGS


@pytest.fixture(autouse=True)
def _dirs(tmp_path):
    comfy_compat.set_directories(output=tmp_path / "out", input=tmp_path / "in", models=tmp_path / "models")
    comfy_compat.set_progress_enabled(False)
    (tmp_path / "out").mkdir()
    (tmp_path / "in").mkdir()
    yield
    comfy_compat.reset_directories()


def _raises(fn, node, input_name, *words):
    with pytest.raises(NodeInputError) as e:
        fn()
    msg = str(e.value)
    assert msg.startswith(f"{node}: input '{input_name}'"), msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


def _load_mesh(path, **kw):
    return N["MagicBoostLoadMesh"]().load(path=str(path), **kw)


# ------------------------------------------------------------------------------------------ Load Mesh
def _bad_mesh(kind, t: pathlib.Path):
    if kind == "device":
        return pathlib.Path("/dev/zero"), ["device", "regular file"]
    if kind == "fifo":
        return H.fifo(t / "m.obj"), ["FIFO", "regular file"]
    if kind == "text_glb":
        (t / "m.glb").write_text("hello")
        return t / "m.glb", ["not a GLB file"]
    if kind == "degenerate":
        return H.degenerate_obj(t / "m.obj"), ["zero area", "Repair"]
    if kind == "nan_vertex":
        (t / "m.obj").write_text("v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
        return t / "m.obj", ["NaN or infinite", "repair"]
    if kind == "ply_count":
        return H.ply(t / "m.ply", ["format ascii 1.0", "element vertex many", "property float x"]), \
            ["m.ply", "element count 'many'", "export it again"]
    if kind == "ply_format":
        return H.ply(t / "m.ply", ["format", "element vertex 3"]), ["m.ply", "incomplete", "export it again"]
    if kind == "ply_type":
        return H.ply(t / "m.ply", ["format ascii 1.0", "element vertex 3", "property float128 x"]), \
            ["m.ply", "unknown property type", "supported"]
    if kind == "ply_kind":
        return H.ply(t / "m.ply", ["format utf16 1.0", "element vertex 3"]), ["m.ply", "unknown PLY format"]
    if kind == "gltf_escape":
        (t.parent / "secret.bin").write_bytes(b"\0" * 36)
        return H.gltf_with_uri(t / "m.gltf", "../secret.bin"), ["outside the glTF file's folder", ".glb"]
    if kind == "gltf_device":  # a symlink to /dev/zero next to the file: resolved, so it lies outside
        os.symlink("/dev/zero", t / "zero.bin")
        return H.gltf_with_uri(t / "m.gltf", "zero.bin"), ["outside the glTF file's folder"]
    if kind == "gltf_fifo":
        H.fifo(t / "pipe.bin")
        return H.gltf_with_uri(t / "m.gltf", "pipe.bin"), ["FIFO", "regular file"]
    if kind == "missing":
        return t / "nothing.glb", ["not found"]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["device", "fifo", "text_glb", "degenerate", "nan_vertex", "ply_count",
                                  "ply_format", "ply_type", "ply_kind", "gltf_escape", "gltf_device", "gltf_fifo",
                                  "missing"])
def test_load_mesh_bad_files(tmp_path, kind):
    folder = tmp_path / "files"
    folder.mkdir()
    path, words = _bad_mesh(kind, folder)
    _raises(lambda: _load_mesh(path), "Load Mesh", "path", *words)


def test_load_mesh_size_cap(tmp_path, monkeypatch):
    monkeypatch.setenv("MAGICBOOST_MAX_MESH_BYTES", "50")
    path = tmp_path / "m.obj"
    path.write_text(H.TRIANGLE_OBJ * 3)
    _raises(lambda: _load_mesh(path), "Load Mesh", "path", "more than the 50 bytes", "MAGICBOOST_MAX_MESH_BYTES")


@pytest.mark.parametrize("lib", ["/dev/zero", "fifo", "/dev/urandom"])
def test_obj_mtllib_naming_a_device_or_fifo_is_skipped_not_read(tmp_path, lib):
    if lib == "fifo":
        lib = str(H.fifo(tmp_path / "lib.mtl"))
    path = H.obj_with_mtllib(tmp_path / "m.obj", lib)
    with pytest.warns(UserWarning, match="not a regular file.*without its materials"):
        mesh = N["MagicBoostLoadMesh"]().load(path=str(path))[0]
    assert mesh.magicboost_meshes[0].faces.shape == (1, 3)


def test_load_mesh_axes_option_makes_obj_and_glb_agree(tmp_path):
    from magicboost_core.geometry.mesh_io import load_mesh, save_mesh

    save_mesh(load_mesh(GLB, axes="none"), tmp_path / "yup.obj")  # the same model, stored y-up as an OBJ
    glb = _load_mesh(GLB)[0].magicboost_meshes[0]
    obj_auto = _load_mesh(tmp_path / "yup.obj")[0].magicboost_meshes[0]
    obj_yup = _load_mesh(tmp_path / "yup.obj", axes="y-up")[0].magicboost_meshes[0]
    assert torch.allclose(obj_yup.vertices, glb.vertices, atol=1e-5)
    assert not torch.allclose(obj_auto.vertices, glb.vertices, atol=1e-3)
    _raises(lambda: _load_mesh(GLB, axes="x-up"), "Load Mesh", "axes", "Choose one of")


class _File3D:
    """Stand-in for comfy_api's File3D (newer ComfyUI): a path or a byte stream plus a format."""

    def __init__(self, source, file_format=""):
        self._source, self.format = source, file_format

    def get_source(self):
        return self._source


@pytest.mark.parametrize("source", ["path", "bytes"])
def test_load_mesh_accepts_core_file_3d(source):
    f3d = _File3D(str(GLB), "glb") if source == "path" else _File3D(io.BytesIO(GLB.read_bytes()), "glb")
    mesh = N["MagicBoostLoadMesh"]().load(file_3d=f3d)[0].magicboost_meshes[0]
    assert torch.allclose(mesh.vertices, _load_mesh(GLB)[0].magicboost_meshes[0].vertices)


@pytest.mark.parametrize("f3d, words", [
    (_File3D(io.BytesIO(b"splat"), "splat"), ["type 'splat'", "Convert it to GLB"]),
    (_File3D(io.BytesIO(b"not a glb"), "glb"), ["not a GLB file", "valid triangle mesh"]),
    (_File3D(None, "glb"), ["unsupported 3D file object", "FILE_3D"]),
])
def test_load_mesh_bad_file_3d(f3d, words):
    _raises(lambda: N["MagicBoostLoadMesh"]().load(file_3d=f3d), "Load Mesh", "file_3d", *words)


def test_load_mesh_path_from_core_load_3d_mesh_path(tmp_path):
    (tmp_path / "in" / "3d").mkdir()
    (tmp_path / "in" / "3d" / "model.glb").write_bytes(GLB.read_bytes())
    mesh = N["MagicBoostLoadMesh"]().load(path="3d/model.glb")[0]  # Load 3D's mesh_path: relative to input/
    assert mesh.magicboost_meshes[0].faces.shape[0] > 0


# ------------------------------------------------------------------------------------------ Load Images
@pytest.mark.parametrize("kind, words", [
    ("text", ["not an image file", "PNG, JPG"]),
    ("truncated", ["damaged or truncated"]),
    ("bomb", ["decompression bomb"]),
    ("big", ["9000 x 9000", "MAGICBOOST_MAX_IMAGE_PIXELS"]),
    ("empty", ["empty (0 bytes)"]),
    ("device", ["device", "regular file"]),
    ("fifo", ["FIFO"]),
])
def test_load_images_bad_files(tmp_path, kind, words):
    path = {"text": tmp_path / "v.png", "device": pathlib.Path("/dev/zero")}.get(kind, tmp_path / "v.png")
    if kind == "text":
        path.write_text("not an image")
    elif kind == "truncated":
        H.truncated_png(path)
    elif kind in ("bomb", "big"):
        H.png_header_only(path, *((100000, 100000) if kind == "bomb" else (9000, 9000)))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "fifo":
        H.fifo(path)
    _raises(lambda: N["MagicBoostLoadImages"]().load(path=str(path)), "Load Images", "path", *words)


def test_load_images_reads_16_bit_png_correctly(tmp_path):
    H.png16_grey(tmp_path / "v.png", 16384)
    images, mask = N["MagicBoostLoadImages"]().load(path=str(tmp_path / "v.png"))
    assert torch.allclose(images, torch.full_like(images, 16384 / 65535), atol=1e-6)  # was 1.0 (white)
    assert float(mask.max()) == 0.0


def test_load_images_mixed_sizes(tmp_path):
    H.good_png(tmp_path / "a.png", (8, 8))
    H.good_png(tmp_path / "b.png", (9, 8))
    _raises(lambda: N["MagicBoostLoadImages"]().load(path=f"{tmp_path / 'a.png'}, {tmp_path / 'b.png'}"),
            "Load Images", "path", "same size")


# ------------------------------------------------------------------------------------------ Save Mesh
def _mesh():
    return _load_mesh(GLB)[0]


@pytest.mark.parametrize("prefix, words", [
    ("mesh\x00name", ["'\\x00'", "cannot be part of a file name"]),
    ("mesh\nname", ["'\\n'", "cannot be part of a file name"]),
    ("a|b", ["'|'"]),
    ("/tmp/abs", ["absolute path", "relative to the output folder"]),
    ("../../up", ["outside the output folder"]),
    ("sub/", ["no file name part"]),
    ("", ["no file name part"]),
])
def test_save_mesh_bad_prefixes(tmp_path, prefix, words):
    before = H.tree_snapshot(tmp_path)
    _raises(lambda: N["MagicBoostSaveMesh"]().save(_mesh(), prefix), "Save Mesh", "filename_prefix", *words)
    assert H.tree_snapshot(tmp_path) == before


def test_save_mesh_symlinked_subfolder_cannot_write_outside(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, tmp_path / "out" / "link")
    _raises(lambda: N["MagicBoostSaveMesh"]().save(_mesh(), "link/mesh"), "Save Mesh", "filename_prefix",
            "leads outside the output folder", "symlink")
    _raises(lambda: N["MagicBoostSaveMesh"]().save(_mesh(), "link/deeper/mesh"), "Save Mesh", "filename_prefix",
            "leads outside")
    assert list(outside.iterdir()) == []


def test_save_mesh_subfolder_that_is_a_file(tmp_path):
    (tmp_path / "out" / "taken").write_text("x")
    _raises(lambda: N["MagicBoostSaveMesh"]().save(_mesh(), "taken/mesh"), "Save Mesh", "filename_prefix",
            "is a file")


def test_save_mesh_never_overwrites(tmp_path):
    save = N["MagicBoostSaveMesh"]()
    first = save.save(_mesh(), "keep/mesh")["result"][0]
    (tmp_path / "out" / "keep" / "mesh_00002_.glb").write_bytes(b"someone else's file")
    second = save.save(_mesh(), "keep/mesh")["result"][0]
    assert first != second and second.endswith("mesh_00003_.glb")
    assert (tmp_path / "out" / "keep" / "mesh_00002_.glb").read_bytes() == b"someone else's file"


# ------------------------------------------------------------------------------------------ Camera Poses
@pytest.mark.parametrize("kwargs, input_name, words", [
    ({"elevations": "a, b"}, "elevations", ["not a number", "e.g."]),
    ({"elevations": "100"}, "elevations", ["between -90 and 90"]),
    ({"elevations": "nan", "azimuths": "0"}, "elevations", ["not a finite number"]),
    ({"azimuths": "0, inf"}, "azimuths", ["not a finite number"]),
    ({"azimuths": "0; 9x"}, "azimuths", ["not a number"]),
    ({"azimuths": " "}, "azimuths", ["no numbers given"]),
    ({"elevations": "0, 10, 20", "azimuths": "0, 90"}, "elevations", ["3 elevations for 2 azimuths"]),
    ({"distance": float("nan")}, "distance", ["not a finite number"]),
    ({"fov": 500.0}, "fov", ["outside the allowed range", "between 1.0 and 170.0"]),
])
def test_camera_poses_blames_the_right_input(kwargs, input_name, words):
    args = {"preset": "custom", "elevations": "10", "azimuths": "45", "distance": 1.5, "fov": 49.134, **kwargs}
    _raises(lambda: N["MagicBoostCameraPoses"]().make(**args), "Camera Poses", input_name, *words)


# ------------------------------------------------------------------------------------------ Render Views
def _cams(**kw):
    args = {"preset": "custom", "elevations": "10", "azimuths": "0, 90", "distance": 1.5, "fov": 49.134, **kw}
    return N["MagicBoostCameraPoses"]().make(**args)[0]


def _moved(offset=(0.0, 0.0, 0.0), scale=1.0):
    from magicboost_core.geometry.primitives import icosphere

    m = icosphere(subdivisions=1, radius=0.4)
    return m.replace(vertices=m.vertices * scale + torch.tensor(offset))


def test_render_views_far_from_origin_is_an_error_not_blank_images():
    msg = _raises(lambda: N["MagicBoostRenderViews"]().render(_moved((100.0, 0, 0)), _cams(), resolution=32),
                  "Render Views", "mesh", "every render is empty", "centre is at (100", "'framing' to 'fit'")
    assert "distance 1.5" in msg


def test_render_views_huge_mesh_warns():
    with pytest.warns(UserWarning, match="overflows the frame.*framing"):
        N["MagicBoostRenderViews"]().render(_moved(scale=50.0), _cams(), resolution=32)


def test_render_views_fit_framing_renders_a_far_mesh():
    images, mask = N["MagicBoostRenderViews"]().render(_moved((100.0, 5.0, 0), 0.01), _cams(), resolution=32,
                                                      framing="fit")
    assert float((mask < 0.5).float().mean()) > 0.05


def test_render_views_bad_framing_value():
    _raises(lambda: N["MagicBoostRenderViews"]().render(_moved(), _cams(), framing="zoom"), "Render Views",
            "framing", "Choose one of")


# ------------------------------------------------------------------------------------------ numbers in any node
@pytest.mark.parametrize("class_id, node, name, value, words", [
    ("MagicBoostSDSRefineMesh", "SDS Refine Mesh", "lr_geometry", float("nan"), ["not a finite number"]),
    ("MagicBoostSDSRefineMesh", "SDS Refine Mesh", "lr_texture", float("inf"), ["not a finite number"]),
    ("MagicBoostSDSRefineMesh", "SDS Refine Mesh", "steps", 10 ** 9, ["outside the allowed range"]),
    ("MagicBoostRenderViews", "Render Views", "background", float("nan"), ["not a finite number"]),
    ("MagicBoostAIULoss", "AIU Loss", "strength", -1.0, ["outside the allowed range"]),
])
def test_nan_and_out_of_range_numbers_never_reach_the_engine(class_id, node, name, value, words):
    cls = N[class_id]
    with pytest.raises(NodeInputError) as e:
        getattr(cls(), cls.FUNCTION)(**{name: value})  # checked before the node's own code runs
    assert str(e.value).startswith(f"{node}: input '{name}'") and "Give a number between" in str(e.value)
    for w in words:
        assert w in str(e.value)


# ------------------------------------------------------------------------------------------ error names in ComfyUI
def _comfy_type_name(exc: BaseException) -> str:
    """What ComfyUI's error dialog shows as the exception type (execution.full_type_name)."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


@pytest.mark.parametrize("make", [
    lambda: NodeInputError("Load Mesh", "path", "x"),
    lambda: __import__("magicboost_core.geometry.mesh", fromlist=["MeshError"]).MeshError("x"),
    lambda: __import__("nodes.runner", fromlist=["WorkflowError"]).WorkflowError("x"),
    lambda: __import__("magicboost_core.images", fromlist=["ImageFileError"]).ImageFileError("x"),
    lambda: __import__("magicboost_core.model.bundle", fromlist=["ModelFormatError"]).ModelFormatError("x"),
    lambda: __import__("magicboost_core.validate", fromlist=["InputFileError"]).InputFileError("x"),
])
def test_error_types_read_without_module_paths(make):
    exc = make()
    assert "." not in _comfy_type_name(exc) and isinstance(exc, ValueError)


def test_engine_errors_raised_through_a_node_read_without_module_paths():
    from magicboost_core.model.conditioning import ViewInputError
    from nodes.common import guard_number_inputs

    class Fails:
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"x": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0})}}

        def run(self, x):
            raise ViewInputError("images: contain NaN or infinite values; check the image loading.")

    guard_number_inputs({"Fails": Fails}, {"Fails": "Magic-Boost Fails"})
    with pytest.raises(ViewInputError) as e:
        Fails().run(x=0.5)
    assert _comfy_type_name(e.value) == "ViewInputError"
