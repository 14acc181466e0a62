"""Camera and world conventions of imported datasets -> the project's OpenCV ``K`` / ``c2w``.

The project convention (docs/contracts.md, "Frames and cameras"): OpenCV cameras (x right,
y down, z forward), ``K`` (3, 3) in pixels with pixel (row i, col j) covering
``[j, j+1) x [i, i+1)`` (so the image centre is ``(W/2, H/2)``), ``c2w`` (4, 4)
camera-to-world, world = ShapeNetCore v2 axes (+Y up, -Z front).

One helper per source convention (see /work/shared/reference/formats.md sections 0, 7, 8):

* NeRF-synthetic / Blender ``transforms.json``: OpenGL camera-to-world (camera looks along -Z,
  +Y up) in Blender's z-up world -> :func:`opengl_to_opencv_c2w`, :func:`nerf_synthetic_to_c2w`,
  :func:`K_from_camera_angle_x`.
* SRN: ``pose/*.txt`` is already an OpenCV camera-to-world, in a z-up world;
  ``intrinsics.txt`` line 1 is ``f cx cy 0.`` -> :func:`srn_pose_to_c2w`,
  :func:`srn_intrinsics_to_K`.
* DVR / NMR ``cameras.npz``: ``world_mat`` world->camera (OpenCV axes), ``camera_mat`` maps to
  [-1, 1] image units -> :func:`dvr_to_K_c2w`.
* FeatureNeRF processed data ``camera/<synset>/<id>.json``: ``transform_matrix`` is effectively
  an OpenCV camera-to-world despite its NeRF-style name (the loader right-multiplies it by
  diag(1,-1,-1,1) to reach pixel-nerf's OpenGL pose, and the 3D eval inverts that and flips y, z
  back), focal from ``camera_angle_x``, principal point at the image centre ->
  :func:`official_camera_to_c2w`, :func:`K_from_camera_angle_x`.

A world change ``M`` (4, 4) acts on points as ``p' = M p`` and on cameras as ``c2w' = M c2w``
(:func:`world_to_project_c2w`, :func:`world_to_project_points`); every ``M`` here is a signed
permutation, so converting float32 data there and back is exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: right-multiplying a camera-to-world by this flips the camera's y and z axes:
#: OpenGL (x right, y up, looks along -z) <-> OpenCV (x right, y down, looks along +z)
GL_CV_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])
GL_CV_FLIP.setflags(write=False)


def _m4(r: list[list[float]]) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = r
    m.setflags(write=False)
    return m


#: ShapeNet v1 (+Y up, +X front) -> v2 / project (+Y up, -Z front): x2 = z1, y2 = y1, z2 = -x1
#: (the same matrix as ``renderers.shapenet.V1_TO_V2``; formats.md section 0)
V1_TO_PROJECT = _m4([[0, 0, 1], [0, 1, 0], [-1, 0, 0]])
#: z-up worlds (Blender after the default OBJ import, SRN renders) -> project: x = x_b, y = z_b,
#: z = -y_b (inverse of SRN's ``x_srn = x2, y_srn = -z2, z_srn = y2``, formats.md section 7.1)
ZUP_TO_PROJECT = _m4([[1, 0, 0], [0, 0, 1], [0, -1, 0]])
IDENTITY = _m4([[1, 0, 0], [0, 1, 0], [0, 0, 1]])

#: named world frames of imported data -> the world change into the project frame
WORLD_FRAMES: dict[str, np.ndarray] = {
    "shapenet-v1": V1_TO_PROJECT,  # y-up, front +X (FeatureNeRF renders ShapeNet v1 meshes)
    "shapenet-v2": IDENTITY,  # already the project's axes
    "z-up": ZUP_TO_PROJECT,  # Blender / SRN world
}


def world_frame(name: str) -> np.ndarray:
    """(4, 4) world change of a named frame (:data:`WORLD_FRAMES`); ValueError names choices."""
    if name not in WORLD_FRAMES:
        raise ValueError(f"unknown world frame {name!r}; choose one of "
                         f"{', '.join(WORLD_FRAMES)}")
    return WORLD_FRAMES[name]


def world_to_project_c2w(c2w: np.ndarray, frame: str | np.ndarray) -> np.ndarray:
    """(..., 4, 4) camera-to-world in a source world -> the project world: ``M @ c2w``."""
    m = world_frame(frame) if isinstance(frame, str) else np.asarray(frame)
    return m @ np.asarray(c2w, dtype=np.float64)


def project_to_world_c2w(c2w: np.ndarray, frame: str | np.ndarray) -> np.ndarray:
    """Inverse of :func:`world_to_project_c2w`: ``M^-1 @ c2w``."""
    m = world_frame(frame) if isinstance(frame, str) else np.asarray(frame)
    return np.linalg.inv(m) @ np.asarray(c2w, dtype=np.float64)


def world_to_project_points(points: np.ndarray, frame: str | np.ndarray) -> np.ndarray:
    """(N, 3) points in a source world -> the project world: ``R p + t`` of ``M``."""
    m = world_frame(frame) if isinstance(frame, str) else np.asarray(frame)
    return np.asarray(points, dtype=np.float64) @ m[:3, :3].T + m[:3, 3]


def project_to_world_points(points: np.ndarray, frame: str | np.ndarray) -> np.ndarray:
    """Inverse of :func:`world_to_project_points`."""
    m = world_frame(frame) if isinstance(frame, str) else np.asarray(frame)
    return world_to_project_points(points, np.linalg.inv(m))


def opengl_to_opencv_c2w(c2w_gl: np.ndarray) -> np.ndarray:
    """(..., 4, 4) OpenGL camera-to-world (NeRF-synthetic / Blender ``transform_matrix``) ->
    OpenCV camera-to-world, same world: ``c2w_gl @ diag(1, -1, -1, 1)``."""
    return np.asarray(c2w_gl, dtype=np.float64) @ GL_CV_FLIP


def opencv_to_opengl_c2w(c2w_cv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`opengl_to_opencv_c2w` (the flip is its own inverse)."""
    return np.asarray(c2w_cv, dtype=np.float64) @ GL_CV_FLIP


