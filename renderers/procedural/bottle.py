"""Procedural bottles: wine / soda / jug / flask profiles lathed about +Y (round, oval or
rounded-square sections), with a neck, a cap, an optional jug handle and a printed label band.

Build frame: metres, +Y up (bottom at y=0), front towards -Z, right towards +X.

Keypoints: cap top centre; neck front at mid-neck; shoulder points at mid-shoulder height and
base points on the bottom rim, in the four directions -Z, +Z, -X, +X; bottom centre.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from renderers.asset import ShapeAsset
from renderers.categories import CATEGORIES
from renderers.procedural import common as c
from renderers.procedural.common import Keypoint, PartBuilder

CATEGORY = "bottle"
K_SECT = 32


@dataclass
class BottleParams:
    """Style choices and proportions of one bottle (metres)."""

    style: str
    section: str
    has_handle: bool
    label: str
    height: float
    body_r: float
    depth_ratio: float
    squareness: float
    shoulder_y: float
    shoulder_h: float
    neck_r: float
    neck_len: float
    cap_h: float
    waist: float
    taper: float


PRIMARY = ("wine", "soda", "jug", "flask")
"""Profile styles cycled by seed, so consecutive seeds cover them all."""

# style -> parameter -> (lo, hi). Lengths are fractions of the height, radii of the body radius.
RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "wine": dict(
        height=(0.26, 0.36),
        body_r=(0.10, 0.15),
        shoulder_y=(0.45, 0.68),
        shoulder_h=(0.04, 0.24),
        neck_r=(0.24, 0.36),
        neck_len=(0.12, 0.30),
        cap_h=(0.07, 0.16),
        taper=(0.95, 1.05),
        waist=(0.0, 0.0),
    ),
    "soda": dict(
        height=(0.18, 0.34),
        body_r=(0.11, 0.19),
        shoulder_y=(0.42, 0.68),
        shoulder_h=(0.10, 0.28),
        neck_r=(0.28, 0.45),
        neck_len=(0.03, 0.12),
        cap_h=(0.035, 0.08),
        taper=(0.9, 1.08),
        waist=(0.0, 0.15),
    ),
    "jug": dict(
        height=(0.18, 0.32),
        body_r=(0.20, 0.36),
        shoulder_y=(0.50, 0.75),
        shoulder_h=(0.08, 0.20),
        neck_r=(0.28, 0.50),
        neck_len=(0.03, 0.10),
        cap_h=(0.04, 0.08),
        taper=(0.85, 1.1),
        waist=(0.0, 0.0),
    ),
    "flask": dict(
        height=(0.12, 0.24),
        body_r=(0.20, 0.34),
        shoulder_y=(0.55, 0.78),
        shoulder_h=(0.05, 0.15),
        neck_r=(0.18, 0.32),
        neck_len=(0.04, 0.14),
        cap_h=(0.04, 0.10),
        taper=(0.85, 1.05),
        waist=(0.0, 0.0),
    ),
}


def sample_params(rng: np.random.Generator, style: str) -> BottleParams:
    """Draw the section and label, then proportions within the ranges of ``style``."""
    r = {k: c.uniform(rng, *v) for k, v in RANGES[style].items()}
    height, body_r = r["height"], r["height"] * r["body_r"]
    section = {
        "wine": "round",
        "soda": c.choice(rng, ["round", "square"], [0.75, 0.25]),
        "jug": c.choice(rng, ["round", "square"]),
        "flask": "oval",
    }[style]
    return BottleParams(
        style=style,
        section=section,
        has_handle=bool(style == "jug" and rng.random() < 0.6),
        label=c.choice(rng, ["none", "plain", "striped", "checker"], [0.2, 0.4, 0.25, 0.15]),
        height=height,
        body_r=body_r,
        depth_ratio=c.uniform(rng, 0.3, 0.65) if section == "oval" else 1.0,
        squareness=c.uniform(rng, 3.0, 5.0) if section == "square" else 2.0,
        shoulder_y=height * r["shoulder_y"],
        shoulder_h=height * r["shoulder_h"],
        neck_r=body_r * r["neck_r"],
        # at least 5% of the height of neck stays visible below the cap
        neck_len=height * max(r["neck_len"], r["cap_h"] * (0.7 if style == "wine" else 0.3) + 0.05),
        cap_h=height * r["cap_h"],
        waist=r["waist"],
        taper=r["taper"],
    )


class Profile:
    """The lathe profile: body (base to shoulder top) and neck, as (radius, y) polylines."""

    def __init__(self, p: BottleParams) -> None:
        self.p = p
        self.y_neck0 = p.shoulder_y + p.shoulder_h
        self.y_neck1 = self.y_neck0 + p.neck_len
        self.chamfer = min(0.15 * p.body_r, 0.01)
        self.lip_h = 0.04 * p.height

    def cap_bottom(self) -> float:
        """Lower edge of the cap: wine foil capsules reach well down the neck."""
        return self.y_neck1 - self.p.cap_h * (0.7 if self.p.style == "wine" else 0.3)

    def body(self) -> np.ndarray:
        """(N, 2) body profile from the bottom centre up to the neck start."""
        p, ch = self.p, self.chamfer
        base = [
            [0.0, 0.0],
            [p.body_r * 0.6, 0.0],
            [p.body_r - ch, 0.0],
            [p.body_r - ch * 0.3, ch * 0.3],
            [p.body_r, ch],
        ]
        ys = np.linspace(ch, p.shoulder_y, 8)[1:]
        waist = 1 - p.waist * np.exp(-((((ys / p.shoulder_y) - 0.55) / 0.12) ** 2))
        waist *= 1 + (p.taper - 1) * (1 - ys / p.shoulder_y)  # wider or narrower base
        wall = np.stack([p.body_r * waist, ys], 1)
        t = np.linspace(0, 1, 9)[1:]
        if p.style == "wine" or p.style == "jug":  # rounded (elliptic) shoulder
            r = p.neck_r + (p.body_r - p.neck_r) * np.sqrt(np.clip(1 - t**2, 0, 1))
        else:  # conical shoulder with soft ends
            r = p.body_r - (p.body_r - p.neck_r) * (3 * t**2 - 2 * t**3)
        shoulder = np.stack([r, p.shoulder_y + t * p.shoulder_h], 1)
        return np.concatenate([base, wall, shoulder])

    def neck(self) -> np.ndarray:
        """(M, 2) neck profile continuing from the shoulder up to the lip, then closed."""
        p, lip_h = self.p, self.lip_h
        ys = np.linspace(self.y_neck0, self.y_neck1 - lip_h, 4)[1:]
        rs = np.full_like(ys, p.neck_r)
        lip = [
            [p.neck_r * 1.12, self.y_neck1 - lip_h],
            [p.neck_r * 1.12, self.y_neck1],
            [0.0, self.y_neck1],
        ]
        return np.concatenate([np.stack([rs, ys], 1), lip])

    def section_params(self, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-ring depth ratio and superellipse exponent; both blend to a circle in the neck."""
        p = self.p
        blend = np.clip((ys - p.shoulder_y) / max(p.shoulder_h, 1e-6), 0, 1)
        depth = p.depth_ratio + (1 - p.depth_ratio) * blend
        n = p.squareness + (2.0 - p.squareness) * blend
        return depth, n


