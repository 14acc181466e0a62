"""The ``fnerf-pipeline`` command line (click)."""

from __future__ import annotations

import os

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", os.environ.get("FNERF_HF_OFFLINE", "1"))
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

import functools  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402

from cache.zarr_io import StoreError  # noqa: E402
from renderers.asset import AssetError  # noqa: E402
from renderers.base import RendererUnavailable  # noqa: E402
from teachers.base import TeacherError  # noqa: E402

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fnerf-pipeline")
def main() -> None:
    """FeatureNeRF pipeline: render -> distill-cache -> train -> evaluate."""


@main.command()
@click.option(
    "--category",
    required=True,
    help="chair, table, airplane, car, motorcycle, bottle or a ShapeNet synset id",
)
@click.option(
    "--source",
    type=click.Choice(["procedural", "shapenet"]),
    default="procedural",
    show_default=True,
)
@click.option(
    "--objects",
    type=int,
    default=24,
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
@click.option("--partnet-level", type=int, default=1, show_default=True)
@click.option("--views", type=int, default=50, show_default=True, help="views per object (>= 2)")
@click.option("--size", type=int, default=128, show_default=True,
              help="image size in pixels: 32-1024, a multiple of 16")
@click.option("--seed", type=int, default=0, show_default=True)
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
@click.option(
    "--if-stale",
    type=click.Choice(["fail", "overwrite"]),
    default="fail",
    show_default=True,
    help="what to do when the store was made with other settings",
)
@user_errors
def render(split_fractions: str, annotations: str, **kwargs: Any) -> None:
    """Render a 50-view dataset of one category into a Zarr render store."""
    from pipeline.render_stage import RenderStageConfig, run_render_stage

    kwargs["annotations"] = tuple(a.strip() for a in annotations.split(",") if a.strip())
    for key in ("shapenet_root", "split_file", "keypointnet_root", "shapenet_part_root",
                "partnet_root"):  # "" (from params.yaml) means not given
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
@click.option("--category", required=True)
@click.option("--teacher", default="effnet", show_default=True,
              help="effnet | dino | ldm | daisy | oracle")
@click.option("--renders", type=click.Path(), help="render store (default data/renders/<cat>.zarr)")
@click.option("--out", type=click.Path(), help="default data/features/<teacher>/<category>.zarr")
@click.option("--report-dir", type=click.Path())
@click.option(
    "--weights",
    help="dino: local weights file (timm or original DINO .pth), "
    "'random' for random init; default: the Hugging Face hub",
)
@click.option("--model-id", help="dino: timm model name; ldm: hub id or local diffusers folder")
@click.option("--layer", type=int, help="dino: block index (default 9)")
@click.option("--facet", type=click.Choice(["key", "query", "value", "token"]))
@click.option("--input-size", type=int, help="teacher input resolution")
@click.option("--timestep", type=int, help="ldm: noise timestep")
@click.option("--prompt", help="ldm: prompt template, e.g. 'a photo of a {category}'")
@click.option("--device", default=None, help="auto | cpu | cuda[:N]")
@click.option("--dtype", type=click.Choice(["auto", "fp32", "fp16", "bf16"]))
@click.option("--option", "extra", multiple=True, help="any other teacher option KEY=VALUE")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--pca", type=int, help="keep D principal components (basis stored in the store)")
@click.option("--workers", type=int, default=1, show_default=True)
@click.option("--scheduler", help="dask.distributed scheduler address")
@click.option(
    "--if-stale", type=click.Choice(["fail", "overwrite"]), default="fail", show_default=True
)
@click.option("--overwrite", is_flag=True, help="recompute even if the store is up to date")
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
    **named: Any,
) -> None:
    """Run a teacher once over a render store into a chunked Zarr feature store."""
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
        if_stale=if_stale,
        overwrite=overwrite,
    )
    m = run_distill_stage(cfg)
    click.echo(
        f"{m['objects']} objects ({m['objects_computed_now']} computed now, "
        f"{m['images_per_s']:.1f} images/s) -> {cfg.out}; report {cfg.report_dir}"
    )


@main.command("train")
@click.option("--category", required=True)
@click.option(
    "--teacher",
    default="effnet",
    show_default=True,
    help="teacher whose feature store to distil; 'none' trains plain pixelNeRF",
)
@click.option("--name", help="run name (default <category>-<teacher>)")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True),
    help="YAML training config (a saved runs/<name>/config.yaml works)",
)
@click.option("--renders", type=click.Path())
@click.option("--features", type=click.Path())
@click.option("--steps", type=int)
@click.option("--objects-per-step", type=int)
@click.option("--rays", "rays_per_object", type=int, help="rays per object per step")
@click.option("--lr", type=float)
@click.option("--feature-weight", type=float)
@click.option("--coord-weight", type=float)
@click.option("--backbone", type=click.Choice(["resnet18", "resnet34", "effnet-lite0"]),
              help="image encoder (default: the profile's)")
@click.option("--width", type=int)
@click.option("--n-coarse", type=int)
@click.option("--n-importance", type=int)
@click.option("--n-depth", type=int)
@click.option("--loader-workers", type=int)
@click.option("--ckpt-every", type=int)
@click.option("--device")
@click.option("--seed", type=int)
@click.option("--runs-dir", type=click.Path())
@click.option(
    "--pretrained/--no-pretrained",
    "pretrained",
    default=None,
    help="ImageNet weights for the encoder (when they are available locally)",
)
@click.option("--allow-random-encoder", is_flag=True, default=None,
              help="train from a random encoder when the profile's pretrained weights are missing")
