"""Procedural cars: sedan / hatchback / SUV / pickup silhouettes built from a lofted lower body
and a lofted greenhouse; roof and hood labels are assigned per face from the geometry.

Build frame: metres, +Y up (ground at y=0), front towards -Z, the car's right towards +X.

Keypoints: wheels at the centre of each rim's outer face; bumpers at the centre of the bumper
bars' outer faces; roof corners where the roof meets the side glass at the front and back of the
roof; front lights at the centre of the headlamps' front faces.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from renderers.asset import ShapeAsset
from renderers.categories import CATEGORIES
from renderers.procedural import common as c
from renderers.procedural.common import Keypoint, PartBuilder

CATEGORY = "car"
SIDES = (("l", -1.0), ("r", 1.0))
K_RING = 36


@dataclass
class CarParams:
    """Style choices and proportions of one car (metres)."""

    style: str
    rim_style: str
    paint_style: str
    length: float
    width: float
    wheel_r: float
    tire_w: float
    clearance: float
    body_h: float
    cabin_h: float
    front_overhang: float
    wheelbase: float
    hood_len: float
    nose_drop: float
    tail_drop: float
    windshield_deg: float
    rear_deg: float
    tumblehome: float
    roundness: float
    bed_depth: float


STYLE_RANGES = {
    #            length       wheel_r        clearance     body_h       cabin_h       rear window
    "sedan": ((4.2, 5.2), (0.29, 0.36), (0.11, 0.18), (0.46, 0.64), (0.34, 0.50), (20.0, 34.0)),
    "hatchback": ((3.5, 4.4), (0.27, 0.34), (0.12, 0.18), (0.50, 0.68), (0.40, 0.56), (45.0, 70.0)),
    "suv": ((4.2, 5.1), (0.35, 0.44), (0.19, 0.28), (0.64, 0.86), (0.42, 0.62), (68.0, 86.0)),
    "pickup": ((4.9, 5.9), (0.36, 0.45), (0.20, 0.30), (0.66, 0.88), (0.42, 0.58), (78.0, 89.0)),
}


PRIMARY = tuple(STYLE_RANGES)
"""Silhouettes cycled by seed, so consecutive seeds cover them all."""


def sample_params(rng: np.random.Generator, style: str) -> CarParams:
    """Draw proportions within the ranges of the silhouette ``style``."""
    length, wheel_r, clear, body_h, cabin_h, rear = STYLE_RANGES[style]
    ln = c.uniform(rng, *length)
    return CarParams(
        style=style,
        rim_style=c.choice(rng, ["spokes", "solid"]),
        paint_style=c.choice(rng, ["plain", "two_tone", "racing_stripes"], [0.6, 0.2, 0.2]),
        length=ln,
        width=c.uniform(rng, 1.6, 2.05),
        wheel_r=c.uniform(rng, *wheel_r),
        tire_w=c.uniform(rng, 0.18, 0.28),
        clearance=c.uniform(rng, *clear),
        body_h=c.uniform(rng, *body_h),
        cabin_h=c.uniform(rng, *cabin_h),
        front_overhang=ln * c.uniform(rng, 0.15, 0.24),
        wheelbase=ln * c.uniform(rng, 0.55, 0.64 if style != "hatchback" else 0.68),
        hood_len=ln * c.uniform(rng, 0.20, 0.34 if style != "hatchback" else 0.27),
        nose_drop=c.uniform(rng, 0.25, 0.45),
        tail_drop=c.uniform(rng, 0.05, 0.3) if style == "sedan" else c.uniform(rng, 0.0, 0.1),
        windshield_deg=c.uniform(rng, 24.0, 38.0) if style != "pickup" else c.uniform(rng, 30, 45),
        rear_deg=c.uniform(rng, *rear),
        tumblehome=c.uniform(rng, 0.72, 0.88),
        roundness=c.uniform(rng, 3.0, 6.0),
        bed_depth=c.uniform(rng, 0.3, 0.45),
    )


class Body:
    """Lower body: a loft of rounded-rectangle sections with analytic top/bottom lines."""

    def __init__(self, p: CarParams) -> None:
        self.p = p
        self.zf, self.zr = -p.length / 2, p.length / 2
        self.y_belt = p.clearance + p.body_h
        self.z_ws = self.zf + p.hood_len
        self.cab_end = cabin_stations(p, self)[-1] if p.style == "pickup" else self.zr

    def top(self, z: np.ndarray) -> np.ndarray:
        p = self.p
        z = np.asarray(z, np.float64)
        t_hood = np.clip((z - self.zf) / p.hood_len, 0, 1)
        y = self.y_belt - p.nose_drop * p.body_h * (1 - t_hood) ** 1.6
        t_tail = np.clip((z - (self.zr - 0.35)) / 0.35, 0, 1)
        y -= p.tail_drop * p.body_h * t_tail**2
        if p.style == "pickup":
            y = np.where(z > self.cab_end + 0.04, self.y_belt - p.bed_depth, y)
        return y

    def bottom(self, z: np.ndarray) -> np.ndarray:
        p = self.p
        end = np.clip(1 - np.minimum(np.asarray(z) - self.zf, self.zr - np.asarray(z)) / 0.5, 0, 1)
        return p.clearance + 0.12 * p.body_h * end**2

    def stations(self) -> np.ndarray:
        ends = 0.5 * (1 - np.cos(np.linspace(0, np.pi / 2, 5)))
        zs = np.concatenate(
            [
                self.zf + 0.4 * ends,
                np.linspace(self.zf + 0.5, self.zr - 0.5, 16),
                self.zr - 0.4 * ends[::-1],
            ]
        )
        if self.p.style == "pickup":
            zs = np.sort(np.concatenate([zs, [self.cab_end + 0.035, self.cab_end + 0.045]]))
        return zs

    def half_width(self, z: np.ndarray) -> np.ndarray:
        end = np.clip(1 - np.minimum(np.asarray(z) - self.zf, self.zr - np.asarray(z)) / 0.45, 0, 1)
        return self.p.width / 2 * (1 - 0.12 * end**2)

    def rings(self) -> np.ndarray:
        zs = self.stations()
        top, bot = self.top(zs), self.bottom(zs)
        centers = np.stack([np.zeros_like(zs), (top + bot) / 2, zs], 1)
        rings = c.ring_points(
            centers, c.X, c.Y, self.half_width(zs), (top - bot) / 2, 4 * K_RING, self.p.roundness
        )
        return c.resample_even(rings, K_RING)


def cabin_stations(p: CarParams, body: Body) -> np.ndarray:
    """z of windshield base, roof front, roof back and rear-window base."""
    ws = p.cabin_h / np.tan(np.radians(p.windshield_deg))
    rw = p.cabin_h / np.tan(np.radians(p.rear_deg))
    z0 = body.z_ws
    z1 = z0 + ws
    if p.style == "sedan":
        z3 = body.zr - p.length * 0.16
    elif p.style == "pickup":
        z3 = z0 + ws + p.length * 0.17 + rw
    else:
        z3 = body.zr - 0.05
    z2 = max(z1 + 0.4, z3 - rw)
    return np.array([z0, z1, z2, max(z3, z2 + 0.05)])


def cabin_rings(p: CarParams, body: Body) -> tuple[np.ndarray, np.ndarray]:
    """(S, K, 3) greenhouse rings and the 4 key stations (windshield base .. rear base)."""
    z0, z1, z2, z3 = cabin_stations(p, body)
    zs = np.concatenate(
        [np.linspace(z0, z1, 5), np.linspace(z1, z2, 6)[1:], np.linspace(z2, z3, 5)[1:]]
    )
    roof = body.y_belt + p.cabin_h
    crown = 0.03 * np.sin(np.pi * np.clip((zs - z1) / (z2 - z1), 0, 1))
    top = np.interp(zs, [z0, z1, z2, z3], [body.y_belt, roof, roof, body.y_belt]) + crown
    bot = body.y_belt - 0.08
    top = np.maximum(top, bot + 0.085)
    rings = c.ring_points(
        np.stack([np.zeros_like(zs), (top + bot) / 2, zs], 1),
        c.X,
        c.Y,
        p.width / 2 * 0.94 * body.half_width(zs) / (p.width / 2),
        (top - bot) / 2,
        4 * K_RING,
        3.5,
    )
    rings = c.resample_even(rings, K_RING)
    # tumblehome: narrow the sections towards the roof
    frac = np.clip((rings[..., 1] - bot) / np.maximum(top - bot, 1e-6)[:, None], 0, 1)
    rings[..., 0] *= 1 - (1 - p.tumblehome) * frac
    return rings, np.array([z0, z1, z2, z3])


@dataclass
class Palette:
    paint: np.ndarray
    second: np.ndarray
    glass: np.ndarray
    tire: np.ndarray
    rim: np.ndarray
    trim: np.ndarray


def sample_palette(rng: np.random.Generator) -> Palette:
    paint = c.pick_color(rng, "car_paint", 0.04)
    second = c.pick_color(rng, "car_paint", 0.04)
    if np.abs(second - paint).sum() < 0.3:
        second = 1 - paint
    trim = c.pick_color(rng, "rubber") if rng.random() < 0.6 else paint * 0.9
    return Palette(
        paint,
        second,
        c.pick_color(rng, "tinted_glass"),
        c.pick_color(rng, "rubber"),
        c.pick_color(rng, "metal"),
        trim,
    )


# --------------------------------------------------------------------------- body + cabin


def build_body(b: PartBuilder, p: CarParams, pal: Palette, body: Body) -> dict:
    """Add the lower body (labels ``hood``/``body``), bumpers and lights; returns keypoints."""
    piece = c.loft(body.rings())
    cen, nrm = c.face_midpoints(piece), c.face_normals(piece)
    hood = (cen[:, 2] < body.z_ws - 0.02) & (nrm[:, 1] > 0.6) & (cen[:, 2] > body.zf + 0.15)
    labels = np.where(hood, b.label("hood"), b.label("body")).astype(np.int16)
    col = c.solid(pal.paint, len(cen))
    if p.paint_style == "racing_stripes":
        stripe = (np.abs(cen[:, 0]) < 0.18) & (nrm[:, 1] > 0.5)
        col[stripe] = pal.second
    b.add(piece, labels, col)
    kps: dict[str, Keypoint] = {}
    bumper_y = p.clearance + 0.12 * p.body_h + 0.05
    for name, z, sz in (("front", body.zf, -1.0), ("back", body.zr, 1.0)):
        bump = c.box((0, bumper_y, z + sz * 0.01), (p.width * 0.9, 0.12, 0.12))
        pid = b.add(bump, "body", c.solid(pal.trim, len(bump[1])))
        kps[f"bumper_{name}"] = Keypoint(np.array([0.0, bumper_y, z + sz]), (pid,))
    light_y = float(body.top(body.zf + 0.02)) - 0.1
    light_y = max(light_y, bumper_y + 0.12)
    for side, sx in SIDES:
        x = sx * p.width * 0.34
        for z, sz, colr in ((body.zf, -1.0, (0.95, 0.95, 0.85)), (body.zr, 1.0, (0.8, 0.05, 0.05))):
            y = light_y if sz < 0 else float(body.top(body.zr - 0.02)) - 0.1
            lamp = c.box((x, y, z + sz * 0.005), (p.width * 0.2, 0.08, 0.1))
            pid = b.add(lamp, "body", c.solid(colr, len(lamp[1])))
            if sz < 0:
                kps[f"light_front_{side}"] = Keypoint(np.array([x, y, z - 1.0]), (pid,))
    if p.style == "pickup":
        _bed_walls(b, p, pal, body)
    return kps


def _bed_walls(b: PartBuilder, p: CarParams, pal: Palette, body: Body) -> None:
    """Side walls and tailgate of a pickup bed (label ``body``)."""
    t = 0.012 * p.length  # >= 1% of the bbox diagonal
    y0, y1 = body.y_belt - p.bed_depth - 0.05, body.y_belt
    z0, z1 = body.cab_end, body.zr - 0.02
    hw = float(body.half_width(z1 - 0.3)) - t / 2
    walls = [
        c.box((sx * hw, (y0 + y1) / 2, (z0 + z1) / 2), (t, y1 - y0, z1 - z0)) for _, sx in SIDES
    ]
    zt = z1 - 0.5 * t
    walls.append(c.box((0, (y0 + y1) / 2, zt), (2 * hw, y1 - y0, t)))
    piece = c.merge(*walls)
    b.add(piece, "body", c.solid(pal.paint, len(piece[1])))


def build_cabin(b: PartBuilder, p: CarParams, pal: Palette, body: Body) -> dict:
    """Add the greenhouse (labels ``roof``/``body``); returns the roof corner keypoints."""
    rings, (z0, z1, z2, z3) = cabin_rings(p, body)
    piece = c.loft(rings)
    cen, nrm = c.face_midpoints(piece), c.face_normals(piece)
    roof = (nrm[:, 1] > 0.8) & (cen[:, 2] > z1 - 0.02) & (cen[:, 2] < z2 + 0.02)
    labels = np.where(roof, b.label("roof"), b.label("body")).astype(np.int16)
    col = c.solid(pal.glass, len(cen))
    pillar_z = [z0, z1, z2, z3, (z1 + z2) / 2]
    half = np.abs(rings[..., 0]).max() * 0.93
    pillars = np.zeros(len(cen), bool)
    for z in pillar_z:
        pillars |= (np.abs(cen[:, 2] - z) < 0.06) & (np.abs(cen[:, 0]) > half * 0.55)
    pillars |= cen[:, 1] < body.y_belt + 0.02
    col[pillars | roof] = pal.paint
    if p.paint_style == "two_tone":
        col[roof] = pal.second
    elif p.paint_style == "racing_stripes":
        col[roof & (np.abs(cen[:, 0]) < 0.18)] = pal.second
    pid = b.add(piece, labels, col)
    kps = {}
    roof_y = body.y_belt + p.cabin_h
    for end, z in (("front", z1 + 0.03), ("back", z2 - 0.03)):
        ring = rings[np.argmin(np.abs(rings[:, 0, 2] - z))]
        for side, sx in SIDES:
            target = np.array([sx * 3.0, roof_y + 3.0, z])
            corner = ring[np.argmax(ring @ c.unit(target - [0, roof_y, z]))]
            kps[f"roof_{end}_{side}"] = Keypoint(corner, (pid,))
    return kps


# --------------------------------------------------------------------------- wheels


def build_wheels(b: PartBuilder, p: CarParams, pal: Palette, body: Body) -> dict:
    """Add four wheels (tyre torus + rim disc, label ``wheel``); returns hub keypoints."""
    z_front = body.zf + p.front_overhang
    kps = {}
    tire_r = p.wheel_r * 0.3
    for end, z in (("front", z_front), ("back", z_front + p.wheelbase)):
        for side, sx in SIDES:
            x = sx * (p.width / 2 - p.tire_w / 2 + 0.03)
            center = np.array([x, p.wheel_r, z])
            tire = c.torus(center, c.X, p.wheel_r - tire_r, tire_r, p.tire_w / 2, 24, 8)
            b.add(tire, "wheel", c.solid(pal.tire, len(tire[1])))
            outer = center + c.X * sx * (p.tire_w / 2 - 0.02)
            rim = c.tube(
                center - c.X * sx * p.tire_w * 0.3, outer, p.wheel_r - 1.6 * tire_r, None, 20
            )
            cen = c.face_midpoints(rim)
            if p.rim_style == "spokes":
                col = c.sectors(
                    cen, center, c.X, pal.rim, pal.rim * 0.35, 5 + (p.wheel_r > 0.35), 0.35
                )
            else:
                col = c.solid(pal.rim, len(cen))
            pid = b.add(rim, "wheel", col)
            kps[f"wheel_{end}_{side}"] = Keypoint(outer + c.X * sx, (pid,))
    return kps


# --------------------------------------------------------------------------- entry point


def generate(seed: int) -> ShapeAsset:
    """Draw one car from ``seed``."""
    rng = np.random.default_rng(seed)
    p = sample_params(rng, PRIMARY[seed % len(PRIMARY)])
    pal = sample_palette(rng.spawn(1)[0])
    b = PartBuilder(CATEGORIES[CATEGORY].part_names)
    body = Body(p)
    kps = build_wheels(b, p, pal, body)
    kps.update(build_body(b, p, pal, body))
    kps.update(build_cabin(b, p, pal, body))
    meta = {k: (float(v) if isinstance(v, float) else v) for k, v in asdict(p).items()}
    return c.finish_asset(CATEGORY, seed, b, kps, meta)
