"""Procedural motorcycles: sport / cruiser / dirt-bike proportions (wheel sizes, wheelbase, rake,
seat height, handlebar width and rise, tank and seat shapes, fairing, fenders, exhaust).

Build frame: metres, +Y up (ground at y=0), front wheel towards -Z, the rider's right is +X.

Keypoints: wheel hubs at the centre of the hub's left-hand (-X) face (the exhaust is on the
right); wheel bottoms at the tyre contact points; handle ends at the outer tips of the grips;
seat front (just behind the tank) and seat back on the seat top; headlight at the lens centre;
tank_top at the highest point of the tank.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from renderers.asset import ShapeAsset
from renderers.categories import CATEGORIES
from renderers.procedural import common as c
from renderers.procedural.common import Keypoint, PartBuilder

CATEGORY = "motorcycle"
SIDES = (("l", -1.0), ("r", 1.0))

# style -> parameter -> (lo, hi); ranges are wide because the unit-diagonal normalization
# removes overall size and only the ratios between them survive.
STYLES: dict[str, dict[str, tuple[float, float]]] = {
    "sport": dict(
        wheelbase=(1.30, 1.50),
        r_front=(0.28, 0.32),
        r_rear=(0.29, 0.33),
        tire_front=(0.055, 0.07),
        tire_rear=(0.075, 0.1),
        seat_y=(0.76, 0.88),
        head_dy=(0.0, 0.10),
        rake=(20.0, 27.0),
        bar_w=(0.50, 0.70),
        bar_rise=(-0.08, 0.04),
        tank_len=(0.36, 0.54),
        tank_w=(0.28, 0.40),
        tank_h=(0.15, 0.26),
        seat_len=(0.40, 0.60),
        seat_w=(0.20, 0.30),
        exhaust_y=(0.30, 0.60),
        clearance=(0.12, 0.20),
    ),
    "cruiser": dict(
        wheelbase=(1.50, 1.85),
        r_front=(0.30, 0.38),
        r_rear=(0.30, 0.35),
        tire_front=(0.045, 0.065),
        tire_rear=(0.075, 0.11),
        seat_y=(0.60, 0.75),
        head_dy=(0.15, 0.35),
        rake=(28.0, 38.0),
        bar_w=(0.70, 1.00),
        bar_rise=(0.05, 0.30),
        tank_len=(0.40, 0.62),
        tank_w=(0.24, 0.36),
        tank_h=(0.14, 0.24),
        seat_len=(0.42, 0.70),
        seat_w=(0.26, 0.38),
        exhaust_y=(0.22, 0.40),
        clearance=(0.10, 0.17),
    ),
    "dirt": dict(
        wheelbase=(1.38, 1.55),
        r_front=(0.36, 0.42),
        r_rear=(0.34, 0.40),
        tire_front=(0.045, 0.055),
        tire_rear=(0.05, 0.07),
        seat_y=(0.88, 1.02),
        head_dy=(-0.04, 0.08),
        rake=(24.0, 29.0),
        bar_w=(0.72, 0.90),
        bar_rise=(0.04, 0.14),
        tank_len=(0.26, 0.40),
        tank_w=(0.22, 0.32),
        tank_h=(0.12, 0.18),
        seat_len=(0.60, 0.85),
        seat_w=(0.16, 0.24),
        exhaust_y=(0.55, 0.80),
        clearance=(0.25, 0.36),
    ),
}
VARIANTS = {
    "sport": ("faired", "naked"),
    "cruiser": ("bobber", "touring"),
    "dirt": ("enduro", "motocross"),
}


@dataclass
class BikeParams:
    """Style choice and proportions of one motorcycle (metres, degrees)."""

    style: str
    variant: str
    rim_style: str
    tank_graphic: str
    wheelbase: float
    r_front: float
    r_rear: float
    tire_front: float
    tire_rear: float
    seat_y: float
    head_dy: float
    rake: float
    bar_w: float
    bar_rise: float
    tank_len: float
    tank_w: float
    tank_h: float
    seat_len: float
    seat_w: float
    exhaust_y: float
    clearance: float


PRIMARY = tuple(STYLES)
"""Styles cycled by seed, so consecutive seeds cover them all."""


def sample_params(rng: np.random.Generator, style: str) -> BikeParams:
    """Draw proportions within the ranges of ``style``."""
    ranges = {k: c.uniform(rng, *v) for k, v in STYLES[style].items()}
    # the seat (and its rising back) must clear the rear tyre and fender
    ranges["seat_y"] = max(ranges["seat_y"], 2 * ranges["r_rear"] + 0.02)
    rim = "wire" if style == "dirt" else c.choice(rng, ["cast", "wire"], [0.7, 0.3])
    graphic = c.choice(rng, ["plain", "stripe", "two_tone"])
    variant = c.choice(rng, VARIANTS[style])
    return BikeParams(style=style, variant=variant, rim_style=rim, tank_graphic=graphic, **ranges)


class Geometry:
    """Derived reference points: axles, steering axis and head, tank and seat extents."""

    def __init__(self, p: BikeParams) -> None:
        self.axle_f = np.array([0.0, p.r_front, -p.wheelbase / 2])
        self.axle_r = np.array([0.0, p.r_rear, p.wheelbase / 2])
        rake = np.radians(p.rake)
        self.steer = np.array([0.0, np.cos(rake), np.sin(rake)])
        self.head_y = p.seat_y + p.head_dy + (0.12 if p.style == "sport" else 0.0)
        self.fork_len = (self.head_y - p.r_front) / np.cos(rake)
        self.head = self.axle_f + self.steer * self.fork_len
        self.head_low = self.head - self.steer * 0.2
        self.tank_z0 = self.head[2] + 0.02
        self.tank_z1 = self.tank_z0 + p.tank_len
        self.seat_z0 = self.tank_z1 - 0.05
        self.seat_z1 = min(self.seat_z0 + p.seat_len, self.axle_r[2] + 0.35)
        self.pivot = np.array([0.0, p.clearance + 0.16, self.tank_z1 - 0.02])
        self.fork_x = p.tire_front + 0.035
        self.arm_x = p.tire_rear + 0.04  # swingarm beams


@dataclass
class Palette:
    paint: np.ndarray
    second: np.ndarray
    frame: np.ndarray
    engine: np.ndarray
    chrome: np.ndarray
    seat: np.ndarray
    tire: np.ndarray
    rim: np.ndarray


def sample_palette(rng: np.random.Generator, p: BikeParams) -> Palette:
    paint = c.pick_color(rng, "car_paint")
    second = c.pick_color(rng, "livery")
    frame = c.pick_color(rng, "metal") if rng.random() < 0.7 else paint * 0.8
    seat = c.pick_color(rng, "rubber") if rng.random() < 0.7 else c.pick_color(rng, "wood") * 0.6
    rim = c.pick_color(rng, "metal")
    return Palette(
        paint,
        second,
        frame,
        c.pick_color(rng, "metal") * 0.8,
        np.array([0.82, 0.83, 0.86]),
        seat,
        c.pick_color(rng, "rubber"),
        rim,
    )


def arc(center, radius: float, a0: float, a1: float, n: int = 10, x: float = 0.0) -> np.ndarray:
    """(n, 3) arc in the y-z plane around ``center``; angle 0 is straight up, positive to +z."""
    t = np.radians(np.linspace(a0, a1, n))
    return (
        np.asarray(center)
        + x * c.X
        + radius * (np.cos(t)[:, None] * c.Y + np.sin(t)[:, None] * c.Z)
    )


# --------------------------------------------------------------------------- wheels


def build_wheel(
    b: PartBuilder,
    p: BikeParams,
    pal: Palette,
    axle,
    radius: float,
    tire: float,
    name: str,
    hub_w: float,
) -> dict:
    """Add tyre, rim disc and hub (label ``wheel``); returns hub and contact keypoints.

    ``hub_w`` is the hub's half width; it reaches past the fork legs / swingarm so the hub
    caps (and the hub keypoints) are visible from the side.
    """
    tr = max(0.045, 0.9 * tire)
    tyre = c.torus(axle, c.X, radius - tr, tr, tire, 28, 8)
    cen = c.face_midpoints(tyre)
    col = c.solid(pal.tire, len(cen))
    if p.style == "dirt":  # knobby tread
        col = c.sectors(cen, axle, c.X, pal.tire, pal.tire * 2.2, 28, 0.4)
    tyre_pid = b.add(tyre, "wheel", col)
    half = 0.022
    rim = c.tube(axle - c.X * half, axle + c.X * half, radius - 1.7 * tr, None, 24)
    cen = c.face_midpoints(rim)
    if p.rim_style == "cast":
        col = c.sectors(cen, axle, c.X, pal.rim * 0.25, pal.rim, 5, 0.3)
    else:
        col = c.sectors(cen, axle, c.X, pal.rim * 0.3, pal.chrome, 18, 0.2)
    b.add(rim, "wheel", col)
    hub = c.tube(axle - c.X * hub_w, axle + c.X * hub_w, 0.055)
    hub_pid = b.add(hub, "wheel", c.solid(pal.chrome, len(hub[1])))
    return {
        f"wheel_{name}_hub": Keypoint(axle - c.X * 2.0, (hub_pid,)),  # left: no exhaust there
        f"wheel_{name}_bottom": Keypoint(axle - c.Y * 2.0, (tyre_pid,)),
    }


# --------------------------------------------------------------------------- steering


def build_front(b: PartBuilder, p: BikeParams, pal: Palette, g: Geometry) -> dict:
    """Add fork, head tube and triple clamps (``frame``), handlebar and grips (``handle``) and
    the headlight (``light``); returns handle and headlight keypoints."""
    fork_r = 0.022 if p.style != "dirt" else 0.028
    pieces = []
    for _, sx in SIDES:
        off = c.X * sx * g.fork_x
        pieces.append(
            c.tube(g.axle_f + off - g.steer * 0.03, g.head + off, fork_r, fork_r * 0.9, 10)
        )
    for pt in (g.head_low, g.head):
        pieces.append(
            c.beam(pt - c.X * (g.fork_x + 0.03), pt + c.X * (g.fork_x + 0.03), 0.05, 0.06, c.Y)
        )
    pieces.append(c.tube(g.head_low, g.head + g.steer * 0.02, 0.035, None, 12))
    frame = c.merge(*pieces)
    b.add(frame, "frame", c.solid(pal.frame, len(frame[1])))
    kps = _handlebar(b, p, pal, g)
    kps.update(_headlight(b, p, pal, g))
    return kps


def _handlebar(b: PartBuilder, p: BikeParams, pal: Palette, g: Geometry) -> dict:
    top = g.head + g.steer * 0.05
    yb, zc, hw = top[1] + 0.03, top[2], p.bar_w / 2
    pull = 0.12 if p.style == "cruiser" else 0.05
    rise = p.bar_rise
    pts = [
        [-hw, yb + rise, zc + pull],
        [-hw * 0.45, yb + rise * 0.9, zc + pull * 0.5],
        [-0.08, yb, zc],
        [0.08, yb, zc],
        [hw * 0.45, yb + rise * 0.9, zc + pull * 0.5],
        [hw, yb + rise, zc + pull],
    ]
    path = c.round_corners(pts, 0.06, 3)
    bar_r = 0.015
    pieces = [c.sweep(path, bar_r, 8), c.tube(top - g.steer * 0.04, [0, yb, zc], 0.022, None, 8)]
    b.add(c.merge(*pieces), "handle", c.solid(pal.chrome * 0.9, sum(len(q[1]) for q in pieces)))
    kps = {}
    for side, idx in (("l", 0), ("r", -1)):
        end = path[idx]
        inward = c.unit(path[1] - path[0]) if idx == 0 else c.unit(path[-2] - path[-1])
        grip = c.capsule(end + inward * 0.13, end - inward * 0.01, 0.021, 10, 3)
        pid = b.add(grip, "handle", c.solid(pal.tire, len(grip[1])))
        kps[f"handle_end_{side}"] = Keypoint(end - inward * 1.0, (pid,))
    return kps


def _headlight(b: PartBuilder, p: BikeParams, pal: Palette, g: Geometry) -> dict:
    lens = np.array([0.95, 0.95, 0.8])
    if p.variant == "faired":
        center = g.head_low - c.Z * 0.24 + c.Y * 0.02
        lamp = c.ellipsoid(center, (0.09, 0.045, 0.06), 12, 7)
    else:
        r = {"cruiser": 0.10, "sport": 0.075}.get(p.style, 0.06)
        center = g.head_low - c.Z * (r + 0.05) + c.Y * (0.04 if p.style == "cruiser" else 0.0)
        # keep the lamp clear of the front tyre and fender so it stays visible from the front
        center[1] = min(max(center[1], 2 * p.r_front + 0.06 + r), g.head[1] + 0.05)
        lamp = c.tube(center + c.Z * 0.05, center - c.Z * 0.05, r * 0.85, r, 16)
    cen, nrm = c.face_midpoints(lamp), c.face_normals(lamp)
    col = c.solid(pal.chrome if p.style == "cruiser" else pal.paint, len(cen))
    col[nrm[:, 2] < -0.5] = lens
    pid = b.add(lamp, "light", col)
    # bracket from the lamp back to the steering axis
    axis_pt = g.axle_f + g.steer * float(np.dot(center - g.axle_f, g.steer))
    bracket = c.tube(center + c.Z * 0.03, axis_pt, 0.016, None, 8)
    b.add(bracket, "frame", c.solid(pal.frame, len(bracket[1])))
    if p.style == "dirt":  # number plate around the lamp
        size = (0.24, 0.26, 0.03) if p.variant == "enduro" else (0.3, 0.32, 0.03)
        plate = c.box(center + c.Z * 0.03, size)
        b.add(plate, "frame", c.solid(pal.paint, len(plate[1])))
    return {"headlight": Keypoint(center - c.Z * 1.0, (pid,))}


# --------------------------------------------------------------------------- tank, seat, body


def build_tank(b: PartBuilder, p: BikeParams, pal: Palette, g: Geometry) -> dict:
    """Add the fuel tank (label ``gas_tank``); returns ``tank_top``."""
    t = np.linspace(0, 1, 10)
    zs = g.tank_z0 + t * p.tank_len
    top_front, top_back = g.head[1] - 0.02, p.seat_y + 0.05
    hump = 0.04 * np.sin(np.pi * np.clip(t * 1.3, 0, 1))
    top = top_front + (top_back - top_front) * t**1.4 + hump
    shape = np.sin(np.pi * (0.08 + 0.84 * t)) ** 0.5
    half_h = p.tank_h / 2 * (0.55 + 0.45 * shape)
    half_w = p.tank_w / 2 * (0.45 + 0.55 * np.sin(np.pi * (0.15 + 0.7 * t)) ** 0.7)
    centers = np.stack([np.zeros_like(zs), top - half_h, zs], 1)
    tank = c.loft(c.ring_points(centers, c.X, c.Y, half_w, half_h, 18, 2.4))
    cen = c.face_midpoints(tank)
    col = c.solid(pal.paint, len(cen))
    if p.tank_graphic == "stripe":
        col = c.stripes(cen, pal.paint, pal.second, c.Y, 0.06, 0.3)
    elif p.tank_graphic == "two_tone":
        col[cen[:, 1] < np.interp(cen[:, 2], zs, top - half_h)] = pal.second
    pid = b.add(tank, "gas_tank", col)
    i = int(np.argmax(top))
    return {"tank_top": Keypoint(np.array([0.0, top[i] + 1.0, zs[i]]), (pid,))}


def build_seat(b: PartBuilder, p: BikeParams, pal: Palette, g: Geometry) -> dict:
    """Add the seat (label ``seat``); returns ``seat_front`` and ``seat_back``."""
    t = np.linspace(0, 1, 10)
    zs = g.seat_z0 + t * (g.seat_z1 - g.seat_z0)
    if p.style == "sport":
        top = p.seat_y + 0.09 * np.clip((t - 0.5) / 0.2, 0, 1) + 0.02 * (1 - t) ** 4
    elif p.style == "cruiser":
        top = p.seat_y + 0.05 * (2 * t - 1) ** 2 + 0.06 * np.clip((t - 0.7) / 0.3, 0, 1)
    else:
        top = p.seat_y + 0.03 * (1 - t) ** 3
    # the pad is 9 cm thick; where the top rises (pillion, backrest) the base stays level so
    # the seat thickens instead of forming a thin wedge
    bottom = np.minimum(top - 0.09, top.min() - 0.06)
    width = p.seat_w * (0.55 + 0.45 * np.sin(np.pi * (0.2 + 0.6 * t)) ** 0.5)
    if p.style == "cruiser":
        width = p.seat_w * (0.5 + 0.5 * np.sqrt(t))
    centers = np.stack([np.zeros_like(zs), (top + bottom) / 2, zs], 1)
    seat = c.loft(c.ring_points(centers, c.X, c.Y, width / 2, (top - bottom) / 2, 18, 4.0))
    cen = c.face_midpoints(seat)
    pid = b.add(seat, "seat", c.stripes(cen, pal.seat, pal.seat * 0.8, c.Z, 0.05, 0.15))
    i = int(np.argmax(zs > g.tank_z1 + 0.02))  # first station behind the tank
    return {
        "seat_front": Keypoint(np.array([0.0, top[i] + 0.01, zs[i]]), (pid,)),
        "seat_back": Keypoint(np.array([0.0, top[-2] + 0.01, zs[-2]]), (pid,)),
    }


def build_frame(b: PartBuilder, p: BikeParams, pal: Palette, g: Geometry) -> None:
    """Add backbone, down tubes, swingarm, engine, exhaust and fenders (label ``frame``)."""
    r = 0.026
    under_seat = np.array([0.0, p.seat_y - 0.1, g.seat_z1 - 0.05])
    tubes = [
        c.sweep(
            c.round_corners([g.head, [0, p.seat_y - 0.08, g.seat_z0 + 0.05], under_seat], 0.1), r
        ),
        c.sweep(
            c.round_corners([g.head_low, [0, p.clearance + 0.05, g.head[2] + 0.12], g.pivot], 0.12),
            r,
        ),
    ]
    for _, sx in SIDES:
        x = sx * g.arm_x
        tubes.append(c.beam(g.pivot + c.X * x, g.axle_r + c.X * x, 0.035, 0.06, c.X))
    tubes.append(c.tube(g.pivot + c.Y * 0.05, [0, p.seat_y - 0.09, g.seat_z0 + 0.15], 0.03))
    frame = c.merge(*tubes)
    b.add(frame, "frame", c.solid(pal.frame, len(frame[1])))
    _engine(b, p, pal, g)
    _exhaust(b, p, pal, g)
    _bodywork(b, p, pal, g)


def _engine(b: PartBuilder, p: BikeParams, pal: Palette, g: Geometry) -> None:
    z0, z1 = g.head[2] + 0.16, g.pivot[2] - 0.02
    y0 = p.clearance + 0.04
    y1 = min(p.seat_y - 0.15, y0 + 0.32)
    block = c.box(
        [0, (y0 + y1) / 2 - 0.04, (z0 + z1) / 2], (0.3, y1 - y0 - 0.08, z1 - z0), cell=0.05
    )
    pieces = [block]
    zc, yc = (z0 + z1) / 2, y1 - 0.06
    if p.style == "cruiser":  # V-twin
        for ang in (-32.0, 32.0):
            d = np.array([0.0, np.cos(np.radians(ang)), np.sin(np.radians(ang))])
            pieces.append(c.tube([0, yc - 0.12, zc], [0, yc - 0.12, zc] + d * 0.3, 0.075, None, 12))
    elif p.style == "dirt":
        pieces.append(c.tube([0, yc - 0.1, zc], [0, yc + 0.1, zc - 0.05], 0.07, None, 12))
    engine = c.merge(*pieces)
    cen = c.face_midpoints(engine)
    b.add(engine, "frame", c.stripes(cen, pal.engine, pal.engine * 0.6, c.Y, 0.03, 0.35))


def _exhaust(b: PartBuilder, p: BikeParams, pal: Palette, g: Geometry) -> None:
    x = 0.17
    start = np.array([0.05, p.clearance + 0.2, g.head[2] + 0.2])
    mid = np.array([x, p.clearance + 0.05, g.pivot[2] - 0.1])
    end = np.array([x + 0.03, p.exhaust_y, g.axle_r[2] + 0.1])
    bend = np.array([x, p.clearance + 0.08, g.pivot[2] + 0.1])
    path = c.round_corners([start, mid, bend, end], 0.1)
    muffler_start = end + c.unit(bend - end) * 0.4
    pieces = [c.sweep(path, 0.026, 8), c.tube(muffler_start, end, 0.05, 0.045, 12)]
    piece = c.merge(*pieces)
    b.add(piece, "frame", c.solid(pal.chrome, len(piece[1])))


def _fender(axle, radius: float, span: tuple[float, float], half_w: float) -> c.Piece:
    """A flat curved fender of half width ``half_w`` over a wheel (angles as in ``arc``)."""
    return c.sweep(arc(axle, radius, *span, 10), half_w, 8, hint=c.X, radius_v=0.016, n=6.0)


def _bodywork(b: PartBuilder, p: BikeParams, pal: Palette, g: Geometry) -> None:
    """Fenders, tail, fairing, saddlebags and windshield by style, all labelled ``frame``."""
    pieces = []
    wf, wr = p.tire_front + 0.03, p.tire_rear + 0.03
    if p.variant == "motocross":
        pieces.append(_fender(g.axle_f, p.r_front + 0.09, (-60, 15), wf))
    else:
        span = {"cruiser": (-70, 25), "dirt": (-45, 30)}.get(p.style, (-35, 20))
        pieces.append(_fender(g.axle_f, p.r_front + 0.03, span, wf))
    if p.style == "dirt":
        tail = [g.seat_z1 - 0.2, g.seat_z1 + 0.25]
        pieces.append(
            c.beam([0, p.seat_y - 0.06, tail[0]], [0, p.seat_y - 0.02, tail[1]], 0.16, 0.03, c.X)
        )
    else:
        span_r = {"bobber": (-10, 80), "touring": (-25, 110)}.get(p.variant, (10, 75))
        pieces.append(_fender(g.axle_r, p.r_rear + 0.04, span_r, wr))
    if p.style == "sport":
        pieces.extend(_sport_body(p, g))
    if p.variant == "touring":
        pieces.extend(_touring(b, p, pal, g))
    piece = c.merge(*pieces)
    b.add(piece, "frame", c.solid(pal.paint, len(piece[1])))


def _sport_body(p: BikeParams, g: Geometry) -> list[c.Piece]:
    """Tail cowl under the seat and, when faired, a nose fairing around the head."""
    zt = np.linspace(g.seat_z0 + 0.15, g.seat_z1 + 0.12, 6)
    s = np.linspace(0, 1, 6)
    tail_c = np.stack([np.zeros_like(zt), p.seat_y - 0.1 + 0.12 * s, zt], 1)
    pieces = [
        c.loft(c.ring_points(tail_c, c.X, c.Y, 0.13 * (1 - 0.6 * s), 0.09 * (1 - 0.5 * s), 14, 3))
    ]
    if p.variant == "faired":
        t = np.linspace(0, 1, 7)
        zs = g.head_low[2] - 0.28 + t * 0.42
        yc = g.head_low[1] - 0.02 + 0.05 * t
        centers = np.stack([np.zeros_like(zs), yc, zs], 1)
        a, bb = 0.05 + 0.17 * np.sqrt(t), 0.05 + 0.14 * np.sqrt(t)
        pieces.append(c.loft(c.ring_points(centers, c.X, c.Y, a, bb, 16, 2.5)))
    return pieces


def _touring(b: PartBuilder, p: BikeParams, pal: Palette, g: Geometry) -> list[c.Piece]:
    """Saddlebags beside the rear wheel (returned) and a windshield (added as glass)."""
    bags = []
    for _, sx in SIDES:
        x = sx * (p.tire_rear + 0.16)
        bags.append(c.box([x, p.r_rear + 0.24, g.axle_r[2] - 0.05], (0.18, 0.3, 0.5), cell=0.1))
    top = g.head + g.steer * 0.05
    shield = c.beam(top - c.Z * 0.12 - c.Y * 0.02, top - c.Z * 0.02 + c.Y * 0.42, 0.5, 0.03, c.X)
    b.add(shield, "frame", c.solid((0.7, 0.8, 0.85), len(shield[1])))
    return bags


def build_taillight(b: PartBuilder, p: BikeParams, g: Geometry) -> None:
    """Small red lamp at the rear (label ``light``)."""
    extra = 0.14 if p.style == "sport" else (0.24 if p.style == "dirt" else 0.0)
    y = p.seat_y - 0.06 + (0.1 if p.style == "sport" else 0.0)
    lamp = c.box([0, y, g.seat_z1 + extra], (0.12, 0.05, 0.06))
    b.add(lamp, "light", c.solid((0.85, 0.05, 0.05), len(lamp[1])))


# --------------------------------------------------------------------------- entry point


def generate(seed: int) -> ShapeAsset:
    """Draw one motorcycle from ``seed``."""
    rng = np.random.default_rng(seed)
    p = sample_params(rng, PRIMARY[seed % len(PRIMARY)])
    pal = sample_palette(rng.spawn(1)[0], p)
    g = Geometry(p)
    b = PartBuilder(CATEGORIES[CATEGORY].part_names)
    kps = build_wheel(b, p, pal, g.axle_f, p.r_front, p.tire_front, "front", g.fork_x + 0.045)
    kps.update(build_wheel(b, p, pal, g.axle_r, p.r_rear, p.tire_rear, "back", g.arm_x + 0.04))
    kps.update(build_front(b, p, pal, g))
    kps.update(build_tank(b, p, pal, g))
    kps.update(build_seat(b, p, pal, g))
    build_frame(b, p, pal, g)
    build_taillight(b, p, g)
    meta = {k: (float(v) if isinstance(v, float) else v) for k, v in asdict(p).items()}
    return c.finish_asset(CATEGORY, seed, b, kps, meta)
