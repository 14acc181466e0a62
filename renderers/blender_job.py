"""Render one job folder with Blender Cycles. Runs INSIDE Blender's Python, never in the pipeline.

Usage (any of):
    <python with bpy> renderers/blender_job.py <job_dir>
    blender -b -noaudio --factory-startup --python-exit-code 1 \
        --python renderers/blender_job.py -- <job_dir>
    <python with bpy> renderers/blender_job.py --version     # prints FNERF_BLENDER_VERSION=...

Only bpy/mathutils and the stdlib are required (numpy is used when importable, e.g. PyPI bpy; a
distro Blender may lack it). The job folder is written by ``renderers.blender_backend``:

    job.json            settings + array manifest {name: {"dtype": "<f4", "shape": [...]}}
    <name>.bin          raw little-endian arrays:
        vertices (N, 3) f4, faces (F, 3) i4, K (V, 3, 3) f8, c2w (V, 4, 4) f8 (OpenCV),
        corner_colors (F, 3, 4) f4 linear RGBA [optional],
        corner_uvs (F, 3, 2) f4 [optional, with job["texture"] = "texture.png"],
        corner_normals (F, 3, 3) f4 [optional, custom split normals]
Output:
    rgba.bin            (V, H, W, 4) f4 scene-linear, premultiplied RGBA, Blender row order
                        (row 0 = BOTTOM of the image)
    result.json         {"blender_version", "seconds_render", "seconds_per_view", "device"}
"""

import array
import json
import math
import os
import sys
import time

import bpy
from mathutils import Matrix, Vector

try:  # numpy is optional: PyPI bpy has it, a distro Blender may not
    import numpy as np
except ImportError:  # pragma: no cover - depends on the Blender build
    np = None

_ARRAY_CODES = {"<f4": "f", "<f8": "d", "<i4": "i"}


def _argv() -> list[str]:
    """Script arguments for both ``python job.py ARGS`` and ``blender ... -- ARGS``."""
    if "--" in sys.argv:
        return sys.argv[sys.argv.index("--") + 1 :]
    return sys.argv[1:]


def _load(job_dir: str, manifest: dict, name: str):
    """Flat array (numpy 1-D or array.array) of ``name`` from the job folder, or None."""
    if name not in manifest:
        return None
    path = os.path.join(job_dir, name + ".bin")
    dtype = manifest[name]["dtype"]
    if np is not None:
        return np.fromfile(path, dtype=dtype)
    out = array.array(_ARRAY_CODES[dtype])
    with open(path, "rb") as f:
        out.frombytes(f.read())
    if sys.byteorder != "little":  # pragma: no cover
        out.byteswap()
    return out


def _rows(flat, width: int) -> list:
    """Split a flat sequence into rows of ``width`` (for from_pydata / Matrix)."""
    return [tuple(flat[i : i + width]) for i in range(0, len(flat), width)]


def _reset_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    for block in (bpy.data.objects, bpy.data.meshes, bpy.data.materials, bpy.data.lights,
                  bpy.data.cameras, bpy.data.images, bpy.data.worlds):
        for item in list(block):
            block.remove(item)
    return scene