@dataclass
class Palette:
    glass: np.ndarray
    cap: np.ndarray
    label: np.ndarray
    ink: np.ndarray


def sample_palette(rng: np.random.Generator, p: BottleParams) -> Palette:
    glass = c.pick_color(rng, "plastic" if p.style == "jug" else "glass")
    cap = c.pick_color(rng, "plastic") if rng.random() < 0.6 else c.pick_color(rng, "metal")
    label = c.pick_color(rng, "paper")
    ink = c.pick_color(rng, "livery")
    return Palette(glass, cap, label, ink)


def _body_colors(pal: Palette, p: BottleParams, cen: np.ndarray) -> np.ndarray:
    col = c.solid(pal.glass, len(cen))
    if p.label == "none":
        return col
    lo, hi = 0.22 * p.height, 0.85 * p.shoulder_y
    band = (cen[:, 1] > lo) & (cen[:, 1] < hi)
    if p.label == "plain":
        lab = c.solid(pal.label, len(cen))
        mid = np.abs(cen[:, 1] - (lo + hi) / 2) < 0.12 * (hi - lo)
        lab[mid] = pal.ink
    elif p.label == "striped":
        lab = c.stripes(cen, pal.label, pal.ink, c.Y, (hi - lo) / 4, 0.35, -lo / ((hi - lo) / 4))
    else:
        lab = c.checker(cen, pal.label, pal.ink, p.body_r * 0.4)
    col[band] = lab[band]
    return col


