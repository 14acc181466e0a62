"""Feature-cache size per object: our float16 Zarr store against the official float32
``np.savez_compressed``, at full width and after PCA, on foreground-dense views.

    python bench/cache_size.py [--objects 2] [--fov 26] [--views 50] [--size 128]
                               [--teachers dino,effnet] [--renderer raycast] [--no-shapenet]
                               [--json OUT.json]

Views: 50 per object at 128 px, procedural chairs plus the real ShapeNet chair of
``shared/data/keypointnet-sample`` (when present), rendered with a narrow field of view
(``--fov``, default 26 deg instead of the rig's 52 at the same distance 1.3) so that the object
fills the frame; the share of foreground grid cells is printed.
Teachers: DINO ViT-S/8 with **random-init** weights (``weights="random"``, block 9 keys at
256 px -> 32x32x384; a density proxy: real DINO weights cannot be obtained offline) and
EfficientNet-Lite0 with its real ImageNet weights (32x32x152), both background-zeroed as the
stage does. For each teacher, in one run and on the same features:

- **zarr f16**: the feature store's own layout (``FeatureStoreWriter``: float16, one chunk per
  view, one shard per object, zstd level 3 with checksums): the object's shard file;
- **official**: ``np.savez_compressed`` of float32 (V, C, h, w) (the released processed data);
- **zarr f16 PCA-D** for D in 16, 32, 64, 128 (``fit_pca`` on the foreground cells of all the
  objects, ``apply_pca``), with the share of the foreground variance the D axes keep.

MB = 10^6 bytes. Targets (DINO-shaped, 384 channels): full width <= 40 MB per object, PCA-64
<= 7 MB per object; EfficientNet's figures are reported at its own 152 channels.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

SHAPENET = Path(__file__).resolve().parents[2] / "shared" / "data" / "keypointnet-sample"
PCA_DIMS = (16, 32, 64, 128)
TARGET_MB = {"full": 40.0, 64: 7.0}


def render(out: Path, objects: int, fov: float, views: int, size: int, renderer: str,
           shapenet: bool) -> list[Path]:
    """Render stores of foreground-dense views: procedural chairs, and the real ShapeNet chair."""
    from pipeline.render_stage import RenderStageConfig, run_render_stage
    from renderers.cameras import CameraRig

    rig = CameraRig(fov_deg=fov)
    common = {"category": "chair", "views": views, "size": size, "n_points": 256,
              "renderer": renderer, "rig": rig}
    stores = [out / "procedural.zarr"]
    run_render_stage(RenderStageConfig(objects=objects, split_fractions=(1.0, 0.0, 0.0),
                                       out=str(stores[0]), report_dir=str(out / "rep-p"),
                                       **common))
    if shapenet and SHAPENET.exists():
        stores.append(out / "shapenet.zarr")
        result = run_render_stage(RenderStageConfig(
            source="shapenet", shapenet_root=str(SHAPENET / "ShapeNetCore.v2"), objects=1,
            out=str(stores[1]), report_dir=str(out / "rep-s"), **common))
        if not result.ok:
            print(f"ShapeNet chair not rendered: {result.failures}", file=sys.stderr)
            stores.pop()
    return stores


def teacher_features(name: str, stores: list[Path]) -> tuple[dict, list[tuple[str, np.ndarray,
                                                                           np.ndarray]]]:
    """(identity, [(object id, (V, h, w, C) float32 features of every cell, (V, H, W) alpha)])
    computed with background zeroing off (the stage's zeroing is applied by the caller)."""
    from cache.render_store import RenderStore
    from teachers.base import TeacherInput
    from teachers.registry import build_teacher

    options = {"device": "cpu", "dtype": "fp32", "batch_size": 10, "zero_bg": False}
    teacher = build_teacher(name, weights="random", **options) if name == "dino" else \
        build_teacher(name, **options)
    out = []
    for path in stores:
        store = RenderStore(path)
        for i in store.valid_indices():
            arrays = store.read_object(i, ("rgb", "alpha"))
            feats = [teacher(TeacherInput(rgb=arrays["rgb"][v:v + 10],
                                          alpha=arrays["alpha"][v:v + 10], category="chair"))
                     for v in range(0, store.n_views, 10)]
            out.append((f"{path.stem}/{store.object_ids[i]}", np.concatenate(feats),
                        arrays["alpha"]))
    return {**teacher.identity(), "zero_background": True}, out


def zarr_sizes(feats: list[np.ndarray], path: Path, identity: dict) -> list[int]:
    """Bytes of each object's shard in a feature store holding ``feats`` (the real writer)."""
    from cache import integrity
    from cache.feature_store import FeatureStoreWriter

    n_views, h, w, dim = feats[0].shape
    attrs = {"identity": identity, "render_fingerprint": "bench", "pca_dim": None}
    writer = FeatureStoreWriter.create_or_resume(path, len(feats), n_views, (h, w), dim, attrs,
                                                 overwrite=True)
    for i, feat in enumerate(feats):
        writer.write_views(i, np.arange(n_views), feat)
        writer.mark_done(i)
    array = writer.group["feat"]
    return [os.path.getsize(integrity.chunk_file(path, array, i)) for i in range(len(feats))]


def official_size(feat: np.ndarray) -> int:
    """Bytes of ``np.savez_compressed`` of float32 (V, C, h, w)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, feat=np.ascontiguousarray(feat.transpose(0, 3, 1, 2), np.float32))
    return buf.getbuffer().nbytes


def foreground_share(feat: np.ndarray) -> float:
    return float((np.abs(feat).sum(-1) > 0).mean())


def measure_variant(feats: list[np.ndarray], identity: dict, work: Path, tag: str) -> dict:
    """Sizes of one set of per-object features: zarr f16, official, PCA-D (+ variance kept)."""
    from cache.feature_store import apply_pca, fit_pca

    dim = feats[0].shape[-1]
    row = {"foreground": [foreground_share(f) for f in feats],
           "zarr_f16": zarr_sizes(feats, work / f"{tag}-full.zarr", identity),
           "official": [official_size(f) for f in feats], "pca": {}}
    flat = np.concatenate([f.reshape(-1, dim) for f in feats])
    fg = flat[np.abs(flat).sum(1) > 0].astype(np.float64)
    total_var = float(((fg - fg.mean(0)) ** 2).sum())
    for d in PCA_DIMS:
        if d >= dim:
            continue
        mean, comps = fit_pca(flat, d)
        kept = float((((fg - mean) @ comps) ** 2).sum()) / total_var
        reduced = [apply_pca(f, mean, comps) for f in feats]
        row["pca"][d] = {"variance_kept": kept, "zarr_f16": zarr_sizes(
            reduced, work / f"{tag}-pca{d}.zarr", {**identity, "pca": d})}
    return row


def measure(name: str, stores: list[Path], work: Path) -> dict:
    """Both variants of one teacher: background zeroed (what the stage stores) and every cell
    kept (100 % dense: the upper bound of any view)."""
    from teachers.base import zero_background

    identity, objects = teacher_features(name, stores)
    dense = [f for _, f, _ in objects]
    zeroed = [zero_background(f.copy(), a, f.shape[1:3]) for _, f, a in objects]
    return {"teacher": name, "weights": identity.get("weights"),
            "channels": int(dense[0].shape[-1]), "objects": [o for o, _, _ in objects],
            "raw_f16_mb": dense[0].size * 2 / 1e6,
            "variants": {"background zeroed": measure_variant(zeroed, identity, work,
                                                              f"{name}-z"),
                         "every cell (no zeroing)": measure_variant(
                             dense, {**identity, "zero_background": False}, work, f"{name}-d")}}


def report(results: list[dict]) -> str:
    """The side-by-side table (MB per object: mean and max over the objects)."""

    def mb(sizes: list[int]) -> str:
        return f"{np.mean(sizes) / 1e6:.2f} ({max(sizes) / 1e6:.2f})"

    def verdict(sizes: list[int], target: float) -> str:
        return f"<= {target:.0f}: {'ok' if max(sizes) / 1e6 <= target else 'MISSED'}"

    lines = ["| teacher | cells | storage | MB / object, mean (max) | / official | variance "
             "kept | target MB |", "|---|---|---|---|---|---|---|"]
    notes = []
    for r in results:
        c = r["channels"]
        name = f"{r['teacher']} ({'random-init' if r['weights'] == 'random' else 'ImageNet'})"
        for variant, v in r["variants"].items():
            official = float(np.mean(v["official"]))
            head = f"| {name} | {variant} |"
            lines.append(f"{head} official float32 savez_compressed (V, {c}, 32, 32) | "
                         f"{mb(v['official'])} | 1.00 | 100 % | - |")
            full = verdict(v["zarr_f16"], TARGET_MB["full"]) if c == 384 else "-"
            lines.append(f"{head} zarr float16, full width {c} | {mb(v['zarr_f16'])} | "
                         f"{np.mean(v['zarr_f16']) / official:.2f} | 100 % | {full} |")
            for d, p in v["pca"].items():
                target = verdict(p["zarr_f16"], TARGET_MB[d]) \
                    if d in TARGET_MB and c == 384 else "-"
                lines.append(f"{head} zarr float16, PCA-{d} | {mb(p['zarr_f16'])} | "
                             f"{np.mean(p['zarr_f16']) / official:.2f} | "
                             f"{100 * p['variance_kept']:.1f} % | {target} |")
            shares = ", ".join(f"{o.split('/')[-1]} {100 * s:.0f} %"
                               for o, s in zip(r["objects"], v["foreground"], strict=True))
            notes.append(f"{name}, {variant}: non-zero cells per object: {shares}")
        notes.append(f"{name}: raw float16 {r['raw_f16_mb']:.2f} MB per object at full width")
    return "\n".join([*lines, "", *notes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=2, help="procedural chairs")
    parser.add_argument("--fov", type=float, default=26.0, help="field of view, degrees")
    parser.add_argument("--views", type=int, default=50)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--renderer", default="raycast",
                        help="raycast (no GL; pyrender + torch in one process crashed here)")
    parser.add_argument("--teachers", default="dino,effnet")
    parser.add_argument("--no-shapenet", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cache-size-") as tmp:
        work = Path(tmp)
        stores = render(work, args.objects, args.fov, args.views, args.size, args.renderer,
                        not args.no_shapenet)
        results = [measure(t.strip(), stores, work) for t in args.teachers.split(",")]
    print(f"{args.views} views at {args.size} px, field of view {args.fov:g} deg "
          f"(objects fill the frame); MB = 10^6 bytes")
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