def _build_mesh(job_dir: str, job: dict, manifest: dict):
    """Mesh object with its colour attribute / UV texture material and optional custom normals."""
    verts = _load(job_dir, manifest, "vertices")
    faces = _load(job_dir, manifest, "faces")
    n_faces = len(faces) // 3
    me = bpy.data.meshes.new("asset")
    if np is not None:
        me.from_pydata(verts.reshape(-1, 3), [], faces.reshape(-1, 3))
    else:
        me.from_pydata(_rows(verts, 3), [], _rows(faces, 3))
    if len(me.polygons) != n_faces or len(me.loops) != 3 * n_faces:
        raise RuntimeError(f"mesh import changed the face count: {n_faces} -> {len(me.polygons)}")

    mat = bpy.data.materials.new("asset_material")
    if mat.node_tree is None:  # Blender < 5 (5.x always uses nodes)
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Roughness"].default_value = float(job["settings"]["roughness"])

    colors = _load(job_dir, manifest, "corner_colors")
    uvs = _load(job_dir, manifest, "corner_uvs")
    if uvs is not None and job.get("texture"):
        uv_layer = me.uv_layers.new(name="UVMap")
        uv_layer.data.foreach_set("uv", uvs)
        tex = nodes.new("ShaderNodeTexImage")
        tex.image = bpy.data.images.load(os.path.join(job_dir, job["texture"]))
        tex.interpolation = "Linear"
        tex.extension = "REPEAT"
        links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    elif colors is not None:
        if hasattr(me, "color_attributes"):  # Blender >= 3.2
            attr = me.color_attributes.new(name="Col", type="FLOAT_COLOR", domain="CORNER")
        else:  # pragma: no cover - Blender < 3.2
            attr = me.attributes.new(name="Col", type="FLOAT_COLOR", domain="CORNER")
        attr.data.foreach_set("color", colors)
        node = nodes.new("ShaderNodeAttribute")
        node.attribute_name = "Col"
        links.new(node.outputs["Color"], bsdf.inputs["Base Color"])
    else:
        bsdf.inputs["Base Color"].default_value = (0.4, 0.4, 0.4, 1.0)

    normals = _load(job_dir, manifest, "corner_normals")
    if normals is not None:
        me.polygons.foreach_set("use_smooth", [True] * n_faces)
        if hasattr(me, "use_auto_smooth"):  # Blender < 4.1 needs it for custom normals
            me.use_auto_smooth = True
        if np is not None:
            me.normals_split_custom_set(normals.reshape(-1, 3))
        else:
            me.normals_split_custom_set(_rows(normals, 3))
    me.materials.append(mat)
    me.update()
    obj = bpy.data.objects.new("asset", me)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def _add_sun(scene, name: str, direction, strength: float, angle_deg: float) -> None:
    """Sun shining FROM ``direction`` (world frame, towards the light) onto the origin."""
    light = bpy.data.lights.new(name, type="SUN")
    light.energy = strength
    light.angle = math.radians(angle_deg)
    obj = bpy.data.objects.new(name, light)
    # a sun emits along its local -Z: align local +Z with the direction towards the light
    obj.rotation_mode = "QUATERNION"
    obj.rotation_quaternion = Vector(direction).normalized().to_track_quat("Z", "Y")
    scene.collection.objects.link(obj)


def _setup_lights(scene, settings: dict) -> None:
    """World-fixed lighting (multi-view consistent): ambient environment + optional suns."""
    world = bpy.data.worlds.new("world")
    if world.node_tree is None:  # Blender < 5 (5.x always uses nodes)
        world.use_nodes = True
    bg = world.node_tree.nodes["Background"]
    bg.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    bg.inputs["Strength"].default_value = float(settings["ambient"])
    scene.world = world
    for i, sun in enumerate(settings["suns"]):
        _add_sun(scene, f"sun{i}", sun["direction"], sun["strength"], sun.get("angle_deg", 5.0))


def _setup_render(scene, settings: dict, height: int, width: int) -> None:
    render = scene.render
    render.engine = "CYCLES"
    render.resolution_x, render.resolution_y = width, height
    render.resolution_percentage = 100
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    render.film_transparent = True
    render.use_persistent_data = True
    if settings.get("threads"):
        render.threads_mode = "FIXED"
        render.threads = int(settings["threads"])
    img = render.image_settings
    img.file_format = "OPEN_EXR"
    img.color_mode = "RGBA"
    img.color_depth = "32"
    img.exr_codec = "NONE"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"

    cyc = scene.cycles
    cyc.device = "CPU"
    cyc.samples = int(settings["samples"])
    cyc.use_adaptive_sampling = False
    cyc.use_denoising = bool(settings["denoise"])
    cyc.use_animated_seed = False
    cyc.filter_width = float(settings["filter_width"])
    cyc.max_bounces = int(settings["max_bounces"])
    cyc.diffuse_bounces = min(cyc.diffuse_bounces, cyc.max_bounces)
    cyc.glossy_bounces = min(cyc.glossy_bounces, cyc.max_bounces)
    cyc.transparent_max_bounces = 4
    cyc.caustics_reflective = False
    cyc.caustics_refractive = False
    if hasattr(cyc, "use_auto_tile"):
        cyc.use_auto_tile = False


