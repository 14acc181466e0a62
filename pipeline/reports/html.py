"""Shared helpers of the stage reports: self-contained HTML pages (images inlined as base64
PNG, no CDN), colourings and legends."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from cache.atomic import atomic_write_bytes

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1400px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;
font-size:13px;text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}
img{image-rendering:pixelated;margin:2px;border:1px solid #eee}.cap{font-size:12px;color:#555}
.bad{color:#b00}.fig{display:inline-block;vertical-align:top;margin:4px}
"""


def png_data_uri(image: np.ndarray, scale: int = 1) -> str:
    """(H, W, 3|4) or (H, W) uint8 -> ``data:image/png;base64,...`` (nearest upscaling)."""
    img = Image.fromarray(np.ascontiguousarray(image))
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")  # zlib level 6: 2x faster than optimize=True, no larger here
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def palette(n: int, seed: int = 7) -> np.ndarray:
    """(n, 3) uint8 distinct colours (golden-ratio hues)."""
    import colorsys

    hues = (np.arange(n) * 0.61803398875 + 0.13) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.75, 0.95) for h in hues]
    return (np.array(rgb).reshape(-1, 3) * 255).astype(np.uint8)


def colorize_labels(labels: np.ndarray, n_labels: int) -> np.ndarray:
    """(H, W) int labels (-1 = background) -> (H, W, 3) uint8."""
    pal = palette(max(n_labels, 1))
    out = np.zeros((*labels.shape, 3), np.uint8)
    fg = labels >= 0
    out[fg] = pal[np.clip(labels[fg], 0, len(pal) - 1)]
    return out


def colorize_depth(depth: np.ndarray) -> np.ndarray:
    """(H, W) depth (0 = empty) -> (H, W, 3) uint8, near = bright, via matplotlib's turbo."""
    from matplotlib import colormaps

    out = np.zeros((*depth.shape, 3), np.uint8)
    fg = depth > 0
    if fg.any():
        lo, hi = depth[fg].min(), depth[fg].max()
        t = 1.0 - (depth[fg] - lo) / max(hi - lo, 1e-6)
        out[fg] = (colormaps["turbo"](t)[:, :3] * 255).astype(np.uint8)
    return out


def legend_html(names: list[str], colors: np.ndarray, title: str) -> str:
    """An inline colour key: one swatch and name per entry (colors (N, 3) uint8)."""
    import html

    items = "".join(
        f'<span style="display:inline-block;margin:0 10px 2px 0"><span style="display:inline-'
        f'block;width:14px;height:14px;vertical-align:middle;border:1px solid #444;background:'
        f'rgb({int(c[0])},{int(c[1])},{int(c[2])})"></span> {html.escape(str(n))}</span>'
        for n, c in zip(names, colors, strict=False))
    return f"<p><b>{html.escape(title)}</b>: {items}</p>"


def depth_legend_html() -> str:
    """The colour bar of :func:`colorize_depth`, which stretches each image's own depth range."""
    ramp = np.linspace(2.0, 1.0, 64, dtype=np.float32)[None].repeat(10, 0)
    bar = colorize_depth(ramp)
    return (f'<p><b>depth</b> (per image, its own range): farthest <img src="'
            f'{png_data_uri(bar, 2)}" style="vertical-align:middle"> nearest; black = empty</p>')


def draw_points(
    image: np.ndarray,
    uv: np.ndarray,
    colors: np.ndarray,
    scale: int = 2,
    radius: int = 3,
    lines_to: np.ndarray | None = None,
) -> np.ndarray:
    """Upscale ``image`` by ``scale`` and draw dots at pixel coords ``uv`` (N, 2).

    ``lines_to`` (N, 2) optionally draws a line from each dot to a second point (e.g. GT).
    """
    img = Image.fromarray(image).resize(
        (image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST
    )
    draw = ImageDraw.Draw(img)
    for k, (u, v) in enumerate(uv):
        x, y = u * scale, v * scale
        c = tuple(int(a) for a in colors[k])
        if lines_to is not None:
            draw.line([(x, y), (lines_to[k][0] * scale, lines_to[k][1] * scale)], fill=c, width=1)
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=c, outline=(0, 0, 0))
    return np.asarray(img)


class HtmlReport:
    """A tiny builder for one self-contained HTML page."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str, css: str = "") -> None:
        cls = f' class="{css}"' if css else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def image(self, image: np.ndarray, caption: str = "", scale: int = 1) -> None:
        cap = f'<div class="cap">{html.escape(caption)}</div>' if caption else ""
        self.parts.append(f'<div class="fig"><img src="{png_data_uri(image, scale)}">{cap}</div>')

    def raw(self, markup: str) -> None:
        self.parts.append(markup)

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        def cell(v: Any, tag: str) -> str:
            text = f"{v:.4g}" if isinstance(v, float) else str(v)
            cls = "" if isinstance(v, (int, float)) else ' class="l"'
            return f"<{tag}{cls}>{html.escape(text)}</{tag}>"

        head = "".join(cell(h, "th") for h in header)
        body = "".join("<tr>" + "".join(cell(v, "td") for v in r) + "</tr>" for r in rows)
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def render(self) -> str:
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}"
            f"</title><style>{STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>"
            + "\n".join(self.parts)
            + "</body></html>\n"
        )

    def write(self, path: str | Path) -> None:
        atomic_write_bytes(path, self.render().encode())
