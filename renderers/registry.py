"""Renderer backends by name, created once per process (GL contexts are expensive)."""

from __future__ import annotations

from renderers.base import Renderer

RENDERERS = {
    "pyrender": "offscreen OpenGL (EGL/OSMesa) MSAA RGBA + ray-cast depth and part labels "
                "(default)",
    "raycast": "trimesh + embree ray casting, Lambertian shading, no GL needed",
    "blenderproc": "Blender Cycles out of process (photoreal); see docs/blender.md to enable",
}
_CACHE: dict[str, Renderer] = {}


def get_renderer(name: str) -> Renderer:
    """Return this process's renderer ``name``; raises KeyError listing valid names."""
    if name not in RENDERERS:
        raise KeyError(f"unknown renderer {name!r}; choose one of: {', '.join(RENDERERS)}")
    if name not in _CACHE:
        if name == "pyrender":
            from renderers.pyrender_backend import PyrenderRenderer

            _CACHE[name] = PyrenderRenderer()
        elif name == "raycast":
            from renderers.raycast import RaycastRenderer

            _CACHE[name] = RaycastRenderer()
        else:
            from renderers.blender_backend import BlenderRenderer

            _CACHE[name] = BlenderRenderer()
    return _CACHE[name]
