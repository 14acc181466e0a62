"""Procedural tables: rectangular/square/round tops; four legs, pedestal or trestle bases;
optional apron and stretchers (label ``support``).

Build frame: metres, +Y up, front towards -Z, right towards +X; the top is centred on x=z=0.

Keypoints: top corners on the top surface (round tops: the rim at 45 degrees); leg tips at the
floor under each leg, the end of a cross foot or the ends of the trestle feet (a disc foot has
no leg keypoints).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from renderers.asset import ShapeAsset
from renderers.categories import CATEGORIES
from renderers.procedural import common as c
from renderers.procedural.common import Keypoint, PartBuilder

CATEGORY = "table"
SIDES = (("l", -1.0), ("r", 1.0))
ENDS = (("front", -1.0), ("back", 1.0))


@dataclass
class TableParams:
    """Style choices and proportions of one table (metres)."""

    top_shape: str
    base: str
    support: str
    leg_shape: str
    height_class: str
    top_w: float
    top_d: float
    top_t: float
    height: float
    leg_r: float
    leg_inset: float
    splay: float
    apron_h: float
    stretcher_h: float
    foot: str


PRIMARY = ("four_legs", "pedestal", "four_legs", "trestle")
"""Base styles cycled by seed (four legs twice as often)."""


def sample_params(rng: np.random.Generator, base: str) -> TableParams:
    """Draw a top shape that suits ``base``, then proportions."""
    tops = {
        "four_legs": (["rect", "square", "round"], [0.5, 0.2, 0.3]),
        "pedestal": (["square", "round"], [0.3, 0.7]),
        "trestle": (["rect", "square"], [0.8, 0.2]),
    }[base]
    top_shape = c.choice(rng, *tops)
    height_class = c.choice(rng, ["dining", "coffee", "bar"], [0.6, 0.25, 0.15])
    height = {"dining": (0.70, 0.78), "coffee": (0.38, 0.50), "bar": (0.92, 1.05)}[height_class]
    if top_shape == "rect":
        w = c.uniform(rng, 1.0, 2.0)
        d = w * c.uniform(rng, 0.4, 0.7)
    else:
        w = d = c.uniform(rng, 0.7, 1.2) if height_class != "bar" else c.uniform(rng, 0.6, 0.85)
    support = "stretcher" if base == "trestle" else "none"
    if base == "four_legs":
        support = c.choice(rng, ["none", "apron", "stretcher", "both"], [0.3, 0.3, 0.2, 0.2])
    return TableParams(
        top_shape=top_shape,
        base=base,
        support=support,
        leg_shape=c.choice(rng, ["square", "round", "tapered", "splayed"]),
        height_class=height_class,
        top_w=w,
        top_d=d,
        top_t=c.uniform(rng, 0.025, 0.07),
        height=c.uniform(rng, *height),
        leg_r=c.uniform(rng, 0.02, 0.045),
        leg_inset=c.uniform(rng, 0.03, 0.12),
        splay=c.uniform(rng, 0.03, 0.08),
        apron_h=c.uniform(rng, 0.06, 0.12),
        stretcher_h=c.uniform(rng, 0.10, 0.25),
        foot=c.choice(rng, ["cross", "disc"]) if base == "pedestal" else "none",
    )


@dataclass
class Palette:
    """Colours of one table."""

    top_material: str
    top: np.ndarray
    leg: np.ndarray
    leg_is_wood: bool


def sample_palette(rng: np.random.Generator) -> Palette:
    top_material = c.choice(rng, ["wood", "painted", "stone", "glass"], [0.5, 0.2, 0.15, 0.15])
    top = {
        "wood": lambda: c.pick_color(rng, "wood"),
        "painted": lambda: c.pick_color(rng, "plastic"),
        "stone": lambda: c.pick_color(rng, "stone"),
        "glass": lambda: c.pick_color(rng, "glass"),
    }[top_material]()
    leg_is_wood = top_material == "wood" and rng.random() < 0.7
    leg = top * c.uniform(rng, 0.8, 1.05) if leg_is_wood else c.pick_color(rng, "metal")
    return Palette(top_material, top, np.clip(leg, 0, 1), leg_is_wood)


def _top_colors(rng, pal: Palette, piece: c.Piece) -> np.ndarray:
    cen = c.face_midpoints(piece)
    if pal.top_material == "wood":
        return c.wood_grain(cen, pal.top, c.X, rng, 0.05)
    if pal.top_material == "stone":
        return c.speckle(c.solid(pal.top, len(cen)), rng, 0.12)
    if pal.top_material == "painted" and rng.random() < 0.3:
        return c.checker(cen, pal.top, pal.top * 0.6, 0.1)
    return c.solid(pal.top, len(cen))


def _wood_or_metal(rng, pal: Palette, piece: c.Piece, axis) -> np.ndarray:
    cen = c.face_midpoints(piece)
    if pal.leg_is_wood:
        return c.wood_grain(cen, pal.leg, axis, rng, 0.025)
    return c.speckle(c.solid(pal.leg, len(cen)), rng, 0.03)


# --------------------------------------------------------------------------- top


def build_top(b: PartBuilder, p: TableParams, pal: Palette, rng) -> dict:
    """Add the top (label ``top``); returns its four top-surface corner keypoints."""
    y0 = p.height - p.top_t
    if p.top_shape == "round":
        r = p.top_w / 2
        radii = r * np.array([0.0, 0.25, 0.5, 0.75, 0.9, 1.0, 1.0, 0.9, 0.5, 0.0])
        ys = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], np.float64) * p.top_t + y0
        piece = c.revolve(np.stack([radii, ys], 1)[::-1], 48)
        cx = cz = r / np.sqrt(2) * 0.995
    else:
        piece = c.box((0, y0 + p.top_t / 2, 0), (p.top_w, p.top_t, p.top_d), cell=0.06, max_div=24)
        cx, cz = p.top_w / 2 - 0.003, p.top_d / 2 - 0.003
    pid = b.add(piece, "top", _top_colors(rng, pal, piece))
    return {
        f"top_{end}_{side}": Keypoint(np.array([sx * cx, p.height, sz * cz]), (pid,))
        for end, sz in ENDS
        for side, sx in SIDES
    }


# --------------------------------------------------------------------------- four legs


def leg_tops(p: TableParams) -> dict:
    """(end, side) -> (3,) leg top centre just under the top."""
    y = p.height - p.top_t * 0.5
    if p.top_shape == "round":
        cx = cz = (p.top_w / 2 - p.leg_inset - p.leg_r) / np.sqrt(2)
    else:
        cx, cz = p.top_w / 2 - p.leg_inset - p.leg_r, p.top_d / 2 - p.leg_inset - p.leg_r
    return {(end, side): np.array([sx * cx, y, sz * cz]) for end, sz in ENDS for side, sx in SIDES}


def build_four_legs(b: PartBuilder, p: TableParams, pal: Palette, rng) -> tuple[dict, dict]:
    """Add four legs; returns leg tip keypoints and (end, side) -> (top, foot) axis ends."""
    pieces, kps, axes = [], {}, {}
    for key, top in leg_tops(p).items():
        foot = top * [1, 0, 1]
        if p.leg_shape == "splayed":
            foot = foot + np.sign(top) * [p.splay, 0, p.splay]
        if p.leg_shape == "square":
            pieces.append(c.beam(foot, top, 2 * p.leg_r, 2 * p.leg_r, c.X))
        else:
            r_bot = p.leg_r * (1.0 if p.leg_shape == "round" else 0.55)
            pieces.append(c.tube(foot, top, max(0.012, r_bot), p.leg_r, 14))
        kps[f"leg_{key[0]}_{key[1]}"] = foot
        axes[key] = (top, foot)
    piece = c.merge(*pieces)
    pid = b.add(piece, "leg", _wood_or_metal(rng, pal, piece, c.Y))
    return {k: Keypoint(v, (pid,)) for k, v in kps.items()}, axes


def build_supports(b: PartBuilder, p: TableParams, pal: Palette, rng, axes: dict) -> None:
    """Add apron boards and/or stretchers between the four legs (label ``support``)."""
    pieces = []
    order = [("front", "l"), ("front", "r"), ("back", "r"), ("back", "l")]
    if p.support in ("apron", "both"):
        y = p.height - p.top_t - p.apron_h / 2 + 0.005
        t = max(0.02, 0.5 * p.leg_r)
        for k0, k1 in zip(order, order[1:] + order[:1], strict=True):
            a, bb = axes[k0][0].copy(), axes[k1][0].copy()
            a[1] = bb[1] = y
            pieces.append(c.beam(a, bb, p.apron_h, t, c.Y))
    if p.support in ("stretcher", "both"):
        frac = p.stretcher_h / p.height
        pts = {k: top + (foot - top) * (1 - frac) for k, (top, foot) in axes.items()}
        r = max(0.012, 0.45 * p.leg_r)
        if p.top_shape == "rect":  # H-stretcher
            mids = []
            for end in ("front", "back"):
                pieces.append(c.tube(pts[(end, "l")], pts[(end, "r")], r, r, 10))
                mids.append((pts[(end, "l")] + pts[(end, "r")]) / 2)
            pieces.append(c.tube(mids[0], mids[1], r, r, 10))
        else:  # box stretcher
            for k0, k1 in zip(order, order[1:] + order[:1], strict=True):
                pieces.append(c.tube(pts[k0], pts[k1], r, r, 10))
    if pieces:
        piece = c.merge(*pieces)
        b.add(piece, "support", _wood_or_metal(rng, pal, piece, c.X))


# --------------------------------------------------------------------------- pedestal / trestle


def build_pedestal(b: PartBuilder, p: TableParams, pal: Palette, rng) -> dict:
    """Add a turned column with a disc or cross foot (label ``leg``)."""
    y_top = p.height - p.top_t * 0.5
    r = c.uniform(rng, 0.04, 0.08)
    foot_y = c.uniform(rng, 0.04, 0.08)
    ys = np.linspace(foot_y, y_top, 7)
    bulge = 1 + c.uniform(rng, 0.0, 0.8) * np.sin(np.linspace(0, np.pi, 7)) ** 2
    radii = r * bulge * np.linspace(c.uniform(rng, 1.0, 1.6), 1.0, 7)
    prof = [[0.0, ys[0]], *np.stack([radii, ys], 1), [0.0, ys[-1]]]
    pieces = [c.revolve(prof, 20)]
    kps = {}
    reach = min(p.top_w, p.top_d) / 2 * c.uniform(rng, 0.6, 0.85)
    if p.foot == "disc":
        pieces.append(
            c.revolve(
                [[reach, 0.0], [reach, 0.02], [r * 1.5, foot_y + 0.02], [0.0, foot_y + 0.02]], 32
            )
        )
    else:
        for end, sz in ENDS:
            for side, sx in SIDES:
                d = c.unit(np.array([sx, 0.0, sz]))
                tip = d * reach
                pieces.append(
                    c.beam(
                        d * r * 0.5 + c.Y * (foot_y * 0.6 + 0.02),
                        tip + c.Y * 0.03,
                        0.05,
                        max(0.04, foot_y),
                        c.Y,
                    )
                )
                pieces.append(c.box(tip + c.Y * 0.01, (0.05, 0.02, 0.05)))
                kps[f"leg_{end}_{side}"] = tip
    piece = c.merge(*pieces)
    pid = b.add(piece, "leg", _wood_or_metal(rng, pal, piece, c.Y))
    return {k: Keypoint(v, (pid,)) for k, v in kps.items()}


def build_trestle(b: PartBuilder, p: TableParams, pal: Palette, rng) -> dict:
    """Add two trestle ends (upright + foot + cleat, label ``leg``) joined by a stretcher
    (label ``support``)."""
    x = p.top_w / 2 - p.leg_inset - 0.05
    foot_len = p.top_d * c.uniform(rng, 0.7, 0.92)
    plank_w = c.uniform(rng, 0.10, 0.22)
    plank_t = c.uniform(rng, 0.035, 0.06)
    foot_h = c.uniform(rng, 0.05, 0.09)
    y_top = p.height - p.top_t
    pieces, kps = [], {}
    for side, sx in SIDES:
        xs = sx * x
        pieces.append(c.box((xs, foot_h / 2, 0), (plank_t * 1.6, foot_h, foot_len)))
        pieces.append(
            c.box((xs, (foot_h + y_top) / 2, 0), (plank_t, y_top - foot_h + 0.02, plank_w))
        )
        pieces.append(c.box((xs, y_top - 0.025, 0), (plank_t * 1.4, 0.05 + 0.005, foot_len * 0.9)))
        for end, sz in ENDS:
            kps[f"leg_{end}_{side}"] = np.array([xs, 0.0, sz * foot_len / 2])
    piece = c.merge(*pieces)
    pid = b.add(piece, "leg", _wood_or_metal(rng, pal, piece, c.Y))
    h = p.stretcher_h + c.uniform(rng, 0.0, 0.3) * (y_top - p.stretcher_h)
    stretcher = c.beam([-x, h, 0], [x, h, 0], c.uniform(rng, 0.05, 0.1), 0.04, c.Y)
    b.add(stretcher, "support", _wood_or_metal(rng, pal, stretcher, c.X))
    return {k: Keypoint(v, (pid,)) for k, v in kps.items()}


# --------------------------------------------------------------------------- entry point


def generate(seed: int) -> ShapeAsset:
    """Draw one table from ``seed``."""
    rng = np.random.default_rng(seed)
    p = sample_params(rng, PRIMARY[seed % len(PRIMARY)])
    crng = rng.spawn(1)[0]
    pal = sample_palette(crng)
    b = PartBuilder(CATEGORIES[CATEGORY].part_names)
    kps = build_top(b, p, pal, crng)
    if p.base == "four_legs":
        legs, axes = build_four_legs(b, p, pal, crng)
        build_supports(b, p, pal, crng, axes)
    elif p.base == "pedestal":
        legs = build_pedestal(b, p, pal, crng)
    else:
        legs = build_trestle(b, p, pal, crng)
    kps.update(legs)
    meta = {k: (float(v) if isinstance(v, float) else v) for k, v in asdict(p).items()}
    meta["top_material"] = pal.top_material
    return c.finish_asset(CATEGORY, seed, b, kps, meta)
