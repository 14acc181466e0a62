"""The ``fnerf-pipeline`` command line (click)."""

from __future__ import annotations

import os

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

import functools  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402

from cache.zarr_io import StoreError  # noqa: E402
from renderers.asset import AssetError  # noqa: E402
from renderers.base import RendererUnavailable  # noqa: E402
from renderers.importers import IMPORTERS  # noqa: E402
from teachers.base import TeacherError  # noqa: E402
from teachers.registry import IMPORTED_TEACHERS, TEACHERS, teacher_label  # noqa: E402

TIMM_LABEL_HELP = ("timm: the model id given to distill-cache; names the default feature store "
                   "and run (<teacher> = timm-<model id>)  [default: the timm default model]")

USER_ERRORS: tuple[type[Exception], ...] = (
    AssetError,
    StoreError,
    RendererUnavailable,
    TeacherError,
    KeyError,
    ValueError,
    FileNotFoundError,
)


def one_line(text: str, limit: int = 600) -> str:
    """A message on one line (library messages can span many), shortened to ``limit``."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Show known user-facing errors and OS failures (disk full, read-only, permissions) as one
    clear line (exit 1) instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pipeline.guards import os_error_message

        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise click.ClickException(one_line(message)) from None
        except OSError as exc:
            raise click.ClickException(one_line(os_error_message(exc))) from None

    return wrapper


#: one recovery flag for every stage: what to do with an output made from other settings or
#: inputs (``refuse``: an error naming what changed; ``overwrite``: redo it from scratch)
IF_STALE = click.Choice(["refuse", "overwrite", "fail", "restart"])
IMPORT_FORMATS = list(IMPORTERS)  # `import --format`, `render --source import --import-format`
IF_STALE_HELP = ("an existing output made with other settings or inputs: refuse (an error "
                 "naming what changed) or overwrite (start afresh)  [default: refuse]")


def if_stale_value(value: str) -> str:
    """The stage-level value of ``--if-stale`` (``fail``/``restart``: older spellings)."""
    return {"refuse": "fail", "fail": "fail", "overwrite": "overwrite",
            "restart": "overwrite"}[value]


def network_mode(online: bool | None) -> str:
    """Hugging Face hub access: ``--online`` / ``--offline`` win, then the user's own
    ``HF_HUB_OFFLINE``, else offline (missing weights then fail in seconds, with a line
    saying how to supply them, instead of retrying an unreachable hub)."""
    if online is not None:
        os.environ["HF_HUB_OFFLINE"] = "0" if online else "1"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return "offline" if os.environ["HF_HUB_OFFLINE"].lower() in ("1", "true", "yes") else "online"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fnerf-pipeline")
@click.option("--online/--offline", default=None,
              help="allow Hugging Face hub downloads (teacher weights); default: your "
                   "HF_HUB_OFFLINE, else offline")
def main(online: bool | None) -> None:
    """FeatureNeRF pipeline: render -> distill-cache -> train -> evaluate."""
    network_mode(online)


@main.command()
@click.option(
    "--category",
    required=True,
    help="chair, table, airplane, car, motorcycle, bottle or a ShapeNet synset id",
)
@click.option(
    "--source",
    type=click.Choice(["procedural", "shapenet", "meshes", "import"]),
    default="procedural",
    show_default=True,
    help="procedural: the embedded part-annotated shape families; shapenet: ShapeNetCore; "
         "meshes: any folder of OBJ/GLB/glTF/PLY/OFF files (--mesh-root; free --category); "
         "import: `fnerf-pipeline import` of --import-root (the params switch of dvc repro)",
)
@click.option("--import-format", type=click.Choice(["", *IMPORT_FORMATS]), default="",
              help="--source import: the dataset's format (see `import --format`)")
@click.option("--import-root", default="", help="--source import: the dataset folder")
@click.option("--import-options", default="",
              help="--source import: importer options 'KEY=VALUE KEY=VALUE' (import --option)")
@click.option("--import-near", type=float, default=0.0,
              help="--source import: camera near distance of the store (import --near; with "
                   "--import-far)  [default: 0 = the smallest of the objects']")
@click.option("--import-far", type=float, default=0.0,
              help="--source import: camera far distance (import --far)  [default: 0 = the "
                   "largest of the objects']")
@click.option("--mesh-root", type=click.Path(),
              help="--source meshes: the folder (optional <name>.labels.npy, parts.yaml, "
                   "<name>.keypoints.json sidecars, splits.json)")
@click.option("--mesh-up", default="+y", show_default=True,
              help="--source meshes: the files' up axis (+z for most scans)")
@click.option(
    "--objects",
    type=int,
    default=60,
    show_default=True,
    help="objects to render (procedural), or at most this many per split (shapenet)",
)
@click.option(
    "--split-fractions",
    default="0.7,0.1,0.2",
    show_default=True,
    help="train,val,test fractions for procedural objects",
)
@click.option("--shapenet-root", type=click.Path(), help="ShapeNetCore.v2 (or v1) folder")
@click.option(
    "--split",
    "split_file",
    type=click.Path(),
    help="official FeatureNeRF split json or KeypointNet split txt",
)
@click.option(
    "--renderer",
    type=click.Choice(["pyrender", "raycast", "blenderproc"]),
    default="pyrender",
    show_default=True,
    help="pyrender (GL colour + exact ray-cast labels), raycast (no GL) or blenderproc",
)
@click.option(
    "--annotations",
    default="",
    help="shapenet: comma list of keypointnet, "
    "shapenet-part, partnet (aligned to each mesh and chamfer-checked)",
)
@click.option("--keypointnet-root", type=click.Path(), help="KeypointNet folder (annotations/)")
@click.option("--shapenet-part-root", type=click.Path(), help="any ShapeNet-Part release folder")
@click.option("--partnet-root", type=click.Path(), help="PartNet data_v0 folder")
@click.option("--partnet-level", type=int, default=1, show_default=True,
              help="PartNet hierarchy level used as part labels")
@click.option("--views", type=int, default=50, show_default=True, help="views per object (>= 2)")
@click.option("--size", type=int, default=128, show_default=True,
              help="image size in pixels: 32-1024, a multiple of 16")
@click.option("--seed", type=int, default=0, show_default=True,
              help="seed of the shapes, cameras and splits")
@click.option(
    "--points",
    "n_points",
    type=int,
    default=2048,
    show_default=True,
    help="labelled surface samples per object for the 3D tasks",
)
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="local dask worker processes (1 = in this process)",
)
@click.option("--scheduler", help="address of a dask.distributed scheduler (overrides --workers)")
@click.option(
    "--on-error",
    type=click.Choice(["fail", "skip"]),
    default="fail",
    show_default=True,
    help="fail: non-zero exit on a bad model; skip: list and go on",
)
@click.option("--out", type=click.Path(), help="store path (default data/renders/<category>.zarr)")
@click.option("--report-dir", type=click.Path(), help="default reports/render/<category>")
@click.option("--overwrite", is_flag=True, help="start afresh even if the store could be resumed")
@click.option("--if-stale", type=IF_STALE, default="refuse", help=IF_STALE_HELP)
@user_errors
def render(split_fractions: str, annotations: str, import_format: str, import_root: str,
           import_options: str, import_near: float, import_far: float, **kwargs: Any) -> None:
    """Render a 50-view dataset of one category into a Zarr render store."""
    from pipeline.render_stage import RenderStageConfig, run_render_stage

    if kwargs["source"] == "import":  # --split, --objects, --size, --out... as for `import`
        return _render_by_import(import_format, import_root, import_options.split(),
                                 {**kwargs, "near": import_near, "far": import_far})
    if import_near or import_far:
        raise click.UsageError("--import-near/--import-far apply to --source import only (the "
                               "rendered sources' cameras are set by the camera rig)")
    kwargs["annotations"] = tuple(a.strip() for a in annotations.split(",") if a.strip())
    kwargs["if_stale"] = if_stale_value(kwargs["if_stale"])
    for key in ("shapenet_root", "split_file", "keypointnet_root", "shapenet_part_root",
                "partnet_root", "mesh_root"):  # "" (from params.yaml) means not given
        kwargs[key] = kwargs.get(key) or None
    fractions = tuple(float(x) for x in split_fractions.split(","))
    if len(fractions) != 3:
        raise click.BadParameter(
            "expected three numbers: train,val,test", param_hint="--split-fractions"
        )
    cfg = RenderStageConfig(split_fractions=fractions, **kwargs)  # type: ignore[arg-type]
    result = run_render_stage(cfg)
    m = result.metrics
    click.echo(
        f"{m['objects']} objects, {m['views']} views -> {result.store} "
        f"({m['views_per_s']:.1f} views/s); report {result.report}"
    )
    if result.failures:
        from pipeline.guards import summarize_failures

        verb = "skipped" if cfg.on_error == "skip" else "FAILED"
        click.echo(f"  {verb}: {summarize_failures(result.failures)}", err=True)
        if cfg.on_error == "fail":  # skipping only helps when some objects did render
            hint = "; fix them or re-run with --on-error skip" if m["objects"] else ""
            raise click.ClickException(
                f"{len(result.failures)} object(s) failed (see {result.report}){hint}")


def _render_by_import(fmt: str, root: str, options: list[str], render: dict[str, Any]) -> None:
    """``render --source import``: the import stage with the render options it shares (the
    others only apply to rendering and are ignored); ``--size 0`` keeps the source's size."""
    from pipeline.import_stage import ImportStageConfig

    if not fmt or not root:
        raise click.UsageError("--source import needs --import-format and --import-root "
                               "(params.yaml: render.import_format, render.import_root)")
    unset_when_empty = {k: render[k] or None for k in ("split_file", "objects", "size")}
    near, far = render["near"], render["far"]  # 0 and 0: unset (params.yaml has no None)
    if near and not far:
        raise click.UsageError(f"--import-near {near:g} needs --import-far (the far distance)")
    unset_when_empty.update({"near": near, "far": far} if far else {"near": None, "far": None})
    _run_import(ImportStageConfig(
        format=fmt, root=root, category=render["category"], options=_parse_options(
            tuple(options)), out=render["out"], report_dir=render["report_dir"],
        on_error=render["on_error"], overwrite=render["overwrite"],
        if_stale=if_stale_value(render["if_stale"]), **unset_when_empty))


