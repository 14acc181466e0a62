"""Latent-diffusion teacher: Stable-Diffusion UNet decoder features (FeatureNeRF "diff_512").

Recipe (FeatureNeRF's LDM extraction script is not public; choices documented here):

1. RGB uint8 -> [0, 1] -> bilinear resize to ``input_size`` (default 512; antialiased only when
   shrinking) -> [-1, 1].
2. VAE encode; the latent is the posterior *mean* (no sampling), ``(mean - shift) * scaling``.
3. Forward diffusion to timestep ``t`` (default 100, the "A Tale of Two Features" / SD-DINO
   setting; DIFT uses 261): ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` with
   ``abar`` from the model folder's scheduler config (DDPM betas; SD-1.x defaults
   scaled_linear 0.00085..0.012 over 1000 steps when the folder has none). ``eps`` is drawn
   once per call from ``torch.Generator("cpu").manual_seed(noise_seed)`` with shape
   (ensemble, 4, h, w) and shared by every image, so an image's features do not depend on the
   batch it is in. With ``ensemble > 1`` the features are averaged over the noise draws.
4. One UNet pass conditioned on the CLIP text embedding of ``prompt_template.format(category=)``
   (default "a photo of a {category}"); ``text_encoder="none"`` conditions on zeros instead
   (unconditional; needs no ``transformers``).
5. Forward hooks on ``unet.up_blocks[i]`` for ``blocks`` (default (2, 3): 640 + 320 = 960
   channels for SD-1.x); the pass stops after the last hooked block. Every map is resized
   bilinearly (align_corners=False, antialiased when shrinking) to ``grid`` and concatenated
   in ``blocks`` order -> (B, h, w, C).

Default grid (cache size): ``DEFAULT_GRID`` = 16x16, all 960 channels. The feature store keeps
float16 (V, h, w, C) per object, so at 50 views the paper setting (``grid=None``: the largest
hooked map, 64x64 at 512 px) costs 64*64*960*2*50 B = 393 MB per object (2.7 TB for the 6778
ShapeNet chairs); the budget is 40 MB per object (800 KB per view, DINO's 32x32x384 is 39 MB).
16x16x960 = 24.6 MB per object keeps every channel of both up blocks (block 2 is 32x32 at
512 px, block 3 64x64; both shrink with antialiasing) in 8 px cells at the 128 px render size.
Finer cells within the budget: ``grid=[32, 32]`` with the distill stage's ``--pca 384``
(39.3 MB); the paper's 64x64: ``--option grid=null`` (or ``grid=[64, 64]``).

Model: a hub id (default ``stable-diffusion-v1-5/stable-diffusion-v1-5``, needs network or the
HF cache) or a local ``save_pretrained`` folder with ``unet/ vae/ [text_encoder/ tokenizer/]
[scheduler/]``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from teachers.base import (
    Teacher,
    TeacherError,
    TeacherInput,
    forward_in_batches,
    resolve_device,
    resolve_dtype,
    sha256_file,
)

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SD_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
#: default feature grid: 24.6 MB per 50-view object in fp16 (module docstring); None = paper
DEFAULT_GRID = (16, 16)


class _StopForward(Exception):
    """Raised by the last hook to skip the rest of the UNet."""


def folder_weights_sha256(folder: Path) -> str:
    """sha256 of the weights in one component folder (several shards: sha256 of their hashes)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        return "none"
    if len(files) == 1:
        return sha256_file(files[0])
    joined = "".join(f"{p.name}:{sha256_file(p)}\n" for p in files)
    return hashlib.sha256(joined.encode()).hexdigest()


def alphas_cumprod(config: dict[str, Any]) -> np.ndarray:
    """(T,) float64 cumulative alpha products of a DDPM beta schedule config."""
    n = int(config.get("num_train_timesteps", 1000))
    b0, b1 = float(config.get("beta_start", 0.0001)), float(config.get("beta_end", 0.02))
    schedule = config.get("beta_schedule", "linear")
    if config.get("trained_betas") is not None:
        betas = np.asarray(config["trained_betas"], dtype=np.float64)
    elif schedule == "linear":
        betas = np.linspace(b0, b1, n, dtype=np.float64)
    elif schedule == "scaled_linear":
        betas = np.linspace(b0**0.5, b1**0.5, n, dtype=np.float64) ** 2
    else:
        raise TeacherError(f"unsupported beta_schedule {schedule!r} (linear, scaled_linear)")
    return np.cumprod(1.0 - betas)


