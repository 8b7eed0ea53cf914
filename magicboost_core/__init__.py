"""Magic-Boost engine: pure PyTorch, never imports ComfyUI.

Rooms: ``geometry`` (cameras, meshes, I/O), ``render`` (differentiable rasterizer), ``model``
(multi-view UNet, checkpoint conversion, sampling), ``refine`` (SDS + AIU), ``train``, ``eval``.
"""
__version__ = "0.1.0"
