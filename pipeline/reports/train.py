"""The train stage's report: ``reports/train/<run>/index.html`` (self-contained).

Opens with the run's answer (steps, final losses, throughput, objects visited), then the loss
curves per term and rays/s over the run, then the recipe: the profile, every deviation from the
released recipe, the encoder weights source and the full config. Built from the trainer's
summary (bounded: the last 100 logging windows) at the end of the run; TensorBoard scalars and
images are in ``runs/<run>/tb/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.report import HtmlReport


def curves_figure(windows: list[dict[str, float]]) -> np.ndarray | None:
    """(H, W, 3) uint8: loss terms (log scale) and rays/s against the step."""
    if not windows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.evaluation.report import figure_to_array

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


def write_train_report(path: str | Path, config: dict[str, Any], summary: dict[str, Any],
                       metrics: dict[str, Any]) -> None:
    """Write the report (see module doc) to ``path``."""
    report = HtmlReport(f"Train report: {metrics.get('name')}")
    last = summary.get("last") or {}
    never = metrics.get("objects_never_visited", 0)
    report.paragraph(
        f"{metrics.get('steps')} steps (resumed from {metrics.get('resumed_from')}), final loss "
        f"{last.get('loss', float('nan')):.4f}, {metrics.get('rays_per_s', 0):.0f} rays/s; "
        f"{metrics.get('objects_trained')} training objects, each drawn "
        f"{metrics.get('object_visits_min')}-{metrics.get('object_visits_max')} times"
        f"{f', {never} never' if never else ''}.", css="bad" if never else "")
    report.table(["loss term", "first", "last", "mean over the run"],
                 [[k, summary.get("first", {}).get(k), v, summary.get("mean", {}).get(k)]
                  for k, v in last.items()])
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
