"""Shared building blocks of the procedural shape families.

Geometry is assembled from light ``Piece`` tuples ``(vertices (V, 3) float64, faces (F, 3)
int64)``. The primitives mirror ``trimesh.creation`` (box, cylinder/frustum, capsule, torus,
revolve, sweep) plus lofts, ellipsoids and airfoils, each a few vectorised numpy calls: a
``trimesh.creation`` call costs about 1 ms, which would blow the 50 ms per-instance budget for
a 40-part chair. Every closed primitive is oriented with outward normals (positive signed
volume). ``PartBuilder`` collects pieces with part labels and face colours; ``finish_asset``
normalizes the result into the ShapeNetCore v2 frame (+Y up, -Z front, bbox centred, unit bbox
diagonal), snaps keypoints onto the surface and returns a ``ShapeAsset``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import trimesh

from renderers.asset import ShapeAsset
from renderers.categories import CATEGORIES

GENERATOR_VERSION = "1.0"

Piece = tuple[np.ndarray, np.ndarray]
"""(vertices (V, 3) float64, faces (F, 3) int64)."""

X = np.array([1.0, 0.0, 0.0])
Y = np.array([0.0, 1.0, 0.0])
Z = np.array([0.0, 0.0, 1.0])


# --------------------------------------------------------------------------- vector helpers


def unit(v: np.ndarray) -> np.ndarray:
    """Normalize vectors along the last axis."""
    v = np.asarray(v, dtype=np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-300)


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product over the last axis (np.cross has ~100 us of overhead per call)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.stack(
        [
            a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1],
            a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
            a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0],
        ],
        axis=-1,
    )


def perp_frame(d: np.ndarray, hint: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (u, v) with (u, d, v) right-handed; u is as close to ``hint`` as possible."""
    d = unit(d)
    if hint is None or abs(np.dot(unit(hint), d)) > 0.99:
        hint = X if abs(d[0]) < 0.9 else Y
    u = unit(hint - np.dot(hint, d) * d)
    return u, cross(u, d)


def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """(3, 3) rotation matrix about ``axis`` by ``angle`` radians (right-hand rule)."""
    k = unit(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def transform(piece: Piece, rot: np.ndarray | None = None, shift=(0.0, 0.0, 0.0)) -> Piece:
    """Rotate (3, 3) then translate a piece; a reflection flips the faces to stay outward."""
    v, f = piece
    if rot is not None:
        v = v @ np.asarray(rot).T
        if np.linalg.det(rot) < 0:
            f = f[:, ::-1]
    return v + np.asarray(shift, dtype=np.float64), f


def mirror_x(piece: Piece) -> Piece:
    """Mirror a piece across the x = 0 plane (faces re-oriented)."""
    return transform(piece, np.diag([-1.0, 1.0, 1.0]))


def merge(*pieces: Piece) -> Piece:
    """Concatenate pieces into one."""
    verts, faces, n = [], [], 0
    for v, f in pieces:
        verts.append(v)
        faces.append(f + n)
        n += len(v)
    return np.concatenate(verts), np.concatenate(faces)


def signed_volume(piece: Piece) -> float:
    """Signed volume of a closed piece (positive when normals point outward)."""
    v, f = piece
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    return float((a * cross(b, c)).sum() / 6.0)


def orient_outward(piece: Piece) -> Piece:
    """Flip all faces of a closed, consistently wound piece if its signed volume is negative."""
    v, f = piece
    return (v, f[:, ::-1].copy()) if signed_volume(piece) < 0 else piece


def face_centroids(piece: Piece) -> np.ndarray:
    """(F, 3) face centroids."""
    v, f = piece
    return v[f].mean(axis=1)


def face_midpoints(piece: Piece) -> np.ndarray:
    """(F, 3) centres of the faces' bounding boxes; both triangles of a lofted quad usually
    share them, so patterns keyed on them follow quads rather than zig-zagging triangles."""
    tri = piece[0][piece[1]]
    return (tri.min(axis=1) + tri.max(axis=1)) / 2


def face_normals(piece: Piece) -> np.ndarray:
    """(F, 3) unit face normals (zero-area faces give arbitrary unit vectors)."""
    v, f = piece
    return unit(cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]))


# --------------------------------------------------------------------------- primitives


