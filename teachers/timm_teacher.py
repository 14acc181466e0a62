"""Generic timm teacher: any timm ViT (one block's facet) or ConvNet (one feature stage).

Pipeline per batch: uint8 RGB -> [0, 1] -> the model's own ``pretrained_cfg`` mean/std (e.g.
ImageNet for DINO/DINOv2/ResNet, OpenAI's for CLIP, 0.5/0.5 for SigLIP; in the identity) ->
bilinear resize to ``input_size`` (align_corners=False; antialiased only when shrinking and
``antialias=True``) -> the network:

* **ViT** (a timm ``VisionTransformer``: DINO, DINOv2 with registers, CLIP, SigLIP, DeiT...),
  created with ``dynamic_img_size=True``: patch embed -> position embedding resampled to the
  input's token grid (``pos_interp="timm"``: timm's bicubic + antialias resampling;
  ``"dino"``: the official DINO / FeatureNeRF ``interpolate_pos_encoding``, bicubic with
  ``scale_factor=(g + 0.1) / sqrt(N)``, CLS-only ViTs) -> ``norm_pre`` -> blocks
  ``0 .. layer-1`` -> block ``layer``: its output (facet ``"token"``) or the key / query / value
  of its attention ``qkv`` (heads concatenated head-major, channel ``c = head * head_dim + d``;
  q/k after the block's ``q_norm`` / ``k_norm``), computation stopped right after ``qkv`` ->
  the ``num_prefix_tokens`` prefix tokens (CLS, registers, distillation) dropped ->
  (B, S/p, S/p, C) with patch size ``p``.
* **ConvNet** (anything timm builds with ``features_only=True``: ResNet, EfficientNet,
  ConvNeXt, RegNet...): the feature map ``out_indices=(layer,)`` of stride ``s`` (timm feature
  index: resnet50 3 = ``layer3``, stride 16, 1024 ch) -> (B, S/s, S/s, C).

Grid: cell ``(i, j)`` of the ``S/p`` (ViT) or ``S/s`` (ConvNet) grid covers input pixels
``[p*i, p*(i+1)) x [p*j, p*(j+1))`` (for a ViT exactly: it is that patch's token; a ConvNet's
receptive field is centred near that cell). ``input_size`` must be a multiple of ``p`` / ``s``.
Background cells are zeroed by the shared rule (:func:`teachers.base.zero_background`).

Weights: ``weights=None`` (or "hub") loads timm's hub checkpoint (``pretrained=True``; only
online, offline it fails at once with a TeacherError naming ``--weights PATH``); ``"random"``
is a seeded random init (tests, benchmarks); any other string is a local file (safetensors or
torch pickle) holding a timm state dict, optionally wrapped (``model`` / ``state_dict`` /
``teacher``...) and prefixed (``module.`` / ``backbone.``...). ViT loading is strict (a
classifier ``head.*`` is dropped); a ConvNet file must hold every tensor of the used stages and
nothing that the full architecture lacks. The identity records the file name and its sha256
(hub: the cached file's sha256 when found, else "unverified").
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
    forward_in_batches,
    hub_cache_sha256,
    resolve_device,
    resolve_dtype,
    sha256_file,
)

FACETS = ("key", "query", "value", "token")
POS_INTERP = ("timm", "dino")
_QKV_INDEX = {"query": 0, "key": 1, "value": 2}
_WRAPPER_KEYS = ("teacher", "model", "state_dict", "model_state", "module", "student")
_PREFIXES = ("module.", "backbone.", "_orig_mod.", "model.", "encoder.")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
#: the model ``--teacher timm`` builds without ``--model-id``
DEFAULT_MODEL = "vit_small_patch14_reg4_dinov2.lvd142m"


# ------------------------------------------------------------------------- weight files
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


def load_stage_weights_into(model: Any, path: str | os.PathLike, full_keys: set[str]) -> None:
    """Load a full-architecture ConvNet weights file into its ``features_only`` truncation.

    Every tensor of ``model`` must be in the file; keys the full architecture (``full_keys``:
    later stages, classifier) has but ``model`` lacks are ignored, any other key is an error.
    """
    model_keys = set(model.state_dict())
    state = map_dino_keys(load_state_dict_file(path), model_keys | full_keys)
    missing = sorted(model_keys - set(state))
    unexpected = sorted(set(state) - model_keys - full_keys)
    if missing or unexpected:
        raise TeacherError(
            f"weights file {path} does not match the model: {len(missing)} missing keys "
            f"{missing[:8]}, {len(unexpected)} unexpected keys {unexpected[:8]}"
        )
    try:
        model.load_state_dict({k: state[k] for k in model_keys}, strict=True)
    except RuntimeError as err:
        raise TeacherError(f"weights file {path} does not fit the model: {err}") from err


def _hub_weights_sha256(model: Any) -> str:
    """sha256 of the cached hub weights file, or "unverified" when it cannot be found."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    repo = cfg.get("hf_hub_id")
    return hub_cache_sha256(repo) if repo else "unverified"