def _parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> dict with YAML-typed values (ints, floats, lists, null...)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--option")
        key, value = pair.split("=", 1)
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


@main.command("distill-cache")
@click.option("--category", required=True, help="category name or ShapeNet synset id")
@click.option("--teacher", type=click.Choice(list(TEACHERS)), default="effnet",
              show_default=True, help="registered teacher (see `fnerf-pipeline teachers`)")
@click.option("--renders", type=click.Path(), help="render store (default data/renders/<cat>.zarr)")
@click.option("--out", type=click.Path(), help="default data/features/<teacher>/<category>.zarr "
              "(timm: <teacher> = timm-<model id>)")
@click.option("--report-dir", type=click.Path(),
              help="[default: reports/distill-cache/<teacher>/<category>]")
@click.option(
    "--weights",
    help="dino/timm: local weights file (safetensors or .pth state dict; dino also the "
    "original DINO .pth), 'random' for random init; default: the Hugging Face hub",
)
@click.option("--model-id", help="dino/timm: timm model name (timm: any ViT or ConvNet, e.g. "
              "vit_base_patch16_clip_224.openai, resnet50); ldm: hub id or diffusers folder")
@click.option("--layer", type=int, help="dino/timm: ViT block index (dino default 9); timm "
              "ConvNet: feature stage index (default: the deepest stride-16 stage)")
