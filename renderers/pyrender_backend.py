"""Default backend: pyrender offscreen OpenGL (EGL by default, OSMesa via PYOPENGL_PLATFORM).

Two passes per view, both bit-repeatable across processes:
- ``rgb`` and ``alpha`` come from GL: one shaded RGBA pass with 4x MSAA (anti-aliased
  silhouettes, suits NeRF ground truth) of a scene with a single mesh node;
- ``depth`` and ``part`` come from an exact trimesh/embree ray cast at the centres of the pixels
  GL covered (``alpha > 0``; :func:`renderers.raycast.cast_pixels`, ~0.7 ms per 128 px view), so
  every labelled pixel is also foreground in the colour pass.
Per object: one scene, one shared OffscreenRenderer per process (resized, never rebuilt); each
view's ray cast runs on an idle-priority helper thread beside the next GL frames (embree
releases the GIL; :func:`lower_thread_priority`), the main thread casts the views the helper
has not finished by the last frame, and the frame's GL depth buffer is not read back (only
colour: :func:`_read_color`).
Why not a GL segmentation pass: one pyrender node per part is drawn in ``set`` order, which
depends on object ids (heap addresses), so z-ties between coincident part faces resolved
differently in every process and the store fingerprint changed between identical runs. The ray
cast resolves ties by its BVH, which is built deterministically from the mesh. Lights are bound
in insertion order (:func:`_ordered_scene`) for the same reason.
"""

from __future__ import annotations

import os
import sys
import threading
import time

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import numpy as np  # noqa: E402
import trimesh  # noqa: E402

from renderers.asset import ShapeAsset  # noqa: E402
from renderers.base import RenderedViews, RendererUnavailable  # noqa: E402
from renderers.raycast import cast_pixels, face_planes, ray_intersector  # noqa: E402

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


def _shared_display_offscreen(pyrender):
    """A ``pyrender.OffscreenRenderer`` whose ``delete()`` (also run by ``__del__``) destroys
    its own context with no other GL call.

    pyrender's ``delete()`` calls ``eglTerminate`` on the EGL display that every context of the
    process shares, so deleting (or garbage-collecting) any one renderer broke all the others
    (``eglMakeCurrent`` failing with EGL_BAD_DISPLAY, 12296); and it first makes its own context
    current, which, run by the garbage collector in the middle of another renderer's frame,
    sent that frame's GL calls to a dying context. Destroying a context frees its GL objects.
    """

    from pyrender.renderer import Renderer

    class ColorOnlyRenderer(Renderer):
        color_only = False  # set for one frame by render_color()

        def _read_main_framebuffer(self, scene, flags):
            if not self.color_only:
                return super()._read_main_framebuffer(scene, flags)
            return _read_color(self._main_fb_ms, self._main_fb, *self._main_fb_dims[:2]), None

    class SharedDisplayOffscreenRenderer(pyrender.OffscreenRenderer):
        def _create(self) -> None:
            super()._create()
            self._renderer.__class__ = ColorOnlyRenderer

        def render_color(self, scene, flags) -> np.ndarray:
            """(H, W, 4) uint8 RGBA of one frame, without the GL depth blit and read-back."""
            self._renderer.color_only = True
            try:
                return self.render(scene, flags=flags)[0]
            finally:
                self._renderer.color_only = False

        def delete(self) -> None:
            platform = self._platform
            if platform is None:
                return
            try:
                if hasattr(platform, "_egl_context"):
                    if platform._egl_context is not None:
                        from OpenGL.EGL import eglDestroyContext

                        eglDestroyContext(platform._egl_display, platform._egl_context)
                else:  # OSMesa / pyglet: contexts are independent
                    platform.delete_context()
            finally:
                _abandon(self)

    return SharedDisplayOffscreenRenderer


def _read_color(fb_ms: int, fb: int, width: int, height: int) -> np.ndarray:
    """pyrender 0.1.45's ``Renderer._read_main_framebuffer`` for colour only: the same MSAA
    resolve (blit, GL_LINEAR) and RGBA read, so the same bytes, without the depth buffer."""
    from OpenGL.GL import (
        GL_COLOR_BUFFER_BIT,
        GL_DRAW_FRAMEBUFFER,
        GL_LINEAR,
        GL_READ_FRAMEBUFFER,
        GL_RGBA,
        GL_UNSIGNED_BYTE,
        glBindFramebuffer,
        glBlitFramebuffer,
        glReadPixels,
    )

    glBindFramebuffer(GL_READ_FRAMEBUFFER, fb_ms)
    glBindFramebuffer(GL_DRAW_FRAMEBUFFER, fb)
    glBlitFramebuffer(0, 0, width, height, 0, 0, width, height, GL_COLOR_BUFFER_BIT, GL_LINEAR)
    glBindFramebuffer(GL_READ_FRAMEBUFFER, fb)
    buf = glReadPixels(0, 0, width, height, GL_RGBA, GL_UNSIGNED_BYTE)
    return np.flip(np.frombuffer(buf, dtype=np.uint8).reshape((height, width, 4)), axis=0)


