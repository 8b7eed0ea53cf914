"""Cameras, meshes and their I/O. World is z-up; cameras are OpenGL (see ``camera``)."""
from .camera import Cameras, look_at, orbit_cameras, orbit_positions
from .camera_vector import camera_vectors, condition_strength_labels, relative_azimuth_deg
from .mesh import Mesh, MeshError
from .presets import PRESETS, RandomPoseSampler, ViewPreset, custom_preset, get_preset

__all__ = [
    "Cameras", "look_at", "orbit_cameras", "orbit_positions", "camera_vectors", "condition_strength_labels",
    "relative_azimuth_deg", "Mesh", "MeshError", "PRESETS", "RandomPoseSampler", "ViewPreset",
    "custom_preset", "get_preset",
]