@click.option("--facet", type=click.Choice(["key", "query", "value", "token"]),
              help="dino/timm ViTs: attention facet or block output  [default: key]")
@click.option("--input-size", type=int, help="teacher input resolution")
@click.option("--timestep", type=int, help="ldm: noise timestep")
@click.option("--prompt", help="ldm: prompt template, e.g. 'a photo of a {category}'")
@click.option("--device", default=None, help="auto | cpu | cuda[:N]")
@click.option("--dtype", type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
              help="compute dtype  [default: auto = fp16 on CUDA, fp32 on CPU]")
@click.option("--option", "extra", multiple=True, help="any other teacher option KEY=VALUE")
@click.option("--batch-size", type=int, default=16, show_default=True,
              help="images per teacher forward")
@click.option("--pca", type=int, help="keep D principal components (basis stored in the store)")
@click.option("--workers", type=int, default=1, show_default=True,
              help="local dask worker processes (1 = in this process)")
@click.option("--scheduler", help="dask.distributed scheduler address (tcp://HOST:PORT)")
@click.option("--if-stale", type=IF_STALE, default="refuse", help=IF_STALE_HELP)
@click.option("--overwrite", is_flag=True, help="recompute even if the store is up to date")
@click.option("--import-format", type=click.Choice(["", *IMPORT_FORMATS]), default="",
              help="imported teachers (official-dino): the format of the dataset the render "
                   "store was imported from (ignored by the other teachers)")
@click.option("--import-root", default="", help="imported teachers: that dataset's folder")
@click.option("--import-options", default="",
              help="imported teachers: its importer options 'KEY=VALUE KEY=VALUE'")
