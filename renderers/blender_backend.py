"""The "blenderproc" backend: photoreal RGB + alpha from Blender Cycles, run out of process.

Blender runs in a child process per ``render`` call (one object per process: Blender leaks memory
over long in-process loops, and PyPI ``bpy`` needs its own Python 3.11 / numpy). The child runs
``renderers/blender_job.py`` on a job folder (mesh + colours/texture, cameras, settings) and
returns scene-linear premultiplied RGBA. Depth and part labels are NOT taken from Blender: they
are ray cast here with trimesh + embreex through the same pixel centres, so they are exact (no
filtering, integer labels); the alpha/ray-cast mask agreement validates the camera conversion.

Blender is found, in this order (see docs/blender.md):
  1. ``$FNERF_BLENDER_PYTHON``: a Python that can ``import bpy`` (explicit; never falls back),
  2. ``$FNERF_BLENDER``: a ``blender`` binary (explicit; never falls back),
  3. ``<repo>/.venv-blender/bin/python`` if it imports bpy (``pip install bpy==4.2.23``),
  4. BlenderProc's own Blender (``~/blender/blender-4.2.1-linux-x64/blender``, installed by
     ``blenderproc quickstart`` on a connected machine), run directly as a blender binary,
  5. ``blender`` on PATH (e.g. Debian's ``apt-get install blender``).
"""

from __future__ import annotations

import getpass
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import trimesh

from renderers.asset import ShapeAsset
from renderers.base import RenderedViews, RendererUnavailable
from renderers.raycast import cast_view, ray_intersector

REPO_ROOT = Path(__file__).resolve().parents[1]
JOB_SCRIPT = Path(__file__).resolve().with_name("blender_job.py")
ENV_PYTHON = "FNERF_BLENDER_PYTHON"
ENV_BINARY = "FNERF_BLENDER"
BLENDERPROC_BLENDER = "blender-4.2.1-linux-x64"  # the only Blender BlenderProc 2.8.0 installs

ENABLE_HELP = f"""\
Enable it with ONE of (details: docs/blender.md):
  * PyPI bpy in its own venv (Python 3.11 only, ~1 GB; no network at render time):
      python3.11 -m venv .venv-blender && .venv-blender/bin/pip install bpy==4.2.23
  * any Python that can `import bpy`:     export {ENV_PYTHON}=/path/to/python
  * a Blender binary (e.g. Debian: sudo apt-get install -y --no-install-recommends blender,
    or an official tarball):              export {ENV_BINARY}=/path/to/blender
  * BlenderProc's Blender 4.2.1 (needs internet once):
      pip install blenderproc==2.8.0 && blenderproc quickstart
    (it unpacks ~/blender/{BLENDERPROC_BLENDER}/blender, which is then found automatically)"""

_PROBES: dict[tuple[str, str], str | None] = {}  # (kind, path) -> blender version or None


def _default_suns() -> list[dict]:
    """World-frame (+Y up, object front -Z) key / fill / rim suns, shining FROM ``direction``."""
    return [
        {"direction": [0.45, 1.0, -0.75], "strength": 1.8, "angle_deg": 10.0},
        {"direction": [-0.9, 0.35, -0.45], "strength": 0.6, "angle_deg": 20.0},
        {"direction": [0.2, 0.6, 1.0], "strength": 0.9, "angle_deg": 10.0},
    ]


@dataclass
class BlenderSettings:
    """Render settings passed to ``blender_job.py`` (all world-fixed, multi-view consistent).

    samples: Cycles samples per pixel (adaptive sampling off, so the cost is deterministic).
    seed: Cycles seed of view 0; view v uses seed + v (deterministic, independent noise).
    denoise: OpenImageDenoise (slower at 128 px; usually not worth it at 16+ spp).
    filter_width: pixel filter width in pixels (Blackman-Harris); only RGB/alpha are filtered.
    ambient: strength of the uniform white environment light.
    suns: sun lights, each {"direction": [x, y, z] towards the light, "strength", "angle_deg"}.
    smooth_angle_deg: faces meeting at less than this angle are shaded smooth (custom split
        normals); 0 = flat shading.
    threads: Cycles CPU threads, 0 = all cores.
    """

    samples: int = 16
    denoise: bool = False
    seed: int = 0
    filter_width: float = 1.5
    max_bounces: int = 4
    roughness: float = 0.6
    ambient: float = 0.25
    suns: list[dict] = field(default_factory=_default_suns)
    smooth_angle_deg: float = 30.0
    threads: int = 0


