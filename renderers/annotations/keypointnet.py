"""KeypointNet (You et al., CVPR 2020): annotation json, ASCII PCD, keypoints on the mesh.

Layout (``shared/reference/formats.md`` section 2)::

    <root>/annotations/<name>.json        # list of {class_id, model_id, keypoints, symmetries}
    <root>/pcds/<synset>/<model_id>.pcd   # 2048 coloured points, ASCII PCD (x y z rgb)
    <root>/splits/{train,val,test}.txt    # "<synset>-<model_id>" (see renderers.shapenet)
    <root>/knife_misaligned.txt           # knives whose x-axis is flipped in ShapeNet

``<name>`` is KeypointNet's category name (:data:`ID2NAMES`): our ``motorcycle`` and
ShapeNet-Part's ``Motorbike`` are ``motorcycle``; ``vessel`` is watercraft 04530566.

A keypoint record: ``xyz`` (v2 ``model_normalized`` frame), ``semantic_id`` (int, consistent
within a category), ``rgb``, ``pcd_info.point_index`` (into the pcd) and ``mesh_info``:
``face_index`` (0-based over the OBJ's ``f`` records in file order, ``l`` records excluded) and
``face_uv`` (three barycentric weights, summing to 1 within ±8e-5). On the real sample,
``Σ face_uv[i] · V[F[face_index][i]]`` (raw weights, not renormalised) equals ``xyz`` within
1e-8, so :func:`keypoints_on_mesh` uses the raw weights and checks agreement to 1e-5.

Records are indexed by ``model_id`` when a file is read and validated one by one when asked
for, so one malformed record does not hide the other 998; :func:`read_annotations` with
``validate=True`` checks all of them. Every problem raises :class:`~renderers.asset.AssetError`
naming the file, the model id and the field (``keypoints[3].mesh_info.face_index``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trimesh

from renderers.asset import AssetError
from renderers.categories import resolve_category

ID2NAMES: dict[str, str] = {
    "02691156": "airplane", "02808440": "bathtub", "02818832": "bed", "02876657": "bottle",
    "02954340": "cap", "02958343": "car", "03001627": "chair", "03467517": "guitar",
    "03513137": "helmet", "03624134": "knife", "03642806": "laptop", "03790512": "motorcycle",
    "03797390": "mug", "04225987": "skateboard", "04379243": "table", "04530566": "vessel",
}
"""KeypointNet category names by synset [V: qq456cvb/KeypointNet benchmark_scripts/dataset.py]."""
NAMES2ID: dict[str, str] = {v: k for k, v in ID2NAMES.items()}
XYZ_TOL = 1e-5
_SYNSET_RE = re.compile(r"^\d{8}$")
_ALIASES = {"motorbike": "motorcycle", "watercraft": "vessel"}


def annotation_name(category: str) -> str:
    """KeypointNet file stem for a synset id or category name (``"03790512"``,
    ``"motorbike"``, ``"Motorbike"``, ``"motorcycle"`` -> ``"motorcycle"``)."""
    key = str(category).strip().lower()
    key = _ALIASES.get(key, key)
    if key in NAMES2ID:
        return key
    synset = key if _SYNSET_RE.match(key) else None
    if synset is None:
        try:
            synset = resolve_category(key).synset
        except KeyError:
            synset = None
    if synset not in ID2NAMES:
        raise AssetError(f"KeypointNet has no category {category!r}; it has "
                         f"{', '.join(sorted(NAMES2ID))}")
    return ID2NAMES[synset]


# ------------------------------------------------------------------------------- records


@dataclass
class Keypoint:
    """One annotated keypoint (fields as in the json)."""

    semantic_id: int
    xyz: np.ndarray
    face_index: int
    face_uv: np.ndarray
    point_index: int | None = None
    rgb: tuple[int, int, int] | None = None


@dataclass
class KeypointRecord:
    """All keypoints of one model.

    Attributes:
        class_id: synset id.
        model_id: ShapeNet model id (opaque string).
        keypoints: in file order (``symmetries`` indexes into it).
        symmetries: the json ``symmetries`` dict as is.
        source: the annotation file.
    """

    class_id: str
    model_id: str
    keypoints: list[Keypoint]
    symmetries: dict = field(default_factory=dict)
    source: Path = Path()

    @property
    def xyz(self) -> np.ndarray:
        """(P, 3) float64 annotated positions (v2 frame)."""
        return np.array([k.xyz for k in self.keypoints], dtype=np.float64).reshape(-1, 3)

    @property
    def semantic_ids(self) -> np.ndarray:
        """(P,) int32 semantic ids."""
        return np.array([k.semantic_id for k in self.keypoints], dtype=np.int32)

    @property
    def face_index(self) -> np.ndarray:
        """(P,) int64 0-based face indices (OBJ ``f`` order)."""
        return np.array([k.face_index for k in self.keypoints], dtype=np.int64)

    @property
    def face_uv(self) -> np.ndarray:
        """(P, 3) float64 barycentric weights."""
        return np.array([k.face_uv for k in self.keypoints], dtype=np.float64).reshape(-1, 3)


def _bad(path: Path, model: str, where: str, what: str) -> AssetError:
    return AssetError(f"{path}: model {model}: field {where} {what}; the KeypointNet annotation "
                      "file is malformed: re-download it or leave this model out")


def _get(d: object, key: str, path: Path, model: str, where: str) -> object:
    if not isinstance(d, dict):
        raise _bad(path, model, where.rsplit(".", 1)[0] or where, "is not an object")
    if key not in d:
        raise _bad(path, model, where, "is missing")
    return d[key]


def _int(v: object, path: Path, model: str, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        raise _bad(path, model, where, f"must be an integer, got {v!r}")
    return int(v)


def _vec(v: object, n: int, path: Path, model: str, where: str) -> np.ndarray:
    ok = isinstance(v, list | tuple) and len(v) == n and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in v)
    if not ok:
        raise _bad(path, model, where, f"must be a list of {n} numbers, got {v!r}")
    a = np.asarray(v, dtype=np.float64)
    if not np.isfinite(a).all():
        raise _bad(path, model, where, f"holds non-finite numbers {v!r}")
    return a


def _keypoint(d: object, i: int, path: Path, model: str) -> Keypoint:
    w = f"keypoints[{i}]"
    sid = _int(_get(d, "semantic_id", path, model, f"{w}.semantic_id"), path, model,
               f"{w}.semantic_id")
    xyz = _vec(_get(d, "xyz", path, model, f"{w}.xyz"), 3, path, model, f"{w}.xyz")
    mi = _get(d, "mesh_info", path, model, f"{w}.mesh_info")
    fi = _int(_get(mi, "face_index", path, model, f"{w}.mesh_info.face_index"), path, model,
              f"{w}.mesh_info.face_index")
    uv = _vec(_get(mi, "face_uv", path, model, f"{w}.mesh_info.face_uv"), 3, path, model,
              f"{w}.mesh_info.face_uv")
    if fi < 0:
        raise _bad(path, model, f"{w}.mesh_info.face_index", f"is negative ({fi})")
    pidx = None
    if isinstance(d, dict) and "pcd_info" in d:
        pidx = _int(_get(d["pcd_info"], "point_index", path, model, f"{w}.pcd_info.point_index"),
                    path, model, f"{w}.pcd_info.point_index")
    rgb = None
    if isinstance(d, dict) and "rgb" in d:
        rgb_v = _vec(d["rgb"], 3, path, model, f"{w}.rgb")
        rgb = tuple(int(c) for c in rgb_v)
    return Keypoint(sid, xyz, fi, uv, pidx, rgb)


def parse_record(raw: object, path: Path, position: int = 0) -> KeypointRecord:
    """Validate one json record (a dict) into a :class:`KeypointRecord`."""
    model = raw.get("model_id", f"#{position}") if isinstance(raw, dict) else f"#{position}"
    model = str(model)
    if not isinstance(raw, dict):
        raise _bad(path, model, f"[{position}]", "is not an object")
    mid = _get(raw, "model_id", path, model, "model_id")
    if not isinstance(mid, str) or not mid:
        raise _bad(path, model, "model_id", f"must be a non-empty string, got {mid!r}")
    cid = _get(raw, "class_id", path, model, "class_id")
    if not isinstance(cid, str):
        raise _bad(path, model, "class_id", f"must be a string, got {cid!r}")
    kps = _get(raw, "keypoints", path, model, "keypoints")
    if not isinstance(kps, list):
        raise _bad(path, model, "keypoints", f"must be a list, got {type(kps).__name__}")
    sym = raw.get("symmetries", {})
    if not isinstance(sym, dict):
        raise _bad(path, model, "symmetries", f"must be an object, got {type(sym).__name__}")
    return KeypointRecord(cid, mid, [_keypoint(k, i, path, mid) for i, k in enumerate(kps)], sym,
                          path)


class KeypointAnnotations:
    """One ``annotations/<name>.json`` file, indexed by model id (records parsed on demand)."""

    def __init__(self, path: str | Path, validate: bool = False) -> None:
        self.path = Path(path)
        try:
            data = json.loads(self.path.read_text())
        except OSError as exc:
            raise AssetError(f"cannot read KeypointNet annotations {self.path}: {exc.strerror}; "
                             "pass --annotations-root pointing at the KeypointNet folder") from None
        except ValueError as exc:
            raise AssetError(f"{self.path}: not valid json ({exc}); re-download it") from None
        if not isinstance(data, list):
            raise AssetError(f"{self.path}: expected a json list of model records, got "
                             f"{type(data).__name__}")
        self._raw: dict[str, object] = {}
        for i, rec in enumerate(data):
            mid = rec.get("model_id") if isinstance(rec, dict) else None
            if not isinstance(mid, str) or not mid:
                raise _bad(self.path, f"#{i}", f"[{i}].model_id",
                           "is missing or not a string" if isinstance(rec, dict)
                           else "cannot be read: the record is not an object")
            self._raw.setdefault(mid, rec)
        self._parsed: dict[str, KeypointRecord] = {}
        if validate:
            for mid in self._raw:
                self.record(mid)

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._raw

    def model_ids(self) -> list[str]:
        """Model ids in file order."""
        return list(self._raw)

    def record(self, model_id: str) -> KeypointRecord:
        """The validated record of a model; AssetError if absent or malformed."""
        if model_id not in self._parsed:
            if model_id not in self._raw:
                raise AssetError(f"{self.path} has no keypoints for model {model_id} "
                                 f"({len(self._raw)} models annotated); leave it out of the "
                                 "keypoint set")
            self._parsed[model_id] = parse_record(self._raw[model_id], self.path)
        return self._parsed[model_id]


def read_annotations(path: str | Path, validate: bool = True) -> dict[str, KeypointRecord]:
    """All records of an annotation file by model id (every record validated)."""
    ann = KeypointAnnotations(path)
    return {m: ann.record(m) for m in ann.model_ids()} if validate else {}


# --------------------------------------------------------------------------------- mesh


def keypoints_on_mesh(record: KeypointRecord, mesh: trimesh.Trimesh, tol: float = XYZ_TOL,
                      return_error: bool = False
                      ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, float]:
    """Recompute each keypoint from ``face_index`` + ``face_uv`` on ``mesh`` (OBJ face order).

    Returns:
        (P, 3) float64 points, (P,) int32 semantic ids (and the max |point - xyz| if
        ``return_error``).

    Raises:
        AssetError: a face index outside the mesh, or a point farther than ``tol`` from its
            ``xyz`` (wrong mesh, version or face order), naming the model and the keypoint.
    """
    faces = np.asarray(mesh.faces)
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    fi, uv, xyz = record.face_index, record.face_uv, record.xyz
    if len(fi) == 0:
        empty = np.zeros((0, 3)), np.zeros(0, np.int32)
        return (*empty, 0.0) if return_error else empty
    bad = np.flatnonzero(fi >= len(faces))
    if len(bad):
        i = int(bad[0])
        raise AssetError(f"model {record.model_id}: keypoint {i} (semantic_id "
                         f"{record.keypoints[i].semantic_id}) has face_index {fi[i]} but the mesh "
                         f"has {len(faces)} faces; load the ShapeNetCore v2 model_normalized.obj "
                         "(faces in file order) this annotation was made on")
    pts = np.einsum("pc,pcd->pd", uv, verts[faces[fi]])
    err = np.linalg.norm(pts - xyz, axis=1)
    worst = int(err.argmax())
    if err[worst] > tol:
        raise AssetError(f"model {record.model_id}: keypoint {worst} (semantic_id "
                         f"{record.keypoints[worst].semantic_id}) lies {err[worst]:.3g} from its "
                         f"xyz when rebuilt from face {fi[worst]} (tolerance {tol:g}); the mesh is "
                         "not the v2 model_normalized.obj it was annotated on (wrong model, "
                         "version or face order)")
    ids = record.semantic_ids
    return (pts, ids, float(err.max())) if return_error else (pts, ids)


# ---------------------------------------------------------------------------------- pcd


@dataclass
class PointCloud:
    """A PCD file: (N, 3) float64 ``xyz`` and (N, 3) uint8 ``rgb`` (None without rgb)."""

    xyz: np.ndarray
    rgb: np.ndarray | None
    path: Path


def _unpack_rgb(col: np.ndarray, typ: str) -> np.ndarray:
    """(N,) packed rgb column -> (N, 3) uint8; floats are PCL's bit-cast uint32."""
    if typ == "F":
        packed = col.astype(np.float32).view(np.uint32)
    else:
        packed = col.astype(np.uint64).astype(np.uint32)
    return np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=1
                    ).astype(np.uint8)