def up_block_sizes(latent: int, n_blocks: int) -> list[int]:
    """Spatial side of each ``up_blocks[i]`` output for a square latent of side ``latent``."""
    return [latent // 2 ** max(n_blocks - 2 - i, 0) for i in range(n_blocks)]


class LdmTeacher(Teacher):
    """Stable-Diffusion UNet up-block features.

    Args:
        model: hub id or local folder (``save_pretrained`` layout).
        blocks: indices of ``unet.up_blocks`` to hook, concatenated in this order.
        timestep: diffusion timestep t in [0, T).
        prompt_template: text prompt, ``{category}`` is replaced by the batch category.
        text_encoder: "clip" (tokenizer + CLIPTextModel from the folder; needs transformers) or
            "none" (zero conditioning).
        input_size: square side fed to the VAE (multiple of VAE factor x UNet factor, e.g. 64).
        grid: (h, w) output grid (default ``DEFAULT_GRID``, 16x16); None = the largest hooked
            map (the paper setting, 64x64 at 512 px).
        noise_seed: seed of the shared noise.
        ensemble: number of noise draws averaged.
        device, dtype, batch_size, zero_bg: as for :class:`teachers.dino.DinoTeacher`.
    """

    name = "ldm"
    version = "1"

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        blocks: tuple[int, ...] | list[int] = (2, 3),
        timestep: int = 100,
        prompt_template: str = "a photo of a {category}",
        text_encoder: str = "clip",
        input_size: int = 512,
        grid: tuple[int, int] | list[int] | None = DEFAULT_GRID,
        noise_seed: int = 0,
        ensemble: int = 1,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 4,
        zero_bg: bool = True,
    ) -> None:
        if text_encoder not in ("clip", "none"):
            raise TeacherError(f"text_encoder must be 'clip' or 'none', got {text_encoder!r}")
        self.model_ref = str(model)
        self.blocks = tuple(int(b) for b in blocks)
        self.timestep = int(timestep)
        self.prompt_template = prompt_template
        self.text_encoder_kind = text_encoder
        self.input_size = int(input_size)
        self.noise_seed = int(noise_seed)
        self.ensemble = int(ensemble)
        self._device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self._device)
        self.batch_size = int(batch_size)
        self.zero_bg = zero_bg
        if not self.blocks or self.ensemble < 1:
            raise TeacherError("blocks must be non-empty and ensemble >= 1")

        self._load()
        n_up = len(self.unet.up_blocks)
        bad = [b for b in self.blocks if not 0 <= b < n_up]
        if bad:
            raise TeacherError(f"up_blocks {bad} out of range: the UNet has {n_up} up blocks")
        vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        unet_factor = 2 ** (len(self.unet.config.block_out_channels) - 1)
        if self.input_size % (vae_factor * unet_factor):
            raise TeacherError(
                f"input_size {input_size} must be a multiple of {vae_factor * unet_factor} "
                f"(VAE x{vae_factor}, UNet x{unet_factor})"
            )
        self.latent_size = self.input_size // vae_factor
        sizes = up_block_sizes(self.latent_size, n_up)
        self.map_sizes = [sizes[b] for b in self.blocks]
        out_ch = list(reversed(self.unet.config.block_out_channels))
        self.block_channels = [int(out_ch[b]) for b in self.blocks]
        side = max(self.map_sizes)
        self._grid = (side, side) if grid is None else (int(grid[0]), int(grid[1]))
        self.abar = alphas_cumprod(self.scheduler_config)
        if not 0 <= self.timestep < len(self.abar):
            raise TeacherError(f"timestep {timestep} outside [0, {len(self.abar)})")
        self._text_cache: dict[str, Any] = {}

    # ---------------------------------------------------------------- loading
    def _load(self) -> None:
        try:
            from diffusers import AutoencoderKL, UNet2DConditionModel
        except ImportError as err:
            raise TeacherError(f"the LDM teacher needs diffusers: {err}") from err

        ref = self.model_ref
        if self._clip and importlib.util.find_spec("transformers") is None:
            raise TeacherError(
                "text_encoder='clip' needs the `transformers` package (not installed); install "
                "it or use text_encoder='none' (unconditional features)"
            )
        local = Path(ref).is_dir()
        if local:
            need = ["unet", "vae"] + (["text_encoder", "tokenizer"] if self._clip else [])
            missing = [s for s in need if not (Path(ref) / s).is_dir()]
            if missing:
                raise TeacherError(
                    f"model folder {ref} lacks subfolders {missing} (expected the diffusers "
                    "save_pretrained layout: unet/ vae/ text_encoder/ tokenizer/ scheduler/)"
                )
        elif Path(ref).exists() or ref.startswith((".", "/", "~")) or ref.count("/") > 1:
            raise TeacherError(f"model folder not found: {ref}")
        try:
            self.unet = UNet2DConditionModel.from_pretrained(ref, subfolder="unet")
            self.vae = AutoencoderKL.from_pretrained(ref, subfolder="vae")
        except (OSError, ValueError) as err:
            raise TeacherError(
                f"could not load the diffusion model {ref!r} ({type(err).__name__}: "
                f"{str(err)[:300]}). Offline, pass a local folder written by save_pretrained "
                "(or `huggingface-cli download` it on a connected machine first)."
            ) from err
        self.scheduler_config, self.scheduler_source = self._scheduler_config(ref)
        self.text_model = self.tokenizer = None
        if self._clip:
            self.tokenizer, self.text_model = self._load_clip(ref)
            self.text_model.eval().requires_grad_(False).to(self._device)
        for m in (self.unet, self.vae):
            m.eval().requires_grad_(False).to(self._device)
        self.shas = self._weights_shas(ref, local)

    @property
    def _clip(self) -> bool:
        return self.text_encoder_kind == "clip"

    def _load_clip(self, ref: str) -> tuple[Any, Any]:
        try:
            from transformers import CLIPTextModel, CLIPTokenizer
        except ImportError as err:
            raise TeacherError(
                "text_encoder='clip' needs the `transformers` package (not installed); install "
                "it or use text_encoder='none' (unconditional features)"
            ) from err
        try:
            tok = CLIPTokenizer.from_pretrained(ref, subfolder="tokenizer")
            enc = CLIPTextModel.from_pretrained(ref, subfolder="text_encoder")
        except (OSError, ValueError) as err:
            raise TeacherError(f"could not load the CLIP text encoder of {ref!r}: {err}") from err
        return tok, enc

    @staticmethod
    def _scheduler_config(ref: str) -> tuple[dict[str, Any], str]:
        from diffusers import DDPMScheduler

        try:
            cfg = dict(DDPMScheduler.load_config(ref, subfolder="scheduler"))
        except (OSError, ValueError):
            return dict(SD_SCHEDULER), "sd-default"
        keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
        return {k: cfg[k] for k in keys if cfg.get(k) is not None}, "model"

    def _weights_shas(self, ref: str, local: bool) -> dict[str, str]:
        parts = ["unet", "vae"] + (["text_encoder"] if self._clip else [])
        if local:
            return {p: folder_weights_sha256(Path(ref) / p) for p in parts}
        shas = {}
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return {p: "unverified" for p in parts}
        for p in parts:
            shas[p] = "unverified"
            for fname in ("diffusion_pytorch_model.safetensors", "model.safetensors"):
                found = try_to_load_from_cache(ref, f"{p}/{fname}")
                if isinstance(found, str) and os.path.isfile(found):
                    shas[p] = sha256_file(found)
                    break
        return shas

    # ---------------------------------------------------------------- properties
    @property
    def feature_dim(self) -> int:
        return sum(self.block_channels)

    @property
    def grid(self) -> tuple[int, int]:
        return self._grid

    def identity(self) -> dict[str, Any]:
        ident = self._base_identity()
        local = Path(self.model_ref).is_dir()
        ident.update(
            model=Path(self.model_ref).name if local else self.model_ref,
            model_source="folder" if local else "hub",
            weights_sha256=dict(self.shas),
            blocks=list(self.blocks),
            block_channels=list(self.block_channels),
            timestep=self.timestep,
            scheduler=dict(self.scheduler_config, source=self.scheduler_source),
            text_encoder=self.text_encoder_kind,
            prompt_template=self.prompt_template if self._clip else None,
            input_size=self.input_size,
            resize="bilinear",
            latent="posterior mean * scaling_factor",
            noise_seed=self.noise_seed,
            ensemble=self.ensemble,
            dtype=self.dtype,
        )
        return ident

    # ---------------------------------------------------------------- forward
    def prompt(self, category: str) -> str:
        return self.prompt_template.format(category=category)

    def text_embedding(self, category: str) -> Any:
        """(1, L, D) conditioning for ``category`` (cached per prompt)."""
        import torch

        key = self.prompt(category) if self._clip else ""
        if key not in self._text_cache:
            if self._clip:
                n_pos = int(self.text_model.config.max_position_embeddings)
                ids = self.tokenizer(
                    [key],
                    padding="max_length",
                    max_length=min(int(self.tokenizer.model_max_length), n_pos),
                    truncation=True,
                    return_tensors="pt",
                ).input_ids.to(self._device)
                with torch.inference_mode():
                    emb = self.text_model(ids)[0].float()
            else:
                dim = self.unet.config.cross_attention_dim
                emb = torch.zeros(1, 77, int(dim), device=self._device)
            if emb.shape[-1] != self.unet.config.cross_attention_dim:
                raise TeacherError(
                    f"text embedding width {emb.shape[-1]} != UNet cross_attention_dim "
                    f"{self.unet.config.cross_attention_dim}"
                )
            self._text_cache[key] = emb
        return self._text_cache[key]

    def noise(self) -> Any:
        """(ensemble, C_latent, l, l) shared noise from the seeded CPU generator."""
        import torch

        g = torch.Generator(device="cpu").manual_seed(self.noise_seed)
        c = int(self.unet.config.in_channels)
        shape = (self.ensemble, c, self.latent_size, self.latent_size)
        return torch.randn(shape, generator=g).to(self._device)

    def preprocess(self, rgb: np.ndarray) -> Any:
        """(B, H, W, 3) uint8 -> (B, 3, S, S) float32 in [-1, 1] on the device."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(rgb)).to(self._device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        size = (self.input_size, self.input_size)
        if tuple(x.shape[-2:]) != size:
            shrink = x.shape[-2] > size[0] or x.shape[-1] > size[1]
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
        return x * 2.0 - 1.0

    def forward_tensor(self, x: Any, category: str) -> Any:
        """(B, 3, S, S) in [-1, 1] -> (B, h, w, C) float32 features (no background zeroing)."""
        import torch
        import torch.nn.functional as F

        use_amp = self.dtype != "fp32"
        amp_dtype = torch.float16 if self.dtype == "fp16" else torch.bfloat16
        device_type = self._device.split(":")[0]
        b = x.shape[0]
        last = max(self.blocks)
        captured: dict[int, Any] = {}

        def make_hook(idx: int) -> Any:
            def hook(_m: Any, _i: Any, out: Any) -> None:
                captured[idx] = out[0] if isinstance(out, tuple) else out
                if idx == last:
                    raise _StopForward

            return hook

        with torch.inference_mode(), torch.autocast(device_type, amp_dtype, enabled=use_amp):
            cfg = self.vae.config
            latent = self.vae.encode(x).latent_dist.mean.float()
            shift = getattr(cfg, "shift_factor", None) or 0.0
            latent = (latent - shift) * cfg.scaling_factor
            abar = float(self.abar[self.timestep])
            cond = self.text_embedding(category).expand(b, -1, -1)
            t = torch.full((b,), self.timestep, device=self._device, dtype=torch.long)
            total = None
            handles = [
                self.unet.up_blocks[i].register_forward_hook(make_hook(i))
                for i in sorted(set(self.blocks))
            ]
            try:
                for eps in self.noise():
                    noisy = abar**0.5 * latent + (1.0 - abar) ** 0.5 * eps.unsqueeze(0)
                    captured.clear()
                    try:
                        self.unet(noisy, t, encoder_hidden_states=cond)
                    except _StopForward:
                        pass
                    maps = [self._resize(captured[i].float(), F) for i in self.blocks]
                    feat = torch.cat(maps, dim=1)
                    total = feat if total is None else total + feat
            finally:
                for h in handles:
                    h.remove()
            feat = total / self.ensemble
            return feat.permute(0, 2, 3, 1).contiguous()

    def _resize(self, fmap: Any, F: Any) -> Any:
        if tuple(fmap.shape[-2:]) == self._grid:
            return fmap
        shrink = fmap.shape[-2] > self._grid[0] or fmap.shape[-1] > self._grid[1]
        return F.interpolate(
            fmap, size=self._grid, mode="bilinear", align_corners=False, antialias=shrink
        )

    def _features(self, batch: TeacherInput) -> np.ndarray:
        return forward_in_batches(batch.rgb, self.batch_size, lambda x: self.forward_tensor(
            self.preprocess(x), batch.category))
