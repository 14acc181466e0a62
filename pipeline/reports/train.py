"""The train stage's report: ``reports/train/<run>/index.html`` (self-contained).

Opens with the run's answer ("in progress" or "finished", steps done of total, latest losses,
throughput, objects visited), then the novel-view snapshots, the loss curves per term and rays/s
over the run, then the recipe: the profile, every deviation from the released recipe, the
encoder weights source and the full config. Rewritten atomically at every progress report of
the trainer and at the end (built from the trainer's summary, bounded: the last 100 logging
windows); TensorBoard scalars and images are in ``runs/<run>/tb/``.

Snapshots (:class:`Snapshot`): per fixed hold-out object, the source view, the ground-truth
novel view, the predicted RGB and depth and, with a feature head, the PCA colourings of the
rendered and of the teacher features, at one training step. They are kept as small
``snapshots/step-XXXXXXX.npz`` files beside the report (bounded, :func:`prune_snapshots`), so
a resumed run's report still shows the earlier steps. Every colouring of a run uses one
:class:`~pipeline.reports.features.ColourBasis` (the feature store's, else one fitted on the
fixed teacher maps), so colours are comparable across steps and between student and teacher.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cache.atomic import atomic_write_bytes
from pipeline.reports.html import HtmlReport, colorize_depth, png_data_uri
from pipeline.reports.features import ColourBasis, pca_rgb

#: snapshot panels in display order, with their column titles
PANEL_TITLES = {"source": "source view", "target": "ground truth (novel view)",
                "rgb": "predicted RGB", "depth": "predicted depth",
                "feature": "rendered features (PCA)", "teacher": "teacher features (PCA)"}
#: rendered pixels below this opacity are background in the depth and feature panels
OPAQUE = 0.5
SNAPSHOT_PATTERN = "step-{:07d}.npz"


@dataclass(frozen=True)
class FixedViews:
    """What every snapshot of a run shares: ``objects`` (store indices) and their ids, the
    ``split`` they come from, the views, the ``source`` / ``target`` images (n, S, S, 3) uint8
    and the teacher maps at the target view (n, h, w, C) float32 (None: no feature head)."""

    objects: list[int]
    object_ids: list[str]
    split: str
    source_view: int
    target_view: int
    source: np.ndarray
    target: np.ndarray
    teacher: np.ndarray | None = None


@dataclass(frozen=True)
class Snapshot:
    """One step's panels: name -> (n_objects, S, S, 3) uint8 (:data:`PANEL_TITLES` order),
    ``psnr`` (n_objects,) dB of the predicted novel view, and the ``object_ids`` shown."""

    step: int
    panels: dict[str, np.ndarray]
    psnr: np.ndarray
    object_ids: list[str]


def resize_image(image: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8: box-filtered (or nearest for feature maps)."""
    img = Image.fromarray(np.ascontiguousarray(image))
    return np.asarray(img.resize((size, size), Image.NEAREST if nearest else Image.BOX))


def feature_image(feat: np.ndarray, basis: ColourBasis | None, size: int) -> np.ndarray:
    """(h, w, C) features (zero = background) -> (size, size, 3) uint8 PCA colouring."""
    return resize_image(pca_rgb(feat[None], basis)[0], size, nearest=True)


def draw_snapshot(step: int, rendered: Sequence[Mapping[str, np.ndarray]], fixed: FixedViews,
                  basis: ColourBasis | None, feature_scale: float = 1.0) -> Snapshot:
    """The panels of one step from the renders of the fixed views.

    Args:
        rendered: per object, (S, S, ...) float32 maps ``rgb``, ``opacity``, ``depth`` and,
            with a feature head, ``feature`` (as :meth:`NerfRenderer.render` returns them).
        basis: the run's colouring (teacher space). feature_scale: the trainer's teacher
            target scale; rendered features are divided by it to colour them in teacher space.
    """
    from pipeline.evaluation.metrics import psnr

    size = fixed.source.shape[1]
    panels: dict[str, list[np.ndarray]] = {name: [] for name in PANEL_TITLES}
    scores = []
    for k, maps in enumerate(rendered):
        fg = maps["opacity"] >= OPAQUE
        rgb = np.clip(maps["rgb"], 0, 1)
        scores.append(psnr(rgb, fixed.target[k] / 255.0))
        panels["source"].append(fixed.source[k])
        panels["target"].append(fixed.target[k])
        panels["rgb"].append((rgb * 255 + 0.5).astype(np.uint8))
        panels["depth"].append(colorize_depth(np.where(fg, maps["depth"], 0.0)))
        if fixed.teacher is not None and "feature" in maps:
            student = np.where(fg[..., None], maps["feature"] / feature_scale, 0.0)
            panels["feature"].append(feature_image(student, basis, size))
            panels["teacher"].append(feature_image(fixed.teacher[k], basis, size))
    return Snapshot(step, {k: np.stack(v) for k, v in panels.items() if v},
                    np.asarray(scores, np.float64), list(fixed.object_ids))


