"""Procedural chairs: box/rounded seat, solid/slatted/frame back, optional arms and four leg
styles (straight, splayed, pedestal with star or disc base, sled runners).

Build frame: metres, +Y up, the sitter faces -Z, the chair's right is +X; seat centred on x=z=0.

Keypoints: seat corners on the seat's top face (rear ones just in front of the back); leg tips
at the bottom of each leg, the lowest point of a sled runner's bend, or the caster under the
star-base arm nearest to that corner (within 40 degrees; a disc base has no leg keypoints);
back_top at the back's upper outer corners; arm_front at the front-top end of each armrest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from renderers.asset import ShapeAsset
from renderers.categories import CATEGORIES
from renderers.procedural import common as c
from renderers.procedural.common import Keypoint, PartBuilder

CATEGORY = "chair"
SIDES = (("l", -1.0), ("r", 1.0))
ENDS = (("front", -1.0), ("back", 1.0))


@dataclass
class ChairParams:
    """Style choices and proportions of one chair (metres, radians)."""

    seat_shape: str
    back_style: str
    leg_style: str
    base: str
    has_arms: bool
    material: str
    seat_w: float
    seat_d: float
    seat_h: float
    seat_t: float
    seat_n: float
    back_h: float
    back_t: float
    back_w: float
    back_tilt: float
    leg_r: float
    leg_square: bool
    leg_taper: float
    leg_inset: float
    splay: float
    n_slats: int
    slat_dir: str
    frame_r: float
    arm_h: float
    arm_w: float
    n_star: int


PRIMARY = ("straight", "splayed", "pedestal", "sled", "straight")
"""Leg styles cycled by seed (four straight legs twice as often)."""


def sample_params(rng: np.random.Generator, leg_style: str) -> ChairParams:
    """Draw the remaining styles, then proportions that suit them."""
    seat_shape = c.choice(rng, ["box", "rounded"], [0.6, 0.4])
    back_style = c.choice(rng, ["solid", "slatted", "frame"])
    base = c.choice(rng, ["star", "disc"], [0.7, 0.3]) if leg_style == "pedestal" else "none"
    seat_w = c.uniform(rng, 0.40, 0.60)
    return ChairParams(
        seat_shape=seat_shape,
        back_style=back_style,
        leg_style=leg_style,
        base=base,
        has_arms=bool(rng.random() < 0.4),
        material=c.choice(rng, ["wood", "metal_fabric", "plastic"]),
        seat_w=seat_w,
        seat_d=c.uniform(rng, 0.38, 0.56),
        seat_h=c.uniform(rng, 0.40, 0.52),
        seat_t=c.uniform(rng, 0.035, 0.10),
        seat_n=c.uniform(rng, 2.6, 5.0),
        back_h=c.uniform(rng, 0.30, 0.62),
        back_t=c.uniform(rng, 0.025, 0.07),
        back_w=seat_w * c.uniform(rng, 0.78, 1.0),
        back_tilt=np.radians(c.uniform(rng, 0.0, 16.0)),
        leg_r=c.uniform(rng, 0.015, 0.03),
        leg_square=bool(rng.random() < 0.5),
        leg_taper=c.uniform(rng, 0.55, 1.0),
        leg_inset=c.uniform(rng, 0.01, 0.05),
        splay=c.uniform(rng, 0.03, 0.09),
        n_slats=int(rng.integers(2, 6)),
        slat_dir=c.choice(rng, ["vertical", "horizontal"]),
        frame_r=c.uniform(rng, 0.012, 0.02),
        arm_h=c.uniform(rng, 0.17, 0.26),
        arm_w=c.uniform(rng, 0.035, 0.07),
        n_star=int(rng.choice([4, 5])),
    )


@dataclass
class Palette:
    """Per-part colours of one chair (RGB float) and the fabric pattern."""

    seat: np.ndarray
    back: np.ndarray
    leg: np.ndarray
    arm: np.ndarray
    accent: np.ndarray
    wood: np.ndarray
    pattern: str
    wood_legs: bool


def sample_palette(rng: np.random.Generator, p: ChairParams) -> Palette:
    """Materials consistent with the chair's style (wood chairs get grain, fabric gets patterns)."""
    metal_base = p.leg_style in ("pedestal", "sled") or p.back_style == "frame"
    wood = c.pick_color(rng, "wood")
    metal = c.pick_color(rng, "metal")
    if p.material == "wood":
        seat = wood if rng.random() < 0.6 else c.pick_color(rng, "fabric")
        legs = metal if metal_base else wood
    elif p.material == "metal_fabric":
        seat, legs = c.pick_color(rng, "fabric"), metal
    else:
        seat = c.pick_color(rng, "plastic")
        legs = metal if metal_base or rng.random() < 0.5 else wood
    back = seat if rng.random() < 0.8 else c.pick_color(rng, "fabric")
    pattern = c.choice(rng, ["plain", "checker", "stripes"], [0.5, 0.25, 0.25])
    return Palette(
        seat,
        back,
        legs,
        legs if rng.random() < 0.6 else seat,
        c.pick_color(rng, "fabric"),
        wood,
        pattern,
        bool(np.allclose(legs, wood)),
    )