def _patch(origin: np.ndarray, u: np.ndarray, v: np.ndarray, nu: int, nv: int) -> Piece:
    """Planar grid of 2*nu*nv triangles spanning origin + [0,1]u + [0,1]v, normal along u x v."""
    s = np.linspace(0.0, 1.0, nu + 1)[:, None, None]
    t = np.linspace(0.0, 1.0, nv + 1)[None, :, None]
    verts = (origin + s * u + t * v).reshape(-1, 3)
    idx = np.arange((nu + 1) * (nv + 1)).reshape(nu + 1, nv + 1)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    faces = np.concatenate([np.stack([a, b, c], -1), np.stack([a, c, d], -1)]).reshape(-1, 3)
    return verts, faces


def box(
    center, size, rot: np.ndarray | None = None, cell: float | None = None, max_div: int = 16
) -> Piece:
    """Axis-aligned box of ``size`` (3,) rotated by ``rot`` (3, 3) about its centre.

    ``cell`` subdivides every face into a grid of roughly ``cell``-sized squares (for per-face
    colour patterns); ``None`` gives 12 triangles.
    """
    hx, hy, hz = np.asarray(size, dtype=np.float64) / 2.0

    def div(extent: float) -> int:
        return 1 if cell is None else int(np.clip(np.ceil(extent / cell), 1, max_div))

    nx, ny, nz = div(2 * hx), div(2 * hy), div(2 * hz)
    ex, ey, ez = np.array([2 * hx, 0, 0]), np.array([0, 2 * hy, 0]), np.array([0, 0, 2 * hz])
    lo = np.array([-hx, -hy, -hz])
    pieces = [
        _patch(np.array([hx, -hy, -hz]), ey, ez, ny, nz),  # +x
        _patch(lo, ez, ey, nz, ny),  # -x
        _patch(np.array([-hx, hy, -hz]), ez, ex, nz, nx),  # +y
        _patch(lo, ex, ez, nx, nz),  # -y
        _patch(np.array([-hx, -hy, hz]), ex, ey, nx, ny),  # +z
        _patch(lo, ey, ex, ny, nx),  # -z
    ]
    return transform(merge(*pieces), rot, center)


def beam(p0, p1, width: float, depth: float, side=None, cell: float | None = None) -> Piece:
    """Box from ``p0`` to ``p1`` with a ``width`` x ``depth`` cross-section; width runs along the
    direction closest to ``side`` (default x)."""
    p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
    d = p1 - p0
    u, v = perp_frame(d, X if side is None else np.asarray(side, np.float64))
    rot = np.stack([u, unit(d), v], axis=1)
    return box((p0 + p1) / 2, (width, np.linalg.norm(d), depth), rot, cell)


def ring_points(centers, u, v, a, b, k: int = 16, n=2.0, phase: float = 0.0) -> np.ndarray:
    """(S, K, 3) superellipse rings: centre + a*cos'(t) u + b*sin'(t) v, t = phase + 2 pi j / K.

    ``centers`` (S, 3); ``u``, ``v`` (3,) or (S, 3); ``a``, ``b``, ``n`` scalars or (S,). The
    exponent ``n`` is 2 for ellipses and larger for rounded rectangles.
    """
    centers = np.atleast_2d(np.asarray(centers, np.float64))
    s = len(centers)
    t = phase + 2 * np.pi * np.arange(k) / k
    n = np.broadcast_to(np.asarray(n, np.float64), (s,))[:, None]
    c, sn = np.cos(t)[None, :], np.sin(t)[None, :]
    cx = np.sign(c) * np.abs(c) ** (2.0 / n)
    sy = np.sign(sn) * np.abs(sn) ** (2.0 / n)
    a = np.broadcast_to(np.asarray(a, np.float64), (s,))[:, None, None]
    b = np.broadcast_to(np.asarray(b, np.float64), (s,))[:, None, None]
    u = np.broadcast_to(np.asarray(u, np.float64), (s, 3))[:, None, :]
    v = np.broadcast_to(np.asarray(v, np.float64), (s, 3))[:, None, :]
    return centers[:, None, :] + a * cx[..., None] * u + b * sy[..., None] * v