def _abandon(offscreen) -> None:
    """Forget an OffscreenRenderer without any GL call, now or at garbage collection: after a
    lost context its GL names may be reused by the new context, which must not lose them."""
    inner, platform = offscreen._renderer, offscreen._platform
    if inner is not None:
        inner.delete = lambda: None  # Renderer.__del__ would delete names in the current context
    if platform is not None:
        platform.delete_context = lambda: None  # Platform.__del__ would eglTerminate
    offscreen._renderer = offscreen._platform = None


class PyrenderRenderer:
    """pyrender backend; one OffscreenRenderer per process, reused across objects and sizes.

    A GL failure (a lost context: another ``OffscreenRenderer`` deleted in this process
    terminates the EGL display that every context shares) is retried once with a new context;
    if that fails too it raises :class:`RendererUnavailable` (one line), which stops the render
    stage instead of failing every later object.
    """

    name = "pyrender"

    def __init__(self, ambient: float = 0.35, light_intensity: float = 3.0) -> None:
        try:
            import pyrender
            from OpenGL.error import Error as GLBaseError
        except Exception as exc:  # ImportError or a GL platform error at import
            raise RendererUnavailable(_gl_help(exc)) from exc
        self._pyrender = pyrender
        self._gl_errors: tuple[type[BaseException], ...] = (GLBaseError, AssertionError)
        self._scene_cls = _ordered_scene(pyrender)
        self._offscreen_cls = _shared_display_offscreen(pyrender)
        self._renderer = None
        self.ambient = ambient
        self.light_intensity = light_intensity
        self.last_timings: dict[str, float] = {}
        self.context_resets = 0  # contexts re-created after a GL failure
        self._pool = None  # one thread for the ray casts (embree releases the GIL)

    def version(self) -> str:
        return (f"pyrender {self._pyrender.__version__} ({os.environ.get('PYOPENGL_PLATFORM')})"
                f" + ray cast (trimesh {trimesh.__version__}, embree={trimesh.ray.has_embree})")

    def _offscreen(self, size: int):
        """This process's OffscreenRenderer at ``size`` (framebuffers resize, the context stays)."""
        if self._renderer is None:
            _load_triton_before_gl()
            try:
                self._renderer = self._offscreen_cls(size, size)
            except Exception as exc:
                raise RendererUnavailable(_gl_help(exc)) from exc
        self._renderer.viewport_width = self._renderer.viewport_height = size
        return self._renderer

    def render(self, asset: ShapeAsset, K: np.ndarray, c2w: np.ndarray, size: int) -> RenderedViews:
        try:
            return self._render(asset, K, c2w, size)
        except self._gl_errors as exc:
            first = exc
        # the context is gone (its resources with it): forget it without GL calls, make anew
        print(f"warning: pyrender: the OpenGL context failed ({_gl_error_line(first)}); "
              "re-creating it", file=sys.stderr)
        if self._renderer is not None:
            _abandon(self._renderer)
        self._renderer, self.context_resets = None, self.context_resets + 1
        try:
            return self._render(asset, K, c2w, size)
        except self._gl_errors as exc:
            raise RendererUnavailable(
                f"pyrender: the OpenGL context is broken ({_gl_error_line(exc)}) and a new one "
                "fails too; was another pyrender.OffscreenRenderer deleted in this process (its "
                "delete() terminates the shared EGL display)? Restart the run (it resumes), or "
                "render without GL: --renderer raycast"
            ) from exc

    def _render(self, asset: ShapeAsset, K: np.ndarray, c2w: np.ndarray, size: int
                ) -> RenderedViews:
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
        intersector, planes = ray_intersector(asset.mesh), face_planes(asset.mesh)

        n_views = len(c2w)
        out = RenderedViews(
            rgb=np.zeros((n_views, size, size, 3), np.uint8),
            alpha=np.zeros((n_views, size, size), np.uint8),
            depth=np.zeros((n_views, size, size), np.float32),
            part=np.full((n_views, size, size), -1, np.int16),
        )
        flags = pr.RenderFlags.RGBA | pr.RenderFlags.SKIP_CULL_FACES
        timings = {"setup": time.perf_counter() - t_setup, "rgb_pass": 0.0, "ray_cast": 0.0,
                   "ray_cast_wait": 0.0}
        cast_s = np.zeros(n_views)  # per view: the helper and the main thread may both cast
        face_part = asset.face_part

        def cast(v: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """(pixels, face ids, depths) of view v's foreground (embree releases the GIL)."""
            t = time.perf_counter()
            # rays only where GL covered the pixel: every labelled pixel is foreground in rgb
            pixels = np.flatnonzero(out.alpha[v])
            tri, depth = cast_pixels(intersector, planes, K, c2w[v], size, pixels)
            cast_s[v] = time.perf_counter() - t
            return pixels, tri, depth

        pool, pending = self._cast_pool(), []
        try:
            for v in range(n_views):
                t0 = time.perf_counter()
                pose = c2w[v] @ OPENCV_TO_OPENGL
                shaded.set_pose(cam_node, pose)
                shaded.set_pose(light_node, pose)
                color = renderer.render_color(shaded, flags)  # no GL depth read-back
                out.rgb[v] = color[..., :3]  # premultiplied over the transparent black background
                out.alpha[v] = color[..., 3]
                timings["rgb_pass"] += time.perf_counter() - t0
                pending.append(pool.submit(cast, v))
        finally:
            for future in pending:
                future.cancel()  # the views the helper has not started: cast below
        t0 = time.perf_counter()
        for v, future in enumerate(pending):
            # a view the helper has not finished is cast here: the idle-priority helper gets no
            # CPU while other processes keep both cores busy, so never wait for it
            done = future.done() and not future.cancelled()
            pixels, tri, depth = future.result() if done else cast(v)
            hit = (tri >= 0) & np.isfinite(depth) & (depth > 0)
            out.depth[v].reshape(-1)[pixels[hit]] = depth[hit]
            out.part[v].reshape(-1)[pixels[hit]] = face_part[tri[hit]]
        timings["ray_cast_wait"] = time.perf_counter() - t0
        timings["ray_cast"] = float(cast_s.sum())
        self.last_timings = timings
        return out

    def _cast_pool(self):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="raycast",
                                            initializer=lower_thread_priority)
        return self._pool

    def close(self) -> None:
        """Free this renderer's GL resources and context (the shared display stays)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._renderer is not None:
            self._renderer.delete()
            self._renderer = None


def lower_thread_priority() -> None:
    """Let the calling thread run only on CPU time that the GL threads leave idle.

    Linux ``SCHED_IDLE`` (falls back to nice 19; no change where neither is allowed). The ray
    cast helper runs beside llvmpipe's raster threads; at normal priority it preempted one of
    them and every frame waited for that thread's tiles (measured against the bare loop, per
    object alternately: GL plus casts 0.89-0.91x with a normal-priority helper, 0.95-0.97x
    with an idle-priority one). It cannot stall a render on a busy machine (where it gets no
    CPU): after the last frame the main thread casts every view the helper has not finished
    (see ``_render``).
    """
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.setpriority(os.PRIO_PROCESS, tid, 19)
        except (AttributeError, OSError):
            pass


def _load_triton_before_gl() -> None:
    """Load triton (if installed) before the first EGL context of this process.

    triton bundles its own LLVM; loaded *after* Mesa's llvmpipe has set up a context (as
    ``import torchvision.ops`` or a timm teacher does), the process segfaults (measured: rc 139,
    torch 2.14 / Mesa llvmpipe). Loaded first, both work. Matters wherever one process renders
    and then runs a teacher or the trainer: a dask worker, a test session, a notebook.
    """
    try:
        import triton  # noqa: F401
    except ImportError:
        pass


def _gl_error_line(exc: BaseException) -> str:
    """One line for a PyOpenGL error: ``GLError err=12296 in eglMakeCurrent``."""
    err, op = getattr(exc, "err", None), getattr(exc, "baseOperation", None)
    if err is not None:
        name = getattr(op, "__name__", op)
        return f"{type(exc).__name__} err={err}" + (f" in {name}" if name else "")
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'failed'}"


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
