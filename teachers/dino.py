"""DINO ViT teacher (FeatureNeRF recipe): keys of block 9 of ViT-S/8 at 256 px -> 32x32x384.

A preset of the generic :class:`teachers.timm_teacher.TimmTeacher` (same code path, hence the
same features for the same options) that keeps the ``"dino"`` name and identity dict, so caches
made before the generic teacher existed stay valid.

Pipeline per batch: uint8 RGB -> [0, 1] -> ImageNet mean/std -> bilinear resize to
``input_size`` (align_corners=False, no antialias: the released ``generate_dino_feat.py`` calls
``F.interpolate(imgs, size, mode="bilinear")``; ``antialias=True`` antialiases when shrinking,
e.g. 512 px -> 256 px) -> timm ViT with
``dynamic_img_size=True`` -> patch embed + position embedding -> blocks ``0 .. layer-1`` ->
block ``layer`` up to its ``qkv`` (stop early; facet "token": the whole block) ->
CLS / prefix tokens dropped -> (B, h, w, heads * head_dim), channels head-major (channel
``c = head * head_dim + d``, as the official ``features.reshape(b, d*nh, h, w)``).

Position embeddings for a grid other than the checkpoint's (28x28 -> 32x32 at 256 px):
``pos_interp="dino"`` (default) reproduces the official DINO / FeatureNeRF
``interpolate_pos_encoding``: bicubic (a=-0.75, no antialias) with
``scale_factor=(g + 0.1) / sqrt(N)``; ``"timm"`` uses timm's own resampling (bicubic with
antialias), which gives slightly different features.

Weights: ``weights=None`` downloads the timm hub checkpoint (needs network), ``"random"`` is a
seeded random init (tests), any other string is a local file: a timm state dict (safetensors or
torch pickle) or the original DINO ``dino_deitsmall8_pretrain.pth`` layout (optionally wrapped
in ``teacher`` / ``model`` / ``state_dict`` and prefixed ``module.`` / ``backbone.``; DINO
projection-head keys ``head.*`` are dropped). Loading is strict.
"""

from __future__ import annotations

import os
from typing import Any

from teachers.base import TeacherError
from teachers.timm_teacher import (  # noqa: F401  (re-exported: older imports use teachers.dino)
    FACETS,
    TimmTeacher,
    dino_pos_embed,
    load_state_dict_file,
    load_weights_into,
    map_dino_keys,
    unwrap_state_dict,
)


class DinoTeacher(TimmTeacher):
    """timm DINO ViT facet features (a :class:`TimmTeacher` preset named "dino").

    Args:
        model_name: timm model name (default ``vit_small_patch8_224.dino``); must be a ViT.
        weights: None (hub, needs network), "random" (seeded init) or a local weights file.
        layer: 0-based block index whose facet is read (default 9 = 10th of 12 blocks).
        facet: "key" | "query" | "value" | "token" (block output).
        input_size: square side the images are resized to (default 256 -> 32x32 grid at /8).
        device: "auto" | "cpu" | "cuda[:i]".
        dtype: "auto" (fp16 on CUDA, fp32 on CPU) | "fp32" | "fp16" | "bf16" (autocast).
        batch_size: images per forward pass.
        seed: torch seed of the random init (weights="random" only).
        model_kwargs: extra ``timm.create_model`` options (e.g. ``depth=2`` for tests).
        pos_interp: "dino" (official position-embedding interpolation) or "timm".
        zero_bg: zero background cells (see :func:`teachers.base.zero_background`).
        antialias: antialias the bilinear resize when shrinking inputs larger than
            ``input_size`` (default False = the released behaviour; in the identity).
    """

    name = "dino"
    version = "1"
    _hub_hint = (
        "download dino_deitsmall8_pretrain.pth (or timm's model.safetensors) "
        "elsewhere and pass it with --weights PATH (weights=PATH)"
    )

    def __init__(
        self,
        model_name: str = "vit_small_patch8_224.dino",
        weights: str | os.PathLike | None = None,
        layer: int = 9,
        facet: str = "key",
        input_size: int = 256,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 16,
        seed: int = 0,
        model_kwargs: dict[str, Any] | None = None,
        pos_interp: str = "dino",
        zero_bg: bool = True,
        antialias: bool = False,
    ) -> None:
        if facet not in FACETS:  # None (the generic default) is not a dino facet
            raise TeacherError(f"facet must be one of {FACETS}, got {facet!r}")
        super().__init__(
            model_name=model_name,
            weights=weights,
            layer=layer,
            facet=facet,
            input_size=input_size,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            seed=seed,
            model_kwargs=model_kwargs,
            pos_interp=pos_interp,
            zero_bg=zero_bg,
            antialias=antialias,
        )

    def _init_convnet(self, probe: Any, weights: Any, layer: Any, facet: Any) -> None:
        raise TeacherError(f"{self.model_name} is not a timm VisionTransformer with blocks")

    def identity(self) -> dict[str, Any]:
        """The dino identity as before the generic teacher (no ``family`` /
        ``num_prefix_tokens`` keys), so existing dino caches keep their keys."""
        return self._vit_identity()