def K_from_camera_angle_x(angle: float, width: int, height: int) -> np.ndarray:
    """(3, 3) K of a pinhole whose horizontal field of view ``angle`` (radians) spans the image:
    ``f = W / (2 tan(angle / 2))`` for both axes, principal point at the centre ``(W/2, H/2)``
    (NeRF-synthetic, FeatureNeRF's ``fov_to_focal_length``)."""
    angle = float(angle)
    if not 0.0 < angle < np.pi:
        raise ValueError(f"camera_angle_x {angle!r} is not an angle in (0, pi) radians")
    f = 0.5 * width / np.tan(0.5 * angle)
    return np.array([[f, 0.0, 0.5 * width], [0.0, f, 0.5 * height], [0.0, 0.0, 1.0]])


def camera_angle_x_from_K(K: np.ndarray, width: int) -> float:
    """Inverse of :func:`K_from_camera_angle_x`: ``2 atan(W / (2 fx))`` (radians)."""
    return float(2.0 * np.arctan(0.5 * width / float(np.asarray(K)[0, 0])))


def nerf_synthetic_to_c2w(transform_matrix: np.ndarray, frame: str = "z-up") -> np.ndarray:
    """(..., 4, 4) NeRF-synthetic ``transform_matrix`` (OpenGL c2w in Blender's z-up world) ->
    project OpenCV c2w: ``M @ T @ diag(1, -1, -1, 1)``."""
    return world_to_project_c2w(opengl_to_opencv_c2w(transform_matrix), frame)


def srn_pose_to_c2w(pose: np.ndarray, frame: str = "z-up") -> np.ndarray:
    """(..., 4, 4) SRN ``pose/*.txt`` (row-major OpenCV camera-to-world in the z-up SRN world)
    -> project c2w: ``M @ pose`` (no axis flip: SRN poses are OpenCV already; pixel-nerf's
    ``@ diag(1,-1,-1,1)`` makes its own OpenGL pose from it). SRN scales objects to a unit
    largest bbox side, not a unit diagonal: the scale is left as it is."""
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape[-2:] != (4, 4):
        pose = pose.reshape(*pose.shape[:-1], 4, 4)
    return world_to_project_c2w(pose, frame)


