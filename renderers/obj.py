"""A standalone Wavefront OBJ + MTL reader for ShapeNetCore (v1 Blender, v2 assimp dialects).

Plain numpy, no trimesh. What it handles (see ``shared/reference/formats.md`` sections 1.3, 9):

* ``f`` records with any spacing (assimp writes ``f  1/1/1 2/2/1 3/3/1``), ``v``, ``v/vt``,
  ``v//vn`` and ``v/vt/vn`` corners, 1-based and negative (relative) indices; polygons are
  fan-triangulated ``(c0, ci, ci+1)``. Triangles keep file order: triangle ``k`` of the result is
  the ``k``-th face of a triangle-only file, which is what KeypointNet's ``face_index`` counts.
* ``vt`` with 1-3 components (the first two are kept), ``vn`` of any length (counted, not used),
  ``g`` / ``usemtl`` / ``mtllib`` (several), ``\\`` line continuations.
* ``l``, ``p``, ``s``, ``o`` and other records are skipped (counted in ``ObjMesh.skipped``).

Malformed geometry raises :class:`~renderers.asset.AssetError` naming ``file:line`` and the
problem. Missing or odd material data never raises: a missing ``.mtl``, an unknown ``usemtl``
name or a missing texture image is logged at WARNING, recorded in ``ObjMesh.warnings``, and the
face falls back to its ``Kd`` colour (or :data:`DEFAULT_KD`).

Speed: records are sorted by kind in one pass, then ``v``/``vt``/``f`` bodies are parsed with
vectorised numpy; a per-line parser runs only when that fails, to name the bad line (or to accept
unusual but valid forms such as mixed vertex widths).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from renderers.asset import AssetError

log = logging.getLogger(__name__)

DEFAULT_KD = (0.8, 0.8, 0.8)
"""Diffuse colour of a material that has no ``Kd`` or that is not defined in any mtl file."""

_FIX_HINT = "the file is malformed: re-extract this model from the ShapeNet archive or leave it out"
# map_Kd option -> number of arguments it takes (``-o/-s/-t`` take 1-3 numbers).
_MAP_OPTIONS = {
    "-blendu": 1, "-blendv": 1, "-bm": 1, "-boost": 1, "-cc": 1, "-clamp": 1, "-imfchan": 1,
    "-mm": 2, "-texres": 1, "-type": 1, "-o": 3, "-s": 3, "-t": 3,
}
_POOL = {"vertex": "vertices", "uv": "uv coordinates"}


@dataclass
class Material:
    """One ``newmtl`` block.

    Attributes:
        name: material name as written after ``newmtl`` / ``usemtl``.
        kd: (3,) float64 diffuse colour in [0, 1].
        map_kd: absolute path of the diffuse texture image; None if absent or not found.
        map_kd_missing: the ``map_Kd`` path as written when the image was not found, else None.
        opacity: ``d`` (or ``1 - Tr``), clipped to [0, 1].
        defined: False for a placeholder made for a ``usemtl`` name no mtl file defines.
    """

    name: str
    kd: np.ndarray = field(default_factory=lambda: np.array(DEFAULT_KD))
    map_kd: Path | None = None
    map_kd_missing: str | None = None
    opacity: float = 1.0
    defined: bool = True


@dataclass
class ObjMesh:
    """A parsed OBJ file; all per-face arrays follow triangle (file) order.

    Attributes:
        path: the OBJ file.
        vertices: (V, 3) float64 positions.
        faces: (F, 3) int64 vertex indices (0-based) of the fan-triangulated faces.
        uv: (T, 2) float64 texture coordinates (``vt`` u, v; a third component is dropped).
        face_uv: (F, 3) int64 indices into ``uv`` per face corner, -1 where a corner has no vt.
        face_material: (F,) int64 index into ``materials``; -1 before any ``usemtl``.
        face_group: (F,) int64 index into ``group_names``; -1 before any ``g``.
        face_polygon: (F,) int64 index of the source ``f`` record (differs from arange(F) only
            when the file has polygons with more than 3 corners).
        group_names: distinct ``g`` names in order of first use.
        materials: every material of the mtl files (file order), then placeholders for
            ``usemtl`` names no mtl defines.
        mtl_paths: mtl files that were read.
        n_normals: number of ``vn`` records.
        skipped: record keyword -> count for records that were skipped (``l``, ``s``, ...).
        warnings: non-fatal problems (missing mtl / texture, unknown material names ...).
    """

    path: Path
    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    face_uv: np.ndarray
    face_material: np.ndarray
    face_group: np.ndarray
    face_polygon: np.ndarray
    group_names: list[str]
    materials: list[Material]
    mtl_paths: list[Path]
    n_normals: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def has_uv(self) -> bool:
        """True if at least one face corner has a texture coordinate."""
        return bool((self.face_uv >= 0).any())


@dataclass
class _Scan:
    """Where each record kind sits in the (logical) line list; bodies are parsed afterwards.

    ``v``/``vt``/``f`` hold indices into ``lines``; those lines are normalised to start with
    ``"v "``, ``"vt "`` or ``"f "``. ``*_events`` are (line index, name index) state changes.
    """

    lines: list[str]
    linenos: list[int] | None  # physical 1-based line of each logical line; None: index + 1
    v: list[int] = field(default_factory=list)
    vt: list[int] = field(default_factory=list)
    f: list[int] = field(default_factory=list)
    n_vn: int = 0
    mat_events: list[tuple[int, int]] = field(default_factory=list)
    grp_events: list[tuple[int, int]] = field(default_factory=list)
    mat_names: dict[str, int] = field(default_factory=dict)  # usemtl name -> first-use index
    groups: dict[str, int] = field(default_factory=dict)
    mtllibs: list[tuple[int, str]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def lineno(self, i: int) -> int:
        return self.linenos[i] if self.linenos is not None else i + 1

    def bodies(self, idx: list[int], skip: int) -> list[str]:
        lines = self.lines
        return [lines[i][skip:] for i in idx]


def _error(path: Path, lineno: int | None, what: str, hint: str = _FIX_HINT) -> AssetError:
    where = f"{path}:{lineno}" if lineno is not None else f"{path}"
    return AssetError(f"{where}: {what}; {hint}")


def _floats(tokens: list[str], path: Path, lineno: int, kind: str) -> list[float]:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not _is_float(t))
        raise _error(path, lineno, f"unparseable number {bad!r} in {kind} record") from None


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, content) with ``\\`` continuations joined."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for i, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if pending:
            line = pending + " " + line
        else:
            start = i
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        pending = ""
        out.append((start, line))
    if pending:
        out.append((start, pending))
    return out


def _split_lines(text: str) -> tuple[list[str], list[int] | None]:
    """Lines of the file (BOM, CR/CRLF handled) and their line numbers if continuations moved
    them."""
    text = text.lstrip("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\\\n" not in text and not text.endswith("\\"):
        return text.split("\n"), None
    logical = _logical_lines(text)
    return [line for _, line in logical], [n for n, _ in logical]


def _index(table: dict[str, int], name: str) -> int:
    return table.setdefault(name, len(table))


def _generic(scan: _Scan, i: int, line: str) -> None:
    """Any record the fast dispatch in :func:`_scan` did not take."""
    tokens = line.split()
    if not tokens or tokens[0].startswith("#"):
        return
    key, rest = tokens[0], tokens[1:]
    if key in ("v", "vt", "f", "fo"):
        key = "f" if key == "fo" else key
        scan.lines[i] = f"{key} {' '.join(rest)}"
        {"v": scan.v, "vt": scan.vt, "f": scan.f}[key].append(i)
    elif key == "vn":
        scan.n_vn += 1
    elif key == "usemtl":
        scan.mat_events.append((i, _index(scan.mat_names, " ".join(rest) or "default")))
    elif key == "g":
        scan.grp_events.append((i, _index(scan.groups, " ".join(rest) or "default")))
    elif key == "mtllib":
        scan.mtllibs.append((scan.lineno(i), line.split(None, 1)[1].strip() if rest else ""))
    else:
        scan.skipped[key] = scan.skipped.get(key, 0) + 1


def _scan(text: str) -> _Scan:
    """One pass over the lines, sorting them by record kind (bodies are parsed later)."""
    lines, linenos = _split_lines(text)
    scan = _Scan(lines, linenos)
    add_v, add_vt, add_f = scan.v.append, scan.vt.append, scan.f.append
    for i, line in enumerate(lines):
        head = line[:2]
        if head == "v ":
            add_v(i)
        elif head == "f ":
            add_f(i)
        elif head == "vt" and line[2:3] == " ":
            add_vt(i)
        elif head == "vn" and line[2:3] == " ":
            scan.n_vn += 1
        elif head[:1] != "#" and line.strip():
            _generic(scan, i, line)
    return scan


# --------------------------------------------------------------------- vectorised number parsing

_WS = np.zeros(256, dtype=bool)
_WS[[9, 10, 11, 12, 13, 32]] = True


def _numbers(text: str, dtype: type) -> np.ndarray | None:
    """All whitespace-separated numbers of ``text``, or None if any token is not a number."""
    try:
        return np.fromstring(text, dtype=dtype, sep=" ")
    except ValueError:
        return None


def _token_layout(buf: np.ndarray, n_lines: int) -> tuple[np.ndarray, np.ndarray]:
    """Token start byte offsets and tokens per line of a ``\\n``-joined uint8 buffer."""
    ws = _WS[buf]
    tok_pos = np.flatnonzero(~ws & np.concatenate(([True], ws[:-1])))
    nl_pos = np.flatnonzero(buf == 10)
    counts = np.bincount(np.searchsorted(nl_pos, tok_pos), minlength=n_lines)
    return tok_pos, counts


def _fast_table(bodies: list[str], min_cols: int, cols: int) -> np.ndarray | None:
    """(N, cols) float64 if all N bodies hold the same number (>= min_cols) of numbers."""
    if not bodies:
        return np.zeros((0, cols))
    text = "\n".join(bodies)
    _, counts = _token_layout(np.frombuffer(text.encode(), np.uint8), len(bodies))
    k = int(counts[0])
    if k < min_cols or (counts != k).any():
        return None
    vals = _numbers(text, np.float64)
    if vals is None or vals.size != k * len(bodies):
        return None
    table = vals.reshape(-1, k)[:, :cols]
    return np.pad(table, ((0, 0), (0, cols - k))) if k < cols else table


def _fast_corners(bodies: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(corners per face, raw v index, raw vt index (0 = none)) per corner; None if unusual."""
    text = "\n".join(bodies)
    if "//" in text:
        text = text.replace("//", "/0/")
    buf = np.frombuffer(text.encode(), np.uint8)
    tok_pos, counts = _token_layout(buf, len(bodies))
    if counts.min() < 3:
        return None
    slash_tok = np.searchsorted(tok_pos, np.flatnonzero(buf == 47), side="right") - 1
    n_slash = np.bincount(slash_tok, minlength=len(tok_pos))
    if n_slash.max() > 2:
        return None
    ints = _numbers(text.replace("/", " "), np.int64)
    per = n_slash + 1
    if ints is None or ints.size != per.sum():
        return None
    off = np.cumsum(per) - per
    vt = np.where(n_slash >= 1, ints[np.minimum(off + 1, ints.size - 1)], 0)
    return counts, ints[off], vt


