"""Read and write meshes: GLB, glTF, OBJ (+MTL + PNG texture), PLY (+PNG texture).

``load_mesh(path) -> Mesh`` and ``save_mesh(mesh, path)``. What survives a round trip
(load -> save -> load): vertex positions (float32, exact for GLB/PLY, 9 significant digits for OBJ),
faces and their order, UVs, texture pixels (8-bit PNG on disk, float [0, 1] in the Mesh; exact for
textures that are multiples of 1/255) and vertex colours (to 1/255; OBJ keeps RGB only; an alpha
channel that is 1 everywhere is dropped on load, since glTF always stores RGBA).

Axes — our Mesh lives in the pack's **z-up** world (see :mod:`.camera`):

* **GLB / glTF** are **y-up by specification**. With ``axes="auto"`` (default) ``load_mesh`` rotates
  the file's y-up coordinates into our z-up world (``p_zup = YUP_TO_ZUP @ p_file``) and
  ``save_mesh`` rotates back (``p_file = ZUP_TO_YUP @ p``). Both are proper rotations about x (no
  mirroring, winding kept); glTF's "front" (+z) becomes our -y. Use
  :func:`~.transform.change_axes` to put a model's front on the pack's +x as well.
* **OBJ / PLY** have no axis convention: ``axes="auto"`` reads and writes raw coordinates.
* ``axes="none"`` (or ``"z-up"``) always uses raw coordinates; ``axes="y-up"`` treats any file as
  y-up and rotates it into our z-up world (an OBJ exported y-up from Blender/Maya then loads in the
  same orientation as the GLB of the same model). ``save_mesh`` accepts ``"auto"`` and ``"none"``.

Layout on disk:

* GLB: one binary file; a texture is embedded as a PNG baseColorTexture (PBR, metallic 0, roughness
  1); vertex colours as COLOR_0 (RGBA8), **only when the mesh has no texture** (one colour source:
  glTF viewers multiply a texture by COLOR_0, while this pack's renderer shows the texture alone, so
  a mesh carrying both is written with its texture); smooth vertex normals are written. A scene
  with several geometries is loaded with its node transforms applied and concatenated (several
  textures are packed into one atlas).
* glTF: one self-contained ``.gltf`` JSON file (buffers and images embedded as data URIs);
  external buffers are resolved relative to the file when reading.
* OBJ: ``name.obj`` + ``name.mtl`` + ``name.png`` (the last two only when textured). UV seams are
  kept as separate ``vt`` indices; vertex colours as ``v x y z r g b``. Multi-material files with
  several textures are packed into one atlas on load.
* PLY: binary little-endian (``ascii=True`` for text) with per-vertex ``s t`` UVs (vertices split
  at UV seams), ``red green blue [alpha]`` colours and ``comment TextureFile name.png``.
  Per-face ``texcoord`` lists (MeshLab) are read too.

Readers: GLB/glTF/STL/OFF go through trimesh; OBJ and PLY have their own readers, because trimesh
(one UV per vertex) splits vertices at UV seams (an OBJ's ``vt`` indices, MeshLab's per-face PLY
``texcoord``), which tears the surface under geometry refinement, refuses binary PLY files that mix
triangles and polygons, and loses an MTL texture written Windows-style (``map_Kd textures\\a.png``).
Ours are also faster on large files (640k faces, one thread: OBJ 2.4 s vs 4.5 s, binary PLY 0.1 s vs
1.1 s). ``tests/test_mesh_io.py`` shows each case on trimesh. glTF files get a URI check first:
trimesh would read an external file that is a FIFO (and block).

glTF/GLB, trimesh and core MESH hold one UV per vertex, so ``save_mesh`` splits vertices at UV seams
(positions copied exactly); ``load_mesh(..., merge_seams=True)`` welds identical positions back.

Reading limits: only regular files are read (a FIFO or a device such as ``/dev/zero`` named as the
mesh, by an OBJ ``mtllib``, a ``map_Kd`` texture or a glTF ``uri`` is refused or skipped with a
warning, never read), each file up to a size cap (:mod:`magicboost_core.validate`; 1 GiB for meshes,
16 MiB for ``.mtl``, 256 MiB and 8192 x 8192 pixels for textures), and glTF external files must lie
in the glTF file's folder.

Safety: outputs are written to a temporary file in the same folder and renamed into place; an
existing file (including the MTL/PNG companions) is never replaced unless ``overwrite=True``.
Loading errors raise :class:`~.mesh.MeshError` naming the file and the problem.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch

from ..validate import refuse_existing, write_bytes_atomic
from .camera import YUP_TO_ZUP, ZUP_TO_YUP
from .mesh import Mesh, MeshError
from .mesh_convert import (
    _Part,
    _pack_textures,
    _drop_opaque_alpha,
    _rotate_mesh,
    colors_to_float,
    merge_seam_vertices,
    mesh_from_trimesh,
    mesh_to_trimesh,
    split_uv_seams,
    texture_to_pil,
)

__all__ = ["load_mesh", "save_mesh", "LOAD_AXES", "LOAD_FORMATS",
           "SAVE_FORMATS"]

LOAD_FORMATS = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")
SAVE_FORMATS = (".glb", ".gltf", ".obj", ".ply")
_GLTF = (".glb", ".gltf")


def _png_bytes(texture: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    texture_to_pil(texture).save(buf, format="PNG")
    return buf.getvalue()


def _load_image(path: Path, owner: Path):
    """A texture file -> (H, W, 3|4) float tensor, or None with a warning (missing, not a regular file,
    too large, not an image): the mesh still loads without its texture."""
    from ..images import read_image_file

    try:
        rgba, has_alpha = read_image_file(path, "texture")
        return torch.from_numpy(rgba if has_alpha else np.ascontiguousarray(rgba[..., :3]))
    except ValueError as e:
        warnings.warn(f"{owner}: could not read texture '{path}' ({e}); loading without it.", stacklevel=3)
        return None


LOAD_AXES = ("auto", "none", "y-up", "z-up")


def _check_axes(axes: str, allowed=("auto", "none")) -> str:
    if axes not in allowed:
        raise ValueError(f"axes must be one of {list(allowed)} ('auto': glTF y-up <-> our z-up, OBJ/PLY raw; "
                         f"'none'/'z-up': raw; 'y-up': the file is y-up); got {axes!r}.")
    return axes


# ---------------------------------------------------------------------------------------------------
# public API
def load_mesh(path, axes: str = "auto", merge_seams: bool = False) -> Mesh:
    """Load a triangle mesh (GLB, glTF, OBJ, PLY; STL/OFF geometry via trimesh) into our z-up world.

    Args:
        path: file path.
        axes: ``"auto"`` converts GLB/glTF y-up to z-up and reads OBJ/PLY/STL/OFF raw; ``"none"`` /
            ``"z-up"`` read every format raw; ``"y-up"`` converts every format from y-up.
        merge_seams: weld vertices with identical positions (see :func:`~.mesh_convert.merge_seam_vertices`)
            so that UV seams split by glTF/PLY do not tear the surface during geometry refinement.
    Returns: a CPU :class:`Mesh` (float32 vertices, int64 faces, optional UVs/texture/vertex colours).
    Raises: :class:`MeshError` naming the file when it is missing, not a mesh, or has no faces.
    """
    from ..validate import check_regular_file

    _check_axes(axes, LOAD_AXES)
    path = Path(path)
    if not path.exists():
        raise MeshError(f"Mesh file not found: '{path}'.")
    try:
        check_regular_file(path, "mesh file", "mesh")
    except ValueError as e:
        raise MeshError(str(e)) from None
    ext = path.suffix.lower()
    if ext not in LOAD_FORMATS:
        raise MeshError(f"'{path}': unsupported mesh format '{ext}'; supported: {', '.join(LOAD_FORMATS)}.")
    if path.stat().st_size == 0:
        raise MeshError(f"'{path}' is empty (0 bytes); it is not a mesh.")
    try:
        if ext == ".obj":
            mesh = _read_obj(path)
        elif ext == ".ply":
            mesh = _read_ply(path)
        else:
            mesh = _read_with_trimesh(path)
    except MeshError as e:
        msg = str(e)
        raise MeshError(msg if str(path) in msg else f"'{path}': {msg}") from None
    except (ValueError, IndexError, KeyError, TypeError, OverflowError) as e:  # a reader met data it did not expect
        raise MeshError(f"'{path}' is not a valid {ext[1:].upper()} file ({type(e).__name__}: {e}); export it "
                        "again or convert it to GLB.") from None
    if (axes == "auto" and ext in _GLTF) or axes == "y-up":
        mesh = _rotate_mesh(mesh, YUP_TO_ZUP)
    if merge_seams:
        mesh = merge_seam_vertices(mesh)
    return mesh


def save_mesh(mesh: Mesh, path, axes: str = "auto", overwrite: bool = False, ascii: bool = False) -> Path:
    """Write ``mesh`` to ``path`` (format from the extension: .glb, .gltf, .obj, .ply).

    Args:
        mesh: the mesh (any device; not modified).
        path: output file; companions are written beside it (OBJ: ``<stem>.mtl`` and ``<stem>.png``
            when textured; PLY: ``<stem>.png`` when textured).
        axes: ``"auto"`` writes GLB/glTF y-up and OBJ/PLY raw; ``"none"`` writes raw coordinates.
        overwrite: replace existing files; otherwise :class:`~magicboost_core.validate.OutputExistsError`
            names the first existing output before anything is written.
        ascii: PLY only: text instead of binary little-endian.
    Returns: the path of the main file.
    """
    _check_axes(axes)
    if not isinstance(mesh, Mesh):
        raise MeshError(f"save_mesh expects a magicboost Mesh; got {type(mesh).__name__} (convert it with "
                        "mesh_from_comfy / mesh_from_trimesh first).")
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in SAVE_FORMATS:
        raise MeshError(f"Cannot save '{path}': unsupported format '{ext}'; use one of {', '.join(SAVE_FORMATS)}.")
    mesh = mesh.detach().to("cpu")
    if ext in _GLTF:
        return _write_gltf(mesh, path, axes, overwrite)
    if ext == ".obj":
        return _write_obj(mesh, path, overwrite)
    return _write_ply(mesh, path, overwrite, ascii)


# ---------------------------------------------------------------------------------------------------
# GLB / glTF (and STL/OFF) through trimesh
def _read_with_trimesh(path: Path) -> Mesh:
    import trimesh

    ext = path.suffix.lower()
    head = _read_mesh_bytes(path)
    if ext == ".glb" and not head.startswith(b"glTF"):
        raise MeshError(f"'{path}' is not a GLB file (it does not start with the 'glTF' magic bytes).")
    if ext == ".gltf" and not head.lstrip().startswith(b"{"):
        raise MeshError(f"'{path}' is not a glTF file (expected JSON text).")
    if ext in _GLTF:
        _check_gltf_uris(path, head)
    try:
        scene = trimesh.load_scene(str(path), process=False)
    except Exception as e:  # noqa: BLE001 - trimesh raises many types on bad data
        raise MeshError(f"'{path}' could not be read as a {ext[1:].upper()} mesh: {type(e).__name__}: {e}") from None
    return mesh_from_trimesh(scene, name=f"'{path}'")


def _read_mesh_bytes(path: Path, what: str = "mesh file", kind: str = "mesh") -> bytes:
    """A regular file's bytes under the size cap, or :class:`MeshError` naming the file."""
    from ..validate import read_limited

    try:
        return read_limited(path, what, kind)
    except ValueError as e:
        raise MeshError(str(e)) from None