@dataclass(frozen=True)
class BlenderLauncher:
    """How to start Blender: ``kind`` is "bpy" (a Python with bpy) or "blender" (a binary)."""

    kind: str
    path: str
    version: str
    source: str  # which discovery rule found it, e.g. "$FNERF_BLENDER_PYTHON"

    def command(self, *args: str) -> list[str]:
        """argv running ``blender_job.py`` with ``args``."""
        if self.kind == "bpy":
            return [self.path, str(JOB_SCRIPT), *args]
        return [self.path, "-b", "-noaudio", "--factory-startup", "--python-exit-code", "1",
                "--python", str(JOB_SCRIPT), "--", *args]


def _child_env() -> dict[str, str]:
    """Environment for the Blender child: no PYTHONPATH/PYTHONHOME leaking in from our venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _probe(kind: str, path: str) -> str | None:
    """Blender version string if ``path`` runs ``blender_job.py --version``, else None (cached)."""
    key = (kind, path)
    if key not in _PROBES:
        version = None
        if os.path.isfile(path) and os.access(path, os.X_OK):
            launcher = BlenderLauncher(kind, path, "", "")
            try:
                proc = subprocess.run(launcher.command("--version"), capture_output=True,
                                      text=True, timeout=120, env=_child_env())
                for line in proc.stdout.splitlines():
                    if line.startswith("FNERF_BLENDER_VERSION="):
                        version = line.split("=", 1)[1].strip()
            except (OSError, subprocess.SubprocessError):
                version = None
        _PROBES[key] = version
    return _PROBES[key]


def _blenderproc_candidates() -> list[str]:
    """Where ``blenderproc run/quickstart`` unpacks its Blender by default."""
    roots = [os.path.expanduser("~/blender")]
    try:
        roots.append(os.path.join("/home_local", getpass.getuser(), "blender"))
    except (KeyError, OSError):  # no user name (odd containers)
        pass
    return [os.path.join(r, BLENDERPROC_BLENDER, "blender") for r in roots]


def find_blender() -> BlenderLauncher:
    """Discover a runnable Blender (order in the module docstring) or raise RendererUnavailable."""
    tried: list[str] = []
    explicit = [(ENV_PYTHON, "bpy"), (ENV_BINARY, "blender")]
    for env_name, kind in explicit:
        path = os.environ.get(env_name)
        if path:
            version = _probe(kind, path)
            if version:
                return BlenderLauncher(kind, path, version, f"${env_name}")
            what = "import bpy" if kind == "bpy" else "run blender_job.py as a blender binary"
            raise RendererUnavailable(
                f"${env_name}={path!r} cannot {what} (missing, not executable or failing). "
                f"Fix or unset it.\n{ENABLE_HELP}"
            )
        tried.append(f"${env_name}: not set")

    candidates = [("bpy", str(REPO_ROOT / ".venv-blender" / "bin" / "python"), ".venv-blender")]
    candidates += [("blender", p, "BlenderProc's Blender") for p in _blenderproc_candidates()]
    on_path = shutil.which("blender")
    if on_path:
        candidates.append(("blender", on_path, "blender on PATH"))
    else:
        tried.append("`blender` on PATH: not found")
    for kind, path, source in candidates:
        version = _probe(kind, path)
        if version:
            return BlenderLauncher(kind, path, version, source)
        tried.append(f"{source} {path}: {'fails' if os.path.exists(path) else 'missing'}")
    raise RendererUnavailable(
        "No Blender for the 'blenderproc' renderer. Looked for:\n  - "
        + "\n  - ".join(tried)
        + f"\n{ENABLE_HELP}"
    )


# ---------------------------------------------------------------------------------------------
# colour / geometry helpers (main process, numpy)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear (any shape)."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Linear values -> sRGB-encoded in [0, 1] (clipped; Blender's "Standard" view transform)."""
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1.0 / 2.4) - 0.055)


