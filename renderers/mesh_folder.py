"""Any folder of meshes (OBJ, GLB/glTF, PLY, OFF, STL) -> :class:`ShapeAsset` to render.

For Objaverse GLBs, scans or your own models of any category, rendered by the project's renderers
exactly like ShapeNet models. Beside ``<name>.<ext>`` (all optional)::

    <name>.labels.npy       (F,) int part label per face (-1 = unlabelled), in the face order below
    <name>.parts.yaml | parts.yaml   {part_name: [node / mesh / group / material names or globs]}
    <name>.keypoints.json   [{"id": int, "xyz": [x, y, z], "name": str?}] in the mesh's own frame
    <root>/splits.json      {"train": [object ids], "val": [...], "test": [...]} (mesh_splits;
                            ids it does not list get renderers.shapenet.hash_split)

Loading and face order.
* OBJ: the project's reader (:func:`renderers.obj.read_obj`): faces in file order
  (fan-triangulated), per-face colours = material texture mean x Kd
  (:func:`renderers.shapenet.face_colours`); ``parts.yaml`` names match ``g`` groups and
  ``usemtl`` materials.
* GLB / glTF / PLY / OFF / STL: ``trimesh.load_scene(process=False)``; every triangle geometry
  instance, in sorted node-name order, with its node transform applied, faces in primitive order;
  ``parts.yaml`` names match node and geometry (glTF mesh) names. Point clouds and paths are
  skipped. One geometry keeps trimesh's visual as it is (UV texture, vertex or face colours);
  several are concatenated with per-face colours (a texture's mean at 7 barycentric points per
  face x the base colour, vertex colours averaged per face).
* Labels: a ``.labels.npy`` sidecar wins over ``parts.yaml``. Part names: ``part_names`` if
  given, else the yaml's keys in order, else the category table's names when they cover every
  label, else ``part_<k>``.

Normalisation to the object frame (+Y up, -Z front, bbox-centred, unit bbox diagonal), after
dropping unreferenced vertices: ``p_obj = s * (R p - c)``. ``R`` comes from ``up`` (the mesh's
up axis: ``"+y"`` default, ``"+z"`` for most scans) and ``front`` (default: the first of +Y,
-Z, +X not parallel to ``up``, i.e. the identity for +Y up and
:data:`renderers.conventions.ZUP_TO_PROJECT` for +Z up; glTF assets face +Z by the glTF spec,
so pass ``front="+z"`` to turn them to face -Z); ``c`` is the bbox centre of ``R p`` and
``s = 1 / its diagonal``. ``meta["normalisation"]`` records ``R``, ``c``, ``s`` and the 4x4
``object_from_mesh``; keypoints go through the same map.

Errors (:class:`~renderers.asset.AssetError`, naming the file): unreadable files, files without
triangle geometry (an empty GLB, a point cloud), sidecars of the wrong length or type, malformed
keypoint or yaml files, meshes whose vertices all coincide.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
import yaml
from PIL import Image

from renderers.asset import AssetError, ShapeAsset
from renderers.obj import DEFAULT_KD

log = logging.getLogger(__name__)

MESH_SUFFIXES = (".obj", ".glb", ".gltf", ".ply", ".off", ".stl")
_AXES = {"+x": (1, 0, 0), "-x": (-1, 0, 0), "+y": (0, 1, 0), "-y": (0, -1, 0),
         "+z": (0, 0, 1), "-z": (0, 0, -1)}
_BARY = np.array(
    [[1 / 3, 1 / 3, 1 / 3], [2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6], [1 / 6, 1 / 6, 2 / 3],
     [5 / 12, 5 / 12, 1 / 6], [1 / 6, 5 / 12, 5 / 12], [5 / 12, 1 / 6, 5 / 12]]
)
_GREY = np.array([*np.round(np.asarray(DEFAULT_KD) * 255), 255], dtype=np.uint8)
KEYPOINT_SURFACE_WARN = 1e-2  # object units: keypoints farther from the surface are reported


# ----------------------------------------------------------------------------------- listing


def _object_id(root: Path, path: Path) -> str:
    rel = path.relative_to(root)
    return "__".join([*rel.parts[:-1], rel.name[: -len(path.suffix)]])


def list_meshes(root: str | Path) -> list[tuple[str, Path]]:
    """(object_id, path) of every mesh file under ``root`` (recursive, hidden folders skipped),
    sorted by path. The id is the path relative to ``root`` without its suffix, folders joined by
    ``__`` (a flat folder gives the file stems); a file ``root`` gives its stem.

    Raises:
        AssetError: if ``root`` does not exist, holds no mesh, or two files give one id.
    """
    root = Path(root).expanduser()
    if root.is_file():
        return [(root.stem, root)]
    if not root.is_dir():
        raise AssetError(f"mesh root {root} does not exist; pass --mesh-root DIR")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MESH_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise AssetError(f"mesh root {root}: no {'/'.join(MESH_SUFFIXES)} file in it")
    out: dict[str, Path] = {}
    for p in files:
        oid = _object_id(root, p)
        if oid in out:
            raise AssetError(f"mesh root {root}: {out[oid].name} and {p.name} give the same "
                             f"object id {oid!r}; rename one")
        out[oid] = p
    return sorted(out.items(), key=lambda kv: str(kv[1]))


def mesh_splits(root: str | Path, object_ids: Sequence[str]) -> dict[str, str]:
    """{object_id: split}: from ``<root>/splits.json`` ({"train": [ids], "val": [...],
    "test": [...]}) where it lists the id, else :func:`renderers.shapenet.hash_split`."""
    from renderers.shapenet import SPLITS, hash_split

    f = Path(root).expanduser() / "splits.json"
    named: dict[str, str] = {}
    if f.is_file():
        try:
            data = json.loads(f.read_text())
            named = {str(i): s for s in SPLITS for i in data.get(s, [])}
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            raise AssetError(f"cannot read {f} ({exc}); expected {{\"train\": [object ids], "
                             "\"val\": [...], \"test\": [...]}") from None
    return {str(o): named.get(str(o)) or hash_split(str(o)) for o in object_ids}


# ---------------------------------------------------------------------------------- frames


def _axis(name: str, what: str) -> np.ndarray:
    key = name.strip().lower()
    if key not in _AXES:
        raise AssetError(f"{what} must be one of {', '.join(_AXES)}, not {name!r}")
    return np.array(_AXES[key], dtype=np.float64)


def axes_rotation(up: str = "+y", front: str | None = None) -> np.ndarray:
    """(3, 3) rotation taking the ``up`` axis to +Y and the ``front`` axis to -Z (default front:
    the first of +Y, -Z, +X not parallel to ``up``)."""
    u = _axis(up, "up")
    if front is None:
        f = next(np.array(a, np.float64) for a in ((0, 1, 0), (0, 0, -1), (1, 0, 0))
                 if abs(np.dot(a, u)) < 0.5)
    else:
        f = _axis(front, "front")
        if abs(np.dot(f, u)) > 0.5:
            raise AssetError(f"front {front!r} is parallel to up {up!r}")
    z = -f
    return np.stack([np.cross(u, z), u, z]) + 0.0


def normalise(vertices: np.ndarray, rotation: np.ndarray, where: str
              ) -> tuple[np.ndarray, dict[str, Any]]:
    """4x4 ``object_from_mesh`` (``s * (R p - c)``: bbox-centred, unit diagonal) and its meta."""
    q = np.asarray(vertices, np.float64) @ rotation.T
    lo, hi = q.min(axis=0), q.max(axis=0)
    diag = float(np.linalg.norm(hi - lo))
    if not (np.isfinite(diag) and diag > 0):
        raise AssetError(f"{where}: all vertices coincide (or are not finite): bbox diagonal "
                         f"{diag}; the mesh cannot be normalised")
    c, s = 0.5 * (lo + hi), 1.0 / diag
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = s * rotation, -s * c
    return m, {"R": rotation.tolist(), "centre": c.tolist(), "scale": s,
               "bbox_diagonal_source": diag, "object_from_mesh": m.tolist()}


# --------------------------------------------------------------------------------- colours


def _image_rgb(material: Any) -> np.ndarray | None:
    image = getattr(material, "baseColorTexture", None)
    if image is None:
        image = getattr(material, "image", None)
    if image is None:
        return None
    try:
        return np.asarray(image.convert("RGB") if isinstance(image, Image.Image)
                          else Image.fromarray(np.asarray(image)).convert("RGB"), np.uint8)
    except (OSError, ValueError, TypeError):
        return None


def _base_rgba(material: Any, textured: bool) -> np.ndarray:
    """(4,) float RGBA 0-255 factor of a trimesh material: glTF's ``baseColorFactor`` (white
    when unset, as the glTF spec says), else ``main_color`` (white under a texture)."""
    factor = getattr(material, "baseColorFactor", None)
    if isinstance(material, trimesh.visual.material.PBRMaterial) or factor is not None:
        c = np.full(4, 255.0) if factor is None else np.asarray(factor, np.float64).reshape(-1)
    elif textured or getattr(material, "main_color", None) is None:
        c = np.full(4, 255.0) if textured else _GREY.astype(np.float64)
    else:
        c = np.asarray(material.main_color, np.float64).reshape(-1)
    return np.clip(np.r_[c[:3], c[3] if len(c) > 3 else 255.0], 0, 255)


def face_rgba(mesh: trimesh.Trimesh) -> np.ndarray:
    """(F, 4) uint8 per-face colour of any trimesh visual (texture mean x base colour at 7
    barycentric points with repeat wrapping; vertex colours averaged; grey if none)."""
    n = len(mesh.faces)
    visual = mesh.visual
    kind = getattr(visual, "kind", None)
    if kind == "face":
        return np.asarray(visual.face_colors, np.uint8)
    if kind == "vertex":
        vc = np.asarray(visual.vertex_colors, np.float64)
        return np.round(vc[mesh.faces].mean(axis=1)).astype(np.uint8)
    if isinstance(visual, trimesh.visual.TextureVisuals):
        material = visual.material
        tex = _image_rgb(material)
        uv = None if visual.uv is None else np.asarray(visual.uv, np.float64)
        textured = tex is not None and uv is not None and len(uv) == len(mesh.vertices)
        base = _base_rgba(material, textured)
        out = np.tile(base, (n, 1))
        if textured:
            h, w = tex.shape[:2]
            pts = np.einsum("sc,kcd->ksd", _BARY, uv[mesh.faces])
            pts = pts - np.floor(pts)
            x = np.clip((pts[..., 0] * w).astype(np.int64), 0, w - 1)
            y = np.clip(((1.0 - pts[..., 1]) * h).astype(np.int64), 0, h - 1)
            out[:, :3] = tex[y, x].mean(axis=1) * base[:3] / 255.0
        return np.clip(np.round(out), 0, 255).astype(np.uint8)
    return np.tile(_GREY, (n, 1))


# --------------------------------------------------------------------------------- loading


def _load_obj(path: Path) -> tuple[trimesh.Trimesh, list[set[str]], np.ndarray, dict]:
    """(mesh, names per face group, face -> group index, meta) of an OBJ via read_obj."""
    from renderers.obj import read_obj
    from renderers.shapenet import face_colours

    obj = read_obj(path)
    if len(obj.faces) == 0:
        raise AssetError(f"{path}: the OBJ has no faces (no triangle geometry)")
    mesh = trimesh.Trimesh(vertices=obj.vertices, faces=obj.faces, face_colors=face_colours(obj),
                           process=False, validate=False)
    mat_names = [m.name for m in obj.materials]
    keys = sorted({(int(g), int(m)) for g, m in zip(obj.face_group, obj.face_material,
                                                     strict=True)})
    key_index = {k: i for i, k in enumerate(keys)}
    names = [{obj.group_names[g] if g >= 0 else "", mat_names[m] if m >= 0 else ""} - {""}
             for g, m in keys]
    face_key = np.array([key_index[(int(g), int(m))] for g, m in
                         zip(obj.face_group, obj.face_material, strict=True)], np.int64)
    meta = {"loader": "renderers.obj.read_obj", "groups": obj.group_names,
            "materials": mat_names, "colour_mode": "per-face texture mean x Kd",
            "textured": any(m.map_kd for m in obj.materials), "warnings": list(obj.warnings)}
    return mesh, names, face_key, meta


def _load_trimesh(path: Path) -> tuple[trimesh.Trimesh, list[set[str]], np.ndarray, dict]:
    """(mesh, names per geometry instance, face -> instance index, meta) via trimesh."""
    try:
        scene = trimesh.load_scene(str(path), process=False)
    except Exception as exc:  # trimesh raises many types for corrupt files
        raise AssetError(f"cannot read mesh {path}: {type(exc).__name__}: {exc}") from None
    parts: list[trimesh.Trimesh] = []
    names: list[set[str]] = []
    skipped = []
    for node in sorted(scene.graph.nodes_geometry):
        transform, geom_name = scene.graph[node]
        geom = scene.geometry.get(geom_name)
        if not isinstance(geom, trimesh.Trimesh) or len(geom.faces) == 0:
            skipped.append(f"{node} ({type(geom).__name__})")
            continue
        g = geom.copy()
        g.apply_transform(np.asarray(transform, np.float64))
        parts.append(g)
        names.append({str(node), str(geom_name)})
    if not parts:
        what = f"; it holds only {', '.join(skipped)}" if skipped else \
            f" (the scene has {len(scene.graph.nodes)} node(s) and no mesh)"
        raise AssetError(f"{path}: no triangle geometry{what}; export the model with its meshes")
    if len(parts) == 1:
        mesh, mode = parts[0], f"as loaded ({parts[0].visual.kind or 'none'})"
    else:
        colours = np.concatenate([face_rgba(p) for p in parts])
        offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
        mesh = trimesh.Trimesh(
            vertices=np.concatenate([p.vertices for p in parts]),
            faces=np.concatenate([p.faces + o for p, o in zip(parts, offsets, strict=True)]),
            face_colors=colours, process=False, validate=False)
        mode = "per-face colours (texture mean x base colour) of concatenated geometries"
    face_key = np.repeat(np.arange(len(parts)), [len(p.faces) for p in parts])
    meta = {"loader": "trimesh.load_scene", "geometries": [sorted(n) for n in names][:200],
            "n_geometries": len(parts), "skipped_geometries": skipped, "colour_mode": mode,
            "textured": any(isinstance(p.visual, trimesh.visual.TextureVisuals)
                            and _image_rgb(p.visual.material) is not None for p in parts),
            "warnings": []}
    return mesh, names, face_key, meta


def _read_labels(labels: str | Path | np.ndarray, n_faces: int, where: str) -> np.ndarray:
    if isinstance(labels, (str, Path)):
        where = str(labels)
        try:
            labels = np.load(labels, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise AssetError(f"cannot read label sidecar {where}: {exc}") from None
    arr = np.asarray(labels)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer)
                             or (np.issubdtype(arr.dtype, np.floating)
                                 and np.all(arr == np.round(arr)))):
        raise AssetError(f"label sidecar {where}: shape {arr.shape} {arr.dtype}; expected (F,) "
                         "integer part labels")
    if len(arr) != n_faces:
        raise AssetError(f"label sidecar {where}: {len(arr)} labels for {n_faces} faces; it must "
                         "hold one label per face, in the loader's face order (see "
                         "renderers/mesh_folder.py)")
    if arr.size and arr.min() < -1:
        raise AssetError(f"label sidecar {where}: labels < -1 (use -1 for unlabelled)")
    return arr.astype(np.int64)


def _read_parts_yaml(parts: str | Path | dict, where: str) -> dict[str, list[str]]:
    if isinstance(parts, (str, Path)):
        where = str(parts)
        try:
            parts = yaml.safe_load(Path(parts).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise AssetError(f"cannot read {where}: {exc}") from None
    if not isinstance(parts, dict) or not parts:
        raise AssetError(f"{where}: expected a mapping {{part_name: [names or glob patterns]}}")
    out = {}
    for k, v in parts.items():
        pats = [v] if isinstance(v, str) else v
        if not isinstance(pats, list) or not all(isinstance(p, str) for p in pats):
            raise AssetError(f"{where}: part {k!r} must map to a name or a list of names")
        out[str(k)] = pats
    return out


def _labels_from_parts(parts: dict[str, list[str]], names: list[set[str]],
                       face_key: np.ndarray, warnings: list[str]) -> np.ndarray:
    """(F,) label per face: the first part (yaml order) one of whose patterns matches a name."""
    key_label = np.full(len(names), -1, np.int64)
    used = set()
    for k, key_names in enumerate(names):
        for label, (part, pats) in enumerate(parts.items()):
            hit = [p for p in pats if any(fnmatch.fnmatchcase(n, p) for n in key_names)]
            if hit:
                key_label[k] = label
                used.update((part, p) for p in hit)
                break
    for part, pats in parts.items():
        for p in pats:
            if (part, p) not in used and not any(fnmatch.fnmatchcase(n, p) for ns in names
                                                 for n in ns):
                warnings.append(f"parts.yaml: pattern {p!r} of part {part!r} matches no name")
    return key_label[face_key] if len(face_key) else np.zeros(0, np.int64)


def _read_keypoints(keypoints: str | Path | Sequence[dict], where: str
                    ) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    if isinstance(keypoints, (str, Path)):
        where = str(keypoints)
        try:
            keypoints = json.loads(Path(keypoints).read_text())
        except (OSError, ValueError) as exc:
            raise AssetError(f"cannot read keypoint file {where}: {exc}") from None
    if not isinstance(keypoints, list):
        raise AssetError(f"{where}: expected a list [{{\"id\": int, \"xyz\": [x, y, z]}}]")
    ids, xyz, names = [], [], []
    for j, kp in enumerate(keypoints):
        try:
            i = kp["id"]
            p = np.asarray(kp["xyz"], dtype=np.float64).reshape(-1)
            if isinstance(i, bool) or int(i) != i or int(i) < 0 or p.shape != (3,) \
                    or not np.isfinite(p).all():
                raise ValueError("id must be an int >= 0 and xyz 3 finite numbers")
        except (KeyError, TypeError, ValueError) as exc:
            raise AssetError(f"{where}: keypoint {j} is {kp!r} ({exc}); expected "
                             "{\"id\": int, \"xyz\": [x, y, z]}") from None
        if int(i) in ids:
            raise AssetError(f"{where}: keypoint id {int(i)} appears twice")
        ids.append(int(i))
        xyz.append(p)
        names.append(kp.get("name"))
    return (np.asarray(xyz, np.float64).reshape(-1, 3), np.asarray(ids, np.int64), names)


def _sidecar(path: Path, suffix: str) -> Path | None:
    p = path.with_name(path.stem + suffix)
    return p if p.is_file() else None


def load_mesh_asset(
    path: str | Path,
    category: str,
    object_id: str | None = None,
    labels: str | Path | np.ndarray | None = None,
    keypoints: str | Path | Sequence[dict] | None = None,
    *,
    up: str = "+y",
    front: str | None = None,
    parts: str | Path | dict | None = None,
    part_names: Sequence[str] | None = None,
) -> ShapeAsset:
    """Load one mesh file as a :class:`ShapeAsset` in the object frame (see the module docstring).

    Args:
        path: the mesh file. category: a free category name. object_id: default the file stem.
        labels: (F,) face labels or a ``.npy`` path; None: the ``<name>.labels.npy`` sidecar.
        keypoints: a keypoint json path or its list; None: the ``<name>.keypoints.json`` sidecar.
        up, front: the mesh's up and front axes (``"+y"``, ``"-z"``, ...).
        parts: ``parts.yaml`` path or mapping; None: ``<name>.parts.yaml`` or ``parts.yaml``
            beside the file (used only without labels).
        part_names: names of the labels (overrides the yaml / category names).

    Returns:
        ShapeAsset (mesh with its colours/texture, face_part (F,) int16, keypoints (P,3) and ids
        (P,) in the object frame); ``meta`` holds source, loader, normalisation, labels and
        keypoint sources, warnings.

    Raises:
        AssetError: naming the file (see the module docstring).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise AssetError(f"mesh file {path} does not exist")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise AssetError(f"{path}: unsupported mesh type {path.suffix!r} (use "
                         f"{', '.join(MESH_SUFFIXES)})")
    object_id = object_id or path.stem
    where = str(path)
    rotation = axes_rotation(up, front)
    if path.suffix.lower() == ".obj":
        mesh, names, face_key, load_meta = _load_obj(path)
    else:
        mesh, names, face_key, load_meta = _load_trimesh(path)
    warnings: list[str] = load_meta.pop("warnings")
    n_vertices = len(mesh.vertices)
    mesh.remove_unreferenced_vertices()  # stray vertices would distort the bbox normalisation
    load_meta["unreferenced_vertices_removed"] = n_vertices - len(mesh.vertices)
    m, norm_meta = normalise(mesh.vertices, rotation, where)
    mesh.apply_transform(m)
    norm_meta.update({"up": up, "front": front})

    n_faces = len(mesh.faces)
    labels_src: str = "none"
    yaml_names: list[str] | None = None
    if labels is None:
        labels = _sidecar(path, ".labels.npy")
    if labels is not None:
        face_part = _read_labels(labels, n_faces, where)
        labels_src = f"sidecar {labels}" if isinstance(labels, (str, Path)) else "array"
    else:
        if parts is None:
            parts = _sidecar(path, ".parts.yaml") or (
                path.parent / "parts.yaml" if (path.parent / "parts.yaml").is_file() else None)
        if parts is not None:
            table = _read_parts_yaml(parts, where)
            face_part = _labels_from_parts(table, names, face_key, warnings)
            yaml_names = list(table)
            labels_src = f"parts.yaml {parts}" if isinstance(parts, (str, Path)) else "parts"
        else:
            face_part = np.full(n_faces, -1, np.int64)
    n_labels = int(face_part.max()) + 1 if face_part.size else 0
    names_src = "given"
    if part_names is not None:
        names_out = [str(n) for n in part_names]
        if n_labels > len(names_out):
            raise AssetError(f"{where}: label {n_labels - 1} but only {len(names_out)} part "
                             "names given")
    elif yaml_names is not None:
        names_out, names_src = yaml_names, "parts.yaml"
    else:
        names_out, names_src = _category_part_names(category, n_labels)

    kp_src = "none"
    if keypoints is None:
        keypoints = _sidecar(path, ".keypoints.json")
    kp_xyz, kp_ids, kp_names = np.zeros((0, 3)), np.zeros(0, np.int64), []
    if keypoints is not None:
        kp_xyz, kp_ids, kp_names = _read_keypoints(keypoints, where)
        kp_xyz = kp_xyz @ m[:3, :3].T + m[:3, 3]
        kp_src = f"{keypoints}" if isinstance(keypoints, (str, Path)) else "list"
    kp_dist = 0.0
    if len(kp_xyz):
        kp_dist = float(trimesh.proximity.closest_point(mesh, kp_xyz)[1].max())
        if kp_dist > KEYPOINT_SURFACE_WARN:
            warnings.append(f"keypoints lie up to {kp_dist:.3g} (object units) off the surface; "
                            "their visibility test assumes surface points")
    meta = {
        "source": where, "format": path.suffix.lower().lstrip("."), **load_meta,
        "normalisation": norm_meta, "labels_source": labels_src, "part_names_source": names_src,
        "keypoints_source": kp_src, "keypoint_names": kp_names,
        "keypoints_surface_distance_max": kp_dist, "warnings": warnings,
    }
    return ShapeAsset(object_id=str(object_id), category=str(category), mesh=mesh,
                      face_part=face_part.astype(np.int16), part_names=names_out,
                      keypoints=kp_xyz.astype(np.float32), keypoint_ids=kp_ids.astype(np.int32),
                      meta=meta)


def _category_part_names(category: str, n_labels: int) -> tuple[list[str], str]:
    try:
        from renderers.categories import resolve_category

        names = list(resolve_category(category).part_names)
        if n_labels <= len(names) and names:
            return names, "category table"
    except KeyError:
        pass
    return [f"part_{k}" for k in range(n_labels)], "generic"