def resample_even(rings: np.ndarray, k: int) -> np.ndarray:
    """Resample closed rings (S, M, 3) to (S, k, 3) points evenly spaced by arc length.

    Superellipse rings sampled by angle crowd their points into the corners; even spacing gives
    flat panels enough faces for per-face colour patterns.
    """
    closed = np.concatenate([rings, rings[:, :1]], axis=1)
    seg = np.linalg.norm(np.diff(closed, axis=1), axis=2)
    cum = np.concatenate([np.zeros((len(rings), 1)), np.cumsum(seg, axis=1)], axis=1)
    out = np.empty((len(rings), k, 3))
    for i in range(len(rings)):
        t = cum[i, -1] * np.arange(k) / k
        for d in range(3):
            out[i, :, d] = np.interp(t, cum[i], closed[i, :, d])
    return out


def loft(
    rings: np.ndarray, cap_start: bool = True, cap_end: bool = True, wrap: bool = False
) -> Piece:
    """Skin (S, K, 3) rings into a surface; caps are fans from the ring centroid.

    ``wrap`` joins the last ring back to the first (tori). A ring collapsed to a point closes
    the surface without a cap (its zero-area triangles are dropped by ``PartBuilder``).
    """
    s_count, k, _ = rings.shape
    verts = [rings.reshape(-1, 3)]
    n_strips = s_count if wrap else s_count - 1
    s = np.arange(n_strips)[:, None]
    j = np.arange(k)[None, :]
    jn = (j + 1) % k
    s1 = (s + 1) % s_count
    a, b, c, d = s * k + j, s * k + jn, s1 * k + j, s1 * k + jn
    faces = [np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)]
    n = s_count * k
    jj, jjn = np.arange(k), (np.arange(k) + 1) % k
    if cap_start and not wrap:
        verts.append(rings[0].mean(axis=0, keepdims=True))
        faces.append(np.stack([np.full(k, n), jjn, jj], -1))
        n += 1
    if cap_end and not wrap:
        last = (s_count - 1) * k
        verts.append(rings[-1].mean(axis=0, keepdims=True))
        faces.append(np.stack([np.full(k, n), last + jj, last + jjn], -1))
    return orient_outward((np.concatenate(verts), np.concatenate(faces)))


def tube(p0, p1, r0: float, r1: float | None = None, k: int = 12, side=None) -> Piece:
    """Capped cylinder (or frustum when ``r1`` differs) from ``p0`` to ``p1``."""
    p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
    u, v = perp_frame(p1 - p0, side)
    r1 = r0 if r1 is None else r1
    return loft(ring_points(np.stack([p0, p1]), u, v, [r0, r1], [r0, r1], k))


def capsule(p0, p1, radius: float, k: int = 12, n_cap: int = 4) -> Piece:
    """Cylinder from ``p0`` to ``p1`` with hemispherical ends (poles at ``p0`` and ``p1``)."""
    p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
    length = max(float(np.linalg.norm(p1 - p0)), 2 * radius)
    u, v = perp_frame(p1 - p0)
    half = np.linspace(0.0, np.pi / 2, n_cap + 1)
    theta = np.concatenate([half, half + np.pi / 2])  # pole -> equator, equator -> pole
    shift = np.repeat([0.0, length - 2 * radius], n_cap + 1)  # the far hemisphere
    t = radius * (1 - np.cos(theta)) + shift
    r = radius * np.sin(theta)
    centers = p0 + t[:, None] * unit(p1 - p0)
    return loft(ring_points(centers, u, v, r, r, k), False, False)


def round_corners(points, radius: float, n_arc: int = 4) -> np.ndarray:
    """(N', 3) polyline with every interior corner replaced by a quadratic-Bezier fillet."""
    p = np.asarray(points, np.float64)
    out = [p[0]]
    for i in range(1, len(p) - 1):
        d0, d1 = p[i] - p[i - 1], p[i + 1] - p[i]
        l0, l1 = np.linalg.norm(d0), np.linalg.norm(d1)
        cosang = np.clip(np.dot(d0, d1) / (l0 * l1), -1.0, 1.0)
        if cosang > 0.9999:
            out.append(p[i])
            continue
        half = np.arccos(cosang) / 2
        t = min(radius * np.tan(half), 0.45 * l0, 0.45 * l1)
        a, c = p[i] - d0 / l0 * t, p[i] + d1 / l1 * t
        s = np.linspace(0.0, 1.0, n_arc + 2)[:, None]
        out.extend((1 - s) ** 2 * a + 2 * (1 - s) * s * p[i] + s**2 * c)
    out.append(p[-1])
    return np.asarray(out)