@user_errors
def distill_cache(
    category: str,
    teacher: str,
    renders: str | None,
    out: str | None,
    report_dir: str | None,
    extra: tuple[str, ...],
    batch_size: int,
    pca: int | None,
    workers: int,
    scheduler: str | None,
    if_stale: str,
    overwrite: bool,
    import_format: str,
    import_root: str,
    import_options: str,
    **named: Any,
) -> None:
    """Run a teacher once over a render store into a chunked Zarr feature store (an imported
    teacher, official-dino: import the dataset's own cached features instead)."""
    from pipeline.distill_stage import DistillStageConfig, cli_options, run_distill_stage

    options = cli_options(teacher, {k: v for k, v in named.items() if v is not None})
    options.update(_parse_options(extra))
    cfg = DistillStageConfig(
        category=category,
        teacher=teacher,
        teacher_options=options,
        renders=renders,
        out=out,
        report_dir=report_dir,
        batch_size=batch_size,
        pca=pca,
        workers=workers,
        scheduler=scheduler,
        if_stale=if_stale_value(if_stale),
        overwrite=overwrite,
        import_format=import_format or None,
        import_root=import_root or None,
        import_options=_parse_options(tuple(import_options.split())),
    )
    m = run_distill_stage(cfg)
    if teacher in IMPORTED_TEACHERS:
        click.echo(f"{m['objects']} objects' features {m['source']} -> {cfg.out}; report "
                   f"{cfg.report_dir}")
        return
    click.echo(
        f"{m['objects']} objects ({m['objects_computed_now']} computed now, "
        f"{m['images_per_s']:.1f} images/s) -> {cfg.out}; report {cfg.report_dir}"
    )


#: the default profile's values, shown in the train options' help (tests/test_cli_defaults.py
#: checks them against pipeline.train_stage.profile_config("default") and params.yaml)
TRAIN_DEFAULTS = {"steps": 400, "objects_per_step": 4, "rays_per_object": 96, "lr": 5e-4,
                  "feature_weight": 0.25, "coord_weight": 0.25, "backbone": "effnet-lite0",
                  "width": 128, "n_coarse": 24, "n_importance": 8, "n_depth": 8,
                  "loader_workers": 0, "ckpt_every": 200, "device": "auto", "seed": 42,
                  "runs_dir": "runs"}


def _profile_help(text: str, key: str) -> str:
    return f"{text}  [default: the profile's; default profile: {TRAIN_DEFAULTS[key]}]"


@main.command("train")
@click.option("--category", required=True, help="category name or ShapeNet synset id")
@click.option(
    "--teacher",
    type=click.Choice([*TEACHERS, "none"]),
    default="effnet",
    show_default=True,
    help="teacher whose feature store to distil; 'none' trains plain pixelNeRF",
)
@click.option("--name", help="run name  [default: <category>-<teacher>, <category>-pixelnerf]")
@click.option("--model-id", help=TIMM_LABEL_HELP)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True),
    help="YAML training config (a saved runs/<name>/config.yaml works)",
)
@click.option("--renders", type=click.Path(),
              help="render store  [default: data/renders/<category>.zarr]")
@click.option("--features", type=click.Path(),
              help="teacher feature store  [default: data/features/<teacher>/<category>.zarr]")
@click.option("--steps", type=int, help=_profile_help("training steps", "steps"))
@click.option("--objects-per-step", type=int,
              help=_profile_help("objects per step (all ranks)", "objects_per_step"))
@click.option("--rays", "rays_per_object", type=int,
              help=_profile_help("rays per object per step", "rays_per_object"))
@click.option("--lr", type=float, help=_profile_help("Adam learning rate", "lr"))
@click.option("--feature-weight", type=float,
              help=_profile_help("feature loss weight", "feature_weight"))
@click.option("--coord-weight", type=float,
              help=_profile_help("coordinate loss weight", "coord_weight"))
@click.option("--backbone", type=click.Choice(["resnet18", "resnet34", "effnet-lite0"]),
              help=_profile_help("image encoder", "backbone"))
@click.option("--width", type=int, help=_profile_help("MLP width", "width"))
@click.option("--n-coarse", type=int, help=_profile_help("coarse samples per ray", "n_coarse"))
@click.option("--n-importance", type=int,
              help=_profile_help("importance samples per ray", "n_importance"))
@click.option("--n-depth", type=int,
              help=_profile_help("samples around the expected depth", "n_depth"))
@click.option("--loader-workers", type=int,
              help=_profile_help("DataLoader worker processes", "loader_workers"))
