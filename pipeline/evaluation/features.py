"""Feature extractors for the evaluation protocols, behind one small interface.

A :class:`FeatureSource` gives, for an object encoded from one input view,

* ``map_2d(obj, input_view, view)``: an (H, W, C) feature map of ``view`` at the render store's
  image size, and
* ``at_points(obj, input_view, xyz)``: (N, C) features at 3D object-frame points.

Kinds:

* ``nerf-internal`` (default, official): the NeRF's internal feature v_NeRF (the hidden state
  after the last ResNet block, ``width``-d). 2D maps composite it along the rays with the fine
  pass weights; 3D points query the MLP directly, with the view direction of the ray from the
  input camera to the point (occluded points are queried as well, as official).
* ``nerf-feature``: the distilled feature head, rendered / queried the same way (ablation).
* ``pixelnerf-internal``: ``nerf-internal`` of a pixelNeRF checkpoint (trained with feature and
  coordinate weights 0): the same code with another checkpoint.
* ``teacher-2d``: the cached teacher map of the view, upsampled bilinearly
  (``align_corners=False``) to the image size (the paper's "DINO" / "LDM" rows; official
  ``extract_feature_map(feat=...)``). It ignores ``input_view`` for 2D maps (a 2D model sees the
  target image itself). For 3D points (our choice; no official script exists) it is the teacher
  feature at the point's projection into the input view (bilinear on the teacher grid,
  ``align_corners=False``, border padding), so occluded points take the feature of whatever
  covers them in that image.

Speed (CPU). Rays are rendered in chunks (:class:`RenderSettings` ``chunk``) with the
checkpoint's sample counts unless overridden. ``eval_size`` renders at a lower resolution and
upsamples the features bilinearly (``align_corners=False``) to the image size (the metrics stay
at image resolution: 2.5-10 px thresholds at 128 px). ``fg_only`` renders only the rays whose
values the metrics can read: pixels of the GT foreground of the rendered view (the official
protocol matches and scores only foreground pixels) and its keypoint pixels, plus at a reduced
``eval_size`` every low-resolution pixel that the bilinear upsampling reads for them. The other
pixels stay zero (= what a NeRF renders in empty space). The metrics are then identical to a
full render; pictures show black background. NVS renders full images (``full=True``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from cache.feature_store import FeatureStore
from cache.render_store import RenderStore

KINDS = ("nerf-internal", "nerf-feature", "pixelnerf-internal", "teacher-2d")


class FeatureSource(Protocol):
    """What the tasks need from a feature extractor."""

    name: str  # method label in metrics, e.g. "student_internal"
    kind: str  # one of KINDS

    def map_2d(self, obj: int, input_view: int, view: int) -> np.ndarray:
        """(H, W, C) float32 feature map of ``view`` of object ``obj`` encoded from
        ``input_view``, at the store's image size."""
        ...

    def at_points(self, obj: int, input_view: int, xyz: np.ndarray) -> np.ndarray:
        """(N, C) float32 features at (N, 3) object-frame points."""
        ...


def upsample(feat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, C) -> (H, W, C) float32, bilinear with ``align_corners=False`` (no-op if equal)."""
    if feat.shape[:2] == tuple(size):
        return np.asarray(feat, np.float32)
    t = torch.from_numpy(np.ascontiguousarray(feat, np.float32)).permute(2, 0, 1)[None]
    out = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return out[0].permute(1, 2, 0).numpy()


def bilinear_support(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Low-resolution pixels read by :func:`upsample` for the True pixels of a full-res mask.

    Args:
        mask: (H, W) bool at image resolution. size: (h, w) render resolution.

    Returns:
        (h, w) bool: every low-res pixel with non-zero bilinear weight (align_corners=False,
        edge-clamped as torch) for some masked full-res pixel; ``mask`` itself if h, w = H, W.
    """
    H, W = mask.shape
    h, w = size
    if (h, w) == (H, W):
        return mask.copy()
    rows, cols = np.nonzero(mask)
    out = np.zeros((h, w), bool)
    y = np.clip((rows + 0.5) * h / H - 0.5, 0, None)
    x = np.clip((cols + 0.5) * w / W - 0.5, 0, None)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    for dy in (0, 1):
        for dx in (0, 1):
            out[np.clip(y0 + dy, 0, h - 1), np.clip(x0 + dx, 0, w - 1)] = True
    return out


def scaled_intrinsics(K: np.ndarray, image_size: int, size: int) -> np.ndarray:
    """(3, 3) K of an ``image_size`` image -> K of the same camera at ``size`` pixels."""
    K = np.array(K, np.float64)
    K[:2] *= size / image_size
    return K