def _set_camera(cam_obj, scene, K, c2w) -> None:
    """OpenCV K (3x3 nested) and c2w (4x4 nested) -> Blender camera (looks down -Z, +Y up)."""
    width, height = scene.render.resolution_x, scene.render.resolution_y
    fx, fy, cx, cy = K[0][0], K[1][1], K[0][2], K[1][2]
    cam = cam_obj.data
    cam.type = "PERSP"
    cam.sensor_fit = "HORIZONTAL"
    cam.sensor_width = 36.0
    cam.lens = fx * cam.sensor_width / width
    # non-square pixels: fy = fx * pixel_aspect_x / pixel_aspect_y (each aspect must be >= 1)
    ycor = fx / fy
    aspect = (1.0, ycor) if ycor >= 1.0 else (1.0 / ycor, 1.0)
    scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = aspect
    # shifts are in units of the fitted (horizontal) sensor size = image width in pixels
    cam.shift_x = (0.5 * width - cx) / width
    cam.shift_y = (cy - 0.5 * height) / width * (fx / fy)
    cam.clip_start, cam.clip_end = 1e-3, 1e4
    flip = Matrix(((1, 0, 0, 0), (0, -1, 0, 0), (0, 0, -1, 0), (0, 0, 0, 1)))
    cam_obj.matrix_world = Matrix(c2w) @ flip


def _read_exr(path: str, buf):
    """Load a rendered EXR into ``buf`` (flat float32, H*W*4), scene-linear premultiplied."""
    image = bpy.data.images.load(path)
    try:
        image.pixels.foreach_get(buf)
    finally:
        bpy.data.images.remove(image)


def render_job(job_dir: str) -> None:
    with open(os.path.join(job_dir, "job.json")) as f:
        job = json.load(f)
    settings, manifest = job["settings"], job["arrays"]
    height, width = job["height"], job["width"]
    K = _rows(_load(job_dir, manifest, "K"), 3)
    c2w = _rows(_load(job_dir, manifest, "c2w"), 4)
    n_views = len(c2w) // 4

    scene = _reset_scene()
    _setup_render(scene, settings, height, width)
    _build_mesh(job_dir, job, manifest)
    _setup_lights(scene, settings)
    cam_obj = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    scene.collection.objects.link(cam_obj)
    scene.camera = cam_obj

    n_pix = height * width * 4
    t0 = time.perf_counter()
    with open(os.path.join(job_dir, "rgba.bin"), "wb") as out:
        for v in range(n_views):
            _set_camera(cam_obj, scene, K[3 * v : 3 * v + 3], c2w[4 * v : 4 * v + 4])
            scene.cycles.seed = int(settings["seed"]) + v  # independent noise per view
            exr = os.path.join(job_dir, f"view_{v:04d}.exr")
            scene.render.filepath = exr
            bpy.ops.render.render(write_still=True)
            if np is not None:
                buf = np.empty(n_pix, np.float32)
            else:
                buf = array.array("f", bytes(4 * n_pix))
            _read_exr(exr, buf)
            os.remove(exr)
            out.write(buf.tobytes())
    elapsed = time.perf_counter() - t0
    result = {
        "blender_version": bpy.app.version_string,
        "seconds_render": elapsed,
        "seconds_per_view": elapsed / max(n_views, 1),
        "device": "CPU",
        "numpy": np is not None,
    }
    with open(os.path.join(job_dir, "result.json"), "w") as f:
        json.dump(result, f)


def main() -> None:
    args = _argv()
    if args and args[0] == "--version":
        print(f"FNERF_BLENDER_VERSION={bpy.app.version_string}", flush=True)
        return
    if len(args) != 1:
        raise SystemExit("usage: blender_job.py <job_dir> | --version")
    render_job(args[0])


if __name__ == "__main__":
    main()