# ------------------------------------------------------------------ records -> arrays


def _vertices(scan: _Scan, path: Path) -> np.ndarray:
    """(V, 3) float64; the slow per-line path runs only to report (or accept) odd lines."""
    fast = _fast_table(scan.bodies(scan.v, 2), 3, 3)
    if fast is not None and np.isfinite(fast).all():
        return fast
    out = np.empty((len(scan.v), 3))
    for r, i in enumerate(scan.v):
        tokens, lineno = scan.lines[i].split()[1:], scan.lineno(i)
        if len(tokens) < 3:
            raise _error(path, lineno, f"vertex with {len(tokens)} coordinates (expected 3); "
                         "the line looks truncated")
        out[r] = _floats(tokens[:3], path, lineno, "v")
        if not np.isfinite(out[r]).all():
            raise _error(path, lineno, f"non-finite vertex coordinate {tokens[:3]}")
    return out


def _uvs(scan: _Scan, path: Path) -> np.ndarray:
    """(T, 2) float64 texture coordinates (1-comp vt gets v = 0, a 3rd comp is dropped)."""
    fast = _fast_table(scan.bodies(scan.vt, 3), 1, 2)
    if fast is not None:
        return fast
    out = np.zeros((len(scan.vt), 2))
    for r, i in enumerate(scan.vt):
        tokens, lineno = scan.lines[i].split()[1:], scan.lineno(i)
        if not tokens:
            raise _error(path, lineno, "vt record without coordinates")
        uv = _floats(tokens[:2], path, lineno, "vt")
        out[r, : len(uv)] = uv
    return out