def sweep(
    path, radius, k: int = 10, caps: bool = True, hint=None, radius_v=None, n: float = 2.0
) -> Piece:
    """Tube of ``radius`` (scalar or (N,)) along a polyline ``path`` (N, 3) (parallel transport).

    The section starts with its ``radius`` axis as close to ``hint`` as possible; ``radius_v``
    (default ``radius``) is the half-size across the other axis (flat sections: fenders) and
    ``n`` > 2 squares the section off (see ``ring_points``).
    """
    path = np.asarray(path, np.float64)
    tang = np.gradient(path, axis=0)
    tang = unit(tang)
    u0, _ = perp_frame(tang[0], hint)
    us = [u0]
    for t in tang[1:]:
        u = us[-1] - np.dot(us[-1], t) * t
        us.append(unit(u))
    us = np.asarray(us)
    vs = cross(us, tang)
    r = np.broadcast_to(np.asarray(radius, np.float64), (len(path),))
    rv = r if radius_v is None else np.broadcast_to(np.asarray(radius_v, np.float64), (len(path),))
    return loft(ring_points(path, us, vs, r, rv, k, n), caps, caps)


def path_surface_point(path, radius: float, target) -> np.ndarray:
    """(3,) point on a swept tube's surface: nearest path point pushed towards ``target``."""
    path = np.asarray(path, np.float64)
    target = np.asarray(target, np.float64)
    p = path[np.argmin(np.linalg.norm(path - target, axis=1))]
    return p + radius * unit(target - p)


def torus(
    center,
    axis,
    major: float,
    minor: float,
    minor_axial: float | None = None,
    k_major: int = 28,
    k_minor: int = 10,
) -> Piece:
    """Torus around ``axis``; the tube section has radial half-size ``minor`` and axial
    half-size ``minor_axial`` (tyres are wider than tall)."""
    axis = unit(axis)
    e1, e2 = perp_frame(axis)
    t = 2 * np.pi * np.arange(k_major) / k_major
    radial = np.cos(t)[:, None] * e1 + np.sin(t)[:, None] * e2
    centers = np.asarray(center, np.float64) + major * radial
    ma = minor if minor_axial is None else minor_axial
    rings = ring_points(centers, radial, axis, minor, ma, k_minor)
    return loft(rings, wrap=True)


def revolve(profile, k: int = 24, center=(0.0, 0.0, 0.0), scale_z=1.0, n=2.0) -> Piece:
    """Lathe a profile (N, 2) of (radius, y) about the vertical axis through ``center``.

    ``scale_z`` (scalar or (N,)) squashes the section along z (flasks); ``n`` (scalar or (N,))
    turns circles into rounded squares. End rings with radius 0 close the surface.
    """
    prof = np.asarray(profile, np.float64)
    c = np.asarray(center, np.float64)
    centers = np.stack([np.full(len(prof), c[0]), c[1] + prof[:, 1], np.full(len(prof), c[2])], 1)
    rz = prof[:, 0] * np.asarray(scale_z, np.float64)
    rings = ring_points(centers, X, Z, prof[:, 0], rz, k, n)
    return loft(rings, cap_start=prof[0, 0] > 0, cap_end=prof[-1, 0] > 0)


def ellipsoid(center, radii, k: int = 16, rings: int = 9) -> Piece:
    """Ellipsoid with semi-axes ``radii`` (3,), poles along y."""
    rx, ry, rz = radii
    phi = np.linspace(-np.pi / 2, np.pi / 2, rings)
    prof = np.stack([np.cos(phi), ry * np.sin(phi)], 1)
    prof[[0, -1], 0] = 0.0
    v, f = revolve(prof * [rx, 1.0], k, center, scale_z=rz / rx)
    return v, f