@click.option("--coord-target", type=click.Choice(["self", "gt-surface"]),
              help="coordinate-loss target: self-supervised (official) or the GT-depth surface "
                   "point (a variant that uses ground-truth geometry)")
@click.option("--profile", type=click.Choice(["default", "official", "paper"]),
              default="default", show_default=True,
              help="recipe preset: CPU-sized default, the released code's recipe, or the paper "
                   "model with the project's fixes (deviations are saved in config.yaml)")
@click.option("--resume/--no-resume", default=True, show_default=True)
@click.option("--if-stale", type=click.Choice(["fail", "restart"]), default="fail",
              show_default=True, help="checkpoints made with another configuration")
@user_errors
def train_command(
    category: str,
    teacher: str,
    name: str | None,
    config_path: str | None,
    resume: bool,
    profile: str,
    if_stale: str,
    **overrides: Any,
) -> None:
    """Train FeatureNeRF (or pixelNeRF with --teacher none) from the caches."""
    from pipeline.train_stage import build_train_config, run_train_stage

    cfg = build_train_config(category, teacher, name, config_path, overrides, profile)
    summary = run_train_stage(cfg, resume=resume, if_stale=if_stale)
    click.echo(
        f"trained {cfg.name} to step {summary['steps']} ({summary['rays_per_s']:.0f} "
        f"rays/s); checkpoint {summary['checkpoint']}"
    )


@main.command("evaluate")
@click.option("--category", required=True)
@click.option("--teacher", default="effnet", show_default=True)
@click.option("--run", help="student run dir or .ckpt (default runs/<category>-<teacher>)")
@click.option("--pixelnerf-run", help="pixelNeRF baseline run (default runs/<category>-pixelnerf;"
              " '' disables it)")
@click.option("--renders", type=click.Path())
@click.option("--features", type=click.Path(),
              help="teacher store for the 2D-teacher baseline ('' = no such baseline)")
@click.option("--split", "split_json", type=click.Path(),
              help="official FeatureNeRF <synset>.json: use its evaluation pairs ('' = none)")
@click.option("--pairs", "n_pairs", type=int, default=200, show_default=True,
              help="pairs per protocol (official json: its first N surviving pairs)")
@click.option("--eval-views", type=int, default=8, show_default=True,
              help="seeded pairs draw their views from this many of the 50 (0 = all)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-size", type=int, help="render feature maps at this size (upsampled)")
@click.option("--n-coarse", type=int)
@click.option("--n-importance", type=int)
@click.option("--n-depth", type=int)
@click.option("--nvs-objects", type=int, default=2, show_default=True)
@click.option("--nvs-views", "n_views", type=int, default=3, show_default=True)
@click.option("--cross-view-input", type=click.Choice(["source", "own"]), default="source",
              show_default=True)
@click.option("--protocol", type=click.Choice(["official", "project"]), default="official",
              show_default=True,
              help="primary metric protocol (plain metrics.json keys): the released scripts' "
                   "per-pair logic or the project's refinements; both are always computed, the "
                   "other under '<key>.<protocol>'")
@click.option("--device", default="auto", show_default=True)
@click.option("--report-dir", type=click.Path())
@click.option("--allow-stale", is_flag=True, default=None,
              help="evaluate even if a checkpoint or the feature store was made from other "
                   "inputs (listed on stderr and in metrics.json); default: refuse")
@user_errors
def evaluate(**kwargs: Any) -> None:
    """Keypoint / part transfer, novel views and baselines -> metrics.json and an HTML report."""
    from pipeline.evaluation.stage import EvaluateConfig, run_evaluate_stage

    kwargs["split_json"] = kwargs.get("split_json") or None  # "" from params.yaml: no json
    if kwargs["split_json"] and not os.path.isfile(kwargs["split_json"]):
        raise click.BadParameter(f"{kwargs['split_json']} does not exist", param_hint="--split")
    cfg = EvaluateConfig(**{k: v for k, v in kwargs.items() if v is not None})
    run_evaluate_stage(cfg)
    import json

    from pipeline.evaluation.report import headline_markdown

    summary = json.loads((Path(cfg.report_dir) / "summary.json").read_text())
    if summary.get("headline"):  # the primary protocol's comparison, as in the report
        click.echo(headline_markdown(summary["headline"][0], ("kp PCK@5", "part mIoU")))
    click.echo(f"all metrics: {cfg.report_dir}/metrics.json (other protocol: keys ending "
               f".<protocol>); report: {cfg.report_dir}/index.html")


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


@main.group("edit")
def edit() -> None:
    """3D editing with the feature field."""


@edit.command("swap-texture")
@click.option("--checkpoint", required=True, type=click.Path(exists=True),
              help="run dir or .ckpt of a trained student")
@click.option("--renders", required=True, type=click.Path(exists=True))
@click.option("--a", "obj_a", required=True, help="object to edit (index or id)")
@click.option("--b", "obj_b", required=True, help="object whose part appearance is copied")
@click.option("--part", required=True, help="part name or label, e.g. seat")
@click.option("--view", type=int, default=0, show_default=True)
@click.option("--report-dir", type=click.Path(), default="reports/edit", show_default=True)
@click.option("--device", default="auto", show_default=True)
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
