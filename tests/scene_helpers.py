"""Shared test scene: the demo architecture with random weights (frozen) and a vertex-coloured sphere with
its Instant3D views (``import scene_helpers``: tests/ is on sys.path under pytest)."""
import torch
import trimesh

from magicboost_core.geometry.mesh import Mesh
from magicboost_core.geometry.presets import get_preset
from magicboost_core.model import build_demo_model
from magicboost_core.render.renderer import render


def demo_scene(subdivisions: int = 1, resolution: int = 32):
    """``(model, mesh, views, preset)``: the random-weight demo model in eval mode without gradients (seed 0),
    an icosphere of radius 0.4 coloured by position, and its four Instant3D RGBA views (4, R, R, 4)."""
    torch.manual_seed(0)
    model = build_demo_model().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.4)
    v = torch.tensor(m.vertices, dtype=torch.float32)
    mesh = Mesh(vertices=v, faces=torch.tensor(m.faces), vertex_colors=(v / 0.8 + 0.5).clamp(0, 1))
    preset = get_preset("instant3d")
    out = render(mesh, preset.cameras(resolution))
    return model, mesh, torch.cat([out.rgb, out.alpha], -1), preset
