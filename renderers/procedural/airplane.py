"""Procedural airplanes: lofted fuselage, straight/swept/delta wings at low/mid/high position,
0/2/4 engines (under-wing pods, wing-leading-edge nacelles or rear-mounted), conventional or
T-tail.

Build frame: fuselage length ~1, +Y up, nose towards -Z, right wing towards +X.

Keypoints: nose apex and tail-cone end of the fuselage; wing and stabiliser tips at the centre
of the tip faces; wing roots at the leading edge just outside the fuselage; vstab_top at the top
of the fin (of the T-tail's stabiliser for T-tails); engine_front at the intake centre of the
inboard engine on each side (omitted without engines).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from renderers.asset import ShapeAsset
from renderers.categories import CATEGORIES
from renderers.procedural import common as c
from renderers.procedural.common import Keypoint, PartBuilder

CATEGORY = "airplane"
SIDES = (("l", -1.0), ("r", 1.0))
MIN_T = 0.018  # minimum absolute airfoil thickness (about 1% of the bbox diagonal)


@dataclass
class PlaneParams:
    """Style choices and proportions of one airplane (fuselage length units, radians)."""

    wing_style: str
    wing_pos: str
    tail: str
    n_engines: int
    engine_mount: str
    scheme: str
    length: float
    radius: float
    height_ratio: float
    nose_len: float
    tail_len: float
    upsweep: float
    span: float
    root_chord: float
    taper: float
    sweep: float
    dihedral: float
    wing_z: float
    eng_r: float
    eng_len: float
    vstab_h: float
    vstab_chord: float
    vstab_sweep: float
    hstab_span: float
    hstab_chord: float


PRIMARY = ("straight", "swept", "delta", "swept")
"""Wing styles cycled by seed (swept twice as often), so consecutive seeds cover them all."""


def sample_params(rng: np.random.Generator, wing_style: str) -> PlaneParams:
    """Draw the remaining styles, then proportions that suit them."""
    wing_pos = c.choice(rng, ["low", "mid", "high"], [0.5, 0.2, 0.3])
    engines = {
        "straight": ([0, 2, 4], [0.4, 0.45, 0.15]),
        "swept": ([0, 2, 4], [0.1, 0.6, 0.3]),
        "delta": ([0, 2], [0.7, 0.3]),
    }[wing_style]
    n_engines = int(rng.choice(engines[0], p=engines[1]))
    tail = c.choice(rng, ["conventional", "t_tail"], [0.6, 0.4])
    if n_engines == 2 and wing_style == "swept" and tail == "t_tail" and rng.random() < 0.6:
        mount = "rear"
    elif n_engines and wing_style == "straight":
        mount = "leading_edge"
    else:
        mount = "pylon" if n_engines else "none"
    sweep = {"straight": (0.0, 8.0), "swept": (24.0, 38.0), "delta": (50.0, 62.0)}[wing_style]
    chord = {"straight": (0.12, 0.18), "swept": (0.15, 0.24), "delta": (0.38, 0.5)}[wing_style]
    taper = {"straight": (0.45, 0.9), "swept": (0.2, 0.45), "delta": (0.05, 0.2)}[wing_style]
    span = {"straight": (0.9, 1.4), "swept": (0.75, 1.2), "delta": (0.5, 0.75)}[wing_style]
    dihedral = {"low": (3.0, 7.0), "mid": (0.0, 4.0), "high": (-3.0, 2.0)}[wing_pos]
    return PlaneParams(
        wing_style=wing_style,
        wing_pos=wing_pos,
        tail=tail,
        n_engines=n_engines,
        engine_mount=mount,
        scheme=c.choice(rng, ["airline", "private", "military"], [0.5, 0.3, 0.2]),
        length=c.uniform(rng, 0.8, 1.25),
        radius=c.uniform(rng, 0.04, 0.07),
        height_ratio=c.uniform(rng, 1.0, 1.15),
        nose_len=c.uniform(rng, 0.07, 0.16),
        tail_len=c.uniform(rng, 0.2, 0.32),
        upsweep=c.uniform(rng, 0.3, 0.9),
        span=c.uniform(rng, *span),
        root_chord=c.uniform(rng, *chord),
        taper=c.uniform(rng, *taper),
        sweep=float(np.radians(c.uniform(rng, *sweep))),
        dihedral=float(np.radians(c.uniform(rng, *dihedral))),
        wing_z=c.uniform(rng, 0.36, 0.46),
        eng_r=c.uniform(rng, 0.025, 0.045),
        eng_len=c.uniform(rng, 0.11, 0.19),
        vstab_h=c.uniform(rng, 0.10, 0.18),
        vstab_chord=c.uniform(rng, 0.13, 0.22),
        vstab_sweep=float(np.radians(c.uniform(rng, 25.0, 50.0))),
        hstab_span=c.uniform(rng, 0.14, 0.24),
        hstab_chord=c.uniform(rng, 0.07, 0.12),
    )


class Fuselage:
    """Analytic fuselage: centre height and radii as functions of z (nose at -length/2)."""

    def __init__(self, p: PlaneParams) -> None:
        self.p = p
        self.z0, self.z1 = -p.length / 2, p.length / 2

    def stations(self) -> np.ndarray:
        p = self.p
        nose = self.z0 + p.nose_len * (1 - np.cos(np.linspace(0, np.pi / 2, 9)))
        mid = np.linspace(self.z0 + p.nose_len, self.z1 - p.tail_len, 6)[1:]
        tail = np.linspace(self.z1 - p.tail_len, self.z1, 9)[1:]
        return np.concatenate([nose, mid, tail])

    def radius(self, z: np.ndarray) -> np.ndarray:
        p = self.p
        z = np.asarray(z, np.float64)
        t_nose = np.clip((z - self.z0) / p.nose_len, 0, 1)
        t_tail = np.clip((z - (self.z1 - p.tail_len)) / p.tail_len, 0, 1)
        return p.radius * np.sqrt(1 - (1 - t_nose) ** 2) * (1 - 0.82 * t_tail**1.3)

    def center_y(self, z: np.ndarray) -> np.ndarray:
        p = self.p
        t_tail = np.clip((np.asarray(z) - (self.z1 - p.tail_len)) / p.tail_len, 0, 1)
        return p.upsweep * p.radius * t_tail**1.5

    def piece(self) -> c.Piece:
        zs = self.stations()
        r = self.radius(zs)
        centers = np.stack([np.zeros_like(zs), self.center_y(zs), zs], 1)
        return c.loft(c.ring_points(centers, c.X, c.Y, r, r * self.p.height_ratio, 20), False, True)

    def half_width_at(self, z: float, y: float) -> float:
        r = float(self.radius(z))
        dy = (y - float(self.center_y(z))) / (r * self.p.height_ratio)
        return r * np.sqrt(max(0.0, 1 - dy**2))


@dataclass
class Palette:
    body: np.ndarray
    belly: np.ndarray
    accent: np.ndarray
    wing: np.ndarray
    engine: np.ndarray
    intake: np.ndarray


def sample_palette(rng: np.random.Generator, p: PlaneParams) -> Palette:
    if p.scheme == "military":
        body = (
            c.PALETTES["metal"][[2, 5]][rng.integers(2)]
            if rng.random() < 0.5
            else np.array([0.33, 0.38, 0.25]) * c.uniform(rng, 0.85, 1.15)
        )
        return Palette(body, body * 0.85, body * 0.7, body, body * 0.9, np.full(3, 0.08))
    body = np.array([0.95, 0.95, 0.96]) * c.uniform(rng, 0.9, 1.0)
    if p.scheme == "private" and rng.random() < 0.5:
        body = c.pick_color(rng, "car_paint")
    accent = c.pick_color(rng, "livery")
    belly = c.pick_color(rng, "metal") if rng.random() < 0.5 else body
    wing = np.array([0.75, 0.76, 0.78]) * c.uniform(rng, 0.85, 1.05)
    return Palette(body, belly, accent, wing, c.pick_color(rng, "metal"), np.full(3, 0.1))


def _fuselage_colors(
    rng, pal: Palette, piece: c.Piece, fus: Fuselage, p: PlaneParams
) -> np.ndarray:
    cen = c.face_midpoints(piece)
    rel = (cen[:, 1] - fus.center_y(cen[:, 2])) / (p.radius * p.height_ratio)
    if p.scheme == "military":
        return c.camo(cen, [pal.body, pal.belly, pal.accent], 0.15, rng)
    col = np.where((rel < -0.35)[:, None], pal.belly[None], pal.body[None])
    lo, hi = (0.05, 0.3) if p.scheme == "airline" else (-0.2, 0.0)
    stripe = (rel > lo) & (rel < hi)
    return np.where(stripe[:, None], pal.accent[None], col)


# --------------------------------------------------------------------------- lifting surfaces


def surface(
    root_le, root_chord, tip_le, tip_chord, thick_dir, ratio: float = 0.12, n_span: int = 5
) -> c.Piece:
    """Tapered lifting surface lofted between a root and a tip airfoil (chord along +z)."""
    ts = np.linspace(0, 1, n_span)
    root_le, tip_le = np.asarray(root_le, np.float64), np.asarray(tip_le, np.float64)
    rings = []
    for t in ts:
        chord = (1 - t) * root_chord + t * tip_chord
        le = (1 - t) * root_le + t * tip_le
        rings.append(c.airfoil_ring(le, c.Z, thick_dir, chord, max(MIN_T, ratio * chord), 8, MIN_T))
    return c.loft(np.asarray(rings))


def build_wings(b: PartBuilder, p: PlaneParams, pal: Palette, fus: Fuselage, rng) -> dict:
    """Add both wings (label ``wing``); returns tip and root keypoints."""
    y_w = {"low": -0.6, "mid": 0.0, "high": 0.68}[p.wing_pos] * p.radius * p.height_ratio
    z_le = fus.z0 + p.wing_z * p.length
    half = p.span / 2
    kps = {}
    for side, sx in SIDES:
        tip_le = np.array(
            [sx * half, y_w + half * np.tan(p.dihedral), z_le + half * np.tan(p.sweep)]
        )
        piece = surface([0, y_w, z_le], p.root_chord, tip_le, p.root_chord * p.taper, c.Y)
        cen = c.face_midpoints(piece)
        col = c.speckle(c.solid(pal.wing, len(cen)), rng, 0.03)
        if p.scheme == "military":
            col = c.camo(cen, [pal.body, pal.belly, pal.accent], 0.15, rng)
        pid = b.add(piece, "wing", col)
        kps[f"wing_tip_{side}"] = Keypoint(
            tip_le + c.Z * p.root_chord * p.taper * 0.3 + c.X * sx, (pid,)
        )
        x_root = fus.half_width_at(z_le, y_w) * 1.05 + 0.01
        root = np.array(
            [sx * x_root, y_w + x_root * np.tan(p.dihedral), z_le + x_root * np.tan(p.sweep)]
        )
        kps[f"wing_root_{side}"] = Keypoint(root, (pid,))  # on the (straight) leading edge
    return kps


def wing_point(p: PlaneParams, fus: Fuselage, x: float) -> tuple[np.ndarray, float]:
    """Leading-edge point (3,) and local chord of the wing at spanwise position ``x``."""
    y_w = {"low": -0.6, "mid": 0.0, "high": 0.68}[p.wing_pos] * p.radius * p.height_ratio
    z_le = fus.z0 + p.wing_z * p.length
    t = abs(x) / (p.span / 2)
    chord = p.root_chord * (1 - t + t * p.taper)
    return np.array([x, y_w + abs(x) * np.tan(p.dihedral), z_le + abs(x) * np.tan(p.sweep)]), chord


def build_tail(b: PartBuilder, p: PlaneParams, pal: Palette, fus: Fuselage, rng) -> dict:
    """Add the fin and the horizontal stabilisers (label ``tail``)."""
    z_root = fus.z1 - p.vstab_chord - 0.02 * p.length
    y_root = float(fus.center_y(z_root + p.vstab_chord / 2)) + 0.4 * float(
        fus.radius(z_root + p.vstab_chord / 2)
    )
    tip_chord = p.vstab_chord * 0.55
    tip_le = np.array([0.0, y_root + p.vstab_h, z_root + p.vstab_h * np.tan(p.vstab_sweep)])
    fin = surface([0, y_root, z_root], p.vstab_chord, tip_le, tip_chord, c.X, 0.1, 4)
    fin_col = pal.accent if p.scheme != "military" else pal.body
    fin_pid = b.add(fin, "tail", c.solid(fin_col, len(fin[1])))
    kps = {}
    if p.tail == "t_tail":
        y_h = tip_le[1]
        z_h = tip_le[2] + tip_chord * 0.5 - p.hstab_chord * 0.5
        span = p.hstab_span * 0.8
    else:
        z_h = fus.z1 - p.hstab_chord - 0.03 * p.length
        y_h = float(fus.center_y(z_h + p.hstab_chord / 2))
        span = p.hstab_span
    pids = [fin_pid]
    for side, sx in SIDES:
        tip = np.array([sx * span, y_h + span * 0.05, z_h + span * np.tan(np.radians(30))])
        piece = surface([0, y_h, z_h], p.hstab_chord, tip, p.hstab_chord * 0.5, c.Y, 0.1, 4)
        pids.append(b.add(piece, "tail", c.solid(pal.wing, len(piece[1]))))
        kps[f"hstab_tip_{side}"] = Keypoint(tip + c.Z * p.hstab_chord * 0.2 + c.X * sx, (pids[-1],))
    top = tip_le + c.Z * tip_chord * 0.4 + c.Y * 0.2
    kps["vstab_top"] = Keypoint(top, tuple(pids) if p.tail == "t_tail" else (fin_pid,))
    return kps


# --------------------------------------------------------------------------- engines


def nacelle(front, length: float, radius: float) -> c.Piece:
    """Engine pod from its intake centre ``front`` (3,) pointing to -z, flat capped intake."""
    t = np.array([0.0, 0.08, 0.35, 0.7, 1.0])
    r = radius * np.array([0.9, 1.0, 1.0, 0.8, 0.55])
    centers = np.asarray(front, np.float64) + t[:, None] * length * c.Z
    return c.loft(c.ring_points(centers, c.X, c.Y, r, r, 16))


def build_engines(b: PartBuilder, p: PlaneParams, pal: Palette, fus: Fuselage, rng) -> dict:
    """Add 0/2/4 engines with pylons (label ``engine``); returns inboard intake keypoints."""
    if p.n_engines == 0:
        return {}
    half = p.span / 2
    slots = [0.36] if p.n_engines == 2 else [0.3, 0.62]
    kps = {}
    for side, sx in SIDES:
        for i, frac in enumerate(slots):
            front, pylon = _engine_position(p, fus, sx, frac * half)
            body = nacelle(front, p.eng_len, p.eng_r)
            cen, nrm = c.face_midpoints(body), c.face_normals(body)
            intake = (nrm[:, 2] < -0.95) & (cen[:, 2] < front[2] + 1e-6)
            col = c.speckle(c.solid(pal.engine, len(cen)), rng, 0.03)
            col[intake] = pal.intake
            pid = b.add(body, "engine", col)
            if pylon is not None:
                b.add(pylon, "engine", c.solid(pal.engine * 0.8, len(pylon[1])))
            if i == 0:
                kps[f"engine_front_{side}"] = Keypoint(front - c.Z * 0.05, (pid,))
    return kps


def _engine_position(p: PlaneParams, fus: Fuselage, sx: float, x: float):
    """Intake centre (3,) and the pylon piece (or None) of one engine."""
    if p.engine_mount == "rear":
        z = fus.z1 - p.tail_len - p.eng_len * 0.6
        y = float(fus.center_y(z)) + 0.35 * p.radius
        xr = fus.half_width_at(z + p.eng_len / 2, y) + p.eng_r * 1.3
        front = np.array([sx * xr, y, z])
        mid = front + c.Z * p.eng_len * 0.5
        return front, c.beam(
            mid, mid - c.X * sx * (xr - 0.5 * p.radius), p.eng_len * 0.5, 0.02, c.Z
        )
    le, chord = wing_point(p, fus, sx * x)
    if p.engine_mount == "leading_edge":
        front = le + np.array([0.0, 0.0, -0.6 * p.eng_len])
        return front, None
    front = le + np.array([0.0, -(p.eng_r * 1.6 + MIN_T / 2), -0.45 * p.eng_len])
    top = front + c.Z * (0.45 * p.eng_len + 0.3 * chord) + c.Y * p.eng_r * 0.8
    bottom = le + c.Z * 0.3 * chord
    return front, c.beam(top, bottom, 0.02, min(0.5 * chord, 0.6 * p.eng_len), c.X)


# --------------------------------------------------------------------------- entry point


def generate(seed: int) -> ShapeAsset:
    """Draw one airplane from ``seed``."""
    rng = np.random.default_rng(seed)
    p = sample_params(rng, PRIMARY[seed % len(PRIMARY)])
    crng = rng.spawn(1)[0]
    pal = sample_palette(crng, p)
    b = PartBuilder(CATEGORIES[CATEGORY].part_names)
    fus = Fuselage(p)
    body = fus.piece()
    body_pid = b.add(body, "body", _fuselage_colors(crng, pal, body, fus, p))
    y_tail = float(fus.center_y(fus.z1))
    kps = {
        "nose": Keypoint(np.array([0.0, 0.0, fus.z0 - 0.1]), (body_pid,)),
        "tail_end": Keypoint(np.array([0.0, y_tail, fus.z1 + 0.1]), (body_pid,)),
    }
    kps.update(build_wings(b, p, pal, fus, crng))
    kps.update(build_tail(b, p, pal, fus, crng))
    kps.update(build_engines(b, p, pal, fus, crng))
    meta = {k: (float(v) if isinstance(v, float) else v) for k, v in asdict(p).items()}
    for k in ("sweep", "dihedral", "vstab_sweep"):
        meta[f"{k}_deg"] = float(np.degrees(meta.pop(k)))
    return c.finish_asset(CATEGORY, seed, b, kps, meta)
