"""Bad and hostile input files for the tests/test_bad_inputs_*.py suites (written into a tmp folder).

Each maker returns the path it wrote. ``evil_pickle`` plants a payload that would create ``marker``
if anything unpickled it with code execution allowed: tests assert the marker never appears.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):  # unpickling this calls os.system("touch <marker>")
        return (os.system, (f"touch '{self.marker}'",))


def evil_pickle(path: Path, marker: Path, torch_format: bool = True, wrap=lambda p: {"unet": p}) -> Path:
    """A checkpoint whose unpickling would run ``touch marker`` (torch zip format or a raw pickle)."""
    import torch

    obj = wrap(_Payload(marker))
    if torch_format:
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj))
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims width x height (RGB, 8 bit) with a tiny, invalid body: a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b""))
    return path


def good_png(path: Path, size=(8, 8), rgba=False, value=128) -> Path:
    from PIL import Image

    arr = np.full((size[1], size[0], 4 if rgba else 3), value, np.uint8)
    Image.fromarray(arr).save(path)
    return path


def truncated_png(path: Path) -> Path:
    buf = io.BytesIO()
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def png16_grey(path: Path, level: int = 32768) -> Path:
    """A 16-bit grey PNG filled with ``level`` (0..65535)."""
    from PIL import Image

    Image.fromarray(np.full((8, 8), level, np.uint16)).save(path)
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


TRIANGLE_OBJ = "v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nf 1/1 2/2 3/3\n"


def obj_with_mtllib(path: Path, lib: str) -> Path:
    """A textured triangle whose material library is ``lib`` (e.g. /dev/zero or a FIFO)."""
    path.write_text(f"mtllib {lib}\nusemtl m\n" + TRIANGLE_OBJ)
    return path


def degenerate_obj(path: Path) -> Path:
    path.write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nv 3 0 0\nf 1 2 3\nf 2 3 4\n")
    return path


def ply(path: Path, header_lines: list[str], body: str = "") -> Path:
    path.write_text("ply\n" + "\n".join(header_lines) + "\nend_header\n" + body)
    return path


def gltf_with_uri(path: Path, uri: str) -> Path:
    import json

    doc = {"asset": {"version": "2.0"}, "buffers": [{"uri": uri, "byteLength": 36}], "bufferViews": [
        {"buffer": 0, "byteOffset": 0, "byteLength": 36}], "accessors": [
        {"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3", "min": [0, 0, 0], "max": [1, 1, 0]}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}], "nodes": [{"mesh": 0}],
        "scenes": [{"nodes": [0]}], "scene": 0}
    path.write_text(json.dumps(doc))
    return path


def tree_snapshot(root: Path) -> dict:
    """{relative path: (size, mtime_ns)} of every file under ``root`` (to assert nothing changed)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out