def _surface_colors(rng, pal: Palette, piece: c.Piece, base: np.ndarray, grain_axis) -> np.ndarray:
    """Face colours for a seat/back piece: wood grain on wood, else the fabric pattern."""
    cen = c.face_midpoints(piece)
    if np.allclose(base, pal.wood):
        return c.wood_grain(cen, base, grain_axis, rng)
    if pal.pattern == "checker":
        return c.checker(cen, base, base * 0.75, 0.05)
    if pal.pattern == "stripes":
        return c.stripes(cen, base, pal.accent, c.X, 0.08, 0.3)
    return c.speckle(c.solid(base, len(cen)), rng, 0.03)


def _leg_colors(rng, pal: Palette, piece: c.Piece, axis) -> np.ndarray:
    cen = c.face_midpoints(piece)
    if pal.wood_legs:
        return c.wood_grain(cen, pal.leg, axis, rng, 0.02)
    return c.speckle(c.solid(pal.leg, len(cen)), rng, 0.02)


# --------------------------------------------------------------------------- seat


def seat_half_width(p: ChairParams, z: np.ndarray | float) -> np.ndarray:
    """Half width of the seat plan at depth ``z`` (superellipse plan for rounded seats)."""
    if p.seat_shape == "box":
        return np.full_like(np.asarray(z, np.float64), p.seat_w / 2)
    q = np.clip(np.abs(2 * np.asarray(z) / p.seat_d), 0, 1)
    return p.seat_w / 2 * (1 - q**p.seat_n) ** (1 / p.seat_n)


def build_seat(b: PartBuilder, p: ChairParams, pal: Palette, rng) -> tuple[int, dict]:
    """Add the seat; returns its piece id and the four top corners (name -> (3,))."""
    yc = p.seat_h - p.seat_t / 2
    if p.seat_shape == "box":
        piece = c.box((0, yc, 0), (p.seat_w, p.seat_t, p.seat_d), cell=p.seat_w / 10)
        cx, cz = p.seat_w / 2 - 0.002, p.seat_d / 2 - 0.002
    else:
        zs = p.seat_d / 2 * np.sin(np.linspace(-np.pi / 2, np.pi / 2, 16))
        a = np.maximum(seat_half_width(p, zs), 0.0)
        centers = np.stack([np.zeros_like(zs), np.full_like(zs, yc), zs], 1)
        piece = c.loft(c.ring_points(centers, c.X, c.Y, a, p.seat_t / 2, 20, 5.0), False, False)
        k = 2 ** (-1 / p.seat_n) * 0.97
        cx, cz = p.seat_w / 2 * k, p.seat_d / 2 * k
    pid = b.add(piece, "seat", _surface_colors(rng, pal, piece, pal.seat, c.Z))
    back_front = BackFrame.z0(p) - p.back_t / 2 - 0.015  # just in front of the back
    corners = {}
    for end, sz in ENDS:
        for side, sx in SIDES:
            z = sz * cz if end == "front" else min(cz, back_front)
            corners[f"seat_{end}_{side}"] = np.array([sx * cx, p.seat_h, z])
    return pid, corners


# --------------------------------------------------------------------------- back


class BackFrame:
    """Tilted local frame of the back: x across, s up along the back, q through its thickness."""

    def __init__(self, p: ChairParams) -> None:
        self.origin = np.array([0.0, p.seat_h - p.seat_t / 2, self.z0(p)])
        self.up = np.array([0.0, np.cos(p.back_tilt), np.sin(p.back_tilt)])
        self.length = (p.back_h + p.seat_t / 2) / np.cos(p.back_tilt)

    @staticmethod
    def z0(p: ChairParams) -> float:
        inset = 0.0 if p.seat_shape == "box" else 0.06 * p.seat_d
        return p.seat_d / 2 - p.back_t / 2 - inset

    def at(self, x: float, s: float) -> np.ndarray:
        return self.origin + x * c.X + s * self.up