@click.option("--ckpt-every", type=int, help=_profile_help("checkpoint interval", "ckpt_every"))
@click.option("--device", help=_profile_help("auto | cpu | cuda[:N]", "device"))
@click.option("--seed", type=int, help=_profile_help("seed", "seed"))
@click.option("--runs-dir", type=click.Path(), help=_profile_help("runs folder", "runs_dir"))
@click.option(
    "--pretrained/--no-pretrained",
    "pretrained",
    default=None,
    help="ImageNet weights for the encoder (when they are available locally)  [default: the "
         "profile's: yes]",
)
@click.option("--allow-random-encoder", is_flag=True, default=None,
              help="train from a random encoder when the profile's pretrained weights are missing")
@click.option("--coord-target", type=click.Choice(["self", "gt-surface"]),
              help="coordinate-loss target: self-supervised (official) or the GT-depth surface "
                   "point (a variant that uses ground-truth geometry)  [default: self]")
@click.option("--profile", type=click.Choice(["default", "official", "paper"]),
              default="default", show_default=True,
              help="recipe preset: CPU-sized default, the released code's recipe, or the paper "
                   "model with the project's fixes (deviations are saved in config.yaml)")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="continue from the newest checkpoint of the run")
@click.option("--if-stale", type=IF_STALE, default="refuse",
              help="checkpoints made with another configuration or on other inputs: refuse "
                   "(an error naming what changed) or overwrite (train afresh)  "
                   "[default: refuse]")
@user_errors
def train_command(
    category: str,
    teacher: str,
    name: str | None,
    model_id: str | None,
    config_path: str | None,
    resume: bool,
    profile: str,
    if_stale: str,
    **overrides: Any,
) -> None:
    """Train FeatureNeRF (or pixelNeRF with --teacher none) from the caches."""
    from pipeline.train_stage import build_train_config, run_train_stage

    teacher = teacher_label(teacher, model_id)
    cfg = build_train_config(category, teacher, name, config_path, overrides, profile)
    stale = "restart" if if_stale_value(if_stale) == "overwrite" else "fail"
    summary = run_train_stage(cfg, resume=resume, if_stale=stale)
    click.echo(
        f"trained {cfg.name} to step {summary['steps']} ({summary['rays_per_s']:.0f} "
        f"rays/s); checkpoint {summary['checkpoint']}"
    )


@main.command("evaluate")
@click.option("--category", required=True, help="category name or ShapeNet synset id")
@click.option("--teacher", type=click.Choice(list(TEACHERS)), default="effnet",
              show_default=True, help="the student's teacher (names the default paths)")
@click.option("--model-id", help=TIMM_LABEL_HELP)
@click.option("--run", help="student run dir or .ckpt (default runs/<category>-<teacher>)")
@click.option("--pixelnerf-run", help="pixelNeRF baseline run (default runs/<category>-pixelnerf;"
              " '' disables it)")
@click.option("--renders", type=click.Path(),
              help="render store  [default: data/renders/<category>.zarr]")
@click.option("--features", type=click.Path(),
              help="teacher store for the 2D-teacher baseline ('' = no such baseline)")
@click.option("--split", "split_json", type=click.Path(),
              help="official FeatureNeRF <synset>.json: use its evaluation pairs ('' = none)")
@click.option("--pairs", "n_pairs", type=int, default=200, show_default=True,
              help="pairs per protocol (official json: its first N surviving pairs)")
@click.option("--eval-views", type=int, default=8, show_default=True,
              help="seeded pairs draw their views from this many of the 50 (0 = all)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the seeded pairs")
@click.option("--eval-size", type=int, default=0, show_default=True,
              help="render feature maps at this size, upsampled to the image (0 = image size)")
@click.option("--n-coarse", type=int, help="coarse samples per ray  [default: the checkpoint's]")
@click.option("--n-importance", type=int,
              help="importance samples per ray  [default: the checkpoint's]")
@click.option("--n-depth", type=int, help="depth-guided samples  [default: the checkpoint's]")
@click.option("--nvs-objects", type=int, default=2, show_default=True,
              help="test objects for novel-view synthesis")
@click.option("--nvs-views", "n_views", type=int, default=3, show_default=True,
              help="target views per NVS object")
@click.option("--cross-view-input", type=click.Choice(["source", "own"]), default="source",
              show_default=True,
              help="cross-view maps: both from the source image (official) or each from its own")
@click.option("--protocol", type=click.Choice(["official", "project"]), default="official",
              show_default=True,
              help="primary metric protocol (plain metrics.json keys): the released scripts' "
                   "per-pair logic or the project's refinements; both are always computed, the "
                   "other under '<key>.<protocol>'")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N]")
