"""DINO ViT teacher (FeatureNeRF recipe): keys of block 9 of ViT-S/8 at 256 px -> 32x32x384.

Pipeline per batch: uint8 RGB -> [0, 1] -> ImageNet mean/std -> bilinear resize to
``input_size`` (align_corners=False, no antialias: the released ``generate_dino_feat.py`` calls
``F.interpolate(imgs, size, mode="bilinear")``; ``antialias=True`` antialiases when shrinking,
e.g. 512 px -> 256 px) -> timm ViT with
``dynamic_img_size=True`` -> patch embed + position embedding -> blocks ``0 .. layer-1`` ->
only ``norm1`` + ``qkv`` of block ``layer`` (stop early), where a forward hook on
``blocks[layer].attn.qkv`` (or on the block itself for facet "token") captures the facet ->
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
from pathlib import Path
from typing import Any

import numpy as np

from teachers.base import (
    Teacher,
    TeacherError,
    TeacherInput,
    hub_cache_sha256,
    resolve_device,
    resolve_dtype,
    sha256_file,
)

FACETS = ("key", "query", "value", "token")
_QKV_INDEX = {"query": 0, "key": 1, "value": 2}
_WRAPPER_KEYS = ("teacher", "model", "state_dict", "model_state", "module", "student")
_PREFIXES = ("module.", "backbone.", "_orig_mod.", "model.", "encoder.")


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a weights file (safetensors or torch pickle) into a flat {key: tensor} dict."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise TeacherError(f"weights file not found: {p}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p))
        else:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as err:
        raise TeacherError(f"could not read weights file {p}: {type(err).__name__}: {err}") from err
    return unwrap_state_dict(obj, source=str(p))


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, Any]:
    """Find the tensor dict inside common checkpoint wrappers (teacher/model/state_dict...)."""
    import torch

    for _ in range(4):
        if isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
            return dict(obj)
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            tensors = {k: v for k, v in obj.items() if torch.is_tensor(v)}
            if tensors:
                return tensors
            break
        obj = inner
    keys = list(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
    raise TeacherError(f"no state dict of tensors found in {source} (top level: {keys})")


def map_dino_keys(state: dict[str, Any], model_keys: set[str]) -> dict[str, Any]:
    """Strip wrapper prefixes and drop projection-head keys the backbone does not have."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        k = key
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if k.startswith(prefix) and k not in model_keys:
                    k, changed = k[len(prefix) :], True
        if k.startswith("head.") and k not in model_keys:
            continue
        out[k] = value
    return out


def _resample_pos_embed(state: dict[str, Any], model: Any) -> None:
    """Resize a checkpoint's absolute position embedding to the model's grid if they differ."""
    pe = state.get("pos_embed")
    if pe is None or tuple(pe.shape) == tuple(model.pos_embed.shape):
        return
    from timm.layers import resample_abs_pos_embed

    n_prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
    state["pos_embed"] = resample_abs_pos_embed(
        pe, new_size=list(model.patch_embed.grid_size), num_prefix_tokens=n_prefix
    )