@dataclass
class RenderSettings:
    """Volume rendering at evaluation time (deterministic samples, fine pass)."""

    near: float = 0.8
    far: float = 1.8
    n_coarse: int = 64
    n_importance: int = 16
    n_depth: int = 16
    chunk: int = 4096

    @classmethod
    def from_checkpoint(cls, state: dict, **overrides: Any) -> RenderSettings:
        """The checkpoint's ``config["render"]`` with non-None ``overrides`` applied."""
        r = state["config"].get("render", {})
        s = cls(**{k: r[k] for k in ("near", "far", "n_coarse", "n_importance", "n_depth")
                   if k in r})
        s.chunk = int(r.get("eval_chunk", s.chunk))
        for k, v in overrides.items():
            if v is not None:
                setattr(s, k, v)
        return s


@dataclass
class RenderTiming:
    """Wall time of the rendered maps: ``records`` of (seconds, rays, pixels of a full map)."""

    records: list[tuple[float, int, int]] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """Mean seconds and rays per map, and seconds per full map (all pixels) extrapolated."""
        if not self.records:
            return {"maps": 0}
        s, r, p = (np.array(x, np.float64) for x in zip(*self.records, strict=True))
        return {
            "maps": len(s),
            "s_per_map": float(s.mean()),
            "rays_per_map": float(r.mean()),
            "s_per_full_map": float((s / np.maximum(r, 1) * p).mean()),
            "rays_per_s": float(r.sum() / max(s.sum(), 1e-9)),
        }


class RenderedMaps(Mapping):
    """One rendered view, stored compactly: only the rendered pixels' values are kept (a
    foreground-only map is a fraction of the image), and ``maps[key]`` expands one quantity to
    an (h, w, ...) float32 image with zeros at the pixels that were not rendered.

    Args:
        mask: (h, w) bool rendered pixels (``maps["mask"]``).
        values: per quantity, (n_rendered, ...) float32 in ``np.nonzero(mask)`` order.
    """

    def __init__(self, mask: np.ndarray, values: dict[str, np.ndarray]):
        self.mask, self.values = mask, values
        self._where = np.nonzero(mask)

    def __getitem__(self, key: str) -> np.ndarray:
        if key == "mask":
            return self.mask
        v = self.values[key]
        img = np.zeros((*self.mask.shape, *v.shape[1:]), np.float32)
        img[self._where] = v
        return img

    def __iter__(self):
        return iter(("mask", *self.values))

    def __len__(self) -> int:
        return 1 + len(self.values)