def save_snapshot(directory: str | Path, snap: Snapshot) -> Path:
    """Write ``directory/step-XXXXXXX.npz`` atomically (a few tens of KB); returns its path."""
    buf = io.BytesIO()
    np.savez_compressed(buf, step=snap.step, psnr=snap.psnr, object_ids=np.array(snap.object_ids),
                        **{f"panel_{k}": v for k, v in snap.panels.items()})
    path = Path(directory) / SNAPSHOT_PATTERN.format(snap.step)
    atomic_write_bytes(path, buf.getvalue())
    return path


def snapshot_steps(directory: str | Path) -> list[int]:
    """Steps of the snapshot files in ``directory``, ascending."""
    found = (re.fullmatch(r"step-(\d{7})\.npz", p.name) for p in Path(directory).glob("*.npz"))
    return sorted(int(m.group(1)) for m in found if m)


def load_snapshots(directory: str | Path, object_ids: list[str]) -> list[Snapshot]:
    """The snapshots in ``directory`` of exactly these objects (others are skipped), by step."""
    out = []
    for step in snapshot_steps(directory):
        with np.load(Path(directory) / SNAPSHOT_PATTERN.format(step)) as z:
            if z["object_ids"].tolist() != list(object_ids):
                continue
            panels = {k[len("panel_"):]: z[k] for k in z.files if k.startswith("panel_")}
            out.append(Snapshot(int(z["step"]), panels, z["psnr"], list(object_ids)))
    return out


def prune_snapshots(directory: str | Path, keep: int, after: int | None = None) -> None:
    """Delete the snapshots past step ``after`` (left by a run that was discarded or not
    resumed that far), then all but the first and the newest ``keep - 1``."""
    steps = snapshot_steps(directory)
    stale = [s for s in steps if after is not None and s > after]
    kept = [s for s in steps if s not in stale]
    drop = stale + (kept[1 : len(kept) - max(keep - 1, 0)] if len(kept) > max(keep, 1) else [])
    for step in drop:
        (Path(directory) / SNAPSHOT_PATTERN.format(step)).unlink(missing_ok=True)


def snapshots_html(snapshots: Sequence[Snapshot], fixed: FixedViews, scale: int = 2) -> str:
    """Per object a table: one row per snapshot step (step, novel-view PSNR, the panels)."""
    if not snapshots:
        return ""
    names = [n for n in PANEL_TITLES if n in snapshots[-1].panels]
    head = "".join(f"<th>{html.escape(PANEL_TITLES[n])}</th>" for n in names)
    parts = []
    for k, object_id in enumerate(fixed.object_ids):
        rows = "".join(
            f"<tr><td>{s.step}</td><td>{s.psnr[k]:.2f}</td>"
            + "".join(f'<td><img src="{png_data_uri(s.panels[n][k], scale)}"></td>'
                      for n in names if n in s.panels) + "</tr>" for s in snapshots)
        parts.append(f"<p><b>{html.escape(object_id)}</b> ({html.escape(fixed.split)} object "
                     f"{fixed.objects[k]}): source view {fixed.source_view} -> novel view "
                     f"{fixed.target_view}</p><table><tr><th>step</th><th>PSNR dB</th>{head}"
                     f"</tr>{rows}</table>")
    return "\n".join(parts)


def curves_figure(windows: list[dict[str, float]]) -> np.ndarray | None:
    """(H, W, 3) uint8: loss terms (log scale) and rays/s against the step."""
    if not windows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.reports.evaluate import figure_to_array

    steps = [w["step"] for w in windows]
    terms = [k for k in windows[0] if k not in ("step", "steps", "rays_s")]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
    for k in terms:
        ax.plot(steps, [max(w.get(k, np.nan), 1e-8) for w in windows], label=k)
    ax.set(yscale="log", xlabel="step", ylabel="loss (window mean)", title="losses per term")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax2.plot(steps, [w.get("rays_s", np.nan) for w in windows], color="tab:green")
    ax2.set(xlabel="step", ylabel="rays/s (all ranks)", title="throughput")
    ax2.grid(alpha=0.3)
    return figure_to_array(fig)


