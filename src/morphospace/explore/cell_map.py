"""Interactive maps of cells or wells: any table with ``Metadata_*`` columns (CellProfiler
features, profiles, embeddings) laid out in 2-D, each point coloured by a metadata column chosen in
the page, its crop shown on hover and the crops of a click or lasso selection shown in a gallery.

The page is made with Bokeh and is self-contained: BokehJS is inlined, thumbnails are small PNGs
(64-colour palette, ``thumbnail_size`` pixels) inlined as data URIs, so the file opens without a
network or a server. Bokeh was chosen because it inlines its scripts, draws 10,000 points with
WebGL, and lets short JavaScript callbacks react to hover and selection without a server.

- a table with ``Metadata_StoreIndex`` has one point per cell, shown by its crop;
- any other table has one point per group of cells (a well, a treatment): shown by a montage of up
  to four of the store's cells whose values agree in every ``Metadata_*`` column the two tables share.

Examples
--------
>>> import pandas as pd, numpy as np
>>> rng = np.random.default_rng(0)
>>> table = pd.DataFrame({"Metadata_MoA": ["A", "B"] * 10, "f1": rng.normal(size=20), "f2": rng.normal(size=20)})
>>> cell_map = table_map(table)
>>> cell_map.n_points, cell_map.views[0].labels[0].startswith("PC1"), cell_map.color_columns
(20, True, ['Metadata_MoA'])
"""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np
import pandas as pd
from PIL import Image

from morphospace.errors import InputError
from morphospace.evaluate.clustering import project_2d
from morphospace.explore.figures import crops_rgb, display_limits, montage
from morphospace.features.cellprofiler import feature_columns
from morphospace.io.store import CropStore

__all__ = ["MAX_POINTS", "THUMBNAIL_SIZE", "MapView", "CellMap", "standardised_features", "map_view",
           "png_data_uri", "cell_thumbnails", "group_thumbnails", "color_scheme", "table_map", "shared_cells_map",
           "map_layout", "write_map"]

MAX_POINTS = 10_000
"""Points drawn at most; larger tables are subsampled at random (seeded) and the page says so."""
THUMBNAIL_SIZE = 64
"""Side of a thumbnail in pixels (the size it is displayed at in the gallery)."""
_GALLERY_LIMIT = 120
_MAX_CATEGORIES = 40
_FEW_NUMBERS = 12
_MISSING = "#bbbbbb"
_LIMIT_SAMPLE = 2000


@dataclass(frozen=True)
class MapView:
    """One 2-D layout of a map's points: coordinates (n, 2) and the two axis labels."""

    name: str
    xy: np.ndarray
    labels: tuple[str, str]


@dataclass
class CellMap:
    """What a map shows: the points' metadata (n rows), one or more layouts, thumbnails (data URIs,
    "" where a point has none; None without a store) and notes on what was left out."""

    metadata: pd.DataFrame
    views: list[MapView]
    thumbnails: list[str] | None
    color: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def n_points(self) -> int:
        return len(self.metadata)

    @property
    def color_columns(self) -> list[str]:
        return _color_columns(self.metadata)


def standardised_features(table: pd.DataFrame, where: str = "the table",
                          max_missing: float = 0.05) -> tuple[np.ndarray, list[str]]:
    """The table's feature columns (numeric, not ``Metadata_``) as a z-scored matrix (n, d).
    Missing or infinite values of a column are filled with its median when they are at most
    ``max_missing`` of its rows; columns with more, or with no spread, are left out and named in the
    second value."""
    features = feature_columns(table)
    if not features:
        raise InputError(f"{where}: no numeric feature columns to lay out (only Metadata_* columns)")
    x = table[features].to_numpy(dtype=np.float64, copy=True)
    x[~np.isfinite(x)] = np.nan
    missing = np.isnan(x).mean(axis=0)
    usable = missing <= max_missing
    x = x[:, usable]
    x = np.where(np.isnan(x), np.nanmedian(x, axis=0) if x.size else 0.0, x)
    spread = x.std(axis=0) > 0
    usable[usable] = spread
    if not usable.any():
        raise InputError(f"{where}: every feature column has too many missing values or no spread")
    x = x[:, spread]
    left_out = [f for f, ok in zip(features, usable) if not ok]
    return (x - x.mean(axis=0)) / x.std(axis=0), left_out