def build_back(b: PartBuilder, p: ChairParams, pal: Palette, rng) -> dict:
    """Add the back (label ``back``); returns the two top corners."""
    fr = BackFrame(p)
    hw, top = p.back_w / 2, fr.length
    if p.back_style == "solid":
        piece = c.beam(fr.at(0, 0), fr.at(0, top), p.back_w, p.back_t, c.X, cell=p.back_w / 10)
        pid = b.add(piece, "back", _surface_colors(rng, pal, piece, pal.back, fr.up))
        return {f"back_top_{s}": Keypoint(fr.at(sx * hw, top), (pid,)) for s, sx in SIDES}
    if p.back_style == "slatted":
        return _slatted_back(b, p, pal, rng, fr)
    return _frame_back(b, p, pal, rng, fr)


def _slatted_back(b: PartBuilder, p: ChairParams, pal: Palette, rng, fr: BackFrame) -> dict:
    hw, top = p.back_w / 2, fr.length
    post = max(0.028, 1.6 * p.leg_r)
    rail = c.uniform(rng, 0.05, 0.10)
    slat_t = max(0.016, 0.6 * p.back_t)
    pieces = []
    for _, sx in SIDES:
        x = sx * (hw - post / 2)
        pieces.append(c.beam(fr.at(x, 0), fr.at(x, top), post, max(p.back_t, post), c.X))
    pieces.append(
        c.beam(
            fr.at(-hw + post / 2, top - rail / 2),
            fr.at(hw - post / 2, top - rail / 2),
            rail,
            p.back_t,
            fr.up,
        )
    )
    s0, s1 = p.seat_t / 2 + 0.02, top - rail
    if p.slat_dir == "vertical":
        inner = 2 * hw - 2 * post
        sw = inner / (2 * p.n_slats + 1)
        for i in range(p.n_slats):
            x = -hw + post + sw * (2 * i + 1.5)
            pieces.append(c.beam(fr.at(x, s0 - 0.01), fr.at(x, s1 + 0.01), sw, slat_t, c.X))
    else:
        n = max(1, p.n_slats - 1)
        sh = min(0.06, (s1 - s0) / (2 * n + 1))
        for i in range(n):
            s = s0 + (s1 - s0) * (i + 1) / (n + 1)
            pieces.append(
                c.beam(fr.at(-hw + post / 2, s), fr.at(hw - post / 2, s), sh, slat_t, fr.up)
            )
    piece = c.merge(*pieces)
    pid = b.add(
        piece,
        "back",
        _leg_colors(rng, pal, piece, fr.up)
        if p.material == "wood"
        else _surface_colors(rng, pal, piece, pal.back, fr.up),
    )
    return {f"back_top_{s}": Keypoint(fr.at(sx * hw, top), (pid,)) for s, sx in SIDES}


def _frame_back(b: PartBuilder, p: ChairParams, pal: Palette, rng, fr: BackFrame) -> dict:
    hw, top, r = p.back_w / 2, fr.length, p.frame_r
    corner = c.uniform(rng, 0.03, 0.12)
    path = c.round_corners(
        [fr.at(-hw + r, 0), fr.at(-hw + r, top - r), fr.at(hw - r, top - r), fr.at(hw - r, 0)],
        corner,
        5,
    )
    pieces = [c.sweep(path, r, 10)]
    pad = rng.random() < 0.6
    if pad:  # an upholstered pad hung inside the frame
        pad_h = (top - p.seat_t) * c.uniform(rng, 0.35, 0.6)
        s_mid = top - r - 0.02 - pad_h / 2
        panel = c.beam(
            fr.at(0, s_mid - pad_h / 2),
            fr.at(0, s_mid + pad_h / 2),
            2 * hw - 2 * r,
            max(0.02, 0.5 * p.back_t),
            c.X,
            cell=p.back_w / 8,
        )
    frame_pid = b.add(pieces[0], "back", c.solid(pal.leg, len(pieces[0][1])))
    if pad:
        b.add(panel, "back", _surface_colors(rng, pal, panel, pal.back, fr.up))
    return {
        f"back_top_{s}": Keypoint(
            c.path_surface_point(path, r, fr.at(sx * (hw + 1), top + 1)), (frame_pid,)
        )
        for s, sx in SIDES
    }


# --------------------------------------------------------------------------- arms


