"""The HTML report builder: escaped text, tables, embedded figures saved beside the page."""

from __future__ import annotations

import base64
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from morphospace.explore.report import Report


def test_blocks_are_escaped_and_figures_embedded_and_saved(tmp_path: Path):
    report = Report("Cells <&> more")
    report.section("Scores", "a < b")
    report.table(pd.DataFrame({"MoA": ["<script>"], "NSC": [0.5]}), caption="convention")
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    report.figure(fig, "curve", "a curve")
    path = report.write(tmp_path / "report.html")
    html = path.read_text()
    assert "<title>Cells &lt;&amp;&gt; more</title>" in html and "a &lt; b" in html
    assert "&lt;script&gt;" in html and "<script>" not in html and "0.500" in html
    saved = (tmp_path / "figures" / "curve.png").read_bytes()
    assert saved[:8] == b"\x89PNG\r\n\x1a\n" and base64.b64encode(saved).decode() in html