def map_view(table: pd.DataFrame, name: str, method: str = "pca", seed: int = 0) -> tuple[MapView, list[str]]:
    """Lay out the table's rows (:func:`standardised_features`, then PCA or UMAP); returns the view
    and the feature columns left out."""
    x, left_out = standardised_features(table, name)
    if len(x) < 3:
        raise InputError(f"{name}: {len(x)} row(s); a map needs at least 3")
    xy, labels = project_2d(x, method, seed)
    return MapView(name, np.asarray(xy, dtype=np.float64), labels), left_out


def png_data_uri(rgb: np.ndarray, colors: int = 64) -> str:
    """An RGB image (H, W, 3) in [0, 1] as a ``data:image/png`` URI, quantised to ``colors`` colours."""
    image = Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.quantize(colors, method=Image.Quantize.FASTOCTREE).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _resized(tiles: np.ndarray, size: int) -> np.ndarray:
    """RGB tiles (n, H, W, 3) in [0, 1] scaled to (n, size, size, 3) by area averaging."""
    if tiles.shape[1:3] == (size, size):
        return tiles
    return np.stack([np.asarray(Image.fromarray(np.round(t * 255).astype(np.uint8)).resize(
        (size, size), Image.Resampling.BOX), dtype=np.float32) / 255 for t in tiles])


def _panel_limits(store: CropStore, indices: np.ndarray, seed: int) -> list[tuple[float, float]]:
    """Display limits per channel over (a sample of) the crops shown, so brightness compares."""
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(indices, min(len(indices), _LIMIT_SAMPLE), replace=False))
    crops = store.read(sample).astype(np.float32)
    return display_limits(crops.max(axis=2) if crops.ndim == 5 else crops)