def corner_normals(mesh: trimesh.Trimesh, angle_deg: float) -> np.ndarray:
    """(F, 3, 3) float32 smooth-by-angle normals per face corner (zero rows = Blender default).

    Corners average the area-weighted normals of the faces around the same vertex *position*
    whose normal is within ``angle_deg`` of their own face, so sharp edges stay sharp.
    """
    faces = np.asarray(mesh.faces)
    fn = np.asarray(mesh.face_normals, dtype=np.float64)
    area = np.asarray(mesh.area_faces, dtype=np.float64)
    # weld by position so meshes with split vertices still smooth
    scale = max(float(mesh.scale), 1e-12)
    keys = np.round(np.asarray(mesh.vertices) / (scale * 1e-7)).astype(np.int64)
    _, pos_id = np.unique(keys, axis=0, return_inverse=True)
    corner_v = pos_id.reshape(-1)[faces].reshape(-1)  # (3F,)
    corner_f = np.repeat(np.arange(len(faces)), 3)
    order = np.argsort(corner_v, kind="stable")
    deg = np.bincount(corner_v, minlength=int(corner_v.max()) + 1)
    start = np.concatenate([[0], np.cumsum(deg)[:-1]])
    cd = deg[corner_v]
    c_idx = np.repeat(np.arange(len(corner_v)), cd)
    offs = np.arange(int(cd.sum())) - np.repeat(np.cumsum(cd) - cd, cd)
    g = corner_f[order[start[corner_v][c_idx] + offs]]
    f = corner_f[c_idx]
    keep = np.einsum("ij,ij->i", fn[f], fn[g]) >= np.cos(np.deg2rad(angle_deg)) - 1e-9
    w = fn[g[keep]] * area[g[keep], None]
    acc = np.stack([np.bincount(c_idx[keep], w[:, k], len(corner_v)) for k in range(3)], -1)
    norm = np.linalg.norm(acc, axis=1, keepdims=True)
    out = np.where(norm > 1e-12, acc / np.maximum(norm, 1e-12), 0.0)
    return out.reshape(-1, 3, 3).astype(np.float32)


def _material_image_and_color(material) -> tuple[object | None, np.ndarray]:
    """(PIL image or None, (4,) uint8 base colour) of a trimesh Simple/PBR material."""
    image = getattr(material, "baseColorTexture", None)
    if image is None:
        image = getattr(material, "image", None)
    color = getattr(material, "main_color", None)
    color = np.array([102, 102, 102, 255] if color is None else color, dtype=np.uint8)
    return image, color