def airfoil_ring(
    le, chord_dir, thick_dir, chord: float, thickness: float, m: int = 9, min_thickness: float = 0.0
) -> np.ndarray:
    """(2m-1, 3) symmetric NACA-00xx section: leading edge ``le``, absolute max ``thickness``.

    ``min_thickness`` keeps the section at least that thick everywhere behind the first 5% of
    the chord (a blunt trailing edge), so thin wings stay solid for rendering and ray casting.
    """
    x = 0.5 * (1 - np.cos(np.linspace(0, np.pi, m)))
    yt = (
        5
        * thickness
        * (0.2969 * np.sqrt(x) - 0.1260 * x - 0.3516 * x**2 + 0.2843 * x**3 - 0.1036 * x**4)
    )
    yt = np.sqrt(yt**2 + (0.5 * min_thickness * np.minimum(1.0, x / 0.05)) ** 2)
    xs = np.concatenate([x[::-1], x[1:]])
    ys = np.concatenate([yt[::-1], -yt[1:]])
    return (
        np.asarray(le, np.float64)
        + chord * xs[:, None] * unit(chord_dir)
        + ys[:, None] * unit(thick_dir)
    )


# --------------------------------------------------------------------------- colours


PALETTES: dict[str, np.ndarray] = {
    k: np.asarray(v, np.float64) / 255.0
    for k, v in {
        "wood": [
            (140, 92, 52),
            (184, 135, 84),
            (102, 64, 36),
            (209, 171, 120),
            (77, 46, 26),
            (158, 107, 71),
            (196, 150, 96),
        ],
        "metal": [
            (192, 192, 198),
            (52, 52, 56),
            (140, 143, 148),
            (204, 178, 115),
            (230, 230, 232),
            (90, 96, 104),
        ],
        "fabric": [
            (150, 36, 40),
            (36, 52, 98),
            (120, 120, 124),
            (206, 190, 160),
            (56, 102, 64),
            (204, 152, 40),
            (40, 120, 128),
            (34, 34, 36),
            (170, 90, 120),
        ],
        "plastic": [
            (235, 235, 230),
            (30, 30, 32),
            (200, 40, 36),
            (30, 90, 180),
            (240, 130, 20),
            (60, 160, 80),
            (150, 150, 150),
            (250, 210, 40),
        ],
        "car_paint": [
            (180, 20, 24),
            (20, 50, 140),
            (200, 200, 205),
            (20, 20, 22),
            (240, 240, 240),
            (250, 200, 10),
            (20, 110, 60),
            (240, 110, 10),
            (90, 90, 96),
            (120, 20, 60),
            (70, 150, 200),
        ],
        "glass": [
            (40, 90, 50),
            (90, 52, 20),
            (190, 215, 220),
            (25, 50, 115),
            (225, 230, 228),
            (120, 150, 60),
        ],
        "tinted_glass": [(30, 40, 50), (50, 70, 90), (20, 25, 30), (60, 80, 80)],
        "rubber": [(22, 22, 22), (35, 33, 32)],
        "livery": [
            (200, 20, 30),
            (20, 60, 160),
            (0, 120, 80),
            (240, 160, 0),
            (110, 30, 120),
            (0, 150, 200),
            (30, 30, 30),
        ],
        "paper": [
            (245, 240, 225),
            (230, 220, 190),
            (250, 250, 250),
            (200, 30, 30),
            (30, 60, 130),
            (20, 20, 20),
        ],
        "stone": [(235, 232, 225), (60, 60, 62), (160, 150, 140), (215, 200, 180)],
    }.items()
}


def pick_color(rng: np.random.Generator, palette: str, jitter: float = 0.05) -> np.ndarray:
    """(3,) float RGB in [0, 1]: a palette entry with a small random brightness/hue jitter."""
    pal = PALETTES[palette]
    base = pal[rng.integers(len(pal))]
    return np.clip(base * (1 + rng.uniform(-jitter, jitter)) + rng.normal(0, jitter / 3, 3), 0, 1)


def solid(color, n: int) -> np.ndarray:
    """(n, 3) copies of one colour."""
    return np.broadcast_to(np.asarray(color, np.float64)[:3], (n, 3)).copy()


def wood_grain(
    centroids: np.ndarray, base, axis, rng: np.random.Generator, period: float = 0.03
) -> np.ndarray:
    """(F, 3) wood-grain colours: growth rings around a random line parallel to ``axis``."""
    axis = unit(axis)
    off = rng.normal(0, 0.5, 3)
    rel = centroids - off
    along = rel @ axis
    radial = np.linalg.norm(rel - along[:, None] * axis, axis=1)
    wobble = 0.3 * period * np.sin(along / (7 * period) + rng.uniform(0, 6.3))
    band = 0.5 + 0.5 * np.sin(2 * np.pi * (radial + wobble) / period)
    return np.clip(np.asarray(base)[None, :] * (0.78 + 0.3 * band[:, None] ** 3), 0, 1)