def cell_thumbnails(store: CropStore, indices: np.ndarray, size: int = THUMBNAIL_SIZE, seed: int = 0,
                    chunk: int = 1024) -> list[str]:
    """One PNG data URI per store index: the crop's colour composite (shared display limits),
    ``size`` pixels square."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        return []
    limits = _panel_limits(store, indices, seed)
    uris: list[str] = []
    for start in range(0, len(indices), chunk):
        tiles = _resized(crops_rgb(store.read(indices[start:start + chunk]), store.channels, limits), size)
        uris += [png_data_uri(tile) for tile in tiles]
    return uris


def _group_keys(table: pd.DataFrame, cells: pd.DataFrame, where: str) -> list[str]:
    keys = [c for c in table.columns if str(c).startswith("Metadata_") and c in cells.columns]
    if not keys:
        raise InputError(f"{where}: no Metadata_StoreIndex and no Metadata_* column shared with the store's cells, "
                         "so its rows cannot be matched to crops")
    return keys


def group_thumbnails(store: CropStore, table: pd.DataFrame, size: int = THUMBNAIL_SIZE, per_group: int = 4,
                     seed: int = 0, where: str = "the table") -> list[str]:
    """One montage per row of ``table`` (a well, a treatment): up to ``per_group`` of the store's
    cells whose values agree with the row in every ``Metadata_*`` column both share, in a 2 x 2
    grid of ``size`` pixels; "" for a row that matches no cell."""
    cells = store.cells.reset_index(drop=True)
    keys = _group_keys(table, cells, where)
    members = cells.groupby(keys, dropna=False, sort=False).indices
    rng = np.random.default_rng(seed)
    picks = []
    for row in table[keys].itertuples(index=False):
        found = members.get(tuple(row) if len(keys) > 1 else row[0], np.array([], dtype=np.int64))
        picks.append(np.sort(rng.choice(found, min(per_group, len(found)), replace=False)) if len(found) else found)
    shown = np.unique(np.concatenate([np.asarray(p, dtype=np.int64) for p in picks] + [np.array([], np.int64)]))
    if len(shown) == 0:
        return [""] * len(table)
    limits = _panel_limits(store, shown, seed)
    columns = max(1, int(np.ceil(np.sqrt(per_group))))
    tile = max(8, (size - 2 * (columns - 1)) // columns)
    uris = []
    for pick in picks:
        if len(pick) == 0:
            uris.append("")
            continue
        tiles = _resized(crops_rgb(store.read(pick), store.channels, limits), tile)
        uris.append(png_data_uri(montage(tiles, columns)))
    return uris


def _categorical_palette(n: int) -> list[str]:
    from bokeh.palettes import Category10, Category20, turbo

    if n <= 10:
        return list(Category10[10][:n])
    return list(Category20[20][:n]) if n <= 20 else list(turbo(n))


def _swatch(color: str) -> str:
    return f"<span style='display:inline-block;width:10px;height:10px;background:{color};margin-right:4px'></span>"


def color_scheme(values: pd.Series) -> tuple[list[str], str]:
    """Hex colour per value and a legend (HTML). Text and numbers with at most 12 distinct values are
    categories (one colour each, in sorted order); other numbers run through Viridis by rank, so a
    skewed column (a dose) still spreads over the scale. Missing values are grey."""
    from bokeh.palettes import Viridis256

    present = values.dropna()
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric and present.nunique() > _FEW_NUMBERS:
        ranks = values.rank(pct=True)
        colors = [_MISSING if pd.isna(r) else Viridis256[min(255, int(r * 256))] for r in ranks]
        low, mid, high = (format(v, ".4g") for v in present.quantile([0, 0.5, 1]))
        gradient = ",".join([*Viridis256[::32], Viridis256[-1]])
        legend = (f"<div style='width:200px;height:10px;background:linear-gradient(to right,{gradient})'></div>"
                  f"<div style='display:flex;justify-content:space-between;width:200px'><span>{low}</span>"
                  f"<span>{mid}</span><span>{high}</span></div><div>colour by rank (min, median, max)</div>")
        return colors, legend
    categories = sorted(present.unique(), key=lambda v: (str(type(v)), v))
    palette = dict(zip(categories, _categorical_palette(len(categories))))
    colors = [palette.get(v, _MISSING) if not pd.isna(v) else _MISSING for v in values]
    counts = present.value_counts()
    legend = "".join(f"<div>{_swatch(palette[c])}{html.escape(str(c))} ({counts[c]})</div>" for c in categories)
    if len(present) < len(values):
        legend += f"<div>{_swatch(_MISSING)}missing ({len(values) - len(present)})</div>"
    return colors, legend


def _color_columns(metadata: pd.DataFrame) -> list[str]:
    """Metadata columns worth colouring by: more than one value, not an identifier (a different
    value in every one of more than 40 rows), and not text of more than 40 values."""
    chosen = []
    for column in metadata.columns:
        values = metadata[column].dropna()
        distinct = values.nunique()
        if column == "Metadata_StoreIndex" or distinct < 2 or distinct == len(values) > _MAX_CATEGORIES:
            continue
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if not numeric and distinct > _MAX_CATEGORIES:
            continue
        chosen.append(column)
    return chosen


def _default_color(columns: list[str]) -> str | None:
    for preferred in ("Metadata_MoA", "Metadata_Compound", "Metadata_Treatment", "Metadata_Label", "Metadata_Plate"):
        if preferred in columns:
            return preferred
    return columns[0] if columns else None


def _sampled(table: pd.DataFrame, max_points: int, seed: int, notes: list[str]) -> pd.DataFrame:
    if len(table) <= max_points:
        return table.reset_index(drop=True)
    rows = np.sort(np.random.default_rng(seed).choice(len(table), max_points, replace=False))
    notes.append(f"showing {max_points:,} of {len(table):,} rows, drawn at random (seed {seed})")
    return table.iloc[rows].reset_index(drop=True)


def _thumbnails(table: pd.DataFrame, store: CropStore | None, size: int, seed: int, where: str,
                notes: list[str]) -> list[str] | None:
    if store is None:
        notes.append("no crop store given, so no crops on hover")
        return None
    if "Metadata_StoreIndex" in table:
        indices = table["Metadata_StoreIndex"].to_numpy(dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(store)):
            raise InputError(f"{where}: Metadata_StoreIndex runs to {indices.max()}, but {store.path} holds "
                             f"{len(store)} crops; is it the store these rows were measured on?")
        return cell_thumbnails(store, indices, size, seed)
    uris = group_thumbnails(store, table, size, seed=seed, where=where)
    missing = sum(not u for u in uris)
    if missing:
        notes.append(f"{missing} row(s) match no cell of the store and show no crops")
    return uris


def table_map(table: pd.DataFrame, store: CropStore | None = None, color: str | None = None, method: str = "pca",
              max_points: int = MAX_POINTS, seed: int = 0, thumbnail_size: int = THUMBNAIL_SIZE,
              name: str = "features", where: str = "the table") -> CellMap:
    """A :class:`CellMap` of ``table`` (see the module docstring): at most ``max_points`` rows,
    laid out by ``method`` (pca or umap), coloured first by ``color`` (default the MoA, compound or
    plate column), with thumbnails from ``store`` when given."""
    if color is not None and (color not in table.columns or not str(color).startswith("Metadata_")):
        raise InputError(f"{where}: colour column {color!r} is not a metadata column of the table (they are: "
                         f"{[c for c in table.columns if str(c).startswith('Metadata_')]})")
    if max_points < 3:
        raise InputError(f"max_points {max_points}: a map needs at least 3 points")
    if thumbnail_size < 8:
        raise InputError(f"thumbnail size {thumbnail_size}: at least 8 pixels")
    notes: list[str] = []
    rows = _sampled(table, max_points, seed, notes)
    view, left_out = map_view(rows, name, method, seed)
    if left_out:
        notes.append(f"{len(left_out)} feature column(s) missing in over 5% of rows or without spread left out of the "
                     "layout (missing values of the others filled with their median)")
    metadata = rows[[c for c in rows.columns if str(c).startswith("Metadata_")]]
    thumbnails = _thumbnails(rows, store, thumbnail_size, seed, where, notes)
    return CellMap(metadata, [view], thumbnails, color or _default_color(_color_columns(metadata)), notes)


_HOVER_JS = """
const hits = cb_data.index.indices;
if (hits.length === 0) { return; }
const d = source.data, g = cb_data.geometry;
let best = hits[0], bestDistance = Infinity;
for (const i of hits) {
  const dx = d.x[i] - g.x, dy = d.y[i] - g.y, distance = dx * dx + dy * dy;
  if (distance < bestDistance) { bestDistance = distance; best = i; }
}
const escape = (s) => String(s).replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");
let text = "";
if (d.thumbnail && d.thumbnail[best]) {
  text += `<img class="map-preview" src="${d.thumbnail[best]}" style="width:${2 * size}px;image-rendering:pixelated">`;
}
text += "<table style='font-size:11px'>" + fields.map((f) => `<tr><td>${escape(f.replace("Metadata_", ""))}</td>` +
  `<td>${escape(d[f][best])}</td></tr>`).join("") + "</table>";