def asset_arrays(mesh: trimesh.Trimesh, smooth_angle_deg: float) -> tuple[dict, object | None]:
    """Arrays for the job folder and an optional PIL texture.

    Returns:
        arrays: vertices (N, 3) f4, faces (F, 3) i4, and corner_colors (F, 3, 4) f4 linear RGBA
            or corner_uvs (F, 3, 2) f4, plus corner_normals (F, 3, 3) f4 when smoothing.
        texture: PIL image for corner_uvs, else None.
    """
    faces = np.asarray(mesh.faces, dtype=np.int32)
    arrays: dict[str, np.ndarray] = {
        "vertices": np.asarray(mesh.vertices, dtype=np.float32),
        "faces": faces,
    }
    texture = None
    visual = mesh.visual
    if isinstance(visual, trimesh.visual.TextureVisuals):
        image, color = _material_image_and_color(visual.material)
        if image is not None and visual.uv is not None and len(visual.uv) == len(mesh.vertices):
            arrays["corner_uvs"] = np.asarray(visual.uv, dtype=np.float32)[faces]
            texture = image
        else:
            rgba = np.broadcast_to(color, (len(faces), 3, 4))
            arrays["corner_colors"] = rgba.astype(np.float32) / 255.0
    elif visual.kind == "vertex":
        arrays["corner_colors"] = np.asarray(visual.vertex_colors, np.float32)[faces] / 255.0
    else:
        fc = np.asarray(visual.face_colors, np.float32) / 255.0
        arrays["corner_colors"] = np.repeat(fc[:, None, :], 3, axis=1)
    if "corner_colors" in arrays:  # sRGB-encoded uint8 -> linear, alpha ignored (opaque)
        cc = arrays["corner_colors"]
        cc[..., :3] = srgb_to_linear(cc[..., :3])
        cc[..., 3] = 1.0
    if smooth_angle_deg > 0:
        arrays["corner_normals"] = corner_normals(mesh, smooth_angle_deg)
    return arrays, texture


