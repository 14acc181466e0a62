"""ShapeNetCore v1 / v2 on disk -> :class:`~renderers.asset.ShapeAsset` in the v2 object frame.

Layouts (``shared/reference/formats.md`` section 1)::

    v2: <root>/<synset>/<id>/models/model_normalized.obj (+ .mtl, .json), <id>/images/*.jpg
    v1: <root>/<synset>/<id>/model.obj (+ model.mtl, textures)

Frames. v2 ``model_normalized.obj`` is already the object frame (+Y up, -Z front, vertex mean at
the origin, bbox diagonal 1) and is returned unchanged. A v1 ``model.obj`` (+Y up, +X front,
bbox centred, unit diagonal) is mapped as

    q = R · p_v1                                    R = R_v1→v2 = [[0,0,1],[0,1,0],[-1,0,0]]
    q = (q - bbox_centre(q)) / ‖bbox_max(q) - bbox_min(q)‖     (unit bbox diagonal)
    p_v2 = q - s,   s = (centroid - (min + max) / 2) / ‖max - min‖

where ``centroid``, ``min``, ``max`` come from the model's v2 ``model_normalized.json`` (original
units, assumed to be in v2 axes [formats.md §0, inferred]); ``s`` may also be passed directly
(``v1_shift``). Without either, ``s`` is 0 (the result stays bbox-centred) or, with
``v1_centring="mean"``, the vertex mean of ``q`` (only an approximation of v2, whose vertex set
differs). ``V1_TO_V2`` is R as a 4x4 matrix; see
:func:`v1_to_v2_matrix` for the full map with ``s``. For some v1 models the true map includes a
mirror (formats.md §0); that is for a chamfer check downstream, not decided here.

Colours (texture handling choice). The asset carries **per-face colours** (trimesh
``ColorVisuals``), not a texture atlas: every face's RGB is the mean of its material's texture at
7 barycentric sample points (centroid, 3 points towards the corners, 3 towards the edges) of its
UV triangle, with ``repeat`` wrapping (ShapeNet UVs leave [0, 1], e.g. -7.9..4.5 on the sample)
and nearest-texel lookup, multiplied by ``Kd``. Faces without a texture (no ``map_Kd``, missing
image, or no vt) use ``Kd``; faces with no material use the reader's default grey. Alpha is the
material's opacity ``d``. This keeps every material's colour in one mesh, has no atlas or
wrapping problems and is enough at 128 px; detail inside a single large face is lost. Vertices
are shared (faces are not unmerged), and faces keep file order (KeypointNet ``face_index``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import trimesh
from PIL import Image

from renderers.asset import AssetError, ShapeAsset
from renderers.categories import resolve_category
from renderers.obj import DEFAULT_KD, ObjMesh, read_obj

log = logging.getLogger(__name__)

R_V1_TO_V2 = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
V1_TO_V2 = np.eye(4)
V1_TO_V2[:3, :3] = R_V1_TO_V2
V1_TO_V2.setflags(write=False)
R_V1_TO_V2.setflags(write=False)

SPLITS = ("train", "val", "test")
_V2_OBJ = Path("models") / "model_normalized.obj"
_V2_JSON = Path("models") / "model_normalized.json"
_V1_OBJ = Path("model.obj")
_SYNSET_RE = re.compile(r"^\d{8}$")
# Barycentric sample points used to average a face's texture colour (rows sum to 1).
_BARY = np.array(
    [[1 / 3, 1 / 3, 1 / 3], [2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6], [1 / 6, 1 / 6, 2 / 3],
     [5 / 12, 5 / 12, 1 / 6], [1 / 6, 5 / 12, 5 / 12], [5 / 12, 1 / 6, 5 / 12]]
)


# ------------------------------------------------------------------------------------ frames


def normalized_json_shift(info: dict | str | Path) -> np.ndarray:
    """(3,) shift s = (centroid - bbox_centre) / ‖max - min‖ from ``model_normalized.json``
    (a dict or a path)."""
    if not isinstance(info, dict):
        info = read_normalized_json(info)
    try:
        lo, hi, c = (np.asarray(info[k], dtype=np.float64).reshape(3) for k in
                     ("min", "max", "centroid"))
    except (KeyError, ValueError, TypeError) as exc:
        raise AssetError(f"model_normalized.json lacks a valid min/max/centroid ({exc}); "
                         "pass the json of this very model") from None
    diag = float(np.linalg.norm(hi - lo))
    if not diag > 0:
        raise AssetError("model_normalized.json has a zero-size bbox; it cannot define a shift")
    return (c - 0.5 * (lo + hi)) / diag


def read_normalized_json(path: str | Path) -> dict:
    """Load a ``model_normalized.json`` file."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise AssetError(f"cannot read {path}: {exc}; re-extract the model or omit the json")\
            from None