preview.text = text;
"""

_SELECTION_JS = """
const chosen = source.selected.indices, d = source.data, column = color.value;
const escape = (s) => String(s).replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");
if (chosen.length === 0) { gallery.text = "<p>Click a point or draw a lasso to show the cells here.</p>"; return; }
const counts = {};
for (const i of chosen) { const v = String(d[column][i]); counts[v] = (counts[v] || 0) + 1; }
const summary = Object.entries(counts).sort((a, b) => b[1] - a[1]).map(([v, n]) => `${escape(v)}: ${n}`).join("; ");
const shown = chosen.slice(0, limit);
const tiles = shown.map((i) => {
  const caption = escape(d[column][i]);
  const image = d.thumbnail && d.thumbnail[i] ? `<img src="${d.thumbnail[i]}" width="${size}" height="${size}">` : "";
  return `<figure style="display:inline-block;margin:2px;width:${size}px;font-size:9px;overflow:hidden" ` +
         `title="${caption}">${image}<figcaption>${caption}</figcaption></figure>`;
}).join("");
gallery.text = `<p class="map-selection">${chosen.length} selected${chosen.length > shown.length ?
  ` (first ${shown.length} shown)` : ""}. ${escape(column.replace("Metadata_", ""))}: ${summary}</p>` + tiles;