def _corner(tok: str, n_v: int, n_t: int, path: Path, lineno: int) -> tuple[int, int]:
    """0-based (vertex, uv) index of one face corner token; uv -1 when absent."""
    parts = tok.split("/")
    try:
        vi = int(parts[0])
        ti = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    except ValueError:
        raise _error(path, lineno, f"unparseable face index {tok!r}") from None
    return _absolute(vi, n_v, "vertex", path, lineno), (
        _absolute(ti, n_t, "uv", path, lineno) if ti else -1
    )


def _absolute(idx: int, n_so_far: int, kind: str, path: Path, lineno: int) -> int:
    if idx > 0:
        return idx - 1  # range checked once all records are read (forward references happen)
    if idx == 0:
        raise _error(path, lineno, f"face {kind} index 0 is invalid (OBJ indices start at 1)")
    if -idx > n_so_far:
        raise _error(
            path, lineno, f"relative face {kind} index {idx} out of range ({n_so_far} "
            f"{_POOL[kind]} defined so far)"
        )
    return n_so_far + idx


def _slow_corners(scan: _Scan, nv: np.ndarray, nt: np.ndarray, path: Path
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-line corner parsing that raises with the line number (or accepts odd forms)."""
    counts, vis, tis = [], [], []
    for r, i in enumerate(scan.f):
        tokens, lineno = scan.lines[i].split()[1:], scan.lineno(i)
        if len(tokens) < 3:
            raise _error(path, lineno, f"face with {len(tokens)} corners (needs at least 3); "
                         "the line looks truncated")
        for tok in tokens:
            vi, ti = _corner(tok, int(nv[r]), int(nt[r]), path, lineno)
            vis.append(vi)
            tis.append(ti)
        counts.append(len(tokens))
    return np.asarray(counts), np.asarray(vis, np.int64), np.asarray(tis, np.int64)


def _corners(scan: _Scan, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(corners per face record, 0-based vertex index, 0-based uv index or -1) per corner."""
    f_idx = np.asarray(scan.f, dtype=np.int64)
    nv = np.searchsorted(np.asarray(scan.v, dtype=np.int64), f_idx)  # vertices defined so far
    nt = np.searchsorted(np.asarray(scan.vt, dtype=np.int64), f_idx)
    fast = _fast_corners(scan.bodies(scan.f, 2))
    if fast is not None:
        counts, vi, ti = fast
        nv_c, nt_c = np.repeat(nv, counts), np.repeat(nt, counts)
        if not ((vi == 0).any() or (vi < -nv_c).any() or (ti < -nt_c).any()):
            vi = np.where(vi > 0, vi - 1, nv_c + vi)
            ti = np.where(ti > 0, ti - 1, np.where(ti < 0, nt_c + ti, -1))
            return counts, vi, ti
    return _slow_corners(scan, nv, nt, path)


def _state(events: list[tuple[int, int]], f_idx: np.ndarray) -> np.ndarray:
    """(P,) value of a usemtl / g state at each face line (-1 before the first event)."""
    if not events:
        return np.full(len(f_idx), -1, dtype=np.int64)
    at, val = (np.asarray(x, dtype=np.int64) for x in zip(*events, strict=True))
    pos = np.searchsorted(at, f_idx, side="right") - 1
    return np.where(pos >= 0, val[np.maximum(pos, 0)], -1)


def _fan(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fan triangulation: (F, 3) corner indices and (F,) source polygon per triangle."""
    n_tri = counts - 2
    poly = np.repeat(np.arange(len(counts)), n_tri)
    first_corner = np.cumsum(counts) - counts
    first_tri = np.cumsum(n_tri) - n_tri
    j = np.arange(len(poly)) - first_tri[poly] + 1
    c0 = first_corner[poly]
    return np.stack([c0, c0 + j, c0 + j + 1], axis=1), poly


def _check_range(idx: np.ndarray, lines: np.ndarray, n: int, what: str, path: Path) -> None:
    """Raise for the first (file order) face with an index >= n; ``what`` names the pool."""
    bad = np.flatnonzero((idx >= n).any(axis=1))
    if len(bad):
        row = idx[bad[0]]
        value = int(row[row >= n][0]) + 1
        label = "face index" if what == "vertices" else "face uv index"
        raise _error(path, int(lines[bad[0]]), f"{label} {value} out of range ({n} {what})")


def read_obj(path: str | Path, *, load_materials: bool = True) -> ObjMesh:
    """Parse an OBJ file (and its mtl files unless ``load_materials`` is False).

    Raises:
        AssetError: unreadable file, malformed record (with ``file:line``), index out of range,
            or a model without faces.
    """
    path = Path(path).resolve()
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise _error(path, None, f"cannot read OBJ file ({exc.strerror or exc})",
                     "check the path and that the ShapeNet archive is fully extracted") from None
    scan = _scan(text)
    vertices, uv = _vertices(scan, path), _uvs(scan, path)
    if not scan.f:
        raise _error(path, None, f"empty model: no faces ({len(vertices)} vertices, "
                     f"{scan.skipped.get('l', 0)} line records)",
                     "ShapeNet has a few empty models: leave this id out of the split")
    counts, vi, ti = _corners(scan, path)
    tri, poly = _fan(counts)
    f_idx = np.asarray(scan.f, dtype=np.int64)
    lines = f_idx[poly] + 1 if scan.linenos is None else np.asarray(scan.linenos)[f_idx[poly]]
    faces, face_uv = vi[tri], ti[tri]
    _check_range(faces, lines, len(vertices), "vertices", path)
    _check_range(face_uv, lines, len(uv), "uv coordinates", path)
    mesh = ObjMesh(
        path=path, vertices=vertices, faces=faces, uv=uv, face_uv=face_uv,
        face_material=_state(scan.mat_events, f_idx)[poly],
        face_group=_state(scan.grp_events, f_idx)[poly],
        face_polygon=poly, group_names=list(scan.groups), materials=[], mtl_paths=[],
        n_normals=scan.n_vn, skipped=scan.skipped,
    )
    if load_materials:
        _attach_materials(mesh, scan)
        for w in mesh.warnings:
            log.warning(w)
    else:
        mesh.materials = [Material(name, defined=False) for name in scan.mat_names]
    return mesh


# ----------------------------------------------------------------------------------------- MTL


def _mtl_files(obj_path: Path, scan: _Scan, warnings: list[str]) -> list[Path]:
    """Resolve ``mtllib`` arguments (relative to the OBJ folder); missing ones become warnings."""
    found: list[Path] = []
    for lineno, arg in scan.mtllibs:
        whole = obj_path.parent / arg
        names = [arg] if whole.is_file() else arg.split()
        for name in names:
            p = (obj_path.parent / name.replace("\\", "/")).resolve()
            if p.is_file():
                if p not in found:
                    found.append(p)
            else:
                warnings.append(f"{obj_path}:{lineno}: mtl file {name!r} not found; "
                                "faces fall back to a default colour")
    return found


def _attach_materials(mesh: ObjMesh, scan: _Scan) -> None:
    """Read the mtl files and remap per-face ``usemtl`` indices into ``mesh.materials``."""
    warnings = mesh.warnings
    mesh.mtl_paths = _mtl_files(mesh.path, scan, warnings)
    materials: list[Material] = []
    for mtl in mesh.mtl_paths:
        materials += read_mtl(mtl, warnings)
    by_name: dict[str, int] = {}
    for i, m in enumerate(materials):
        by_name.setdefault(m.name, i)
    remap = np.full(len(scan.mat_names) + 1, -1, dtype=np.int64)  # last slot: -1 stays -1
    for name, used in scan.mat_names.items():
        if name not in by_name:
            by_name[name] = len(materials)
            materials.append(Material(name, defined=False))
            warnings.append(f"{mesh.path}: material {name!r} is used but not defined in "
                            f"{[p.name for p in mesh.mtl_paths]}; using the default colour")
        remap[used] = by_name[name]
    mesh.face_material = remap[mesh.face_material]
    mesh.materials = materials


def _parse_colour(rest: list[str]) -> np.ndarray | None:
    """``Kd r g b`` / ``Kd r`` -> (3,) float64; None for spectral/xyz forms or bad numbers."""
    if not rest or not all(_is_float(t) for t in rest[:3]):
        return None
    c = [float(t) for t in rest[:3]]
    return np.clip(np.array(c * 3 if len(c) == 1 else (c + [c[-1]] * 3)[:3]), 0.0, 1.0)


def _map_filename(rest: list[str]) -> str:
    """Strip ``map_Kd`` options (``-s 1 1 1`` ...) and return the file name (may hold spaces)."""
    i = 0
    while i < len(rest) and rest[i].lower() in _MAP_OPTIONS:
        n = _MAP_OPTIONS[rest[i].lower()]
        i += 1
        if n == 3:  # 1-3 numbers
            while n and i < len(rest) - 1 and _is_float(rest[i]):
                i, n = i + 1, n - 1
        else:
            i += n
    return " ".join(rest[i:]).replace("\\", "/")


def _find_texture(name: str, mtl_dir: Path) -> Path | None:
    """Resolve ``map_Kd`` relative to the mtl folder; else look the file name up (any case) in
    the mtl folder, ``images/`` and ``../images/`` (ShapeNet v1 references are inconsistent)."""
    direct = (mtl_dir / name).resolve()
    if direct.is_file():
        return direct
    base = Path(name).name.lower()
    for folder in (mtl_dir, mtl_dir / "images", mtl_dir.parent / "images"):
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.lower() == base and p.is_file():
                    return p.resolve()
    return None


def read_mtl(path: str | Path, warnings: list[str] | None = None) -> list[Material]:
    """Parse an mtl file into materials (file order). Never raises on content: problems are
    appended to ``warnings``. Opacity is ``d``, else ``1 - Tr``."""
    path = Path(path).resolve()
    warnings = [] if warnings is None else warnings
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        warnings.append(f"{path}: cannot read mtl file ({exc.strerror or exc})")
        return []
    materials: list[Material] = []
    has_d: set[int] = set()
    for lineno, line in _logical_lines(text):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        key, rest = tokens[0].lower(), tokens[1:]
        if key == "newmtl":
            materials.append(Material(" ".join(rest) or "default"))
            continue
        if not materials:
            continue
        m = materials[-1]
        _apply_mtl_record(m, key, rest, path, lineno, warnings, has_d, len(materials) - 1)
    return materials


def _apply_mtl_record(m: Material, key: str, rest: list[str], path: Path, lineno: int,
                      warnings: list[str], has_d: set[int], index: int) -> None:
    if key == "kd":
        kd = _parse_colour(rest)
        if kd is None:
            warnings.append(f"{path}:{lineno}: unsupported Kd {' '.join(rest)!r}; "
                            f"using {DEFAULT_KD}")
        else:
            m.kd = kd
    elif key in ("d", "tr") and rest:
        if not _is_float(rest[-1]):
            warnings.append(f"{path}:{lineno}: unparseable {key} value {rest[-1]!r}; ignored")
        elif key == "d":
            m.opacity = float(np.clip(float(rest[-1]), 0, 1))
            has_d.add(index)
        elif index not in has_d:
            m.opacity = float(np.clip(1.0 - float(rest[-1]), 0, 1))
    elif key == "map_kd":
        name = _map_filename(rest)
        found = _find_texture(name, path.parent) if name else None
        if found is None:
            m.map_kd, m.map_kd_missing = None, name
            warnings.append(f"{path}:{lineno}: texture {name!r} of material {m.name!r} not "
                            "found; using its Kd colour")
        else:
            m.map_kd, m.map_kd_missing = found, None
