"""Cameras, meshes and their I/O. World is z-up; cameras are OpenGL (see ``camera``)."""
from .camera import Cameras, look_at, orbit_cameras, orbit_positions
from .camera_vector import camera_vectors, condition_strength_labels, relative_azimuth_deg
from .mesh import Mesh, MeshError
from .mesh_convert import (
    ComfyMeshLike, concatenate_meshes, merge_seam_vertices, mesh_from_comfy, mesh_from_trimesh, mesh_to_comfy,
    mesh_to_trimesh, split_uv_seams,
)
from ..validate import OutputExistsError
from .mesh_io import load_mesh, save_mesh
from .presets import PRESETS, RandomPoseSampler, ViewPreset, custom_preset, get_preset
from .primitives import box, checker_texture, cylinder, icosphere, textured_quad, torus, uv_sphere
from .transform import Normalization, axes_rotation, change_axes, flip_z, normalize_to_unit_sphere
from .uv import unwrap_uv

__all__ = [
    "Cameras", "look_at", "orbit_cameras", "orbit_positions", "camera_vectors", "condition_strength_labels",
    "relative_azimuth_deg", "Mesh", "MeshError", "PRESETS", "RandomPoseSampler", "ViewPreset",
    "custom_preset", "get_preset",
    # mesh conversion and I/O
    "ComfyMeshLike", "concatenate_meshes", "merge_seam_vertices", "mesh_from_comfy", "mesh_from_trimesh",
    "mesh_to_comfy", "mesh_to_trimesh", "split_uv_seams", "OutputExistsError", "load_mesh", "save_mesh",
    # primitives, transforms, uv
    "box", "checker_texture", "cylinder", "icosphere", "textured_quad", "torus", "uv_sphere",
    "Normalization", "axes_rotation", "change_axes", "flip_z", "normalize_to_unit_sphere", "unwrap_uv",
]