"""

_COLOR_JS = """
source.data.color = source.data["color__" + cb_obj.value];
source.change.emit();
legend.text = legends[cb_obj.value];
source.selected.indices = [...source.selected.indices];
"""

_VIEW_JS = """
const k = names.indexOf(cb_obj.value), d = source.data;
d.x = d["x__" + k];
d.y = d["y__" + k];
source.change.emit();
const r = extents[k];
plot.x_range.setv({start: r[0], end: r[1], reset_start: r[0], reset_end: r[1]});
plot.y_range.setv({start: r[2], end: r[3], reset_start: r[2], reset_end: r[3]});
xaxis.axis_label = labels[k][0];
yaxis.axis_label = labels[k][1];
"""


def _as_text(values: pd.Series) -> list[str]:
    """Values as shown in the preview and the gallery: floats to 4 significant digits."""
    if pd.api.types.is_float_dtype(values):
        return ["" if pd.isna(v) else format(v, ".4g") for v in values]
    return values.astype(str).tolist()


def _extent(xy: np.ndarray) -> list[float]:
    """x and y limits with a 5% margin."""
    low, high = xy.min(axis=0), xy.max(axis=0)
    pad = np.maximum(high - low, 1e-9) * 0.05
    return [float(low[0] - pad[0]), float(high[0] + pad[0]), float(low[1] - pad[1]), float(high[1] + pad[1])]


def _shown_fields(metadata: pd.DataFrame, color_columns: list[str]) -> list[str]:
    first = [c for c in ("Metadata_StoreIndex", "Metadata_Plate", "Metadata_Well") if c in metadata]
    return (first + [c for c in color_columns if c not in first])[:12]


def map_layout(cell_map: CellMap, title: str = "", size: int = THUMBNAIL_SIZE, name: str = "map"):
    """The Bokeh layout of ``cell_map``: view and colour selectors, the scatter (pan, zoom, tap,
    lasso and box selection), the hover preview, the legend and the selection gallery. The plot is
    the Bokeh model named ``name`` (give each map of a page its own)."""
    from bokeh.layouts import column, row
    from bokeh.models import ColumnDataSource, CustomJS, Div, HoverTool, Range1d, Select
    from bokeh.plotting import figure

    columns = cell_map.color_columns
    schemes = {c: color_scheme(cell_map.metadata[c]) for c in columns}
    color = cell_map.color if cell_map.color in schemes else (columns[0] if columns else None)
    n = cell_map.n_points
    data: dict[str, object] = {c: _as_text(cell_map.metadata[c]) for c in cell_map.metadata.columns}
    for k, view in enumerate(cell_map.views):
        data[f"x__{k}"], data[f"y__{k}"] = view.xy[:, 0], view.xy[:, 1]
    data["x"], data["y"] = data["x__0"], data["y__0"]
    for c, (colors, _) in schemes.items():
        data[f"color__{c}"] = colors
    data["color"] = schemes[color][0] if color else ["#1f77b4"] * n
    if cell_map.thumbnails is not None:
        data["thumbnail"] = cell_map.thumbnails
    source = ColumnDataSource(data)
    extents = [_extent(view.xy) for view in cell_map.views]
    first = cell_map.views[0]
    plot = figure(title=title or None, width=640, height=560, output_backend="webgl", name=name,
                  tools="pan,wheel_zoom,box_zoom,lasso_select,box_select,tap,reset,save", active_drag="pan",
                  x_range=Range1d(*extents[0][:2]), y_range=Range1d(*extents[0][2:]),
                  x_axis_label=first.labels[0], y_axis_label=first.labels[1])
    plot.scatter("x", "y", source=source, size=7 if n <= 2000 else 5, fill_color="color", line_color=None,
                 fill_alpha=0.8, nonselection_fill_alpha=0.12, selection_line_color="black")
    preview = Div(text="<p>Hover over a point to see its cell.</p>", width=300, name=f"{name}-preview")
    legend = Div(text=schemes[color][1] if color else "", width=300, name=f"{name}-legend",
                 styles={"max-height": "260px", "overflow-y": "auto", "font-size": "11px"})
    gallery = Div(text="<p>Click a point or draw a lasso to show the cells here.</p>", width=940, name=f"{name}-gallery")
    color_select = Select(title="Colour by", value=color or "", options=columns, width=260, name=f"{name}-color")
    fields = _shown_fields(cell_map.metadata, columns)
    plot.add_tools(HoverTool(tooltips=None, callback=CustomJS(
        args={"source": source, "preview": preview, "fields": fields, "size": size}, code=_HOVER_JS)))
    source.selected.js_on_change("indices", CustomJS(
        args={"source": source, "gallery": gallery, "color": color_select, "limit": _GALLERY_LIMIT, "size": size},
        code=_SELECTION_JS))
    color_select.js_on_change("value", CustomJS(
        args={"source": source, "legend": legend, "legends": {c: s[1] for c, s in schemes.items()}}, code=_COLOR_JS))
    controls = [color_select]
    if len(cell_map.views) > 1:
        names = [view.name for view in cell_map.views]
        view_select = Select(title="Layout", value=names[0], options=names, width=260, name=f"{name}-view")
        view_select.js_on_change("value", CustomJS(args={
            "source": source, "plot": plot, "names": names, "extents": extents, "xaxis": plot.xaxis[0],
            "yaxis": plot.yaxis[0], "labels": [list(view.labels) for view in cell_map.views]}, code=_VIEW_JS))
        controls.insert(0, view_select)
    return column(row(*controls), row(plot, column(preview, legend)), gallery)


def _load_store(store: str | os.PathLike | CropStore | None) -> CropStore | None:
    if store is None or isinstance(store, CropStore):
        return store
    return CropStore(store)


def write_map(table: str | os.PathLike, out: str | os.PathLike, store: str | os.PathLike | None = None,
              color: str | None = None, method: str = "pca", max_points: int = MAX_POINTS, seed: int = 0,
              thumbnail_size: int = THUMBNAIL_SIZE) -> tuple[Path, CellMap]:
    """``explore map``: read ``table`` (Parquet or CSV), map it (:func:`table_map`) and write the
    self-contained page ``out``; returns its path and the map."""
    from morphospace.explore.report import Report
    from morphospace.io.tables import read_table

    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"{out}: the map is an HTML page; name it FILE.html")
    frame = read_table(table)
    cell_map = table_map(frame, _load_store(store), color, method, max_points, seed, thumbnail_size,
                         name=f"{Path(table).name} ({method.upper()})", where=str(table))
    report = Report(f"morphospace map: {Path(table).name}")
    unit = "cell" if "Metadata_StoreIndex" in frame else "row (a group of cells)"
    report.text(f"{cell_map.n_points:,} points, one per {unit}, laid out by {method.upper()} of the z-scored "
                f"features. Hover to see a point's crop; click, or draw with the lasso or box tool, to show a "
                f"selection below the map; pick a metadata column to colour by.")
    for note in cell_map.notes:
        report.text(note, note=True)
    report.interactive(map_layout(cell_map, size=thumbnail_size))
    return report.write(out), cell_map


def shared_cells_map(tables: dict[str, pd.DataFrame], store: CropStore | None = None, color: str | None = None,
                     method: str = "pca", max_points: int = MAX_POINTS, seed: int = 0,
                     thumbnail_size: int = THUMBNAIL_SIZE) -> CellMap:
    """One map of several tables of the same cells (CellProfiler features and embeddings, matched on
    ``Metadata_StoreIndex``, in the first table's order), one layout per table, switched in the page."""
    names = list(tables)
    for name in names:
        if "Metadata_StoreIndex" not in tables[name]:
            raise InputError(f"{name}: no Metadata_StoreIndex column, so its cells cannot be matched")
    shared = tables[names[0]]["Metadata_StoreIndex"]
    for name in names[1:]:
        shared = shared[shared.isin(tables[name]["Metadata_StoreIndex"])]
    notes: list[str] = []
    shared = _sampled(shared.to_frame(), max_points, seed, notes)["Metadata_StoreIndex"].to_numpy()
    if len(shared) < 3:
        raise InputError(f"{', '.join(names)}: fewer than 3 cells in every table")
    rows = {name: tables[name].drop_duplicates("Metadata_StoreIndex").set_index("Metadata_StoreIndex", drop=False)
            .loc[shared].reset_index(drop=True) for name in names}
    views = [map_view(rows[name], name, method, seed)[0] for name in names]
    first = rows[names[0]]
    metadata = first[[c for c in first.columns if str(c).startswith("Metadata_")]]
    thumbnails = _thumbnails(first, store, thumbnail_size, seed, names[0], notes)
    return CellMap(metadata, views, thumbnails, color or _default_color(_color_columns(metadata)), notes)