def build_arms(b: PartBuilder, p: ChairParams, pal: Palette, rng) -> dict:
    """Add two arms (armrest + front support, label ``arm``); returns their front tips."""
    y = p.seat_h + p.arm_h
    zf = -p.seat_d / 2 * (0.8 if p.seat_shape == "box" else 0.5)
    zb = BackFrame.z0(p) + (y - p.seat_h) * np.tan(p.back_tilt)
    arm_t = max(0.03, 0.6 * p.arm_w)
    kps, pieces = {}, []
    for side, sx in SIDES:
        x = sx * (float(seat_half_width(p, zf)) - p.arm_w * 0.3)
        if p.back_style == "frame" or p.leg_style == "sled":
            path = c.round_corners([[x, y, zb], [x, y, zf], [x, p.seat_h - p.seat_t / 2, zf]], 0.05)
            pieces.append(c.sweep(path, p.frame_r, 10))
            kps[f"arm_front_{side}"] = c.path_surface_point(path, p.frame_r, [x, y + 1, zf - 1])
        else:
            pieces.append(c.beam([x, y, zb], [x, y, zf - 0.02], p.arm_w, arm_t, c.Y))
            post = max(0.025, 0.6 * p.arm_w)
            pieces.append(
                c.beam(
                    [x, y, zf + post / 2],
                    [x, p.seat_h - p.seat_t / 2, zf + post / 2],
                    post,
                    post,
                    c.X,
                )
            )
            kps[f"arm_front_{side}"] = np.array([x, y + arm_t / 2, zf - 0.02])
    piece = c.merge(*pieces)
    pid = b.add(
        piece,
        "arm",
        _leg_colors(rng, pal, piece, c.Z)
        if np.allclose(pal.arm, pal.leg)
        else c.solid(pal.arm, len(piece[1])),
    )
    return {k: Keypoint(v, (pid,)) for k, v in kps.items()}


# --------------------------------------------------------------------------- legs


def _corner_tops(p: ChairParams) -> dict:
    """Leg attachment points under the seat, keyed (end, side)."""
    y = p.seat_h - p.seat_t / 2
    r = p.leg_r
    out = {}
    for end, sz in ENDS:
        z = sz * (p.seat_d / 2 - p.leg_inset - r)
        if p.seat_shape == "rounded":
            z *= 0.8
        xw = float(seat_half_width(p, z)) - p.leg_inset - r
        for side, sx in SIDES:
            out[(end, side)] = np.array([sx * xw, y, z])
    return out


def build_legs(b: PartBuilder, p: ChairParams, pal: Palette, rng) -> dict:
    """Add the legs/base (label ``leg``); returns leg tip keypoints."""
    if p.leg_style in ("straight", "splayed"):
        return _four_legs(b, p, pal, rng)
    if p.leg_style == "pedestal":
        return _pedestal(b, p, pal, rng)
    return _sled(b, p, pal, rng)


def _four_legs(b: PartBuilder, p: ChairParams, pal: Palette, rng) -> dict:
    kps, pieces = {}, []
    for (end, side), top in _corner_tops(p).items():
        foot = top.copy()
        foot[1] = 0.0
        if p.leg_style == "splayed":
            foot[0] += np.sign(top[0]) * p.splay
            foot[2] += np.sign(top[2]) * p.splay
        r_top, r_bot = p.leg_r, max(0.011, p.leg_r * p.leg_taper)
        if p.leg_square and p.leg_style == "straight":
            pieces.append(c.beam(foot, top, 2 * r_top, 2 * r_top, c.X))
        else:
            pieces.append(c.tube(foot, top, r_bot, r_top, 12))
        kps[f"leg_{end}_{side}"] = foot
    piece = c.merge(*pieces)
    pid = b.add(piece, "leg", _leg_colors(rng, pal, piece, c.Y))
    return {k: Keypoint(v, (pid,)) for k, v in kps.items()}