def _gltf_json(path: Path, data: bytes) -> dict:
    """The JSON part of a .gltf file or of a GLB's first chunk ({} when it cannot be parsed: trimesh reports)."""
    import json
    import struct

    try:
        if data.startswith(b"glTF"):
            length, kind = struct.unpack_from("<II", data, 12)
            data = data[20:20 + length] if kind == 0x4E4F534A else b"{}"
        doc = json.loads(data.decode("utf-8-sig"))
    except (ValueError, struct.error, UnicodeDecodeError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _check_gltf_uris(path: Path, data: bytes) -> None:
    """External buffers / images of a glTF must be regular files inside the glTF file's folder."""
    from urllib.parse import unquote

    from ..validate import check_regular_file

    doc = _gltf_json(path, data)
    folder = path.resolve().parent
    for key in ("buffers", "images"):
        items = doc.get(key) if isinstance(doc.get(key), list) else []
        for item in items:
            uri = item.get("uri") if isinstance(item, dict) else None
            if not isinstance(uri, str) or uri.startswith("data:"):
                continue
            target = (folder / unquote(uri)).resolve()
            if "://" in uri or folder not in target.parents:
                raise MeshError(f"'{path}': the external file {uri!r} lies outside the glTF file's folder; only "
                                "files next to the .gltf are read. Export a .glb or an embedded .gltf instead.")
            try:
                check_regular_file(target, f"glTF {key[:-1]} {uri!r} of '{path}'", "mesh")
            except ValueError as e:
                raise MeshError(str(e)) from None


def _write_gltf(mesh: Mesh, path: Path, axes: str, overwrite: bool) -> Path:
    refuse_existing([path], overwrite)
    normals = mesh.normals()  # smooth normals before seams are split, so viewers shade smoothly
    mesh = mesh.replace(vertex_normals=normals)
    if mesh.has_texture and mesh.vertex_colors is not None:  # one colour source (viewers multiply the two)
        mesh = mesh.replace(vertex_colors=None)
    if axes == "auto":
        mesh = _rotate_mesh(mesh, ZUP_TO_YUP)
    tm = mesh_to_trimesh(mesh)
    if path.suffix.lower() == ".glb":
        data = tm.export(file_type="glb", include_normals=True)
    else:
        files = tm.export(file_type="gltf", include_normals=True, embed_buffers=True)
        data = files["model.gltf"] if "model.gltf" in files else next(iter(files.values()))
    return write_bytes_atomic(path, data, overwrite)


# ---------------------------------------------------------------------------------------------------
# OBJ
def _obj_index(token: str, count: int, what: str, path: Path) -> int:
    i = int(token)
    if i == 0:
        raise MeshError(f"'{path}': OBJ {what} index 0 is invalid (OBJ indices start at 1).")
    return i - 1 if i > 0 else count + i


def _parse_mtl(path: Path) -> dict[str, dict]:
    from ..validate import read_limited

    mats: dict[str, dict] = {}
    cur = None
    try:
        text = read_limited(path, "material library (mtllib)", "material").decode("utf-8", errors="replace")
    except ValueError as e:  # missing, a device / FIFO, too large: the mesh loads without its materials
        warnings.warn(f"{e} The mesh is loaded without its materials.", stacklevel=4)
        return mats
    for raw in text.splitlines():
        parts = raw.strip().split()
        if not parts or parts[0].startswith("#"):
            continue
        key = parts[0]
        if key == "newmtl":
            cur = mats.setdefault(raw.strip()[6:].strip(), {})
        elif cur is None:
            continue
        elif key == "Kd" and len(parts) >= 4:
            cur["Kd"] = tuple(float(x) for x in parts[1:4])
        elif key.lower() == "map_kd" and len(parts) >= 2:
            rest = raw.strip()[len(key):].strip()
            cands = [rest, parts[-1]]
            found = None
            for c in cands:
                for base in (path.parent / c.replace("\\", "/"), path.parent / Path(c.replace("\\", "/")).name):
                    if base.is_file():
                        found = base
                        break
                if found:
                    break
            cur["map_Kd"] = found if found else path.parent / parts[-1]
    return mats


def _parse_obj_fast(lines: list[str]):
    """Vectorised parse of the common OBJ layout (uniform 'v'/'vt' lines, triangles with one corner
    format, positive indices). Returns None whenever the file is not that regular (slow path then).

    Returns ``(v (V, 3), colours (V, 3) or None, uv (T, 2), fv (F, 3), ft (F, 3) (-1: no vt), fmat (F,)
    material names, mtllibs)``, exactly what :func:`_parse_obj_slow` gives for the same lines.
    """
    sorted_lines = _obj_lines_by_kind(lines)
    if sorted_lines is None:
        return None
    vl, vtl, fl, fidx, mats, libs = sorted_lines
    kv = len(vl[0].split()) - 1
    if kv not in (3, 6):
        return None
    v = _obj_number_rows(" ".join(vl), len(vl), "v", kv, np.float64)
    uv = np.zeros((0, 2))
    if vtl:
        kt = len(vtl[0].split()) - 1
        if kt not in (2, 3):
            return None
        uv = _obj_number_rows(" ".join(vtl), len(vtl), "vt", kt, np.float64)
        if uv is None:
            return None
        uv = uv[:, :2]
    corners = _obj_fast_faces(fl)
    if v is None or corners is None:
        return None
    fv, ft = corners
    if mats:
        mi = np.array([m[0] for m in mats])
        names = [None] + [m[1] for m in mats]
        fmat = [names[p] for p in np.searchsorted(mi, np.array(fidx))]
    else:
        fmat = [None] * len(fl)
    return v[:, :3], (v[:, 3:6] if kv == 6 else None), uv, fv, ft, fmat, libs


def _obj_lines_by_kind(lines: list[str]):
    """``(v lines, vt lines, f lines, line index of each f line, [(line index, usemtl name)], mtllibs)``,
    or None when a line is something the fast path does not handle (an indented line, 'vx', 'fo' ...)."""
    vl, vtl, fl, fidx, mats, libs = [], [], [], [], [], []
    for i, line in enumerate(lines):
        if not line:
            continue
        ch = line[0]
        if ch == "v":
            if line.startswith("v "):
                vl.append(line)
            elif line.startswith("vt "):
                vtl.append(line)
            elif not line.startswith(("vn ", "vp ")):
                return None
        elif ch == "f":
            if not line.startswith("f "):
                return None
            fl.append(line)
            fidx.append(i)
        elif ch == "u" and line.startswith("usemtl"):
            mats.append((i, line.strip()[6:].strip()))
        elif ch == "m" and line.startswith("mtllib"):
            libs.append(line.strip()[6:].strip())
        elif ch in " \t" and line.strip():
            return None
    if not vl or not fl:
        return None
    return vl, vtl, fl, fidx, mats, libs


def _obj_number_rows(text: str, n: int, key: str, width: int, dtype, marker: str = "nan") -> np.ndarray | None:
    """(n, width) numbers of ``text``, n lines ``'<key> n1 ... n_width'`` joined by spaces (one parse),
    or None unless every line holds exactly ``width`` numbers. Each line's key becomes ``marker`` (a
    value the data cannot hold: NaN for coordinates, -1 for positive indices), so a line with too few or
    too many numbers shows up as a marker outside column 0 (and data equal to the marker, as NaN, is
    left to the slow path)."""
    try:
        flat = np.fromstring(text.replace(key + " ", marker + " "), dtype=dtype, sep=" ")
    except ValueError:  # a token that is not a number (the slow path names it)
        return None
    if flat.size != n * (width + 1):
        return None
    table = flat.reshape(n, width + 1)
    is_marker = np.isnan(table) if marker == "nan" else table == int(marker)
    if int(is_marker.sum()) != n or not bool(is_marker[:, 0].all()):
        return None
    if table.dtype == np.int64 and bool((table == np.iinfo(np.int64).max).any()):  # saturated: too large
        return None
    return table[:, 1:]


def _obj_fast_faces(fl: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(fv, ft)`` (F, 3) 0-based vertex and texture indices (ft -1 without 'vt' indices) of triangle
    lines that all share the first line's corner format (``v``, ``v/t``, ``v//n`` or ``v/t/n``) and
    use positive indices; None otherwise."""
    first = fl[0].split()
    if len(first) != 4 or any("-" in line for line in fl):
        return None
    corner = first[1]
    slashes = corner.count("/")
    if sum(line.count("/") for line in fl) != 3 * slashes * len(fl):
        return None
    has_vt = slashes >= 1 and "//" not in corner
    nums = 1 + (slashes if "//" not in corner else 1)
    text = " ".join(fl).replace("//", " ").replace("/", " ")
    idx = _obj_number_rows(text, len(fl), "f", 3 * nums, np.int64, marker="-1")
    if idx is None:
        return None
    idx = idx.reshape(-1, 3, nums)
    fv = idx[..., 0] - 1
    return fv, (idx[..., 1] - 1 if has_vt else np.full_like(fv, -1))


def _parse_obj_slow(lines: list[str], path: Path):
    """Line-by-line parse: polygons, negative indices, mixed corner formats, partial colours."""
    verts, vcols, uvs = [], [], []
    fv, ft, fmat = [], [], []
    mtllibs, cur_mat = [], None
    for lineno, raw in enumerate(lines, 1):
        parts = raw.split()
        if not parts:
            continue
        key = parts[0]
        try:
            if key == "v":
                verts.append(parts[1:4])
                vcols.append(parts[4:7] if len(parts) >= 7 else None)
            elif key == "vt":
                uvs.append((parts[1:3] + ["0"])[:2])
            elif key == "f":
                corners = []
                for c in parts[1:]:
                    s = c.split("/")
                    vi = _obj_index(s[0], len(verts), "vertex", path)
                    ti = _obj_index(s[1], len(uvs), "texture", path) if len(s) > 1 and s[1] else -1
                    corners.append((vi, ti))
                for k in range(1, len(corners) - 1):
                    tri = (corners[0], corners[k], corners[k + 1])
                    fv.append([c[0] for c in tri])
                    ft.append([c[1] for c in tri])
                    fmat.append(cur_mat)
            elif key == "usemtl":
                cur_mat = raw.strip()[6:].strip()
            elif key == "mtllib":
                mtllibs.append(raw.strip()[6:].strip())
        except (ValueError, IndexError) as e:
            raise MeshError(f"'{path}' line {lineno} is not valid OBJ ({raw.strip()[:60]!r}): {e}") from None
    if not verts:
        raise MeshError(f"'{path}' holds no vertices ('v' lines); it is not an OBJ mesh.")
    if not fv:
        raise MeshError(f"'{path}' has no faces ('f' lines): a point cloud cannot be refined; give a triangle mesh.")
    try:
        v = np.array(verts, dtype=np.float64)
    except ValueError as e:
        raise MeshError(f"'{path}': a vertex line does not hold 3 numbers ({e}).") from None
    cols = None
    if all(c is not None for c in vcols):
        cols = np.array(vcols, dtype=np.float64)
    elif any(c is not None for c in vcols):
        warnings.warn(f"'{path}': only some vertices have colours; vertex colours ignored.", stacklevel=4)
    uv = np.array(uvs, dtype=np.float64).reshape(-1, 2)
    return v, cols, uv, np.array(fv, dtype=np.int64), np.array(ft, dtype=np.int64), fmat, mtllibs


def _read_obj(path: Path) -> Mesh:
    data = _read_mesh_bytes(path, "OBJ mesh")
    if b"\x00" in data[:4096]:
        raise MeshError(f"'{path}' is binary data, not an OBJ text file.")
    lines = data.decode("utf-8", errors="replace").replace("\\\n", " ").splitlines()
    parsed = _parse_obj_fast(lines) or _parse_obj_slow(lines, path)
    v_np, cols_np, uv_np, fv_np, ftn, fmat, mtllibs = parsed
    n_verts = len(v_np)
    vertices = torch.from_numpy(v_np).float()
    faces = torch.from_numpy(fv_np)
    bad = faces[(faces < 0) | (faces >= n_verts)]
    if bad.numel():
        raise MeshError(f"'{path}': a face references vertex {int(bad[0]) + 1} but the file has {n_verts} vertices.")
    colors = None if cols_np is None else torch.from_numpy(colors_to_float(cols_np))

    uv_t = uv_faces = texture = None
    if len(uv_np) and (ftn >= 0).any():
        uv_arr = uv_np
        missing_vt = (ftn < 0).any()
        if missing_vt:
            ftn = np.where(ftn < 0, len(uv_arr), ftn)
            uv_arr = np.concatenate([uv_arr, np.zeros((1, 2))])
        if ftn.max() >= len(uv_arr):
            raise MeshError(f"'{path}': a face references texture coordinate {int(ftn.max()) + 1} but the file has "
                            f"{len(uv_np)} 'vt' lines.")
        uv_t = torch.from_numpy(uv_arr).float()
        uv_faces = torch.from_numpy(ftn)

    if uv_t is not None:
        mats: dict[str, dict] = {}
        for lib in mtllibs:
            mats.update(_parse_mtl(path.parent / lib.replace("\\", "/")))
        if not mtllibs and path.with_suffix(".mtl").is_file():
            mats.update(_parse_mtl(path.with_suffix(".mtl")))
        used = list(dict.fromkeys(fmat))
        tex_of: dict = {}
        cache: dict = {}
        for name in used:
            m = mats.get(name) if name is not None else None
            tp = m.get("map_Kd") if m else None
            if tp is not None:
                if tp not in cache:
                    cache[tp] = _load_image(tp, path) if tp.is_file() else None
                    if not tp.is_file():
                        warnings.warn(f"'{path}': texture '{tp}' not found; loading without it.", stacklevel=3)
                tex_of[name] = cache[tp]
            else:
                tex_of[name] = None
        distinct = {id(t) for t in tex_of.values() if t is not None}
        if len(distinct) == 1 and all(t is not None for t in tex_of.values()):
            texture = next(iter(t for t in tex_of.values() if t is not None))
        elif distinct:
            uv_t, uv_faces, texture = _obj_atlas(vertices, faces, uv_t, uv_faces, fmat, used, tex_of, mats)
    try:
        return Mesh(vertices=vertices, faces=faces, vertex_colors=colors, uvs=uv_t, uv_faces=uv_faces, texture=texture)
    except MeshError as e:
        raise MeshError(f"'{path}': {e}") from None


def _obj_atlas(vertices, faces, uvs, uv_faces, fmat, used, tex_of, mats):
    """Several textured materials in one OBJ: pack their images into one atlas and remap the UVs."""
    groups = np.array([used.index(m) for m in fmat])
    parts, sel = [], []
    for gi, name in enumerate(used):
        idx = torch.from_numpy(np.nonzero(groups == gi)[0])
        sel.append(idx)
        kd = (mats.get(name) or {}).get("Kd") if name is not None else None
        parts.append(_Part(Mesh(vertices=vertices, faces=faces[idx], uvs=uvs, uv_faces=uv_faces[idx],
                                texture=tex_of[name]), fill_color=kd))
    atlas, mapped = _pack_textures(parts)
    new_uvs, new_uf, off = [], torch.empty_like(uv_faces), 0
    for idx, (u, uf) in zip(sel, mapped):
        new_uvs.append(u)
        new_uf[idx] = uf + off
        off += u.shape[0]
    return torch.cat(new_uvs), new_uf, atlas


def _write_obj(mesh: Mesh, path: Path, overwrite: bool) -> Path:
    mtl_path, png_path = path.with_suffix(".mtl"), path.with_suffix(".png")
    textured = mesh.texture is not None
    refuse_existing([path] + ([mtl_path, png_path] if textured else []), overwrite)
    out = io.StringIO()
    out.write("# written by magicboost (z-up world unless saved otherwise)\n")
    if textured:
        out.write(f"mtllib {mtl_path.name}\n")
    v = mesh.vertices.double().numpy()
    if mesh.vertex_colors is not None:
        c = mesh.vertex_colors.double().numpy()
        if c.shape[1] == 4 and not np.all(c[:, 3] >= 1 - 1e-6):
            warnings.warn(f"OBJ stores RGB vertex colours only; alpha dropped when writing '{path}'.", stacklevel=3)
        np.savetxt(out, np.hstack([v, c[:, :3]]), fmt="v %.9g %.9g %.9g %.6g %.6g %.6g")
    else:
        np.savetxt(out, v, fmt="v %.9g %.9g %.9g")
    f = mesh.faces.numpy() + 1
    if mesh.uvs is not None:
        np.savetxt(out, mesh.uvs.double().numpy(), fmt="vt %.9g %.9g")
        if textured:
            out.write("usemtl material0\n")
        uf = mesh.uv_faces.numpy() + 1
        inter = np.stack([f, uf], axis=2).reshape(-1, 6)
        np.savetxt(out, inter, fmt="f %d/%d %d/%d %d/%d")
    else:
        np.savetxt(out, f, fmt="f %d %d %d")
    if textured:
        write_bytes_atomic(png_path, _png_bytes(mesh.texture), overwrite)
        mtl = ("# written by magicboost\nnewmtl material0\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\n"
               f"map_Kd {png_path.name}\n")
        write_bytes_atomic(mtl_path, mtl.encode("utf-8"), overwrite)
    return write_bytes_atomic(path, out.getvalue().encode("utf-8"), overwrite)


# ---------------------------------------------------------------------------------------------------
# PLY
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def _ply_header(data: bytes, path: Path):
    if not data.startswith(b"ply"):
        raise MeshError(f"'{path}' is not a PLY file (it does not start with 'ply').")
    end = data.find(b"end_header")
    if end < 0:
        raise MeshError(f"'{path}' is not a valid PLY file (no 'end_header').")
    nl = data.find(b"\n", end)
    body_start = len(data) if nl < 0 else nl + 1
    fmt, elements, comments = None, [], []
    for lineno, line in enumerate(data[:body_start].decode("ascii", errors="replace").splitlines()[1:], 2):
        parts = line.split()
        if not parts:
            continue
        if parts[0] in ("format", "element") and len(parts) < (2 if parts[0] == "format" else 3):
            raise MeshError(f"'{path}': PLY header line {lineno} ({line.strip()!r}) is incomplete; the file is "
                            "damaged, export it again.")
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] in ("comment", "obj_info"):
            comments.append(line.strip()[len(parts[0]):].strip())
        elif parts[0] == "element":
            if not parts[2].isdigit():
                raise MeshError(f"'{path}': PLY header line {lineno}: the element count {parts[2]!r} is not a "
                                "non-negative whole number; the file is damaged, export it again.")
            elements.append({"name": parts[1], "count": int(parts[2]), "props": []})
        elif parts[0] == "property":
            if not elements:
                raise MeshError(f"'{path}': PLY property before any element.")
            try:
                if parts[1] == "list":
                    elements[-1]["props"].append((parts[4], _PLY_TYPES[parts[2]], _PLY_TYPES[parts[3]]))
                else:
                    elements[-1]["props"].append((parts[2], _PLY_TYPES[parts[1]], None))
            except (KeyError, IndexError):
                raise MeshError(f"'{path}': PLY header line {lineno} has an unknown property type "
                                f"({line.strip()!r}); supported: {', '.join(sorted(_PLY_TYPES))}.") from None
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise MeshError(f"'{path}': unknown PLY format {fmt!r}; expected ascii, binary_little_endian or "
                        "binary_big_endian (export the PLY again).")
    return fmt, elements, comments, body_start


def _ply_binary_element(body: memoryview, offset: int, el: dict, endian: str, path: Path):
    props, count = el["props"], el["count"]
    if all(p[2] is None for p in props):
        dt = np.dtype([(n, endian + t) for n, t, _ in props])
        if offset + dt.itemsize * count > len(body):
            raise MeshError(f"'{path}': PLY data ends inside element '{el['name']}'.")
        arr = np.frombuffer(body, dt, count, offset)
        return {n: arr[n] for n, _, _ in props}, offset + dt.itemsize * count
    if count == 0:
        return {n: np.zeros((0, 3) if it is not None else 0, dtype=np.dtype(it or t)) for n, t, it in props}, offset
    # lists: try the fast path (every list has the length of the first record's list)
    fields, pos, lens = [], offset, []
    for n, t, it in props:
        if it is None:
            pos += np.dtype(t).itemsize
        else:
            if pos + np.dtype(t).itemsize > len(body):
                raise MeshError(f"'{path}': PLY data ends inside element '{el['name']}'.")
            k = int(np.frombuffer(body, endian + t, 1, pos)[0])
            lens.append(k)
            pos += np.dtype(t).itemsize + k * np.dtype(it).itemsize
    li = 0
    for n, t, it in props:
        if it is None:
            fields.append((n, endian + t))
        else:
            fields.append((n + "__n", endian + t))
            fields.append((n, endian + it, (lens[li],)))
            li += 1
    dt = np.dtype(fields)
    if offset + dt.itemsize * count <= len(body):
        arr = np.frombuffer(body, dt, count, offset)
        li = 0
        ok = True
        for n, t, it in props:
            if it is not None:
                ok &= bool(np.all(arr[n + "__n"] == lens[li]))
                li += 1
        if ok:
            return {n: arr[n] for n, _, _ in props}, offset + dt.itemsize * count
    # slow path: variable-length lists
    out = {n: [] for n, _, _ in props}
    for _ in range(count):
        for n, t, it in props:
            sz = np.dtype(t).itemsize
            if offset + sz > len(body):
                raise MeshError(f"'{path}': PLY data ends inside element '{el['name']}'.")
            val = np.frombuffer(body, endian + t, 1, offset)[0]
            offset += sz
            if it is None:
                out[n].append(val)
            else:
                k, isz = int(val), np.dtype(it).itemsize
                if offset + k * isz > len(body):
                    raise MeshError(f"'{path}': PLY data ends inside element '{el['name']}'.")
                out[n].append(np.frombuffer(body, endian + it, k, offset))
                offset += k * isz
    res = {n: (np.array(v) if props[i][2] is None else v) for i, (n, v) in enumerate(out.items())}
    return res, offset


def _ply_ascii_elements(text: str, elements: list, path: Path) -> dict:
    lines = iter(text.splitlines())
    result = {}
    for el in elements:
        props = el["props"]
        rows = []
        for _ in range(el["count"]):
            line = next(lines, None)
            while line is not None and not line.strip():
                line = next(lines, None)
            if line is None:
                raise MeshError(f"'{path}': PLY data ends inside element '{el['name']}'.")
            rows.append(line.split())
        cols = {n: [] for n, _, _ in props}
        for row in rows:
            k = 0
            for n, t, it in props:
                if it is None:
                    cols[n].append(row[k])
                    k += 1
                else:
                    cnt = int(float(row[k]))
                    cols[n].append(np.array(row[k + 1:k + 1 + cnt], dtype=np.dtype(it)))
                    k += 1 + cnt
        res = {}
        for n, t, it in props:
            if it is None:
                res[n] = np.array(cols[n], dtype=np.float64).astype(np.dtype(t))
            else:
                lst = cols[n]
                if lst and all(len(a) == len(lst[0]) for a in lst):
                    res[n] = np.stack(lst)
                else:
                    res[n] = lst
        result[el["name"]] = res
    return result


def _triangulate(lists) -> tuple[np.ndarray, np.ndarray]:
    """Polygons (array (F, n) or list of arrays) -> (triangles (T, 3), source polygon of each triangle)."""
    if isinstance(lists, np.ndarray) and lists.ndim == 2:
        n = lists.shape[1]
        if n == 3:
            return lists.astype(np.int64), np.arange(len(lists))
        tris = [np.stack([lists[:, 0], lists[:, k], lists[:, k + 1]], 1) for k in range(1, n - 1)]
        src = np.repeat(np.arange(len(lists))[:, None], n - 2, axis=1).reshape(-1)
        return np.stack(tris, 1).reshape(-1, 3).astype(np.int64), src
    tris, src = [], []
    for i, p in enumerate(lists):
        for k in range(1, len(p) - 1):
            tris.append((p[0], p[k], p[k + 1]))
            src.append(i)
    return np.array(tris, dtype=np.int64).reshape(-1, 3), np.array(src, dtype=np.int64)


def _ply_corner_uvs(tc, n_triangles: int):
    """Per-face corner UVs (MeshLab's ``texcoord`` lists, 2 numbers per corner) -> ``(uvs (T, 2), uv_faces
    (n_triangles, 3))`` with the seams kept as separate uv indices (corners fanned as the faces), or
    ``(None, None)`` when they do not match the triangles."""
    lists = tc if not isinstance(tc, np.ndarray) else list(tc)
    corner_uv, tri_uv = [], []
    base = 0
    for p in lists:
        p = np.asarray(p, dtype=np.float64).reshape(-1, 2)
        corner_uv.append(p)
        tri_uv.extend((base, base + k, base + k + 1) for k in range(1, len(p) - 1))
        base += len(p)
    if not base or len(tri_uv) != n_triangles:
        return None, None
    uniq, inv = np.unique(np.concatenate(corner_uv), axis=0, return_inverse=True)
    return torch.from_numpy(uniq).float(), torch.from_numpy(inv.reshape(-1)[np.array(tri_uv, dtype=np.int64)])


def _read_ply(path: Path) -> Mesh:
    data = _read_mesh_bytes(path, "PLY mesh")
    fmt, elements, comments, start = _ply_header(data, path)
    if fmt == "ascii":
        els = _ply_ascii_elements(data[start:].decode("ascii", errors="replace"), elements, path)
    else:
        body, off, els = memoryview(data)[start:], 0, {}
        endian = "<" if fmt == "binary_little_endian" else ">"
        for el in elements:
            els[el["name"]], off = _ply_binary_element(body, off, el, endian, path)
    vert = els.get("vertex")
    if not vert or not all(k in vert for k in "xyz"):
        raise MeshError(f"'{path}' has no vertex element with x, y, z; it is not a PLY mesh.")
    vertices = torch.from_numpy(np.stack([vert[k] for k in "xyz"], 1).astype(np.float64)).float()
    face = els.get("face", {})
    key = next((k for k in ("vertex_indices", "vertex_index") if k in face), None)
    n_faces = len(face[key]) if key else 0
    if n_faces == 0:
        raise MeshError(f"'{path}' has no faces: a point cloud cannot be refined; give a triangle mesh.")
    faces_np, src = _triangulate(face[key])
    faces = torch.from_numpy(faces_np)
    if int(faces.min()) < 0 or int(faces.max()) >= len(vertices):
        raise MeshError(f"'{path}': a face references vertex {int(faces.max())} but the file has "
                        f"{len(vertices)} vertices.")

    colors = None
    for names in (("red", "green", "blue", "alpha"), ("r", "g", "b", "a"),
                  ("diffuse_red", "diffuse_green", "diffuse_blue", "diffuse_alpha")):
        if all(n in vert for n in names[:3]):
            chans = [vert[n] for n in names if n in vert]
            colors = torch.from_numpy(_drop_opaque_alpha(colors_to_float(np.stack(chans, 1))).copy())
            break
    uvs = uv_faces = None
    for a, b in (("s", "t"), ("u", "v"), ("texture_u", "texture_v"), ("texture_s", "texture_t")):
        if a in vert and b in vert:
            uvs = torch.from_numpy(np.stack([vert[a], vert[b]], 1).astype(np.float64)).float()
            break
    if uvs is None and "texcoord" in face:
        uvs, uv_faces = _ply_corner_uvs(face["texcoord"], len(faces_np))
    texture = None
    tex_name = next((c.split(None, 1)[1] for c in comments
                     if c.lower().startswith("texturefile") and len(c.split(None, 1)) > 1), None)
    if tex_name and uvs is not None:
        tp = path.parent / tex_name.strip().replace("\\", "/")
        if tp.is_file():
            texture = _load_image(tp, path)
        else:
            warnings.warn(f"'{path}': texture '{tp}' not found; loading without it.", stacklevel=3)
    try:
        return Mesh(vertices=vertices, faces=faces, vertex_colors=colors, uvs=uvs, uv_faces=uv_faces, texture=texture)
    except MeshError as e:
        raise MeshError(f"'{path}': {e}") from None


def _write_ply(mesh: Mesh, path: Path, overwrite: bool, ascii: bool) -> Path:
    png_path = path.with_suffix(".png")
    textured = mesh.texture is not None
    refuse_existing([path] + ([png_path] if textured else []), overwrite)
    m, _ = split_uv_seams(mesh)
    V = m.num_vertices
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if m.uvs is not None:
        fields += [("s", "<f4"), ("t", "<f4")]
    C = 0 if m.vertex_colors is None else m.vertex_colors.shape[1]
    fields += [(n, "u1") for n in ("red", "green", "blue", "alpha")[:C]]
    arr = np.zeros(V, dtype=np.dtype(fields))
    for i, k in enumerate("xyz"):
        arr[k] = m.vertices[:, i].numpy()
    if m.uvs is not None:
        arr["s"], arr["t"] = m.uvs[:, 0].numpy(), m.uvs[:, 1].numpy()
    if C:
        c8 = (m.vertex_colors.clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
        for i, n in enumerate(("red", "green", "blue", "alpha")[:C]):
            arr[n] = c8[:, i]
    typename = {"<f4": "float", "u1": "uchar"}
    header = ["ply", f"format {'ascii' if ascii else 'binary_little_endian'} 1.0", "comment written by magicboost"]
    if textured:
        header.append(f"comment TextureFile {png_path.name}")
    header.append(f"element vertex {V}")
    header += [f"property {typename[t]} {n}" for n, t in fields]
    header += [f"element face {m.num_faces}", "property list uchar int vertex_indices", "end_header"]
    head = ("\n".join(header) + "\n").encode("ascii")
    f = m.faces.numpy().astype(np.int32)
    if ascii:
        buf = io.StringIO()
        fmt = " ".join("%.9g" if t == "<f4" else "%d" for _, t in fields)
        np.savetxt(buf, np.stack([arr[n].astype(np.float64) for n, _ in fields], 1), fmt=fmt)
        np.savetxt(buf, np.hstack([np.full((len(f), 1), 3), f]), fmt="%d")
        body = buf.getvalue().encode("ascii")
    else:
        fa = np.zeros(len(f), dtype=np.dtype([("n", "u1"), ("i", "<i4", (3,))]))
        fa["n"], fa["i"] = 3, f
        body = arr.tobytes() + fa.tobytes()
    if textured:
        write_bytes_atomic(png_path, _png_bytes(m.texture), overwrite)
    return write_bytes_atomic(path, head + body, overwrite)