def _shift(shift: np.ndarray | None) -> np.ndarray:
    return np.zeros(3) if shift is None else np.asarray(shift, dtype=np.float64).reshape(3)


def v1_to_v2(points: np.ndarray, shift: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) normalised v1 points -> v2 frame: ``R · p - s`` (``s`` from
    :func:`normalized_json_shift`, 0 if unknown)."""
    return np.asarray(points, dtype=np.float64) @ R_V1_TO_V2.T - _shift(shift)


def v2_to_v1(points: np.ndarray, shift: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) v2 points -> normalised v1 frame: ``Rᵀ · (p + s)``; inverse of :func:`v1_to_v2`."""
    return (np.asarray(points, dtype=np.float64) + _shift(shift)) @ R_V1_TO_V2


def v1_to_v2_matrix(shift: np.ndarray | None = None) -> np.ndarray:
    """(4, 4) homogeneous matrix of :func:`v1_to_v2` (acting on column vectors)."""
    m = V1_TO_V2.copy()
    m[:3, 3] = -_shift(shift)
    return m


def _unit_bbox(points: np.ndarray) -> np.ndarray:
    """(N, 3) points moved to a centred bbox with diagonal 1."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    diag = float(np.linalg.norm(hi - lo))
    if not diag > 0:
        raise AssetError("degenerate model: all vertices coincide; leave this id out")
    return (points - 0.5 * (lo + hi)) / diag


# -------------------------------------------------------------------------------------- root


def _synset_id(synset: str) -> str:
    s = str(synset).strip()
    if _SYNSET_RE.match(s):
        return s
    try:
        return resolve_category(s).synset
    except KeyError as exc:
        raise AssetError(f"{exc.args[0]}; or pass an 8-digit ShapeNet synset id") from None


class ShapeNetRoot:
    """A ShapeNetCore.v1 or .v2 folder: layout detection, taxonomy, synsets and model ids."""

    def __init__(self, path: str | Path, version: Literal["v1", "v2"] | None = None) -> None:
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_dir():
            raise AssetError(f"ShapeNet root {self.path} does not exist: pass --shapenet-root "
                             "pointing at the ShapeNetCore.v2 (or ShapeNetCore.v1) folder")
        self.version = version or self._detect_version()
        self.taxonomy = self._read_taxonomy()

    def __repr__(self) -> str:
        return f"ShapeNetRoot({str(self.path)!r}, version={self.version!r})"

    def _detect_version(self) -> Literal["v1", "v2"]:
        for synset_dir in self._synset_dirs():
            for model_dir in synset_dir.iterdir():
                if (model_dir / _V2_OBJ).is_file():
                    return "v2"
                if (model_dir / _V1_OBJ).is_file():
                    return "v1"
        name = self.path.name.lower()
        if "v1" in name or "v2" in name:
            return "v1" if "v1" in name else "v2"
        raise AssetError(f"{self.path} holds no <synset>/<id>/models/model_normalized.obj (v2) "
                         "nor <synset>/<id>/model.obj (v1): is --shapenet-root the "
                         "ShapeNetCore.v2 folder?")

    def _synset_dirs(self) -> list[Path]:
        return sorted(p for p in self.path.iterdir() if p.is_dir() and _SYNSET_RE.match(p.name))

    def _read_taxonomy(self) -> list[dict]:
        f = self.path / "taxonomy.json"
        if not f.is_file():
            return []
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError) as exc:
            raise AssetError(f"cannot parse {f}: {exc}; re-extract taxonomy.json or delete it")\
                from None
        return data if isinstance(data, list) else []

    def synsets(self) -> list[str]:
        """Sorted synset ids that have a folder."""
        return [p.name for p in self._synset_dirs()]

    def synset_name(self, synset: str) -> str:
        """Category name: from the category table, else the first taxonomy lemma, else the id."""
        sid = _synset_id(synset)
        try:
            return resolve_category(sid).name
        except KeyError:
            pass
        for entry in self.taxonomy:
            if entry.get("synsetId") == sid and entry.get("name"):
                return str(entry["name"]).split(",")[0].strip()
        return sid

    def synset_dir(self, synset: str) -> Path:
        """Folder of a synset (id or category name); AssetError if absent."""
        d = self.path / _synset_id(synset)
        if not d.is_dir():
            found = ", ".join(self.synsets()) or "none"
            raise AssetError(f"no folder {d}: is --shapenet-root the ShapeNetCore.v2 folder? "
                             f"(synsets found there: {found}; is this synset extracted?)")
        return d

    def model_path(self, synset: str, model_id: str) -> Path:
        """The OBJ file of a model for this root's version (existence not checked)."""
        rel = _V2_OBJ if self.version == "v2" else _V1_OBJ
        return self.synset_dir(synset) / str(model_id) / rel

    def has_model(self, synset: str, model_id: str) -> bool:
        return self.model_path(synset, model_id).is_file()

    def model_ids(self, synset: str) -> list[str]:
        """Sorted ids (opaque strings) of the models of a synset that have an OBJ file."""
        d = self.synset_dir(synset)
        rel = _V2_OBJ if self.version == "v2" else _V1_OBJ
        return sorted(p.name for p in d.iterdir() if (p / rel).is_file())

    def normalized_json(self, synset: str, model_id: str) -> Path | None:
        """``model_normalized.json`` of a v2 model, or None."""
        f = self.synset_dir(synset) / str(model_id) / _V2_JSON
        return f if f.is_file() else None


