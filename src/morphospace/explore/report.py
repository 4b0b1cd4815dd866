"""A self-contained HTML report: headings, text, tables, figures (embedded PNGs, also saved
under ``figures/``) and interactive Bokeh layouts (their scripts inlined).

Examples
--------
>>> import tempfile, pathlib, pandas as pd
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> report = Report("Demo")
>>> report.section("Counts")
>>> report.table(pd.DataFrame({"MoA": ["DMSO"], "cells": [10]}))
>>> path = report.write(root / "report.html")
>>> "<table" in path.read_text()
True
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from morphospace.atomic import atomic_file, write_text_atomic

__all__ = ["Report"]

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; } th { background: #f2f2f2; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; } .note { color: #555; font-size: 0.9em; }
"""


_INTERACTIVE = "\x00interactive\x00"


class Report:
    """Collects report blocks in order and writes them as one HTML file."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.blocks: list[str] = []
        self.figures: dict[str, bytes] = {}
        self.interactives: list = []

    def section(self, title: str, text: str | None = None) -> None:
        self.blocks.append(f"<h2>{html.escape(title)}</h2>")
        if text:
            self.text(text)

    def text(self, text: str, note: bool = False) -> None:
        css = ' class="note"' if note else ""
        self.blocks.append(f"<p{css}>{html.escape(text)}</p>")

    def code(self, text: str) -> None:
        """Preformatted text (a config, a log excerpt)."""
        self.blocks.append(f"<pre>{html.escape(text)}</pre>")

    def table(self, frame: pd.DataFrame, caption: str | None = None, float_format: str = "{:.3f}",
              escape: bool = True, na_rep: str = "NaN") -> None:
        """A table; ``escape=False`` keeps HTML in cells (links the caller built and escaped),
        ``na_rep`` is how missing values show."""
        formatted = frame.to_html(index=False, float_format=float_format.format, border=0, escape=escape,
                                  na_rep=na_rep)
        caption_html = f"<p class='note'>{html.escape(caption)}</p>" if caption else ""
        self.blocks.append(formatted + caption_html)

    def figure(self, fig: Figure, name: str, caption: str | None = None, dpi: int = 110) -> None:
        """Add a matplotlib figure; ``name`` is its PNG file name stem."""
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        data = buffer.getvalue()
        self.figures[f"{name}.png"] = data
        self._add_png(data, name, caption)

    def _add_png(self, data: bytes, name: str, caption: str | None) -> None:
        encoded = base64.b64encode(data).decode("ascii")
        caption_html = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.blocks.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{encoded}">'
                           f"{caption_html}</figure>")

    def image(self, png: str | os.PathLike, name: str, caption: str | None = None) -> None:
        """Embed an existing PNG file (it is not copied into ``figures/``)."""
        self._add_png(Path(png).read_bytes(), name, caption)

    def interactive(self, model) -> None:
        """Add a Bokeh model (a map, a layout); BokehJS is inlined once in the page's head, so the page
        still needs no network."""
        self.blocks.append(f"{_INTERACTIVE}{len(self.interactives)}{_INTERACTIVE}")
        self.interactives.append(model)

    def _head_and_body(self) -> tuple[str, str]:
        body = "\n".join(self.blocks)
        if not self.interactives:
            return "", body
        from bokeh.embed import components
        from bokeh.resources import Resources

        script, divs = components(self.interactives)
        for index, div in enumerate(divs):
            body = body.replace(f"{_INTERACTIVE}{index}{_INTERACTIVE}", f"<div class='interactive'>{div}</div>")
        resources = Resources(mode="inline", components=["bokeh", "bokeh-gl", "bokeh-widgets"])
        return resources.render_js(), body + script

    def write(self, path: str | os.PathLike) -> Path:
        """Write ``path`` and the figures made with :meth:`figure` (``figures/*.png`` beside it)."""
        path = Path(path)
        figures_dir = path.parent / "figures"
        figures_dir.mkdir(parents=True, exist_ok=True)
        for name, data in self.figures.items():
            with atomic_file(figures_dir / name) as tmp:
                tmp.write_bytes(data)
        head, body = self._head_and_body()
        document = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                    f"<style>{_STYLE}</style>{head}</head><body><h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>")
        write_text_atomic(path, document)
        return path