def read_pcd(path: str | Path) -> PointCloud:
    """Read an ASCII PCD (``FIELDS x y z [rgb]``) as in KeypointNet ``pcds/``."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AssetError(f"cannot read pcd {path}: {exc}") from None
    header: dict[str, list[str]] = {}
    start = None
    for i, line in enumerate(lines):
        tok = line.split()
        if not tok or tok[0].startswith("#"):
            continue
        header[tok[0].upper()] = tok[1:]
        if tok[0].upper() == "DATA":
            start = i + 1
            break
    if start is None or "FIELDS" not in header:
        raise AssetError(f"{path}: not a PCD file (no FIELDS / DATA header lines)")
    if [t.lower() for t in header["DATA"]] != ["ascii"]:
        raise AssetError(f"{path}: DATA {' '.join(header['DATA'])} is not supported; only ascii "
                         "PCD (as shipped by KeypointNet)")
    fields = [f.lower() for f in header["FIELDS"]]
    types = header.get("TYPE", ["F"] * len(fields))
    if fields[:3] != ["x", "y", "z"]:
        raise AssetError(f"{path}: FIELDS {' '.join(fields)} do not start with x y z")
    n = int(header.get("POINTS", [len(lines) - start])[0])
    try:
        data = np.array([ln.split() for ln in lines[start:start + n] if ln.strip()],
                        dtype=np.float64).reshape(-1, len(fields))
    except ValueError as exc:
        raise AssetError(f"{path}: bad data line ({exc}); expected {len(fields)} numbers "
                         "per line") from None
    if len(data) != n:
        raise AssetError(f"{path}: header says POINTS {n} but {len(data)} data lines follow")
    rgb = _unpack_rgb(data[:, fields.index("rgb")], types[fields.index("rgb")].upper()) \
        if "rgb" in fields else None
    return PointCloud(data[:, :3].copy(), rgb, path)


# --------------------------------------------------------------------------------- root


class KeypointNetRoot:
    """A KeypointNet folder (``annotations/``, ``pcds/``, ``splits/``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()
        if not (self.path / "annotations").is_dir():
            raise AssetError(f"{self.path} has no annotations/ folder: pass the KeypointNet root "
                             "(holding annotations/<category>.json and pcds/)")
        self._files: dict[str, KeypointAnnotations] = {}
        mis = self.path / "knife_misaligned.txt"
        self.misaligned = set(mis.read_text().split()) if mis.is_file() else set()

    def annotation_file(self, category: str) -> Path:
        """``annotations/<name>.json`` of a category (name or synset); AssetError if absent."""
        f = self.path / "annotations" / f"{annotation_name(category)}.json"
        if not f.is_file():
            raise AssetError(f"no KeypointNet annotations {f}; this category is not extracted")
        return f

    def annotations(self, category: str) -> KeypointAnnotations:
        """The (cached) annotation index of a category."""
        name = annotation_name(category)
        if name not in self._files:
            self._files[name] = KeypointAnnotations(self.annotation_file(category))
        return self._files[name]

    def record(self, category: str, model_id: str) -> KeypointRecord:
        """The validated keypoint record of one model."""
        return self.annotations(category).record(model_id)

    def has(self, category: str, model_id: str) -> bool:
        try:
            return model_id in self.annotations(category)
        except AssetError:
            return False

    def pcd_path(self, category: str, model_id: str) -> Path:
        """``pcds/<synset>/<model_id>.pcd`` (existence not checked)."""
        return self.path / "pcds" / NAMES2ID[annotation_name(category)] / f"{model_id}.pcd"

    def pcd(self, category: str, model_id: str) -> PointCloud | None:
        """The model's pcd, or None if the file is absent."""
        p = self.pcd_path(category, model_id)
        return read_pcd(p) if p.is_file() else None
