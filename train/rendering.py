"""Volume rendering as small pure torch functions (nerfacc style).

Shapes use ``...`` for any batch of rays (e.g. (B, R)) and ``S`` for samples along a ray.
Ray parameters ``t`` are distances along unit-length directions (see :mod:`train.rays`).

Official FeatureNeRF / pixelNeRF renderer (``src/render/nerf_embed.py``) reproduced here:
64 stratified coarse samples, 16 importance + 16 depth-jitter fine samples, alpha
``1 - exp(-delta * relu(sigma))`` with the last interval ``far - t_last`` (not 1e10), no sigma
noise, black background, every quantity composited with the same weights and *no* division by
opacity. Deviations are documented on each function.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "stratified_samples",
    "importance_samples",
    "depth_jitter_samples",
    "compositing_weights",
    "composite",
    "expected_depth",
    "opacity",
]


def _as_tensor(x: Tensor | float, like: Tensor) -> Tensor:
    return x if isinstance(x, Tensor) else torch.full_like(like, float(x))


def stratified_samples(
    near: Tensor,
    far: Tensor | float,
    n_samples: int,
    perturb: bool,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Stratified samples linear in distance: one sample per equal-width bin of [near, far].

    Args:
        near: (...) per-ray near distance (its shape defines the ray batch).
        far: (...) or float, per-ray far distance.
        n_samples: S.
        perturb: uniform jitter inside each bin (training); otherwise the bin *midpoints*
            (deterministic). Deviation: official pixelNeRF always jitters, also at eval time.
        generator: torch RNG for the jitter (``None``: global RNG).

    Returns:
        t: (..., S) sorted, in [near, far].
    """
    far = _as_tensor(far, near)
    step = 1.0 / n_samples
    base = torch.arange(n_samples, device=near.device, dtype=near.dtype) * step  # bin left edges
    base = base.expand(*near.shape, n_samples)
    if perturb:
        u = torch.rand(base.shape, generator=generator, device=near.device, dtype=near.dtype)
    else:
        u = torch.full_like(base, 0.5)
    s = base + u * step
    return near[..., None] * (1.0 - s) + far[..., None] * s


