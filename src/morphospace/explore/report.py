"""A self-contained HTML report: headings, text, tables and figures (embedded PNGs, also saved
under ``figures/``).

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


class Report:
    """Collects report blocks in order and writes them as one HTML file."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.blocks: list[str] = []
        self.figures: dict[str, bytes] = {}

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

    def table(self, frame: pd.DataFrame, caption: str | None = None, float_format: str = "{:.3f}") -> None:
        formatted = frame.to_html(index=False, float_format=float_format.format, border=0, escape=True)
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

    def write(self, path: str | os.PathLike) -> Path:
        """Write ``path`` and the figures made with :meth:`figure` (``figures/*.png`` beside it)."""
        path = Path(path)
        figures_dir = path.parent / "figures"
        figures_dir.mkdir(parents=True, exist_ok=True)
        for name, data in self.figures.items():
            with atomic_file(figures_dir / name) as tmp:
                tmp.write_bytes(data)
        body = "\n".join(self.blocks)
        document = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                    f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>")
        write_text_atomic(path, document)
        return path