class NerfRenderer:
    """One checkpoint's model over one render store, each object encoded from a single view.

    Renders (optionally foreground-only, at ``eval_size``) and point queries are cached per
    (object, input view, ...) in small LRU caches, so pairs that share a map render it once.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        store: RenderStore,
        settings: RenderSettings,
        eval_size: int | None = None,
        device: str | torch.device = "cpu",
        fg_only: bool = True,
        cache_size: int = 8,
    ):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.store = store
        self.settings = settings
        self.image_size = store.image_size
        self.eval_size = int(eval_size or store.image_size)
        self.fg_only = fg_only
        self.cache_size = cache_size
        self.timing = RenderTiming()
        self.state_info: dict[str, Any] = {}
        self._encoded: tuple[int, int] | None = None
        self._renders: OrderedDict[tuple, RenderedMaps] = OrderedDict()
        self._encodings: OrderedDict[tuple[int, int], Any] = OrderedDict()
        self._queries: OrderedDict[tuple, dict[str, np.ndarray]] = OrderedDict()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        store: RenderStore,
        eval_size: int | None = None,
        device: str | torch.device = "cpu",
        fg_only: bool = True,
        cache_size: int = 8,
        **render_overrides: Any,
    ) -> NerfRenderer:
        """Load ``path`` (a ``.ckpt`` file, or a run dir: its newest checkpoint)."""
        from train.trainer import load_checkpoint, model_from_checkpoint

        state = load_checkpoint(resolve_checkpoint(path))
        settings = RenderSettings.from_checkpoint(state, **render_overrides)
        model = model_from_checkpoint(state, resolve_device(device))
        r = cls(model, store, settings, eval_size, device, fg_only, cache_size)
        r.state_info = {k: state.get(k) for k in ("step", "teacher_identity",
                                                  "render_fingerprint", "weights_source")}
        r.state_info["inputs"] = state.get("inputs")
        r.state_info["coord_target"] = state["config"].get("data", {}).get("coord_target")
        return r

    @property
    def has_feature(self) -> bool:
        return getattr(self.model, "feature_head", None) is not None

    def _camera(self, obj: int, view: int) -> tuple[np.ndarray, np.ndarray]:
        return self.store.read("K", (obj, view)), self.store.read("c2w", (obj, view))

    def encode(self, obj: int, input_view: int) -> None:
        """Encode object ``obj`` from its image at ``input_view`` (skipped if already current).

        Encodings are kept in an LRU cache and restored with :meth:`FeatureNeRF.use_encoded`
        instead of re-running the image encoder.
        """
        key = (obj, input_view)
        if self._encoded == key:
            return
        cached = self._encodings.get(key)
        if cached is not None:
            self._encodings.move_to_end(key)
            self.model.use_encoded(cached)
            self._encoded = key
            return
        K, c2w = self._camera(obj, input_view)
        img = self.store.read("rgb", (obj, input_view)).astype(np.float32) / 255.0
        dev = self.device
        with torch.no_grad():
            views = self.model.encode(
                torch.from_numpy(img).permute(2, 0, 1)[None, None].to(dev),
                torch.from_numpy(K)[None, None].float().to(dev),
                torch.from_numpy(c2w)[None, None].float().to(dev),
            )
        self._encodings[key] = views
        while len(self._encodings) > min(self.cache_size, 128):  # ~7 MB each at 128 px
            self._encodings.popitem(last=False)
        self._encoded = key

    def render_mask(self, obj: int, view: int) -> np.ndarray:
        """(h, w) bool rays to render at eval size for ``fg_only`` (see module doc)."""
        from pipeline.evaluation.metrics import foreground, keypoint_pixels

        fg = foreground(self.store.read("part", (obj, view)), self.store.read("alpha", (obj, view)))
        fg = fg.copy()
        vis = self.store.read("kp_visible", (obj, view))
        if vis.any():
            kp = keypoint_pixels(self.store.read("kp2d", (obj, view))[vis], fg.shape)
            fg[kp[:, 1], kp[:, 0]] = True
        return bilinear_support(fg, (self.eval_size, self.eval_size))

    def render(
        self, obj: int, input_view: int, view: int, full: bool = False
    ) -> RenderedMaps:
        """Render ``view`` of ``obj`` encoded from ``input_view`` at ``eval_size``.

        Args:
            full: render every pixel (NVS, pictures) instead of the ``fg_only`` mask.

        Returns:
            (h, w, ...) float32 arrays: ``rgb`` (3), ``opacity``, ``depth`` (expected distance
            along the unit ray, normalised by opacity; 0 where opacity < 1e-4), ``internal``
            (width), ``feature`` (D, if the model has the head) and ``mask`` (bool, rendered
            pixels; unrendered ones are 0).
        """
        full = full or not self.fg_only
        key = (obj, input_view, view, full)
        if key in self._renders:
            self._renders.move_to_end(key)
            return self._renders[key]
        if not full:  # a cached full render serves a masked request too
            hit = self._renders.get((obj, input_view, view, True))
            if hit is not None:
                return hit
        out = self._render(obj, input_view, view, full)
        self._renders[key] = out
        while len(self._renders) > self.cache_size:
            self._renders.popitem(last=False)
        return out

    def _render(self, obj: int, input_view: int, view: int, full: bool) -> RenderedMaps:
        from train.model import render_rays
        from train.rays import pixel_rays

        h = w = self.eval_size
        mask = np.ones((h, w), bool) if full else self.render_mask(obj, view)
        rows, cols = np.nonzero(mask)
        K, c2w = self._camera(obj, view)
        K = scaled_intrinsics(K, self.image_size, h)
        s, dev = self.settings, self.device
        t0 = time.perf_counter()
        self.encode(obj, input_view)
        uv = torch.from_numpy(np.stack([cols, rows], axis=1) + 0.5).float()[None].to(dev)
        with torch.no_grad():
            origins, dirs = pixel_rays(
                torch.from_numpy(K).float()[None].to(dev),
                torch.from_numpy(c2w).float()[None].to(dev),
                uv,
            )
            res = render_rays(self.model, origins, dirs, s.near, s.far, s.n_coarse,
                              s.n_importance, s.n_depth, train=False, chunk=s.chunk,
                              return_internal=True)
        res = res.get("fine", res["coarse"])
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        self.timing.records.append((time.perf_counter() - t0, len(rows), h * w))
        op = res["opacity"][0].cpu().numpy()
        depth = res["depth"][0].cpu().numpy() / np.maximum(op, 1e-8)
        vals = {"rgb": res["rgb"][0], "internal": res["internal"][0], "opacity": op,
                "depth": np.where(op < 1e-4, 0.0, depth)}
        if "feature" in res:
            vals["feature"] = res["feature"][0]
        return RenderedMaps(mask, {k: (v.float().cpu().numpy() if isinstance(v, torch.Tensor)
                                       else v).astype(np.float32) for k, v in vals.items()})

    def query(self, obj: int, input_view: int, xyz: np.ndarray) -> dict[str, np.ndarray]:
        """Query the MLP at (N, 3) points, view direction = input camera -> point.

        Returns:
            (N, ...) float32 ``internal``, ``rgb``, ``sigma`` and ``feature`` if available.
        """
        xyz = np.ascontiguousarray(xyz, np.float32)
        key = (obj, input_view, xyz.shape, hash(xyz.tobytes()))
        if key in self._queries:
            self._queries.move_to_end(key)
            return self._queries[key]
        self.encode(obj, input_view)
        _, c2w = self._camera(obj, input_view)
        dirs = xyz - c2w[:3, 3][None].astype(np.float32)
        dirs /= np.maximum(np.linalg.norm(dirs, axis=1, keepdims=True), 1e-9)
        dev = self.device
        parts: list[dict[str, torch.Tensor]] = []
        with torch.no_grad():
            for s in range(0, len(xyz), max(1, self.settings.chunk * 8)):
                sl = slice(s, s + self.settings.chunk * 8)
                parts.append(self.model(torch.from_numpy(xyz[sl])[None].to(dev),
                                        torch.from_numpy(dirs[sl])[None].to(dev)))
        out = {k: torch.cat([p[k][0] for p in parts]).float().cpu().numpy()
               for k in ("internal", "rgb", "sigma", "feature") if parts and k in parts[0]}
        self._queries[key] = out
        while len(self._queries) > self.cache_size:
            self._queries.popitem(last=False)
        return out


class NerfSource:
    """``nerf-internal`` / ``nerf-feature`` / ``pixelnerf-internal`` over a :class:`NerfRenderer`.

    Args:
        name: method label. renderer: the model. head: "internal" or "feature".
    """

    def __init__(self, name: str, renderer: NerfRenderer, head: str = "internal",
                 kind: str | None = None):
        if head not in ("internal", "feature"):
            raise ValueError(f"head must be internal|feature, got {head!r}")
        if head == "feature" and not renderer.has_feature:
            raise ValueError(f"{name}: the checkpoint has no distilled feature head")
        self.name, self.renderer, self.head = name, renderer, head
        self.kind = kind or f"nerf-{head}"

    def map_2d(self, obj: int, input_view: int, view: int) -> np.ndarray:
        r = self.renderer.render(obj, input_view, view)
        size = self.renderer.image_size
        return upsample(r[self.head], (size, size))

    def at_points(self, obj: int, input_view: int, xyz: np.ndarray) -> np.ndarray:
        return self.renderer.query(obj, input_view, xyz)[self.head]


class TeacherSource:
    """``teacher-2d``: cached teacher maps (see module doc).

    Args:
        features: the feature store (same objects/views as ``store``). store: the renders.
    """

    kind = "teacher-2d"

    def __init__(self, features: FeatureStore, store: RenderStore, name: str = "teacher_2d"):
        self.features, self.store, self.name = features, store, name

    def raw(self, obj: int, view: int) -> np.ndarray:
        """(h, w, C) float32 cached map."""
        return self.features.read((obj, view)).astype(np.float32)

    def map_2d(self, obj: int, input_view: int, view: int) -> np.ndarray:
        size = self.store.image_size
        return upsample(self.raw(obj, view), (size, size))

    def at_points(self, obj: int, input_view: int, xyz: np.ndarray) -> np.ndarray:
        uv = project_into_view(self.store, obj, input_view, xyz)
        size = self.store.image_size
        grid = (uv / size * 2.0 - 1.0)[:, :, None, :]  # pixel centres +0.5, align_corners=False
        fmap = torch.from_numpy(self.raw(obj, input_view)).permute(2, 0, 1)[None]
        out = F.grid_sample(fmap, grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
        return out[0, :, :, 0].T.numpy()


def project_into_view(store: RenderStore, obj: int, view: int, xyz: np.ndarray) -> torch.Tensor:
    """(N, 3) object-frame points -> (1, N, 2) float32 pixel coordinates in ``view`` of ``obj``
    (pixel centres at +0.5, :func:`train.rays.project_points`)."""
    from train.rays import project_points

    K = torch.from_numpy(store.read("K", (obj, view))).float()[None]
    c2w = torch.from_numpy(store.read("c2w", (obj, view))).float()[None]
    return project_points(torch.from_numpy(np.asarray(xyz, np.float32))[None], K, c2w)[0]


def resolve_device(name: str | torch.device) -> torch.device:
    """"auto" -> cuda if available else cpu; anything else as given."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_checkpoint(path: str | Path) -> Path:
    """A ``.ckpt`` file as is; a run dir -> its newest ``checkpoints/step-*.ckpt``."""
    from train.trainer import checkpoints

    p = Path(path)
    if p.is_file():
        return p
    found = checkpoints(p) if p.is_dir() else []
    if not found:
        raise FileNotFoundError(f"{path}: no checkpoint (expected a .ckpt file or a run dir "
                                "with checkpoints/step-*.ckpt); run `fnerf-pipeline train`")
    return found[-1]
