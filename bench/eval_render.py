"""Evaluation rendering speed: the inference path (latent injections projected once per encoding)
against the per-point path (the training forward), same model, rays and process.

    python bench/eval_render.py [--width 128] [--blocks 4] [--rays 1800] [--repeats 5]

Builds the default profile's model (EfficientNet-Lite0 encoder, random MLP), encodes one
128-px image and renders ``--rays`` foreground-sized ray batches with 24 + 8 + 8 samples, as
the evaluate stage does per feature map. Prints seconds per map for both paths, their ratio
and the largest difference of the internal feature (the paths are equal up to rounding).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--rays", type=int, default=1800)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    from train.model import FeatureNeRF, ModelConfig, render_rays

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ModelConfig(d_feature=152, backbone="effnet-lite0", pretrained_encoder=True,
                      width=args.width, n_blocks=args.blocks, combine_layer=2)
    # no parameter needs a gradient: grad mode then only selects the path, no graph is built
    model = FeatureNeRF(cfg).eval().requires_grad_(False)
    K = torch.tensor([[131.25, 0, 64], [0, 131.25, 64], [0, 0, 1]])[None, None]
    c2w = torch.eye(4)[None, None].clone()
    c2w[..., 2, 3] = -1.3
    model.encode(torch.rand(1, 1, 3, 128, 128), K, c2w)
    origins = torch.zeros(1, args.rays, 3)
    origins[..., 2] = -1.3
    dirs = torch.nn.functional.normalize(torch.randn(1, args.rays, 3) * 0.1
                                         + torch.tensor([0, 0, 1.0]), dim=-1)

    def run(grad: bool) -> tuple[float, torch.Tensor]:
        with torch.set_grad_enabled(grad):
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                out = render_rays(model, origins, dirs, 0.8, 1.8, 24, 8, 8, train=False)
            return (time.perf_counter() - t0) / args.repeats, out["fine"]["internal"].detach()

    run(False)  # warm-up (and the projected maps of this encoding)
    per_point, a = run(True)
    projected, b = run(False)
    print(f"per-point path: {per_point:.3f} s/map ({args.rays} rays)")
    print(f"projected path: {projected:.3f} s/map")
    print(f"speed-up: {per_point / projected:.2f}x; max |internal difference| "
          f"{(a - b).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