def srn_intrinsics_to_K(source: str | Path, image_size: int | None = None
                        ) -> tuple[np.ndarray, tuple[int, int]]:
    """Parse an SRN ``intrinsics.txt`` (4 or 5 lines: ``f cx cy 0.`` / barycentre / scale /
    ``H W`` [/ world2cam flag]) -> ``(K (3, 3), (H, W))``.

    ``source`` is the file or its text. ``cx, cy`` are the image centre in the continuous pixel
    frame (64 at 128 px, Blender's principal point), so they go into K unchanged. With
    ``image_size`` the camera is rescaled to that (square) size.
    """
    if isinstance(source, Path) or "\n" not in str(source):
        where = str(source)
        try:
            text = Path(source).read_text()
        except OSError as exc:
            raise ValueError(f"{where}: cannot read the SRN intrinsics ({exc.strerror})") from None
    else:
        where, text = "intrinsics.txt", str(source)
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    if len(lines) not in (4, 5) or len(lines[0]) < 3:
        raise ValueError(f"{where}: expected 4 or 5 lines, the first 'f cx cy 0.' (SRN "
                         f"intrinsics.txt), got {len(lines)} lines")
    try:
        f, cx, cy = (float(x) for x in lines[0][:3])
        h, w = (int(float(x)) for x in lines[3][:2])
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{where}: cannot parse 'f cx cy' / 'H W' ({exc})") from None
    K = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
    if image_size is not None and (h, w) != (image_size, image_size):
        s = np.diag([image_size / w, image_size / h, 1.0])
        K, (h, w) = s @ K, (image_size, image_size)
    return K, (h, w)


def dvr_to_K_c2w(world_mat: np.ndarray, camera_mat: np.ndarray, width: int,
                 height: int) -> tuple[np.ndarray, np.ndarray]:
    """DVR / NMR ``cameras.npz`` entries -> ``(K (3, 3), c2w (4, 4))``, same world.

    ``world_mat`` (3|4, 4) is world->camera (OpenCV axes, looks along +Z); ``camera_mat`` (4, 4)
    maps camera points to image units in [-1, 1] with (-1, -1) the top-left image corner:
    ``x_ndc = (camera_mat[:3, :3] X_cam)_x / (..)_z`` (formats.md 7.2). Pixels: ``u = (x_ndc + 1)
    W / 2``, i.e. ``K = diag(W/2, H/2, 1) @ [[1, 0, 1], [0, 1, 1], [0, 0, 1]] @ camera_mat[:3,
    :3]`` (pixel-nerf's focal ``camera_mat[0, 0] W / 2``).
    """
    w2c = np.eye(4)
    wm = np.asarray(world_mat, dtype=np.float64)
    w2c[: wm.shape[0], :] = wm[:4]
    cm = np.asarray(camera_mat, dtype=np.float64)
    to_pix = np.array([[0.5 * width, 0.0, 0.5 * width], [0.0, 0.5 * height, 0.5 * height],
                       [0.0, 0.0, 1.0]])
    K = to_pix @ cm[:3, :3]
    return K / K[2, 2], np.linalg.inv(w2c)


def official_camera_to_c2w(transform_matrix: np.ndarray, frame: str = "shapenet-v1"
                           ) -> np.ndarray:
    """(..., 4, 4) FeatureNeRF ``camera/<synset>/<id>.json`` ``transform_matrix`` -> project
    OpenCV c2w: ``M @ T``.

    ``T`` is already an OpenCV camera-to-world: FeatureNeRFDataset makes pixel-nerf's OpenGL
    pose as ``T @ diag(1,-1,-1,1)``, and eval_3d_task.py projects with ``diag(1,-1,-1,1) @
    inv(T @ diag(1,-1,-1,1)) = inv(T)`` and ``u = f x / z + W/2`` (then ``.long()``: the pixel
    whose cell holds u). ``frame`` names the data's world (default ShapeNet v1 axes, the meshes
    FeatureNeRF rendered; ``shapenet-v2`` keeps the axes).
    """
    return world_to_project_c2w(np.asarray(transform_matrix, dtype=np.float64), frame)


def project_c2w_to_official(c2w: np.ndarray, frame: str = "shapenet-v1") -> np.ndarray:
    """Inverse of :func:`official_camera_to_c2w` (what an exporter writes)."""
    return project_to_world_c2w(c2w, frame)


def mean_camera_up(c2w: np.ndarray) -> np.ndarray:
    """(3,) unit mean of the cameras' up directions (``-y`` of OpenCV cameras) in their world:
    +Y for a project-frame orbit without roll (a check that a world frame was chosen right)."""
    up = -np.asarray(c2w, dtype=np.float64)[..., :3, 1].reshape(-1, 3).mean(axis=0)
    n = np.linalg.norm(up)
    return up / n if n > 0 else up