@click.option("--report-dir", type=click.Path(),
              help="[default: reports/evaluate/<run name>]")
@click.option("--allow-stale", is_flag=True, default=None,
              help="evaluate even if a checkpoint or the feature store was made from other "
                   "inputs (listed on stderr and in metrics.json); default: refuse")
@user_errors
def evaluate(**kwargs: Any) -> None:
    """Keypoint / part transfer, novel views and baselines -> metrics.json and an HTML report."""
    from pipeline.evaluation.stage import EvaluateConfig, run_evaluate_stage

    kwargs["teacher"] = teacher_label(kwargs["teacher"], kwargs.pop("model_id"))
    kwargs["split_json"] = kwargs.get("split_json") or None  # "" from params.yaml: no json
    kwargs["eval_size"] = kwargs.get("eval_size") or None  # 0: the image size
    if kwargs["split_json"] and not os.path.isfile(kwargs["split_json"]):
        raise click.BadParameter(f"{kwargs['split_json']} does not exist", param_hint="--split")
    cfg = EvaluateConfig(**{k: v for k, v in kwargs.items() if v is not None})
    run_evaluate_stage(cfg)
    import json

    from pipeline.reports.evaluate import headline_markdown

    summary = json.loads((Path(cfg.report_dir) / "summary.json").read_text())
    if summary.get("headline"):  # the primary protocol's comparison, as in the report
        click.echo(headline_markdown(summary["headline"][0], ("kp PCK@5", "part mIoU")))
    click.echo(f"all metrics: {cfg.report_dir}/metrics.json (other protocol: keys ending "
               f".<protocol>); report: {cfg.report_dir}/index.html")


@main.command("teachers")
def teachers_command() -> None:
    """List the registered teachers (the names --teacher accepts)."""
    width = max(map(len, TEACHERS))
    for name, description in TEACHERS.items():
        click.echo(f"{name:{width}s} {description}")


@main.command("verify")
@click.argument("store", type=click.Path())
@click.option("--repair", is_flag=True,
              help="reset the bad objects so the next run of the stage redoes only those")
@user_errors
def verify_command(store: str, repair: bool) -> None:
    """Check a render or feature store fully: every array of every done object against its
    digests, the done flags against the attrs. Lists bad objects by id (exit 1 if any)."""
    from cache.store_lock import holder
    from cache.verify import repair_store, verify_store

    writer = holder(store)
    if writer:
        click.echo(f"note: {store} is being written by pid {writer.get('pid')} "
                   f"({writer.get('stage')}); objects in progress are not checked", err=True)
    check = verify_store(store)
    click.echo(f"{store}: {check.kind} store, {check.n_done}/{check.n_objects} objects done, "
               f"checked in {check.seconds:.1f} s")
    for p in check.problems:
        click.echo(f"  BAD {p.line()}")
    for line in check.store_problems:
        click.echo(f"  BAD store: {line}")
    if check.ok:
        click.echo("  all objects verified")
        return
    n_bad = len(check.bad_indices)
    if not repair:
        raise click.ClickException(
            f"{n_bad} damaged object(s) in {store}; run `fnerf-pipeline verify {store} --repair` "
            f"to reset them, then re-run {check.rerun} to redo only those")
    reset = repair_store(check)
    click.echo(f"reset {len(reset)} object(s); re-run {check.rerun} to redo only those")


@main.group("cache")
def cache_group() -> None:
    """List, inspect, clean and export render and feature stores (cache/toolkit.py)."""


def _echo_json(data: Any) -> None:
    import json

    click.echo(json.dumps(data, indent=1, default=str))


@cache_group.command("ls")
@click.argument("roots", nargs=-1, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="one JSON document instead of the table")
@user_errors
def cache_ls(roots: tuple[str, ...], as_json: bool) -> None:
    """Every render and feature store under ROOTS (folders or URL prefixes; default data/):
    teacher, render fingerprint, objects done, size, STALE / ORPHANED, writer lock."""
    from dataclasses import asdict

    from cache.toolkit import format_ls, list_stores

    summaries, leftovers = list_stores(list(roots) or ["data"])
    if as_json:
        _echo_json({"stores": [asdict(s) for s in summaries],
                    "leftovers": [{**asdict(x), "reason": x.reason} for x in leftovers]})
    else:
        click.echo(format_ls(summaries, leftovers))


