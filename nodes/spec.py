"""Tiny helpers to write V1 ``INPUT_TYPES`` entries with a tooltip on every input."""
from __future__ import annotations

import math
import os

SEED_MAX = 0xFFFFFFFF


def inp(type_, tooltip: str, **options):
    """One input entry ``(TYPE, {options, tooltip})``; ``type_`` is a name or a list (combo)."""
    return (type_, {**options, "tooltip": tooltip})


def seed_input(tooltip: str = "Random seed; the same seed gives the same result on the same device."):
    return inp("INT", tooltip, default=0, min=0, max=SEED_MAX, control_after_generate=True)


def file_fingerprint(path: str | None) -> str:
    """IS_CHANGED helper: changes when the file (or a folder's files) changes on disk."""
    if not path:
        return ""
    try:
        if os.path.isdir(path):
            parts = []
            for root, _, files in os.walk(path):
                for f in sorted(files):
                    st = os.stat(os.path.join(root, f))
                    parts.append(f"{f}:{st.st_mtime_ns}:{st.st_size}")
            return "|".join(parts)
        st = os.stat(path)
        return f"{st.st_mtime_ns}:{st.st_size}"
    except OSError:
        return "missing"


def not_a_number() -> float:
    return math.nan