# --------------------------------------------------------------------------------- colours


def _load_texture(path: Path, cache: dict[Path, np.ndarray | None],
                  warnings: list[str]) -> np.ndarray | None:
    """(H, W, 3) uint8 RGB, or None (with a warning) if the image cannot be decoded."""
    if path not in cache:
        try:
            with Image.open(path) as im:
                cache[path] = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            warnings.append(f"{path}: cannot decode texture ({exc}); using its Kd colour")
            log.warning(warnings[-1])
            cache[path] = None
    return cache[path]


def _sample_texture(tex: np.ndarray, uv_tri: np.ndarray) -> np.ndarray:
    """(K, 3) mean colour in [0, 1] of ``tex`` (H, W, 3) uint8 over the ``_BARY`` points of K
    UV triangles (K, 3, 2)."""
    h, w = tex.shape[:2]
    uv = np.einsum("sc,kcd->ksd", _BARY, uv_tri)  # (K, S, 2)
    uv = uv - np.floor(uv)  # repeat wrapping
    x = np.clip((uv[..., 0] * w).astype(np.int64), 0, w - 1)
    y = np.clip(((1.0 - uv[..., 1]) * h).astype(np.int64), 0, h - 1)  # v = 0 is the bottom row
    return tex[y, x].mean(axis=1) / 255.0