def stripes(
    centroids: np.ndarray,
    base,
    other,
    direction,
    period: float,
    duty: float = 0.5,
    phase: float = 0.0,
) -> np.ndarray:
    """(F, 3) alternating stripes along ``direction`` (faces coloured by their centroid)."""
    t = (centroids @ unit(direction)) / period + phase
    use = (t - np.floor(t)) < duty
    return np.where(use[:, None], np.asarray(other)[None, :3], np.asarray(base)[None, :3])


def checker(centroids: np.ndarray, a, b, cell: float) -> np.ndarray:
    """(F, 3) 3D checkerboard of cell size ``cell``."""
    idx = np.floor(centroids / cell).astype(np.int64).sum(axis=1) % 2
    return np.where(idx[:, None] == 0, np.asarray(a)[None, :3], np.asarray(b)[None, :3])


def camo(
    centroids: np.ndarray, colors: Sequence, scale: float, rng: np.random.Generator
) -> np.ndarray:
    """(F, 3) blotchy camouflage: a smooth random field quantised into ``colors``."""
    freqs = rng.normal(0, 1.0 / scale, (4, 3))
    phases = rng.uniform(0, 2 * np.pi, 4)
    field = np.sin(centroids @ freqs.T + phases).sum(axis=1)
    bins = np.quantile(field, np.linspace(0, 1, len(colors) + 1)[1:-1])
    return np.asarray(colors, np.float64)[np.digitize(field, bins)][:, :3]


def speckle(colors: np.ndarray, rng: np.random.Generator, amount: float = 0.04) -> np.ndarray:
    """Per-face brightness noise (stone, brushed metal, fabric weave)."""
    return np.clip(colors * (1 + rng.uniform(-amount, amount, (len(colors), 1))), 0, 1)


def sectors(
    centroids: np.ndarray, center, axis, base, other, count: int, duty: float = 0.5
) -> np.ndarray:
    """(F, 3) alternating angular sectors around ``axis`` (wheel spokes, caps' ridges)."""
    u, v = perp_frame(axis)
    rel = centroids - np.asarray(center, np.float64)
    ang = np.arctan2(rel @ v, rel @ u) / (2 * np.pi) * count
    use = (ang - np.floor(ang)) < duty
    return np.where(use[:, None], np.asarray(other)[None, :3], np.asarray(base)[None, :3])


# --------------------------------------------------------------------------- assembly