def importance_samples(
    t: Tensor,
    weights: Tensor,
    n_samples: int,
    perturb: bool = True,
    generator: torch.Generator | None = None,
    near: Tensor | float | None = None,
    far: Tensor | float | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Inverse-CDF (importance) samples from a piecewise-constant pdf along each ray (as NeRF).

    Sample ``i`` owns the bin between the midpoints to its neighbours; the first bin starts at
    ``near`` (default ``t[..., 0]``) and the last ends at ``far`` (default ``t[..., -1]``). With
    stratified coarse samples these bins are the strata, which matches pixelNeRF's
    ``sample_fine`` (a bin drawn with probability ``w + 1e-5``, then a uniform position in it).

    Args:
        t: (..., S) sorted sample distances. weights: (..., S) compositing weights (detached
            here; ``eps`` is added as in the official code so empty rays sample uniformly).
        n_samples: N new samples.
        perturb: random ``u`` (training); otherwise evenly spaced ``u = (k + 0.5) / N``.
        generator: torch RNG (``None``: global RNG).

    Returns:
        (..., N) sorted new distances inside [near, far].
    """
    t = t.detach()
    w = weights.detach() + eps
    mids = 0.5 * (t[..., 1:] + t[..., :-1])
    lo = t[..., :1] if near is None else _as_tensor(near, t[..., 0])[..., None].to(t)
    hi = t[..., -1:] if far is None else _as_tensor(far, t[..., 0])[..., None].to(t)
    edges = torch.cat([lo, mids, hi], dim=-1)  # (..., S+1)
    pdf = w / w.sum(-1, keepdim=True)
    cdf = torch.cumsum(pdf, -1)
    cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], -1)  # (..., S+1)
    cdf[..., -1] = 1.0
    shape = (*t.shape[:-1], n_samples)
    if perturb:
        u = torch.rand(shape, generator=generator, device=t.device, dtype=t.dtype)
        u, _ = torch.sort(u, dim=-1)
    else:
        u = (torch.arange(n_samples, device=t.device, dtype=t.dtype) + 0.5) / n_samples
        u = u.expand(shape).contiguous()
    idx = torch.searchsorted(cdf.contiguous(), u, right=True)  # in 1..S
    below = (idx - 1).clamp(0, cdf.shape[-1] - 1)
    above = idx.clamp(0, cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(-1, below), cdf.gather(-1, above)
    e_lo, e_hi = edges.gather(-1, below), edges.gather(-1, above)
    denom = cdf_hi - cdf_lo
    frac = torch.where(denom > 0, (u - cdf_lo) / denom.clamp_min(1e-12), torch.zeros_like(u))
    return e_lo + frac.clamp(0.0, 1.0) * (e_hi - e_lo)


def depth_jitter_samples(
    depth: Tensor,
    near: Tensor | float,
    far: Tensor | float,
    n_samples: int,
    std: float = 0.01,
    perturb: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Gaussian samples around a depth, clamped to [near, far] (pixelNeRF ``n_fine_depth``).

    Args:
        depth: (...) coarse expected depth (detached here; the official code keeps its graph).
        near, far: (...) or floats. n_samples: N (16 official). std: 0.01 official.
        perturb: ``N(0, std)`` noise (training); otherwise the deterministic Gaussian quantiles
            ``std * Phi^-1((k + 0.5) / N)`` (deviation: official draws noise also at eval).
        generator: torch RNG (``None``: global RNG).

    Returns:
        (..., N) distances (not sorted when ``perturb``).
    """
    depth = depth.detach()
    shape = (*depth.shape, n_samples)
    if perturb:
        noise = torch.randn(shape, generator=generator, device=depth.device, dtype=depth.dtype)
    else:
        q = (torch.arange(n_samples, device=depth.device, dtype=depth.dtype) + 0.5) / n_samples
        noise = (math.sqrt(2.0) * torch.erfinv(2.0 * q - 1.0)).expand(shape)
    t = depth[..., None] + std * noise
    lo = _as_tensor(near, depth)[..., None]
    hi = _as_tensor(far, depth)[..., None]
    return torch.maximum(torch.minimum(t, hi), lo)


def compositing_weights(sigma: Tensor, t: Tensor, far: Tensor | float) -> Tensor:
    """NeRF compositing weights ``w_i = T_i * alpha_i``.

    ``alpha_i = 1 - exp(-delta_i * relu(sigma_i))`` with ``delta_i = t_{i+1} - t_i`` and the last
    interval ``far - t_last`` (official; not 1e10). Transmittance
    ``T_i = exp(-sum_{j<i} delta_j relu(sigma_j))`` (exact; the official cumprod adds 1e-10).

    Args:
        sigma: (..., S) densities. t: (..., S) sorted distances. far: (...) or float.

    Returns:
        (..., S) weights; their sum is the ray opacity (<= 1).
    """
    far_t = _as_tensor(far, t[..., -1])
    deltas = torch.cat([t[..., 1:] - t[..., :-1], (far_t - t[..., -1])[..., None]], dim=-1)
    tau = deltas.clamp_min(0.0) * torch.relu(sigma)  # optical thickness per interval
    alpha = 1.0 - torch.exp(-tau)
    accum = torch.cumsum(tau, dim=-1)
    trans = torch.exp(-torch.cat([torch.zeros_like(accum[..., :1]), accum[..., :-1]], dim=-1))
    return alpha * trans


def composite(weights: Tensor, values: Tensor) -> Tensor:
    """Weighted sum along the ray for any channel count (rgb, feature, coordinate, internal).

    No division by opacity and no background term (black background, features -> 0 in empty
    space, as official).

    Args:
        weights: (..., S). values: (..., S, C).

    Returns:
        (..., C).
    """
    return (weights[..., None] * values).sum(dim=-2)


def expected_depth(weights: Tensor, t: Tensor, normalize: bool = False) -> Tensor:
    """Expected ray distance ``sum_i w_i t_i`` (official, unnormalised: -> 0 on empty rays).

    Args:
        weights: (..., S). t: (..., S).
        normalize: divide by the opacity (clamped at 1e-8) to get the mean termination distance.

    Returns:
        (...) distance along unit rays (see :func:`train.rays.distance_to_z` for z-depth).
    """
    d = (weights * t).sum(-1)
    return d / weights.sum(-1).clamp_min(1e-8) if normalize else d


def opacity(weights: Tensor) -> Tensor:
    """Accumulated opacity ``sum_i w_i`` (...,) in [0, 1]."""
    return weights.sum(-1)