def loss_rows(windows: list[dict[str, float]]) -> list[dict[str, Any]]:
    """Rows ``{step, term, loss}`` for ``dvc plots`` (one per logging window and term)."""
    return [{"step": w["step"], "term": k, "loss": v} for w in windows
            for k, v in w.items() if k not in ("step", "steps", "rays_s")]


def answer_line(summary: Mapping[str, Any], metrics: Mapping[str, Any]) -> tuple[str, bool]:
    """The report's first line ("finished: 400 of 400 steps ..." or "in progress: ...") and
    whether it is bad news (training objects never drawn)."""
    last = summary.get("last") or {}
    done, total = summary.get("done", metrics.get("steps")), metrics.get("steps")
    finished = summary.get("finished", True)
    logged = (summary.get("recent") or [{}])[-1].get("step", done)
    loss = (f"final loss {last.get('loss', float('nan')):.4f}" if finished else
            f"latest loss {last.get('loss', float('nan')):.4f} (logged at step {logged})")
    visits = ""
    never = int(metrics.get("objects_never_visited") or 0)
    if metrics.get("objects_trained") is not None:
        visits = (f"; {metrics.get('objects_trained')} training objects, each drawn "
                  f"{metrics.get('object_visits_min')}-{metrics.get('object_visits_max')} times"
                  f"{f', {never} never' if never else ''}")
    state = "finished" if finished else "in progress"
    return (f"{state}: {done} of {total} steps (resumed from {metrics.get('resumed_from')}), "
            f"{loss}, {metrics.get('rays_per_s', 0):.0f} rays/s{visits}.", bool(never))


def write_train_report(path: str | Path, config: dict[str, Any], summary: dict[str, Any],
                       metrics: dict[str, Any], snapshots: Sequence[Snapshot] = (),
                       fixed: FixedViews | None = None) -> None:
    """Write the report (see module doc) to ``path`` atomically (temporary file + rename)."""
    report = HtmlReport(f"Train report: {metrics.get('name')}")
    line, bad = answer_line(summary, metrics)
    report.paragraph(line, css="bad" if bad else "")
    last = summary.get("last") or {}
    report.table(["loss term", "first", "latest" if not summary.get("finished", True) else "last",
                  "mean over the run"],
                 [[k, summary.get("first", {}).get(k), v, summary.get("mean", {}).get(k)]
                  for k, v in last.items()])
    if snapshots and fixed is not None:
        wall, spent = float(summary.get("wall_s") or 0.0), float(summary.get("report_s") or 0.0)
        report.heading("Novel views on fixed hold-out objects")
        report.paragraph(
            f"{len(fixed.objects)} {fixed.split} object(s), each encoded from one source view "
            f"and rendered at a fixed novel view at {fixed.source.shape[1]} px, at the steps "
            "shown; PSNR against the box-downsampled ground truth. Depth and rendered features: "
            f"pixels with opacity below {OPAQUE} are black; feature colourings share one PCA "
            f"basis (teacher space) across steps. The snapshots before this one took "
            f"{spent:.1f} s ({100 * spent / max(wall, 1e-9):.1f} % of the {wall:.0f} s wall "
            "time so far).")
        report.raw(snapshots_html(snapshots, fixed))
    image = curves_figure(list(summary.get("recent") or []))
    if image is not None:
        report.heading("Loss curves and throughput (the last 100 logging windows)")
        report.image(image)
    report.heading("Recipe")
    deviations = config.get("deviations") or []
    report.paragraph(f"profile: {config.get('profile')}; encoder weights: "
                     f"{summary.get('weights_source', metrics.get('weights_source', 'n/a'))}; "
                     f"{len(deviations)} deviation(s) from the released recipe.")
    if deviations:
        report.table(["deviation (key: official -> this run)"], [[d] for d in deviations])
    flat = _flatten(config)
    report.table(["config key", "value"], [[k, v] for k, v in flat.items()])
    report.paragraph("TensorBoard scalars and images: runs/<run>/tb/ (tensorboard --logdir runs)")
    report.write(path)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif k != "deviations":
            out[f"{prefix}{k}"] = v
    return out
