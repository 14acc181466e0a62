"""Default backend: pyrender offscreen OpenGL (EGL by default, OSMesa via PYOPENGL_PLATFORM).

Two passes per view, both bit-repeatable across processes:
- ``rgb`` and ``alpha`` come from GL: one shaded RGBA pass with 4x MSAA (anti-aliased
  silhouettes, suits NeRF ground truth) of a scene with a single mesh node;
- ``depth`` and ``part`` come from an exact trimesh/embree ray cast at the centres of the pixels
  GL covered (``alpha > 0``; :func:`renderers.raycast.cast_view`, ~1.5 ms per 128 px view), so
  every labelled pixel is also foreground in the colour pass.
Why not a GL segmentation pass: one pyrender node per part is drawn in ``set`` order, which
depends on object ids (heap addresses), so z-ties between coincident part faces resolved
differently in every process and the store fingerprint changed between identical runs. The ray
cast resolves ties by its BVH, which is built deterministically from the mesh. Lights are bound
in insertion order (:func:`_ordered_scene`) for the same reason.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import numpy as np  # noqa: E402
import trimesh  # noqa: E402

from renderers.asset import ShapeAsset  # noqa: E402
from renderers.base import RenderedViews, RendererUnavailable  # noqa: E402
from renderers.raycast import cast_view, ray_intersector  # noqa: E402

OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


def _ordered_scene(pyrender):
    """A ``pyrender.Scene`` whose light nodes iterate in insertion order.

    pyrender keeps lights in sets ordered by object id, and the shader sums the lights in that
    order; a fixed order keeps the float sums (hence ``rgb``) identical in every process.
    """

    class OrderedScene(pyrender.Scene):
        def __init__(self, *args, **kwargs) -> None:
            self._order: dict = {}
            super().__init__(*args, **kwargs)

        def add_node(self, node, parent_node=None) -> None:
            self._order.setdefault(node, len(self._order))
            super().add_node(node, parent_node=parent_node)

        @property
        def light_nodes(self) -> list:
            return sorted(super().light_nodes, key=self._order.__getitem__)

    return OrderedScene


class PyrenderRenderer:
    """pyrender backend; one OffscreenRenderer per process, reused across objects."""

    name = "pyrender"

    def __init__(self, ambient: float = 0.35, light_intensity: float = 3.0) -> None:
        try:
            import pyrender
        except Exception as exc:  # ImportError or a GL platform error at import
            raise RendererUnavailable(_gl_help(exc)) from exc
        self._pyrender = pyrender
        self._scene_cls = _ordered_scene(pyrender)
        self._renderer = None
        self._size = 0
        self.ambient = ambient
        self.light_intensity = light_intensity
        self.last_timings: dict[str, float] = {}

    def version(self) -> str:
        return (f"pyrender {self._pyrender.__version__} ({os.environ.get('PYOPENGL_PLATFORM')})"
                f" + ray cast (trimesh {trimesh.__version__}, embree={trimesh.ray.has_embree})")

    def _offscreen(self, size: int):
        if self._renderer is None or self._size != size:
            if self._renderer is not None:
                self._renderer.delete()
            try:
                self._renderer = self._pyrender.OffscreenRenderer(size, size)
            except Exception as exc:
                raise RendererUnavailable(_gl_help(exc)) from exc
            self._size = size
        return self._renderer

    def render(self, asset: ShapeAsset, K: np.ndarray, c2w: np.ndarray, size: int) -> RenderedViews:
        pr = self._pyrender
        t_setup = time.perf_counter()
        renderer = self._offscreen(size)
        camera = pr.IntrinsicsCamera(
            fx=K[0, 0], fy=K[1, 1], cx=K[0, 2], cy=K[1, 2], znear=0.05, zfar=20.0
        )
        shaded = self._scene_cls(bg_color=[0, 0, 0, 0], ambient_light=[self.ambient] * 3)
        shaded.add(pr.Mesh.from_trimesh(asset.mesh, smooth=False))
        cam_node = shaded.add(camera)
        head_light = pr.DirectionalLight(color=np.ones(3), intensity=self.light_intensity)
        light_node = shaded.add(head_light)
        key_light = pr.DirectionalLight(color=np.ones(3), intensity=0.5 * self.light_intensity)
        shaded.add(key_light, pose=_key_light_pose())
        intersector = ray_intersector(asset.mesh)

        n_views = len(c2w)
        out = RenderedViews(
            rgb=np.zeros((n_views, size, size, 3), np.uint8),
            alpha=np.zeros((n_views, size, size), np.uint8),
            depth=np.zeros((n_views, size, size), np.float32),
            part=np.full((n_views, size, size), -1, np.int16),
        )
        flags = pr.RenderFlags
        timings = {"setup": time.perf_counter() - t_setup, "rgb_pass": 0.0, "ray_cast": 0.0}
        for v in range(n_views):
            t0 = time.perf_counter()
            pose = c2w[v] @ OPENCV_TO_OPENGL
            shaded.set_pose(cam_node, pose)
            shaded.set_pose(light_node, pose)
            color, _ = renderer.render(shaded, flags=flags.RGBA | flags.SKIP_CULL_FACES)
            out.rgb[v] = color[..., :3]  # premultiplied over the transparent black background
            out.alpha[v] = color[..., 3]
            t1 = time.perf_counter()
            # rays only where GL covered the pixel: every labelled pixel is foreground in rgb
            tri, depth = cast_view(intersector, asset.mesh, K, c2w[v], size, out.alpha[v] > 0)
            hit = (tri >= 0) & np.isfinite(depth) & (depth > 0)
            out.depth[v][hit] = depth[hit]
            out.part[v][hit] = asset.face_part[tri[hit]]
            timings["rgb_pass"] += t1 - t0
            timings["ray_cast"] += time.perf_counter() - t1
        self.last_timings = timings
        return out

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.delete()
            self._renderer = None


def _key_light_pose() -> np.ndarray:
    """A light from the upper front-left, pointing at the origin (OpenGL light looks down -z)."""
    from renderers.cameras import look_at_c2w

    return look_at_c2w(np.array([-1.0, 2.0, -1.0])) @ OPENCV_TO_OPENGL


def _gl_help(exc: Exception) -> str:
    return (
        f"pyrender could not create an OpenGL context ({type(exc).__name__}: {exc}). "
        "On a headless machine install the EGL libraries (apt-get install libegl1 libegl-mesa0 "
        "libgl1-mesa-dri) and keep PYOPENGL_PLATFORM=egl, or use OSMesa "
        "(apt-get install libosmesa6; pip install PyOpenGL==3.1.10; PYOPENGL_PLATFORM=osmesa), "
        "or render without GL: --renderer raycast."
    )