@cache_group.command("info")
@click.argument("store", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="one JSON document instead of text")
@user_errors
def cache_info(store: str, as_json: bool) -> None:
    """One store in full: identity, settings, per-object status, format, fingerprint, size."""
    from cache.toolkit import format_info, store_info

    info = store_info(store)
    if as_json:
        _echo_json(info)
    else:
        click.echo(format_info(info))


@cache_group.command("gc")
@click.argument("roots", nargs=-1, type=click.Path())
@click.option("--dry-run/--yes", "dry_run", default=True, show_default=True,
              help="list what would go and the bytes reclaimed, or delete it")
@click.option("--json", "as_json", is_flag=True, help="one JSON document instead of text")
@user_errors
def cache_gc(roots: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Remove stale and orphaned feature stores and killed runs' leftovers under ROOTS (default
    data/). Render stores are never removed; a store whose writer lock is held is kept."""
    from dataclasses import asdict

    from cache.toolkit import format_gc, plan_gc, run_gc

    items = plan_gc(list(roots) or ["data"])
    if not dry_run:
        items = run_gc(items)
    if as_json:
        _echo_json({"dry_run": dry_run, "items": [asdict(i) for i in items]})
    else:
        click.echo(format_gc(items, dry_run))


@cache_group.command("export")
@click.argument("store", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["npz", "official"]), default="npz",
              show_default=True,
              help="npz: one <object_id>.npz per object (features float32 (V, C, h, w)); "
                   "official: the official FeatureNeRF processed-data layout")
@click.option("--out", required=True, type=click.Path(), help="output folder")
@click.option("--objects", help="object ids or indices 'id,id' or a slice '0:5'  [default: all "
                                "done objects]")
@click.option("--compress", is_flag=True, help="npz: np.savez_compressed instead of np.savez")
@user_errors
def cache_export(store: str, fmt: str, out: str, objects: str | None, compress: bool) -> None:
    """Export a feature (or render) store's objects, each verified against its digests."""
    from cache.toolkit import export_store

    result = export_store(store, fmt, out, objects, compress)
    written = result["objects"]
    count = len(written) if isinstance(written, list) else written
    click.echo(f"exported {count} object(s) of {store} as {fmt} -> {out}")


@main.command("import")
@click.option("--format", "fmt", required=True,
              type=click.Choice(IMPORT_FORMATS),
              help="official: FeatureNeRF's processed data (img/, camera/, *_anno/, "
                   "dino_feat_256/); srn, dvr, nerf-synthetic: those render layouts")
@click.option("--root", required=True, type=click.Path(), help="the dataset folder")
@click.option("--category", required=True, help="category name or ShapeNet synset id")
@click.option("--split", "split_file", type=click.Path(),
              help="official FeatureNeRF <synset>.json: import its objects with its splits")
@click.option("--objects", type=int, help="at most this many objects per split (test objects "
              "in the most official pairs first)  [default: 0 = all]")
@click.option("--size", type=int, help="store views at this square size (whole-factor "
              "downsampling; 32-1024, a multiple of 16)  [default: 0 = the source's]")
@click.option("--option", "extra", multiple=True,
              help="importer option KEY=VALUE, e.g. frame=shapenet-v2 (see docs/import.md)")
@click.option("--near", type=float, help="camera near distance of the store (with --far)  "
              "[default: the smallest of the objects']")
@click.option("--far", type=float, help="camera far distance  [default: the largest of the "
              "objects']")
@click.option("--out", type=click.Path(), help="render store  [default: "
              "data/renders/<category>.zarr]")
@click.option("--report-dir", type=click.Path(), help="[default: reports/import/<category>]")
@click.option("--features-out", type=click.Path(),
              help="also import the source's cached teacher features into this feature store")
@click.option("--features-folder", help="official: the features folder  [default: "
              "dino_feat_256]")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail",
              show_default=True, help="fail: non-zero exit on a broken object; skip: list it and "
              "go on")
@click.option("--features-only", is_flag=True,
              help="only import the features (--features-out) for the render store --out that "
                   "an earlier import of the same --root made")
@click.option("--overwrite", is_flag=True, help="start afresh even if the store could be resumed")
@click.option("--if-stale", type=IF_STALE, default="refuse", help=IF_STALE_HELP)
@user_errors
def import_command(fmt: str, extra: tuple[str, ...], **kwargs: Any) -> None:
    """Import an existing multi-view dataset into a render store (and its cached features)."""
    from pipeline.import_stage import ImportStageConfig

    kwargs["if_stale"] = if_stale_value(kwargs["if_stale"])
    for key in ("split_file", "features_out", "features_folder", "objects", "size", "near",
                "far"):
        kwargs[key] = kwargs.get(key) or None  # "" / 0 (from params.yaml) mean not given
    _run_import(ImportStageConfig(format=fmt, options=_parse_options(extra), **kwargs))