def build_bottle(b: PartBuilder, p: BottleParams, pal: Palette, prof: Profile) -> tuple[int, int]:
    """Add the lathed body+neck (labels ``body``/``neck``) and the cap (``cap``)."""
    outline = np.concatenate([prof.body(), prof.neck()])
    depth, n = prof.section_params(outline[:, 1])
    piece = c.revolve(outline, K_SECT, scale_z=depth, n=n)
    cen = c.face_midpoints(piece)
    neck = cen[:, 1] > prof.y_neck0 - 1e-6
    labels = np.where(neck, b.label("neck"), b.label("body")).astype(np.int16)
    body_pid = b.add(piece, labels, _body_colors(pal, p, cen))
    y0, y1 = prof.cap_bottom(), prof.y_neck1 + p.cap_h
    if p.style == "wine":  # foil capsule hugging the lip
        cap_prof = [
            [0.0, y0],
            [p.neck_r * 1.04, y0],
            [p.neck_r * 1.18, y1 - 0.003],
            [p.neck_r * 1.1, y1],
            [0.0, y1],
        ]
    else:  # screw cap
        rc = p.neck_r * 1.3
        cap_prof = [[0.0, y0], [rc, y0], [rc, y1 - 0.002], [rc * 0.95, y1], [0.0, y1]]
    cap = c.revolve(cap_prof, K_SECT)
    ccen = c.face_midpoints(cap)
    ridges = c.sectors(ccen, [0, 0, 0], c.Y, pal.cap, pal.cap * 0.75, 16)
    cap_pid = b.add(cap, "cap", ridges if p.style != "wine" else c.solid(pal.cap, len(ccen)))
    return body_pid, cap_pid


def build_handle(b: PartBuilder, p: BottleParams, pal: Palette, prof: Profile) -> None:
    """A jug handle at the back (+Z), from the neck base down the body (label ``body``); the
    back keeps the jug mirror-symmetric, so left/right keypoints stay mirror images."""
    top = np.array([0.0, prof.y_neck0 - 0.005, p.neck_r * 0.9])
    low = np.array([0.0, p.shoulder_y * 0.45, p.body_r * p.depth_ratio * 0.9])
    out = p.body_r * p.depth_ratio + 0.035 * p.height / 0.25
    path = c.round_corners([top, [0, top[1] + 0.01, out], [0, low[1], out], low], 0.02, 4)
    r = max(0.0045, 0.03 * p.height)
    handle = c.sweep(path, r, 10, hint=c.X, radius_v=r * 1.4)
    b.add(handle, "body", c.solid(pal.glass, len(handle[1])))


def keypoints(p: BottleParams, prof: Profile, body_pid: int, cap_pid: int) -> dict:
    """Cap top, neck front, four shoulder and four base points, bottom centre.

    Side points are placed analytically on the lathe surface (radius from the profile, scaled
    by the section's depth ratio along z) and then snapped.
    """
    outline = np.concatenate([prof.body(), prof.neck()])
    outline = outline[: int(np.argmax(outline[:, 1])) + 1]  # up to the lip

    def side_point(y: float, d: np.ndarray) -> np.ndarray:
        r = float(np.interp(y, outline[3:, 1], outline[3:, 0]))
        depth, _ = prof.section_params(np.array([y]))
        return np.array([0.0, y, 0.0]) + d * r * (float(depth[0]) if d[2] else 1.0)

    y_neck = (prof.y_neck0 + min(prof.cap_bottom(), prof.y_neck1 - prof.lip_h)) / 2  # visible
    kps = {
        "cap_top": Keypoint(np.array([0.0, 10.0, 0.0]), (cap_pid,)),
        "neck_front": Keypoint(side_point(y_neck, -c.Z), (body_pid,)),
        "bottom_center": Keypoint(np.array([0.0, -1.0, 0.0]), (body_pid,)),
    }
    y_sh = p.shoulder_y + 0.5 * p.shoulder_h
    for name, d in {"front": -c.Z, "back": c.Z, "l": -c.X, "r": c.X}.items():
        kps[f"shoulder_{name}"] = Keypoint(side_point(y_sh, d), (body_pid,))
        kps[f"base_{name}"] = Keypoint(side_point(prof.chamfer, d), (body_pid,))
    return kps


def generate(seed: int) -> ShapeAsset:
    """Draw one bottle from ``seed``."""
    rng = np.random.default_rng(seed)
    p = sample_params(rng, PRIMARY[seed % len(PRIMARY)])
    pal = sample_palette(rng.spawn(1)[0], p)
    prof = Profile(p)
    b = PartBuilder(CATEGORIES[CATEGORY].part_names)
    body_pid, cap_pid = build_bottle(b, p, pal, prof)
    if p.has_handle:
        build_handle(b, p, pal, prof)
    meta = {k: (float(v) if isinstance(v, float) else v) for k, v in asdict(p).items()}
    return c.finish_asset(CATEGORY, seed, b, keypoints(p, prof, body_pid, cap_pid), meta)