def load_weights_into(model: Any, path: str | os.PathLike) -> None:
    """Strictly load a timm or original-DINO weights file into a timm ViT, else TeacherError."""
    model_keys = set(model.state_dict())
    state = map_dino_keys(load_state_dict_file(path), model_keys)
    missing = sorted(model_keys - set(state))
    unexpected = sorted(set(state) - model_keys)
    if missing or unexpected:
        raise TeacherError(
            f"weights file {path} does not match the model: {len(missing)} missing keys "
            f"{missing[:8]}, {len(unexpected)} unexpected keys {unexpected[:8]}"
        )
    _resample_pos_embed(state, model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise TeacherError(f"weights file {path} does not fit the model: {err}") from err


def _hub_weights_sha256(model: Any) -> str:
    """sha256 of the cached hub weights file, or "unverified" when it cannot be found."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    repo = cfg.get("hf_hub_id")
    return hub_cache_sha256(repo) if repo else "unverified"


def dino_pos_embed(model: Any, tok: Any) -> Any:
    """(B, gh, gw, D) patch tokens -> (B, 1 + gh*gw, D) tokens with CLS, official DINO interp."""
    import torch
    import torch.nn.functional as F

    b, gh, gw, dim = tok.shape
    pe = model.pos_embed
    side = int(round((pe.shape[1] - 1) ** 0.5))
    patch = pe[:, 1:]
    if (gh, gw) != (side, side):
        grid = patch.reshape(1, side, side, dim).permute(0, 3, 1, 2)
        scale = ((gh + 0.1) / side, (gw + 0.1) / side)
        grid = F.interpolate(grid.float(), scale_factor=scale, mode="bicubic")
        patch = grid.permute(0, 2, 3, 1).reshape(1, gh * gw, dim).to(pe.dtype)
    cls = model.cls_token.expand(b, -1, -1) + pe[:, :1]
    return torch.cat([cls, tok.reshape(b, gh * gw, dim) + patch], dim=1)


class DinoTeacher(Teacher):
    """timm DINO ViT facet features.

    Args:
        model_name: timm model name (default ``vit_small_patch8_224.dino``).
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
        import torch

        if facet not in FACETS:
            raise TeacherError(f"facet must be one of {FACETS}, got {facet!r}")
        if pos_interp not in ("dino", "timm"):
            raise TeacherError(f"pos_interp must be 'dino' or 'timm', got {pos_interp!r}")
        self.pos_interp = pos_interp
        self.model_name = model_name
        self.layer = int(layer)
        self.facet = facet
        self.input_size = int(input_size)
        self._device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self._device)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.model_kwargs = dict(model_kwargs or {})
        self.zero_bg = zero_bg
        self.antialias = bool(antialias)
        self.model, self.weights_id, self.weights_sha256 = self._build(weights)
        self.model.eval().requires_grad_(False).to(self._device)

        blocks = getattr(self.model, "blocks", None)
        if blocks is None or not hasattr(self.model, "_pos_embed"):
            raise TeacherError(f"{model_name} is not a timm VisionTransformer with blocks")
        m = self.model
        plain = (
            getattr(m, "cls_token", None) is not None
            and getattr(m, "reg_token", None) is None
            and not getattr(m, "no_embed_class", False)
            and getattr(m, "pos_embed", None) is not None
        )
        if pos_interp == "dino" and not plain:
            raise TeacherError(f"{model_name}: pos_interp='dino' needs a CLS-only ViT; use 'timm'")
        if not 0 <= self.layer < len(blocks):
            raise TeacherError(f"layer {layer} out of range: {model_name} has {len(blocks)} blocks")
        patch = self.model.patch_embed.patch_size
        self.patch_size = (int(patch[0]), int(patch[1]))
        if self.input_size % self.patch_size[0] or self.input_size % self.patch_size[1]:
            raise TeacherError(f"input_size {input_size} is not a multiple of patch {patch}")
        attn = blocks[self.layer].attn
        self._dim = (
            int(self.model.embed_dim) if facet == "token" else int(attn.num_heads * attn.head_dim)
        )
        cfg = self.model.pretrained_cfg or {}
        mean = cfg.get("mean", (0.485, 0.456, 0.406))
        std = cfg.get("std", (0.229, 0.224, 0.225))
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self._mean_t = torch.tensor(self.mean, device=self._device).view(1, 3, 1, 1)
        self._std_t = torch.tensor(self.std, device=self._device).view(1, 3, 1, 1)

    # ---------------------------------------------------------------- construction
    def _create(self, pretrained: bool) -> Any:
        import timm

        if not timm.is_model(self.model_name):
            raise TeacherError(f"unknown timm model {self.model_name!r}")
        return timm.create_model(
            self.model_name,
            pretrained=pretrained,
            num_classes=0,
            dynamic_img_size=True,
            **self.model_kwargs,
        )

    def _build(self, weights: str | os.PathLike | None) -> tuple[Any, str, str]:
        """(model, weights id, weights sha256)."""
        import torch

        if weights is None or weights == "hub":
            try:
                model = self._create(pretrained=True)
            except TeacherError:
                raise
            except Exception as err:
                raise TeacherError(
                    f"could not fetch pretrained weights for {self.model_name!r} from the hub "
                    f"({type(err).__name__}: {str(err)[:300]}). Without network, download "
                    "dino_deitsmall8_pretrain.pth (or timm's model.safetensors) elsewhere and "
                    "pass it with --weights PATH (weights=PATH)."
                ) from err
            cfg = model.pretrained_cfg or {}
            return (
                model,
                f"hub:{cfg.get('hf_hub_id') or self.model_name}",
                _hub_weights_sha256(model),
            )
        if str(weights) == "random":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                model = self._create(pretrained=False)
            return model, "random", "random-init"
        path = Path(weights)
        if not path.is_file():
            raise TeacherError(f"weights file not found: {path}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = self._create(pretrained=False)
        load_weights_into(model, path)
        return model, path.name, sha256_file(path)

    # ---------------------------------------------------------------- properties
    @property
    def feature_dim(self) -> int:
        return self._dim

    @property
    def grid(self) -> tuple[int, int]:
        return self.input_size // self.patch_size[0], self.input_size // self.patch_size[1]

    def identity(self) -> dict[str, Any]:
        ident = self._base_identity()
        ident.update(
            model=self.model_name,
            weights=self.weights_id,
            weights_sha256=self.weights_sha256,
            layer=self.layer,
            facet=self.facet,
            channel_order="head-major" if self.facet != "token" else "embed",
            input_size=self.input_size,
            resize="bilinear",
            antialias=self.antialias,
            stride=self.patch_size[0],
            normalize={"mean": list(self.mean), "std": list(self.std)},
            prefix_tokens="dropped",
            pos_interp=self.pos_interp,
            dtype=self.dtype,
        )
        if self.weights_id == "random":
            ident["seed"] = self.seed
        if self.model_kwargs:
            ident["model_kwargs"] = {k: self.model_kwargs[k] for k in sorted(self.model_kwargs)}
        return ident

    # ---------------------------------------------------------------- forward
    def preprocess(self, rgb: np.ndarray) -> Any:
        """(B, H, W, 3) uint8 -> (B, 3, S, S) float32 normalised tensor on the device."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(rgb)).to(self._device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        x = (x - self._mean_t) / self._std_t
        size = (self.input_size, self.input_size)
        if tuple(x.shape[-2:]) != size:
            shrink = x.shape[-2] > size[0] or x.shape[-1] > size[1]
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                              antialias=self.antialias and shrink)
        return x

    def forward_tensor(self, x: Any) -> Any:
        """(B, 3, S, S) normalised tensor -> (B, h, w, C) float32 facet features (no bg zeroing)."""
        import torch

        m = self.model
        blk = m.blocks[self.layer]
        captured: dict[str, Any] = {}

        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            captured["out"] = output

        use_amp = self.dtype != "fp32"
        amp_dtype = torch.float16 if self.dtype == "fp16" else torch.bfloat16
        device_type = self._device.split(":")[0]
        with torch.inference_mode(), torch.autocast(device_type, amp_dtype, enabled=use_amp):
            tok = m.patch_embed(x)  # (B, gh, gw, D) with dynamic_img_size
            gh, gw = int(tok.shape[1]), int(tok.shape[2])
            if self.pos_interp == "dino":
                tok = m.pos_drop(dino_pos_embed(m, tok))
            else:
                tok = m._pos_embed(tok)
            tok = m.norm_pre(m.patch_drop(tok))
            for i in range(self.layer):
                tok = m.blocks[i](tok)
            if self.facet == "token":
                handle = blk.register_forward_hook(hook)
                try:
                    blk(tok)
                finally:
                    handle.remove()
                out = captured["out"]
            else:
                handle = blk.attn.qkv.register_forward_hook(hook)
                try:
                    blk.attn.qkv(blk.norm1(tok))  # stop early: nothing after qkv is needed
                finally:
                    handle.remove()
                attn = blk.attn
                qkv = captured["out"].reshape(tok.shape[0], tok.shape[1], 3, attn.num_heads, -1)
                out = qkv[:, :, _QKV_INDEX[self.facet]]  # (B, N, heads, head_dim)
                if self.facet == "query":
                    out = attn.q_norm(out)
                elif self.facet == "key":
                    out = attn.k_norm(out)
                out = out.flatten(2)  # head-major channels
            out = out[:, m.num_prefix_tokens :].float()
            return out.reshape(out.shape[0], gh, gw, out.shape[-1])

    def _features(self, batch: TeacherInput) -> np.ndarray:
        chunks = []
        for start in range(0, batch.batch_size, self.batch_size):
            x = self.preprocess(batch.rgb[start : start + self.batch_size])
            chunks.append(self.forward_tensor(x).cpu().numpy())
        return np.concatenate(chunks, axis=0)