def _pedestal(b: PartBuilder, p: ChairParams, pal: Palette, rng) -> dict:
    y_top = p.seat_h - p.seat_t / 2
    col_r = c.uniform(rng, 0.022, 0.04)
    foot_r = c.uniform(rng, 0.24, 0.33)
    pieces = []
    kps = {}
    if p.base == "disc":
        hub_y = c.uniform(rng, 0.02, 0.05)
        pieces.append(
            c.revolve(
                [
                    [foot_r, 0.0],
                    [foot_r, 0.015],
                    [col_r * 2.0, hub_y + 0.02],
                    [col_r * 1.2, hub_y + 0.06],
                    [0.0, hub_y + 0.06],
                ]
            )
        )
        pieces.append(c.tube([0, hub_y, 0], [0, y_top + p.seat_t * 0.3, 0], col_r, col_r, 16))
    else:
        caster = c.uniform(rng, 0.018, 0.03)
        hub_y = 2 * caster + c.uniform(rng, 0.04, 0.08)
        pieces.append(
            c.tube([0, hub_y - 0.03, 0], [0, y_top + p.seat_t * 0.3, 0], col_r, col_r, 16)
        )
        pieces.append(
            c.tube([0, hub_y - 0.04, 0], [0, hub_y + 0.03, 0], col_r * 1.6, col_r * 1.3, 16)
        )
        phase = 0.0 if p.n_star == 4 else float(rng.choice([0.0, np.pi]))
        angles = phase + np.pi / 4 * (p.n_star == 4) + 2 * np.pi * np.arange(p.n_star) / p.n_star
        tips = []
        for ang in angles:
            d = np.array([np.sin(ang), 0.0, -np.cos(ang)])  # angle 0 points to the front (-z)
            tip = d * foot_r + c.Y * 2 * caster
            pieces.append(c.beam([0, hub_y, 0], tip + c.Y * 0.012, 0.04, 0.03, c.Y))
            pieces.append(
                c.ellipsoid(tip - c.Y * caster * 0.5, (caster, caster, caster * 1.2), 10, 7)
            )
            tips.append(tip * [1, 0, 1])
        kps = _match_corners(np.asarray(tips))
    piece = c.merge(*pieces)
    pid = b.add(piece, "leg", c.speckle(c.solid(pal.leg, len(piece[1])), rng, 0.02))
    return {k: Keypoint(v, (pid,)) for k, v in kps.items()}


def _match_corners(tips: np.ndarray, max_deg: float = 40.0) -> dict:
    """Assign star-base arm tips (N, 3) to the four leg corners (each arm used at most once)."""
    out, used = {}, set()
    for end, sz in ENDS:
        for side, sx in SIDES:
            corner = c.unit(np.array([sx, 0.0, sz]))
            cos = c.unit(tips) @ corner
            i = int(np.argmax(cos))
            if cos[i] >= np.cos(np.radians(max_deg)) and i not in used:
                used.add(i)
                out[f"leg_{end}_{side}"] = tips[i]
    return out


def _sled(b: PartBuilder, p: ChairParams, pal: Palette, rng) -> dict:
    r = max(0.012, p.frame_r)
    tops = _corner_tops(p)
    reach = c.uniform(rng, 0.0, 0.06)
    kps, pieces = {}, []
    for side, _ in SIDES:
        tf, tb = tops[("front", side)], tops[("back", side)]
        zf, zb = tf[2] - reach, tb[2] + reach * 0.5
        path = c.round_corners(
            [tf + c.Y * 0.01, [tf[0], r, zf], [tb[0], r, zb], tb + c.Y * 0.01], 0.06, 5
        )
        pieces.append(c.sweep(path, r, 10))
        kps[f"leg_front_{side}"] = c.path_surface_point(path, r, [tf[0], -1.0, zf])
        kps[f"leg_back_{side}"] = c.path_surface_point(path, r, [tb[0], -1.0, zb])
    piece = c.merge(*pieces)
    pid = b.add(piece, "leg", c.speckle(c.solid(pal.leg, len(piece[1])), rng, 0.02))
    return {k: Keypoint(v, (pid,)) for k, v in kps.items()}


# --------------------------------------------------------------------------- entry point


def generate(seed: int) -> ShapeAsset:
    """Draw one chair from ``seed``."""
    rng = np.random.default_rng(seed)
    p = sample_params(rng, PRIMARY[seed % len(PRIMARY)])
    crng = rng.spawn(1)[0]
    pal = sample_palette(crng, p)
    b = PartBuilder(CATEGORIES[CATEGORY].part_names)
    seat_pid, corners = build_seat(b, p, pal, crng)
    kps: dict[str, Keypoint] = {k: Keypoint(v, (seat_pid,)) for k, v in corners.items()}
    kps.update(build_legs(b, p, pal, crng))
    kps.update(build_back(b, p, pal, crng))
    if p.has_arms:
        kps.update(build_arms(b, p, pal, crng))
    meta = {k: (float(v) if isinstance(v, float) else v) for k, v in asdict(p).items()}
    meta["back_tilt_deg"] = float(np.degrees(p.back_tilt))
    meta["pattern"] = pal.pattern
    return c.finish_asset(CATEGORY, seed, b, kps, meta)