class PartBuilder:
    """Accumulates pieces with part labels and face colours into one labelled mesh."""

    def __init__(self, part_names: Sequence[str]) -> None:
        self.part_names = tuple(part_names)
        self._pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def label(self, part: str) -> int:
        """Index of ``part`` in the category's part names."""
        return self.part_names.index(part)

    def add(self, piece: Piece, part: str | np.ndarray, color) -> int:
        """Add a piece; returns its piece id (for keypoint snapping hints).

        Args:
            piece: (vertices (V, 3), faces (F, 3)).
            part: a part name, or (F,) int part labels.
            color: (3,)/(4,) float RGB(A) in [0, 1], or (F, 3)/(F, 4) per-face colours.
        """
        v, f = piece
        if isinstance(part, str):
            labels = np.full(len(f), self.label(part), np.int16)
        else:
            labels = np.asarray(part, np.int16)
            if (
                labels.shape != (len(f),)
                or labels.min() < 0
                or labels.max() >= len(self.part_names)
            ):
                raise ValueError("per-face part labels must be (F,) indices into part_names")
        col = np.asarray(color, np.float64)
        if col.ndim == 1:
            col = np.broadcast_to(col, (len(f), col.shape[0]))
        if col.shape[1] == 3:
            col = np.concatenate([col, np.ones((len(col), 1))], axis=1)
        rgba = np.clip(np.round(col * 255.0), 0, 255).astype(np.uint8)
        self._pieces.append((np.asarray(v, np.float64), np.asarray(f, np.int64), labels, rgba))
        return len(self._pieces) - 1

    def build(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Concatenate all pieces and drop zero-area faces and unused vertices.

        Returns:
            vertices (V, 3) float64, faces (F, 3) int64, labels (F,) int16, colours (F, 4)
            uint8, piece id (F,) int32 of every face.
        """
        v, f = merge(*[(p[0], p[1]) for p in self._pieces])
        labels = np.concatenate([p[2] for p in self._pieces])
        rgba = np.concatenate([p[3] for p in self._pieces])
        pid = np.concatenate([np.full(len(p[1]), i, np.int32) for i, p in enumerate(self._pieces)])
        tri = v[f]
        area2 = np.linalg.norm(cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        scale = np.linalg.norm(v.max(0) - v.min(0))
        keep = area2 > 1e-10 * scale**2
        f, labels, rgba, pid = f[keep], labels[keep], rgba[keep], pid[keep]
        used, inverse = np.unique(f.ravel(), return_inverse=True)
        return v[used], inverse.reshape(-1, 3), labels, rgba, pid


@dataclass
class Keypoint:
    """A semantic keypoint before snapping: a point (3,) and the pieces it must lie on."""

    point: np.ndarray
    pieces: tuple[int, ...] = ()


def snap_to_surface(
    tris: np.ndarray, point: np.ndarray, bounds: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """(3,) closest point to ``point`` on triangles (T, 3, 3), with an exact AABB pre-filter.

    ``bounds`` optionally passes precomputed per-triangle (T, 3) minima and maxima.
    """
    lo, hi = bounds if bounds is not None else (tris.min(axis=1), tris.max(axis=1))
    upper = ((tris - point) ** 2).sum(axis=2).min()
    gap = np.maximum(lo - point, 0) + np.maximum(point - hi, 0)
    cand = tris[(gap**2).sum(axis=1) <= upper * (1 + 1e-9) + 1e-24]
    q = trimesh.triangles.closest_point(cand, np.repeat(point[None], len(cand), axis=0))
    return q[np.argmin(((q - point) ** 2).sum(axis=1))]


def finish_asset(
    category: str,
    seed: int,
    builder: PartBuilder,
    keypoints: dict[str, Keypoint],
    meta: dict,
) -> ShapeAsset:
    """Normalize, snap keypoints onto the surface and package a ``ShapeAsset``.

    Keypoints are given in the build frame; names must be keypoint names of ``category``
    (absent keypoints are simply left out). The output keypoints are ordered by id.
    """
    cat = CATEGORIES[category]
    unknown = set(keypoints) - set(cat.keypoint_names)
    if unknown:
        raise ValueError(f"{category}: unknown keypoint names {sorted(unknown)}")
    v, f, labels, rgba, pid = builder.build()
    lo, hi = v.min(axis=0), v.max(axis=0)
    center, scale = (lo + hi) / 2, 1.0 / np.linalg.norm(hi - lo)
    v = (v - center) * scale
    tris = v[f]
    groups: dict[tuple[int, ...], tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]] = {}
    ids, pts = [], []
    for i, name in enumerate(cat.keypoint_names):
        if name not in keypoints:
            continue
        kp = keypoints[name]
        if kp.pieces not in groups:
            sel = tris if not kp.pieces else tris[np.isin(pid, kp.pieces)]
            groups[kp.pieces] = (sel, (sel.min(axis=1), sel.max(axis=1)))
        sel, bounds = groups[kp.pieces]
        p = (np.asarray(kp.point, np.float64) - center) * scale
        ids.append(i)
        pts.append(snap_to_surface(sel, p, bounds))
    mesh = trimesh.Trimesh(vertices=v, faces=f, face_colors=rgba, process=False, validate=False)
    meta = {
        **meta,
        "generator": f"procedural/{category}",
        "version": GENERATOR_VERSION,
        "n_faces": int(len(f)),
    }
    return ShapeAsset(
        object_id=f"proc-{category}-{seed:06d}",
        category=category,
        mesh=mesh,
        face_part=labels,
        part_names=list(cat.part_names),
        keypoints=np.asarray(pts, np.float32).reshape(-1, 3),
        keypoint_ids=np.asarray(ids, np.int32),
        seed=int(seed),
        meta=meta,
    )


def uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A plain-float uniform draw (keeps ``meta`` JSON-serialisable)."""
    return float(rng.uniform(lo, hi))


def choice(
    rng: np.random.Generator, options: Sequence[str], p: Sequence[float] | None = None
) -> str:
    """A plain-str choice among ``options`` with optional probabilities ``p``."""
    return str(options[int(rng.choice(len(options), p=p))])