def face_colours(obj: ObjMesh) -> np.ndarray:
    """(F, 4) uint8 RGBA per face: texture mean at the face's UVs times Kd, alpha = opacity.

    Problems decoding images are appended to ``obj.warnings``.
    """
    n = len(obj.faces)
    rgb = np.tile(np.asarray(DEFAULT_KD, dtype=np.float64), (n, 1))
    alpha = np.ones(n)
    cache: dict[Path, np.ndarray | None] = {}
    for mi, mat in enumerate(obj.materials):
        sel = obj.face_material == mi
        if not sel.any():
            continue
        rgb[sel], alpha[sel] = mat.kd, mat.opacity
        tex = _load_texture(mat.map_kd, cache, obj.warnings) if mat.map_kd else None
        if tex is None:
            continue
        textured = sel & (obj.face_uv >= 0).all(axis=1)
        uv_tri = obj.uv[obj.face_uv[textured]]  # (K, 3, 2)
        rgb[textured] = _sample_texture(tex, uv_tri) * mat.kd
    rgba = np.concatenate([rgb, alpha[:, None]], axis=1)
    return np.clip(np.round(rgba * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------- loading


def _frame_v1(vertices: np.ndarray, json_info: dict | str | Path | None, centring: str,
              shift: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """v1 vertices -> v2 frame (see module docstring); returns (points, shift, centring used)."""
    q = _unit_bbox(vertices @ R_V1_TO_V2.T)
    if shift is not None:
        shift, used = _shift(shift), "given shift"
    elif json_info is not None:
        shift, used = normalized_json_shift(json_info), "model_normalized.json"
    elif centring == "mean":
        shift, used = q.mean(axis=0), "vertex mean"
    elif centring == "bbox":
        shift, used = np.zeros(3), "bbox centre"
    else:
        raise ValueError(f"v1_centring must be 'bbox' or 'mean', not {centring!r}")
    return q - shift, shift, used


def _category(root: ShapeNetRoot, synset: str) -> tuple[str, list[str]]:
    try:
        cat = resolve_category(synset)
        return cat.name, list(cat.part_names)
    except KeyError:
        return root.synset_name(synset), []


def _material_meta(obj: ObjMesh) -> list[dict]:
    counts = np.bincount(obj.face_material[obj.face_material >= 0],
                         minlength=len(obj.materials))
    return [
        {"name": m.name, "kd": [float(c) for c in m.kd], "opacity": m.opacity,
         "texture": str(m.map_kd) if m.map_kd else None, "n_faces": int(counts[i])}
        for i, m in enumerate(obj.materials)
    ]


def load_model(
    root: ShapeNetRoot | str | Path,
    synset: str,
    model_id: str,
    *,
    normalized_json: dict | str | Path | None = None,
    v1_shift: np.ndarray | None = None,
    v1_centring: Literal["bbox", "mean"] = "bbox",
) -> ShapeAsset:
    """Load one ShapeNetCore model as a :class:`ShapeAsset` in the v2 frame.

    Args:
        root: a :class:`ShapeNetRoot` or its folder.
        synset: synset id (``"03001627"``) or category name (``"chair"``).
        model_id: opaque model id (may be ``u`` + UUID).
        normalized_json: v1 only: the model's v2 ``model_normalized.json`` (dict or path) giving
            the centroid shift; if None, ``v1_centring`` decides (see module docstring).
        v1_shift: v1 only: the (3,) shift ``s`` itself (e.g. from a chamfer fit); overrides
            ``normalized_json``.
        v1_centring: v1 without json: ``"bbox"`` (keep the bbox centred) or ``"mean"``.

    Returns:
        ShapeAsset with per-face colours, ``face_part`` all -1, the category's part names and
        no keypoints; ``meta`` holds source, version, materials, frame and warnings.
    """
    root = root if isinstance(root, ShapeNetRoot) else ShapeNetRoot(root)
    path = root.model_path(synset, model_id)
    if not path.is_file():
        raise AssetError(f"no model {_synset_id(synset)}/{model_id} under {root.path}: expected "
                         f"{path}; check the id (ids are opaque strings) and that the synset "
                         "is fully extracted")
    obj = read_obj(path)
    meta: dict = {"source": str(path), "version": root.version}
    if root.version == "v1":
        vertices, shift, used = _frame_v1(obj.vertices, normalized_json, v1_centring, v1_shift)
        meta["frame"] = {"from": "v1", "R_v1_to_v2": R_V1_TO_V2.tolist(),
                         "shift": shift.tolist(), "centring": used}
    else:
        vertices = obj.vertices
        meta["frame"] = {"from": "v2", "centring": "vertex mean (as shipped)"}
        diag = float(np.linalg.norm(np.ptp(vertices, axis=0)))
        if abs(diag - 1.0) > 1e-3:
            obj.warnings.append(f"{path}: bbox diagonal is {diag:.6f}, not 1; v2 models are "
                                "returned unchanged, so check this file")
    colours = face_colours(obj)
    mesh = trimesh.Trimesh(vertices=vertices, faces=obj.faces, face_colors=colours,
                           process=False, validate=False)
    category, part_names = _category(root, synset)
    meta.update({
        "synset": _synset_id(synset), "n_materials": len(obj.materials),
        "materials": _material_meta(obj), "textured": any(m.map_kd for m in obj.materials),
        "colour_mode": "per-face texture mean x Kd", "groups": obj.group_names,
        "skipped_records": obj.skipped, "warnings": list(obj.warnings),
    })
    return ShapeAsset(
        object_id=str(model_id), category=category, mesh=mesh,
        face_part=np.full(len(obj.faces), -1, dtype=np.int16), part_names=part_names, meta=meta,
    )


# --------------------------------------------------------------------------------- splits


@dataclass
class ModelSelection:
    """Result of :func:`select_models`.

    Attributes:
        models: (model_id, split) present on disk, in split-file order (at most ``n_objects``).
        missing: (model_id, split) requested by the split file but without a model on disk.
        source: the split file, or ``"hash"`` for the deterministic 70/10/20 split.
        valid_for_test: FeatureNeRF ``valid_flags_for_test`` (empty for other sources).
    """

    models: list[tuple[str, str]]
    missing: list[tuple[str, str]] = field(default_factory=list)
    source: str = "hash"
    valid_for_test: dict[str, bool] = field(default_factory=dict)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    @property
    def ids(self) -> list[str]:
        return [m for m, _ in self.models]


def _wanted(split: str | None) -> tuple[str, ...]:
    if split in (None, "all"):
        return SPLITS
    if split not in SPLITS:
        raise AssetError(f"unknown split {split!r}; use one of {', '.join(SPLITS)} or 'all'")
    return (split,)


def hash_split(model_id: str) -> str:
    """Deterministic split of an id: sha1 bucket 0-69 train, 70-79 val, 80-99 test."""
    bucket = int(hashlib.sha1(model_id.encode()).hexdigest()[:8], 16) % 100
    return "train" if bucket < 70 else "val" if bucket < 80 else "test"


def _read_featurenerf_json(path: Path, synset: str, wanted: tuple[str, ...]
                           ) -> tuple[list[tuple[str, str]], dict[str, bool]]:
    if _SYNSET_RE.match(path.stem) and path.stem != synset:
        raise AssetError(f"split file {path} is for synset {path.stem}, not {synset}; pass "
                         f"{path.with_name(synset + '.json')}")
    try:
        data = json.loads(path.read_text())
        pairs = [(str(i), s) for s in wanted for i in data.get(s, [])]
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise AssetError(f"cannot read split file {path} ({exc}); expected a FeatureNeRF "
                         "json with train/val/test id lists") from None
    flags = data.get("valid_flags_for_test", {})
    return pairs, {str(k): bool(v) for k, v in flags.items()} if isinstance(flags, dict) else {}


def _read_keypointnet_txt(path: Path, synset: str, split: str) -> list[tuple[str, str]]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise AssetError(f"cannot read split file {path} ({exc.strerror})") from None
    out = []
    for lineno, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        syn, sep, mid = line.partition("-")
        if not sep or not _SYNSET_RE.match(syn) or not mid:
            raise AssetError(f"{path}:{lineno}: expected '<synset>-<model_id>', got {line!r}")
        if syn == synset:
            out.append((mid, split))
    return out


def _txt_files(split_file: Path, wanted: tuple[str, ...], split: str | None
               ) -> list[tuple[Path, str]]:
    """(txt file, split name) pairs for a KeypointNet txt file or a folder of them."""
    if split_file.is_dir():
        return [(split_file / f"{s}.txt", s) for s in wanted if (split_file / f"{s}.txt").is_file()]
    stem = split_file.stem
    if stem in SPLITS:
        if split not in (None, "all", stem):
            raise AssetError(f"split file {split_file} holds the {stem!r} split, but split "
                             f"{split!r} was requested")
        return [(split_file, stem)]
    return [(split_file, s) for s in wanted[:1]]


def _requested(split_file: Path, synset: str, split: str | None
               ) -> tuple[list[tuple[str, str]], dict[str, bool]]:
    wanted = _wanted(split)
    if not split_file.exists():
        raise AssetError(f"split file {split_file} does not exist")
    if split_file.is_dir() and (split_file / f"{synset}.json").is_file():
        split_file = split_file / f"{synset}.json"
    if split_file.suffix == ".json":
        return _read_featurenerf_json(split_file, synset, wanted)
    files = _txt_files(split_file, wanted, split)
    if not files:
        raise AssetError(f"{split_file} has neither {synset}.json nor {'/'.join(wanted)}.txt")
    return [p for f, s in files for p in _read_keypointnet_txt(f, synset, s)], {}


def select_models(
    root: ShapeNetRoot | str | Path,
    synset: str,
    split_file: str | Path | None = None,
    split: str | None = "train",
    n_objects: int | None = None,
) -> ModelSelection:
    """Choose (model_id, split) pairs of a synset.

    Args:
        root: a :class:`ShapeNetRoot` or its folder.
        synset: synset id or category name.
        split_file: FeatureNeRF ``<synset>.json`` (keys train/val/test), a KeypointNet
            ``train|val|test.txt`` (lines ``<synset>-<id>``), or a folder holding either; None:
            every model on disk with :func:`hash_split`.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``/None.
        n_objects: keep at most n present models of each split (file order, sorted ids without
            a file; see :func:`cap_per_split` for the test split of a FeatureNeRF json).

    Returns:
        ModelSelection; ids listed in the split file but absent on disk are in ``missing``.
    """
    root = root if isinstance(root, ShapeNetRoot) else ShapeNetRoot(root)
    sid = _synset_id(synset)
    if split_file is None:
        wanted = _wanted(split)
        models = [(m, s) for m in root.model_ids(sid) if (s := hash_split(m)) in wanted]
        return ModelSelection(cap_per_split(models, n_objects) if n_objects is not None
                              else models)
    split_file = Path(split_file)
    requested, flags = _requested(split_file, sid, split)  # validate the file before the disk
    present, seen = set(root.model_ids(sid)), set()
    models, missing = [], []
    for mid, s in requested:
        if mid in seen:
            continue
        seen.add(mid)
        (models if mid in present else missing).append((mid, s))
    if n_objects is not None:
        models = cap_per_split(models, n_objects, _pair_counts(split_file, sid))
    return ModelSelection(models, missing, str(split_file), flags)


def _pair_counts(split_file: Path, synset: str) -> dict[str, int]:
    """How often each object appears in a FeatureNeRF json's evaluation pairs ({} otherwise)."""
    if split_file.is_dir():
        split_file = split_file / f"{synset}.json"
    if split_file.suffix != ".json" or not split_file.is_file():
        return {}
    return pair_counts(json.loads(split_file.read_text()))


def pair_counts(split: dict) -> dict[str, int]:
    """Object id -> how often it appears in the evaluation pairs of a parsed FeatureNeRF
    ``<synset>.json`` (``cross_inst_pairs`` src and trg, ``cross_view_pairs`` model_id)."""
    counts: dict[str, int] = {}
    for p in split.get("cross_inst_pairs", []):
        for k in ("src", "trg"):
            counts[str(p[k])] = counts.get(str(p[k]), 0) + 1
    for p in split.get("cross_view_pairs", []):
        counts[str(p["model_id"])] = counts.get(str(p["model_id"]), 0) + 1
    return counts


def cap_per_split(models: list[tuple[str, str]], n: int, pair_counts: dict[str, int] | None = None
                  ) -> list[tuple[str, str]]:
    """At most ``n`` models of each split, in their order; test models that appear most often in
    the official evaluation pairs come first (so a capped test split keeps as many official pairs
    as possible; ties keep file order)."""
    counts = pair_counts or {}
    out: list[tuple[str, str]] = []
    for split in SPLITS:
        of_split = [m for m in models if m[1] == split]
        if split == "test" and counts:
            of_split = sorted(of_split, key=lambda m: -counts.get(m[0], 0))  # stable
        out += of_split[:n]
    return out