def raycast_depth_part(
    mesh: trimesh.Trimesh, face_part: np.ndarray, K: np.ndarray, c2w: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact z-depth and part labels through pixel centres (``renderers.raycast``, embree).

    Args:
        K: (3, 3) or (V, 3, 3); c2w: (V, 4, 4) OpenCV; face_part: (F,) int16.
    Returns:
        depth: (V, size, size) float32 (0 = miss); part: (V, size, size) int16 (-1 = miss).
    """
    n_views = len(c2w)
    Ks = np.broadcast_to(K, (n_views, 3, 3))
    face_part = np.asarray(face_part, np.int16)
    intersector = ray_intersector(mesh)
    depth = np.zeros((n_views, size, size), np.float32)
    part = np.full((n_views, size, size), -1, np.int16)
    for v in range(n_views):
        tri, depth[v] = cast_view(intersector, mesh, Ks[v], c2w[v], size)
        hit = tri >= 0
        part[v][hit] = face_part[tri[hit]]
    return depth, part


def _write_array(job: Path, manifest: dict, name: str, arr: np.ndarray, dtype: str) -> None:
    arr = np.ascontiguousarray(arr, dtype=np.dtype(dtype))
    arr.tofile(job / f"{name}.bin")
    manifest[name] = {"dtype": dtype, "shape": list(arr.shape)}


# ---------------------------------------------------------------------------------------------


class BlenderRenderer:
    """Renderer protocol backend "blenderproc": Cycles RGB/alpha + exact ray-cast depth/labels.

    Args:
        settings: render settings (default 16 spp Cycles CPU, 3 suns + ambient, no denoiser).
        background: (3,) RGB in [0, 1] (sRGB) composited behind the object, black by default.
        timeout_s: per-call limit for the Blender child; None = 120 s + 10 s per view.
        keep_job_dir: if set, job folders are written under it and kept (debugging).

    Raises:
        RendererUnavailable: no Blender found; the message lists the commands to enable one.
    """

    name = "blenderproc"

    def __init__(
        self,
        settings: BlenderSettings | None = None,
        background: tuple[float, float, float] = (0.0, 0.0, 0.0),
        timeout_s: float | None = None,
        keep_job_dir: str | os.PathLike | None = None,
    ) -> None:
        self.settings = settings or BlenderSettings()
        self.background = np.asarray(background, dtype=np.float64).reshape(3)
        self.timeout_s = timeout_s
        self.keep_job_dir = Path(keep_job_dir) if keep_job_dir else None
        self.launcher = find_blender()
        self.last_stats: dict = {}

    def version(self) -> str:
        """E.g. ``"blender 4.2.23 LTS (bpy)"``, as reported by the Blender process."""
        return f"blender {self.launcher.version} ({self.launcher.kind})"

    def render(self, asset: ShapeAsset, K: np.ndarray, c2w: np.ndarray, size: int) -> RenderedViews:
        """Render ``asset`` from c2w (V, 4, 4) with K (3, 3) (or (V, 3, 3)) at size x size.

        Returns RenderedViews: rgb (V, S, S, 3) uint8 over ``background`` (composited in linear
        light, then sRGB-encoded), alpha (V, S, S) uint8, depth (V, S, S) float32 and part
        (V, S, S) int16 from exact ray casting.
        """
        c2w = np.asarray(c2w, dtype=np.float64).reshape(-1, 4, 4)
        n_views = len(c2w)
        Ks = np.broadcast_to(np.asarray(K, dtype=np.float64), (n_views, 3, 3))
        if self.keep_job_dir is not None:
            self.keep_job_dir.mkdir(parents=True, exist_ok=True)
            job = Path(tempfile.mkdtemp(prefix=f"{asset.object_id}-", dir=self.keep_job_dir))
            rgba = self._run_job(job, asset, Ks, c2w, size)
        else:
            with tempfile.TemporaryDirectory(prefix="fnerf-blender-") as tmp:
                rgba = self._run_job(Path(tmp), asset, Ks, c2w, size)

        rgba = rgba[:, ::-1]  # Blender rows are bottom-up
        a = np.clip(rgba[..., 3:4].astype(np.float64), 0.0, 1.0)
        lin = rgba[..., :3] + (1.0 - a) * srgb_to_linear(self.background)
        rgb = np.round(linear_to_srgb(lin) * 255.0).astype(np.uint8)
        alpha = np.round(a[..., 0] * 255.0).astype(np.uint8)
        depth, part = raycast_depth_part(asset.mesh, asset.face_part, Ks, c2w, size)
        return RenderedViews(rgb=rgb, alpha=alpha, depth=depth, part=part)

    def _run_job(self, job: Path, asset: ShapeAsset, Ks: np.ndarray, c2w: np.ndarray,
                 size: int) -> np.ndarray:
        """Write the job folder, run Blender on it; (V, size, size, 4) float32, bottom-up rows."""
        arrays, texture = asset_arrays(asset.mesh, self.settings.smooth_angle_deg)
        manifest: dict = {}
        for name, arr in arrays.items():
            _write_array(job, manifest, name, arr, "<i4" if name == "faces" else "<f4")
        _write_array(job, manifest, "K", Ks, "<f8")
        _write_array(job, manifest, "c2w", c2w, "<f8")
        spec = {
            "arrays": manifest,
            "height": size,
            "width": size,
            "texture": None,
            "settings": asdict(self.settings),
            "object_id": asset.object_id,
        }
        if texture is not None:
            texture.save(job / "texture.png")
            spec["texture"] = "texture.png"
        (job / "job.json").write_text(json.dumps(spec, indent=1))

        n_views = len(c2w)
        timeout = self.timeout_s if self.timeout_s is not None else 120.0 + 10.0 * n_views
        cmd = self.launcher.command(str(job))
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env=_child_env())
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"Blender timed out after {timeout:.0f} s: {' '.join(cmd)}") from e
        result_path = job / "result.json"
        if proc.returncode != 0 or not result_path.exists():
            tail = (proc.stdout[-3000:] + "\n" + proc.stderr[-3000:]).strip()
            raise RuntimeError(
                f"Blender job failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}"
            )
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.last_stats = json.loads(result_path.read_text())
        self.last_stats["child_cpu_seconds"] = (cpu1.ru_utime - cpu0.ru_utime) + (
            cpu1.ru_stime - cpu0.ru_stime
        )
        rgba = np.fromfile(job / "rgba.bin", dtype="<f4")
        return rgba.reshape(n_views, size, size, 4)


if __name__ == "__main__":  # python -m renderers.blender_backend: report what was found
    try:
        print(BlenderRenderer().version())
    except RendererUnavailable as err:
        print(err, file=sys.stderr)
        sys.exit(1)
