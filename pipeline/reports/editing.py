"""The part texture swap's pictures (:mod:`pipeline.editing`): the panel the evaluate report
shows and the page of ``fnerf-pipeline edit swap-texture`` (``reports/edit/index.html``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.reports.html import HtmlReport, colorize_labels


def swap_panel(result: dict[str, Any], n_labels: int = 8) -> list[tuple[np.ndarray, str]]:
    """(image, caption) pictures of a swap result at a common size."""
    h = result["before"].shape[0]

    def fit(img: np.ndarray) -> np.ndarray:
        if img.shape[0] == h:
            return img
        from PIL import Image

        return np.asarray(Image.fromarray(img).resize((h, h), Image.BILINEAR))

    mask = np.repeat(result["mask"][..., None], 3, -1).astype(np.uint8) * 255
    return [(fit(result["input_a"]), "input A"), (fit(result["input_b"]), "input B"),
            (result["before"], "A rendered"),
            (colorize_labels(result["labels"], max(n_labels, 1)), "A parts (transferred)"),
            (mask, f"swap mask ({result['n_pixels']} px)"), (result["after"], "A after swap")]


def write_swap_report(result: dict[str, Any], path: str | Path, title: str,
                      n_labels: int = 8) -> None:
    """A self-contained page with the swap pictures."""
    report = HtmlReport(f"Part texture swap: {title}")
    scale = max(1, 256 // result["before"].shape[0])
    for img, cap in swap_panel(result, n_labels):
        report.image(img, cap, scale=scale)
    report.write(path)
