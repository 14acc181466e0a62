"""Default backend: pyrender offscreen OpenGL (EGL by default, OSMesa via PYOPENGL_PLATFORM).

Two passes per view:
- shaded RGBA with 4x MSAA (anti-aliased silhouettes, suits NeRF ground truth);
- a segmentation pass (``RenderFlags.SEG``, one node per part, MSAA off) that gives exact part
  labels and exact z-depth - never read labels or depth from the MSAA colour pass.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import numpy as np  # noqa: E402
import trimesh  # noqa: E402

from renderers.asset import ShapeAsset  # noqa: E402
from renderers.base import RenderedViews, RendererUnavailable  # noqa: E402

OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])
UNLABELLED_CODE = 65535


def encode_label(label: int) -> tuple[int, int, int]:
    """Part label -> flat SEG colour (label + 1 in R + 256 G; unlabelled = 65535)."""
    code = UNLABELLED_CODE if label < 0 else label + 1
    return (code & 255, code >> 8, 0)


def decode_labels(seg: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 SEG colours -> (H, W) int16 labels, -1 for background/unlabelled."""
    code = seg[..., 0].astype(np.int32) + 256 * seg[..., 1].astype(np.int32)
    labels = code - 1
    labels[(code == 0) | (code == UNLABELLED_CODE)] = -1
    return labels.astype(np.int16)


class PyrenderRenderer:
    """pyrender backend; one OffscreenRenderer per process, reused across objects."""

    name = "pyrender"

    def __init__(self, ambient: float = 0.35, light_intensity: float = 3.0) -> None:
        try:
            import pyrender
        except Exception as exc:  # ImportError or a GL platform error at import
            raise RendererUnavailable(_gl_help(exc)) from exc
        self._pyrender = pyrender
        self._renderer = None
        self._size = 0
        self.ambient = ambient
        self.light_intensity = light_intensity
        self.last_timings: dict[str, float] = {}

    def version(self) -> str:
        return f"pyrender {self._pyrender.__version__} ({os.environ.get('PYOPENGL_PLATFORM')})"

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
        shaded = pr.Scene(bg_color=[0, 0, 0, 0], ambient_light=[self.ambient] * 3)
        shaded.add(pr.Mesh.from_trimesh(asset.mesh, smooth=False))
        cam_node = shaded.add(camera)
        head_light = pr.DirectionalLight(color=np.ones(3), intensity=self.light_intensity)
        light_node = shaded.add(head_light)
        key_light = pr.DirectionalLight(color=np.ones(3), intensity=0.5 * self.light_intensity)
        shaded.add(key_light, pose=_key_light_pose())

        seg_scene = pr.Scene(bg_color=[0, 0, 0, 0])
        seg_map = {}
        for label in np.unique(asset.face_part):
            faces = np.nonzero(asset.face_part == label)[0]
            sub = asset.mesh.submesh([faces], append=True, repair=False)
            sub = trimesh.Trimesh(sub.vertices, sub.faces, process=False)
            node = seg_scene.add(pr.Mesh.from_trimesh(sub, smooth=False))
            seg_map[node] = encode_label(int(label))
        seg_cam = seg_scene.add(camera)

        n_views = len(c2w)
        out = RenderedViews(
            rgb=np.zeros((n_views, size, size, 3), np.uint8),
            alpha=np.zeros((n_views, size, size), np.uint8),
            depth=np.zeros((n_views, size, size), np.float32),
            part=np.full((n_views, size, size), -1, np.int16),
        )
        flags = pr.RenderFlags
        timings = {"setup": time.perf_counter() - t_setup, "rgb_pass": 0.0, "seg_pass": 0.0}
        for v in range(n_views):
            t0 = time.perf_counter()
            pose = c2w[v] @ OPENCV_TO_OPENGL
            shaded.set_pose(cam_node, pose)
            shaded.set_pose(light_node, pose)
            color, _ = renderer.render(shaded, flags=flags.RGBA | flags.SKIP_CULL_FACES)
            out.rgb[v] = color[..., :3]  # premultiplied over the transparent black background
            out.alpha[v] = color[..., 3]
            t1 = time.perf_counter()
            seg_scene.set_pose(seg_cam, pose)
            seg, depth = renderer.render(
                seg_scene, flags=flags.SEG | flags.SKIP_CULL_FACES, seg_node_map=seg_map
            )
            out.depth[v] = depth
            out.part[v] = decode_labels(seg)
            timings["rgb_pass"] += t1 - t0
            timings["seg_pass"] += time.perf_counter() - t1
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