def _run_import(cfg: Any) -> None:
    """Run an :class:`~pipeline.import_stage.ImportStageConfig` and print what it made."""
    from pipeline.import_stage import run_import_stage

    result = run_import_stage(cfg)
    m = result.metrics
    if cfg.features_only:
        f = m["features"]
        click.echo(f"features: {f['objects']} objects {f['grid']}x{f['dim']} -> {result.features}")
        return
    present = ", ".join(k for k, v in m["annotations_present"].items() if v) or "none"
    click.echo(f"{m['objects']} objects ({m['objects_imported_now']} now), {m['views']} views at "
               f"{m['image_size']} px -> {result.store}; annotations: {present}; report "
               f"{result.report}")
    if result.features:
        f = m["features"]
        click.echo(f"features: {f['objects']} objects {f['grid']}x{f['dim']} -> {result.features}")
    if result.failures:
        from pipeline.guards import summarize_failures

        click.echo(f"  skipped: {summarize_failures(result.failures)}", err=True)


@main.command("export")
@click.option("--format", "fmt", type=click.Choice(["official"]), default="official",
              show_default=True, help="official: FeatureNeRF's processed-data layout")
@click.option("--renders", required=True, type=click.Path(), help="render store")
@click.option("--features", type=click.Path(), help="feature store of those renders (written "
              "as <features-folder>/<synset>/<id>.npz feats (V, C, h, w) float32)")
@click.option("--out", required=True, type=click.Path(), help="output folder")
@click.option("--objects", help="comma-separated object ids  [default: every done object]")
@click.option("--frame", default="shapenet-v1", show_default=True,
              help="world axes to write: shapenet-v1 (FeatureNeRF's), shapenet-v2 or z-up")
@click.option("--features-folder", default="dino_feat_256", show_default=True,
              help="folder name of the features")
@click.option("--pairs", "n_pairs", type=int, default=1000, show_default=True,
              help="evaluation pairs per kind in splits/<synset>.json")
@user_errors
def export_command(fmt: str, renders: str, features: str | None, out: str,
                   objects: str | None, frame: str, features_folder: str, n_pairs: int) -> None:
    """Write a render store (and features) in the official FeatureNeRF layout."""
    from cache.export_official import export_official

    ids = [o.strip() for o in objects.split(",") if o.strip()] if objects else None
    r = export_official(renders, out, feature_store=features or None, objects=ids, frame=frame,
                        features_folder=features_folder, n_pairs=n_pairs)
    kinds = ", ".join(f"{k} {v}" for k, v in r.annotations.items() if v) or "images only"
    click.echo(f"exported {len(r.objects)} object(s) -> {out} ({kinds}; {r.pairs}); not in "
               f"the layout: {', '.join(r.not_exported)}; colour pixels not exactly "
               f"representable: {r.rgb_inexact_pixels}")


@main.group("edit")
def edit() -> None:
    """3D editing with the feature field."""


@edit.command("swap-texture")
@click.option("--checkpoint", required=True, type=click.Path(exists=True),
              help="run dir or .ckpt of a trained student")
@click.option("--renders", required=True, type=click.Path(exists=True), help="render store")
@click.option("--a", "obj_a", required=True, help="object to edit (index or id)")
@click.option("--b", "obj_b", required=True, help="object whose part appearance is copied")
@click.option("--part", required=True, help="part name or label, e.g. seat")
@click.option("--view", type=int, default=0, show_default=True, help="view of object A to edit")
@click.option("--report-dir", type=click.Path(), default="reports/edit", show_default=True,
              help="where the before/after report goes")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N]")
@user_errors
def swap_texture_command(obj_a: str, obj_b: str, part: str, **kwargs: Any) -> None:
    """Swap the appearance of one part from object B onto object A (paper's texture swap)."""
    from pipeline.editing import swap_texture

    def as_key(v: str) -> int | str:
        return int(v) if v.isdigit() else v

    out = swap_texture(obj_a=as_key(obj_a), obj_b=as_key(obj_b), part=as_key(part), **kwargs)
    click.echo(f"swapped {out.get('n_swapped', '?')} pixels; report {kwargs['report_dir']}")


if __name__ == "__main__":
    main()