# ------------------------------------------------------------------------- ViT helpers
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


def is_plain_cls_vit(model: Any) -> bool:
    """A ViT with one CLS token, no registers and a position embedding covering the CLS token
    (what the official DINO position interpolation handles)."""
    return (
        getattr(model, "cls_token", None) is not None
        and getattr(model, "reg_token", None) is None
        and not getattr(model, "no_embed_class", False)
        and getattr(model, "pos_embed", None) is not None
    )


class _Stop(Exception):
    """Raised by the qkv hook: nothing after the facet is needed."""


def _probe(model_name: str, model_kwargs: dict[str, Any]) -> Any:
    """The plain architecture (no weights), on the meta device when possible: family, feature
    info and full state-dict keys, at no init cost."""
    import timm
    import torch

    try:
        with torch.device("meta"):
            return timm.create_model(model_name, pretrained=False, **model_kwargs)
    except Exception:  # some inits cannot run on meta tensors: build it on the CPU
        pass
    try:
        with torch.random.fork_rng(devices=[]):
            return timm.create_model(model_name, pretrained=False, **model_kwargs)
    except TypeError as err:
        raise TeacherError(f"bad model_kwargs for {model_name}: {_one_line(err)}") from err


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(str(text).split())[:limit]


# ------------------------------------------------------------------------- the teacher
class TimmTeacher(Teacher):
    """Dense features of any timm ViT (block facet) or ConvNet (feature stage).

    Args:
        model_name: timm model name with tag, e.g. ``vit_small_patch14_reg4_dinov2.lvd142m``,
            ``vit_base_patch16_clip_224.openai``, ``vit_base_patch16_siglip_224``,
            ``resnet50``, ``tf_efficientnet_lite0``.
        weights: None / "hub" (timm hub checkpoint, needs network), "random" (seeded init) or
            a local weights file (safetensors or .pth state dict, timm layout).
        layer: ViT: 0-based block index; ConvNet: timm feature index (``out_indices``).
            Default: ViT ``3 * depth // 4`` (9 of 12), ConvNet the deepest stride-16 stage.
        facet: ViT only: "key" (default) | "query" | "value" | "token" (block output).
        input_size: square side the images are resized to; a multiple of the patch size /
            stage stride (default 224).
        device: "auto" | "cpu" | "cuda[:i]".
        dtype: "auto" (fp16 on CUDA, fp32 on CPU) | "fp32" | "fp16" | "bf16" (autocast).
        batch_size: images per forward pass.
        seed: torch seed of the random init (weights="random", and the init a file overwrites).
        model_kwargs: extra ``timm.create_model`` options (e.g. ``depth=2`` for tests).
        pos_interp: ViT position-embedding resampling, "timm" (default) or "dino" (official
            DINO interpolation, CLS-only ViTs).
        zero_bg: zero background cells (see :func:`teachers.base.zero_background`).
        antialias: antialias the bilinear resize when shrinking (default True).
    """

    name = "timm"
    version = "1"
    #: error hint for a hub checkpoint that cannot be fetched (``{hub}``: the hub id)
    _hub_hint = (
        "download timm's model.safetensors from https://huggingface.co/{hub} elsewhere and "
        "pass it with --weights PATH (weights=PATH)"
    )

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        weights: str | os.PathLike | None = None,
        layer: int | None = None,
        facet: str | None = None,
        input_size: int = 224,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 16,
        seed: int = 0,
        model_kwargs: dict[str, Any] | None = None,
        pos_interp: str = "timm",
        zero_bg: bool = True,
        antialias: bool = True,
    ) -> None:
        import timm
        import torch

        if facet is not None and facet not in FACETS:
            raise TeacherError(f"facet must be one of {FACETS}, got {facet!r}")
        if pos_interp not in POS_INTERP:
            raise TeacherError(f"pos_interp must be 'dino' or 'timm', got {pos_interp!r}")
        if not timm.is_model(model_name):
            raise TeacherError(f"unknown timm model {model_name!r}")
        self.model_name = model_name
        self.pos_interp = pos_interp
        self.input_size = int(input_size)
        self._device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self._device)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.model_kwargs = dict(model_kwargs or {})
        self.zero_bg = zero_bg
        self.antialias = bool(antialias)

        from timm.models.vision_transformer import VisionTransformer

        probe = _probe(model_name, self.model_kwargs)
        self._hub_id = str((probe.pretrained_cfg or {}).get("hf_hub_id") or "") or None
        self.family = "vit" if isinstance(probe, VisionTransformer) else "convnet"
        if self.family == "vit":
            self._init_vit(probe, weights, layer, facet)
        else:
            self._init_convnet(probe, weights, layer, facet)
        self.model.eval().requires_grad_(False).to(self._device)
        cfg = self.model.pretrained_cfg or {}
        self.mean = tuple(float(v) for v in cfg.get("mean", _IMAGENET_MEAN))
        self.std = tuple(float(v) for v in cfg.get("std", _IMAGENET_STD))
        self._mean_t = torch.tensor(self.mean, device=self._device).view(1, 3, 1, 1)
        self._std_t = torch.tensor(self.std, device=self._device).view(1, 3, 1, 1)

    # ---------------------------------------------------------------- construction
    def _init_vit(self, probe: Any, weights: Any, layer: int | None, facet: str | None) -> None:
        depth = len(probe.blocks)
        self.layer = (3 * depth) // 4 if layer is None else int(layer)
        self.facet = facet or "key"
        if self.pos_interp == "dino" and not is_plain_cls_vit(probe):
            raise TeacherError(
                f"{self.model_name}: pos_interp='dino' needs a CLS-only ViT; use 'timm'"
            )
        if not 0 <= self.layer < depth:
            raise TeacherError(
                f"layer {layer} out of range: {self.model_name} has {depth} blocks"
            )
        attn = probe.blocks[self.layer].attn
        qkv = getattr(attn, "qkv", None)
        if self.facet != "token" and (qkv is None or not hasattr(attn, "num_heads")):
            raise TeacherError(
                f"{self.model_name}: block {self.layer} has no fused attention qkv; "
                "use facet 'token'"
            )
        patch = probe.patch_embed.patch_size
        self.patch_size = (int(patch[0]), int(patch[1]))
        if self.input_size % self.patch_size[0] or self.input_size % self.patch_size[1]:
            raise TeacherError(f"input_size {self.input_size} is not a multiple of patch {patch}")
        self.stride = self.patch_size[0]
        self.num_prefix_tokens = int(probe.num_prefix_tokens)
        self._dim = (
            int(probe.embed_dim) if self.facet == "token" else int(attn.num_heads * attn.head_dim)
        )
        self.module_name = f"blocks.{self.layer}"
        self.model, self.weights_id, self.weights_sha256 = self._build(
            weights, {"num_classes": 0, "dynamic_img_size": True}, load_weights_into
        )

    def _init_convnet(
        self, probe: Any, weights: Any, layer: int | None, facet: str | None
    ) -> None:
        info = list(getattr(probe, "feature_info", None) or [])
        if not info:
            raise TeacherError(
                f"{self.model_name} is neither a timm VisionTransformer nor a model with "
                "feature stages (features_only)"
            )
        if facet not in (None, "token"):
            raise TeacherError(
                f"facet {facet!r} applies to ViTs only; {self.model_name} is a ConvNet "
                "(choose its stage with layer = timm feature index)"
            )
        strides = [int(d["reduction"]) for d in info]
        if layer is None:
            layer = max((i for i, s in enumerate(strides) if s <= 16), default=len(info) - 1)
        self.layer = int(layer)
        self.facet = "token"
        if not 0 <= self.layer < len(info):
            stages = ", ".join(f"{i}: stride {s}" for i, s in enumerate(strides))
            raise TeacherError(
                f"layer {layer} out of range: {self.model_name} has feature indices {stages}"
            )
        self.stride = strides[self.layer]
        self.patch_size = (self.stride, self.stride)
        if self.input_size % self.stride:
            raise TeacherError(
                f"input_size {self.input_size} is not a multiple of stage {self.layer}'s "
                f"stride {self.stride}"
            )
        self.num_prefix_tokens = 0
        self._dim = int(info[self.layer]["num_chs"])
        self.module_name = str(info[self.layer]["module"])
        full_keys = set(probe.state_dict())

        def load(model: Any, path: Path) -> None:
            load_stage_weights_into(model, path, full_keys)

        self.model, self.weights_id, self.weights_sha256 = self._build(
            weights, {"features_only": True, "out_indices": (self.layer,)}, load
        )

    def _create(self, pretrained: bool, family_kwargs: dict[str, Any]) -> Any:
        import timm

        kwargs = {**family_kwargs, **self.model_kwargs}  # model_kwargs win
        return timm.create_model(self.model_name, pretrained=pretrained, **kwargs)

    def _build(
        self, weights: str | os.PathLike | None, family_kwargs: dict[str, Any], load: Any
    ) -> tuple[Any, str, str]:
        """(model, weights id, weights sha256)."""
        import torch

        if weights is None or weights == "hub":
            try:
                model = self._create(True, family_kwargs)
            except Exception as err:
                hub = self._hub_id or f"timm/{self.model_name}"
                raise TeacherError(
                    f"could not fetch pretrained weights for {self.model_name!r} from the hub "
                    f"({type(err).__name__}: {_one_line(err)}). The hub is only tried online "
                    "(`fnerf-pipeline --online ...` or HF_HUB_OFFLINE=0); without network, "
                    + self._hub_hint.format(hub=hub)
                    + "."
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
                model = self._create(False, family_kwargs)
            return model, "random", "random-init"
        path = Path(weights)
        if not path.is_file():
            raise TeacherError(f"weights file not found: {path}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = self._create(False, family_kwargs)
        load(model, path)
        return model, path.name, sha256_file(path)

    # ---------------------------------------------------------------- properties
    @property
    def feature_dim(self) -> int:
        return self._dim

    @property
    def grid(self) -> tuple[int, int]:
        return self.input_size // self.patch_size[0], self.input_size // self.patch_size[1]

    def _model_identity(self, **family_keys: Any) -> dict[str, Any]:
        """The base identity, the model / weights / layer / input / normalisation keys, the
        family's own ``family_keys``, the seed of random weights and any model kwargs."""
        ident = self._base_identity()
        ident.update(
            model=self.model_name,
            weights=self.weights_id,
            weights_sha256=self.weights_sha256,
            layer=self.layer,
            input_size=self.input_size,
            resize="bilinear",
            antialias=self.antialias,
            normalize={"mean": list(self.mean), "std": list(self.std)},
            dtype=self.dtype,
            **family_keys,
        )
        if self.weights_id == "random":
            ident["seed"] = self.seed
        if self.model_kwargs:
            ident["model_kwargs"] = {k: self.model_kwargs[k] for k in sorted(self.model_kwargs)}
        return ident

    def _vit_identity(self) -> dict[str, Any]:
        """The identity of a ViT facet (the keys of the dino teacher's identity)."""
        return self._model_identity(
            facet=self.facet,
            channel_order="head-major" if self.facet != "token" else "embed",
            stride=self.patch_size[0],
            prefix_tokens="dropped",
            pos_interp=self.pos_interp,
        )

    def identity(self) -> dict[str, Any]:
        if self.family == "vit":
            return {**self._vit_identity(), "family": "vit",
                    "num_prefix_tokens": self.num_prefix_tokens}
        return self._model_identity(family="convnet", stage_module=self.module_name,
                                    stride=self.stride)

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
        """(B, 3, S, S) normalised tensor -> (B, h, w, C) float32 features (no bg zeroing)."""
        import torch

        use_amp = self.dtype != "fp32"
        amp_dtype = torch.float16 if self.dtype == "fp16" else torch.bfloat16
        device_type = self._device.split(":")[0]
        with torch.inference_mode(), torch.autocast(device_type, amp_dtype, enabled=use_amp):
            if self.family == "vit":
                return self._vit_forward(x)
            return self._convnet_forward(x)

    def _vit_forward(self, x: Any) -> Any:
        m = self.model
        blk = m.blocks[self.layer]
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
            out = blk(tok)
        else:
            captured: dict[str, Any] = {}

            def hook(_module: Any, _inputs: Any, output: Any) -> None:
                captured["qkv"] = output
                raise _Stop

            handle = blk.attn.qkv.register_forward_hook(hook)
            try:
                blk(tok)  # stops right after qkv
            except _Stop:
                pass
            finally:
                handle.remove()
            attn = blk.attn
            qkv = captured["qkv"].reshape(tok.shape[0], tok.shape[1], 3, attn.num_heads, -1)
            out = qkv[:, :, _QKV_INDEX[self.facet]]  # (B, N, heads, head_dim)
            if self.facet == "query":
                out = attn.q_norm(out)
            elif self.facet == "key":
                out = attn.k_norm(out)
            out = out.flatten(2)  # head-major channels
        out = out[:, m.num_prefix_tokens :].float()
        return out.reshape(out.shape[0], gh, gw, out.shape[-1])

    def _convnet_forward(self, x: Any) -> Any:
        f = self.model(x)[0].float()
        if str(getattr(self.model, "output_fmt", "NCHW")).endswith("NHWC"):
            f = f.permute(0, 3, 1, 2)
        if tuple(f.shape[-2:]) != self.grid:
            raise TeacherError(
                f"{self.model_name} stage {self.layer} gave a {tuple(f.shape[-2:])} map at "
                f"{self.input_size} px, expected {self.grid}"
            )
        return f.permute(0, 2, 3, 1)

    def _features(self, batch: TeacherInput) -> np.ndarray:
        return forward_in_batches(batch.rgb, self.batch_size,
                                  lambda x: self.forward_tensor(self.preprocess(x)))
