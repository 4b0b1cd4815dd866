"""``evaluate generation`` of a ``cp2image`` run: what the generated cells keep of the features they
were generated from.

Cells of the run's held-out split (test, else validation) are generated from their rows of the
feature table and measured again with the settings that table was measured with (its ``OUT.json``);
the real crops of the same cells are measured the same way, a ceiling of what the measurement alone
keeps (centre crop, normalisation, segmentation). With ``truth`` (a simulated screen's truth
folder), the same cells are also scored against the simulator's exact nucleus area, DNA level and
cell area (block ``simulator_truth``). Written into the output folder: ``generation.json``,
``cp2image_feature_correlations.csv`` and figures under ``figures/``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from morphospace.atomic import write_json_atomic
from morphospace.data.conditions import STORE_INDEX
from morphospace.errors import InputError
from morphospace.evaluate import cp2image as scores
from morphospace.evaluate.moa import COMPOUND, MOA
from morphospace.explore.figures import save_figure
from morphospace.features.cellprofiler import OBJECTS, angular_period
from morphospace.io.tables import read_table, write_table
from morphospace.models.run import Run
from morphospace.simulate.truth import truth_for_crops

if TYPE_CHECKING:
    from morphospace.workflows.evaluation import GenerationConfig

__all__ = ["run_cp2image_evaluation", "measurement_settings", "held_out_rows", "measure_generated"]

logger = logging.getLogger(__name__)

CONVENTION = (
    "held-out cells (split named under feature_correlation.split) generated from their feature-table rows; generated "
    "images mapped back to the table's intensity scale (inverse of the run's normalisation, then the table's "
    "intensity_scale) and re-measured with the table's cp_measure settings (segmented crop by crop); Pearson and "
    "Spearman r per feature between the table value and the re-measured value, over cells; share_r_above_0_5 and "
    "median_r over features with a defined r (constant or too few finite pairs: listed under undefined); "
    "measurement_ceiling: the same for the cells' real crops as the model saw them; FID/KID: generated cells against "
    "random training crops on the in-domain extractor of the GAN/VAE evaluation; sweeps: Spearman r of the "
    "re-measured swept feature against the requested value; nsc: 1-NN MoA over treatment means of cells "
    "standardised on their DMSO cells, generated (re-measured) vs real (feature table) profiles of the same cells"
)


def measurement_settings(table_path: Path, fallback: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The cp_measure settings of the feature table at ``table_path`` (``feature_set``, ``objects``,
    ``nucleus_channel``, ``cytoplasm_channels``, ``channels``, ``intensity_scale``) from its
    ``OUT.json``, and where they came from; ``fallback`` (with ``intensity_scale`` None) when the
    table has no such file."""
    sidecar = table_path.with_name(table_path.name + ".json")
    if not sidecar.is_file():
        logger.warning("%s: no %s beside it; re-measuring with the evaluation's settings %s", table_path,
                       sidecar.name, fallback)
        return {**fallback, "intensity_scale": None}, "evaluation config (the feature table has no OUT.json)"
    try:
        report = json.loads(sidecar.read_text())
        config = report["config"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{sidecar}: not a features report ({exc})") from None
    return {"feature_set": config.get("feature_set", "fast"), "objects": config.get("objects", list(OBJECTS)),
            "nucleus_channel": report.get("nucleus_channel") or config.get("nucleus_channel", "auto"),
            "cytoplasm_channels": config.get("cytoplasm_channels", ["Actin", "Tubulin"]),
            "channels": report.get("channels"), "intensity_scale": report.get("intensity_scale")}, str(sidecar)


def held_out_rows(data) -> tuple[np.ndarray, str]:
    """Store rows of the run's test split, else of its validation split, and which; InputError when
    both are empty."""
    for split in ("test", "val"):
        rows = data.indices(split)
        if len(rows):
            return rows, split
    raise InputError(f"{data.config.store}: the run has no test or validation cells to evaluate on; train with "
                     "data.split.test > 0")


def _feature_table(run: Run) -> tuple[Path, pd.DataFrame]:
    name = run.config.model.condition
    condition = run.config.data.conditions.get(name)
    if condition is None or condition.kind != "features":
        raise InputError(f"{run.path}: model.condition {name!r} is not a data.conditions entry of kind features")
    path = Path(condition.table)
    return path, read_table(path).set_index(STORE_INDEX, drop=False)


def _image_scale(settings: dict[str, Any], channels: list[str]) -> list[float] | None:
    """The table's intensity scale of each image channel, or None when it is not known for all."""
    scale, measured = settings.get("intensity_scale"), settings.get("channels")
    if scale is None or measured is None or any(c not in measured for c in channels):
        return None
    return [float(scale[measured.index(c)]) for c in channels]


def measure_generated(images: np.ndarray, run: Run, settings: dict[str, Any]) -> tuple[pd.DataFrame, bool]:
    """Re-measured features of images (N, C, H, W) in [0, 1] of the loaded ``run``'s normalised range
    with the table's ``settings`` (see :func:`measurement_settings`), and whether they were mapped
    back to the table's intensity scale."""
    normalization = json.loads((run.path / "normalization.json").read_text())
    scale = _image_scale(settings, run.data.image_channels)
    exact = False
    if scale is not None:
        images, exact = scores.to_feature_scale(images, normalization, scale)
    table = scores.remeasure(images, run.data.image_channels, settings["feature_set"], settings["objects"],
                             settings["nucleus_channel"] or "auto", settings["cytoplasm_channels"], str(run.path))
    return table, exact


def _correlation_block(requested: pd.DataFrame, remeasured: pd.DataFrame, figures: Path | None,
                       name: str) -> tuple[dict[str, Any], pd.DataFrame]:
    table = scores.feature_correlations(requested, remeasured)
    if figures is not None:
        save_figure(scores.correlation_histogram_figure(table), figures / f"{name}_histogram.png")
        save_figure(scores.correlation_scatter_figure(requested, remeasured, table), figures / f"{name}_scatter.png")
    return scores.summarize_correlations(table), table


def _sweeps(run: Run, settings: dict[str, Any], figures: Path) -> dict[str, Any]:
    """Sweep response of every ``RUN/figures/sweep_*.npz`` (``images`` (R, S, C, H, W), ``values``
    (S,) requested, standardised, and ``values_raw`` in the feature's units, which angles are
    compared in, ``feature``, ``others``), keyed by feature (``"<feature> (others follow)"`` for
    sweeps whose other features followed), with a figure of up to 4 rows into ``figures``."""
    from morphospace.explore.latent import image_rows_figure

    responses, notes = {}, {}
    for path in sorted((run.path / "figures").glob("sweep_*.npz")):
        with np.load(path) as saved:
            images, values = saved["images"], saved["values"]
            feature = str(saved["feature"]) if "feature" in saved else path.stem.removeprefix("sweep_")
            follow = "others" in saved and str(saved["others"]) == "follow"
            period = angular_period(feature) if "values_raw" in saved else None
            compared = saved["values_raw"] if period is not None else values
        key = f"{feature} (others follow)" if follow else feature
        steps = len(values)
        flat = images.reshape(-1, *images.shape[-3:])
        remeasured, _ = measure_generated(flat, run, settings)
        if feature not in remeasured.columns:
            notes[key] = "not re-measurable from the generated images' channels and objects"
            continue
        measured = remeasured[feature].to_numpy().reshape(-1, steps)
        requested = np.broadcast_to(np.asarray(compared, dtype=float), measured.shape)
        responses[key] = scores.sweep_response(requested, measured, period)
        rows = flat.reshape(-1, steps, *flat.shape[1:])[:4]
        labels = [f"{v:.2g}\n→ {m:.3g}" for v, m in zip(values, np.nanmean(measured, axis=0))]
        save_figure(image_rows_figure(rows, run.data.image_channels, column_labels=labels,
                                      title=f"{key}: requested (standardised) → re-measured, Spearman "
                                            f"{responses[key]:.2f}"), figures / f"{path.stem}.png")
    summary = scores.summarize_sweeps(responses) if responses else {"per_feature": {}}
    return {**summary, **({"notes": notes} if notes else {})}


def _nsc(requested: pd.DataFrame, remeasured: pd.DataFrame) -> dict[str, Any] | str:
    metadata = [c for c in requested.columns if str(c).startswith("Metadata_")]
    if COMPOUND not in metadata or MOA not in metadata:
        return f"not computed: the feature table has no {COMPOUND} and {MOA} columns"
    generated = pd.concat([requested[metadata].reset_index(drop=True), remeasured.reset_index(drop=True)], axis=1)
    try:
        return scores.nsc_generated_vs_real(requested.reset_index(drop=True), generated)
    except InputError as exc:
        return f"not computed: {exc}"


TRUTH_CONVENTION = (
    "the held-out cells of feature_correlation, each linked to the simulated cell whose truth nucleus lies under "
    "its segmented nucleus centre; cells on none, and cells of several truth nuclei (each of their nuclei is its "
    "own crop, while the truth sums them), are left out: n per pair counts the linked one-nucleus cells with finite "
    "values; Pearson and Spearman r over cells between the simulator's exact truth (Metadata_TruthNucleusArea "
    "and Metadata_TruthCellArea in field pixels, Metadata_TruthDNALevel the relative DNA brightness rendered) and "
    "the feature: generated = re-measured on the image generated from the cell's features, real = the feature "
    "table's value for the real cell (the reference: what the measurement of real cells keeps of the truth), "
    "real_remeasured = re-measured on the real crop as the model saw it; pairs whose feature the run's table or "
    "re-measurement lacks are listed under skipped"
)


def _simulator_truth(truth: pd.DataFrame, truth_dir: str, requested: pd.DataFrame, remeasured: pd.DataFrame,
                     real_remeasured: pd.DataFrame) -> dict[str, Any]:
    """The ``simulator_truth`` block: ``truth`` rows (from :func:`~morphospace.simulate.truth.truth_for_crops`)
    against the same cells' features, all in the same row order."""
    single = (truth["Metadata_NucleiCount"] == 1).to_numpy()
    measured = {"generated": remeasured, "real": requested, "real_remeasured": real_remeasured}
    correlations = scores.truth_correlations(truth.reset_index(drop=True).where(pd.Series(single)),
                                             {k: v.reset_index(drop=True) for k, v in measured.items()})
    return {"convention": TRUTH_CONVENTION, "truth": str(truth_dir), "n_cells": len(truth),
            "n_matched": int(truth["Metadata_CellId"].notna().sum()), "n_one_nucleus": int(single.sum()),
            **correlations}


def _panel(run: Run, real: np.ndarray, fake: np.ndarray, figures: Path) -> None:
    from morphospace.explore.latent import image_rows_figure

    n = min(8, len(fake))
    save_figure(image_rows_figure(np.stack([real[:n], fake[:n]]), run.data.image_channels,
                                  row_labels=["real", "generated from\nits features"],
                                  title="Held-out cells and the cells generated from their CellProfiler features"),
                figures / "real_vs_generated.png")


def run_cp2image_evaluation(run: Run, out_dir: Path, config: GenerationConfig) -> dict[str, Any]:
    """Evaluate the loaded cp2image ``run`` with ``config`` (a
    :class:`~morphospace.workflows.evaluation.GenerationConfig`: ``n`` cells for FID/KID,
    ``feature_cells`` held-out cells re-measured); writes into ``out_dir`` and returns the JSON."""
    from morphospace.evaluate.generation import fid_kid
    from morphospace.workflows.cp2image import feature_names, generate_from_table
    from morphospace.workflows.evaluation import _extractor, _random_crops, _real_crops

    data, figures = run.data, out_dir / "figures"
    rng = np.random.default_rng(config.seed)
    table_path, table = _feature_table(run)
    settings, settings_source = measurement_settings(table_path, {
        "feature_set": config.feature_set, "objects": list(OBJECTS), "nucleus_channel": config.nucleus_channel,
        "cytoplasm_channels": config.cytoplasm_channels, "channels": None})
    rows, split = held_out_rows(data)
    rows = rows[np.isin(rows, table.index)]
    if not len(rows):
        raise InputError(f"{table_path}: no row for the run's {split} cells ({STORE_INDEX} does not match the store)")
    picks = np.sort(rng.choice(rows, min(config.feature_cells, len(rows)), replace=False))
    requested = table.loc[picks]
    truth = truth_for_crops(data.store.cells.iloc[picks], config.truth) if config.truth is not None else None
    start = time.perf_counter()
    fake = generate_from_table(run.path, requested, seed=config.seed)
    cells_per_s = len(fake) / (time.perf_counter() - start)
    real = _real_crops(data, picks)
    names = feature_names(run.path)
    remeasured, exact = measure_generated(fake, run, settings)
    real_remeasured, _ = measure_generated(real, run, settings)
    correlation, per_feature = _correlation_block(requested[names], remeasured, figures, "feature_correlation")
    ceiling, _ = _correlation_block(requested[names], real_remeasured, None, "")
    fid_rows = np.sort(rng.choice(rows, min(config.n, len(rows)), replace=False))
    fid_fake = generate_from_table(run.path, table.loc[fid_rows], seed=config.seed)
    fid_real = _random_crops(data, data.indices("train"), config.n, rng)
    extractor, extractor_path, extractor_training = _extractor(config, data, data.store, run.path)
    split_by = data.config.split.by
    payload: dict[str, Any] = {
        "convention": CONVENTION, "family": "cp2image", "config": config.to_dict(),
        "feature_table": str(table_path), "measurement_settings": {**settings, "source": settings_source},
        "intensity_mapped_to_feature_scale": exact,
        "feature_correlation": {**correlation, "split": split,
                                "split_by": f"{split_by} (held-out groups)" if split_by else "cells at random",
                                "n_cells": len(picks), "n_input_features": len(names)},
        "measurement_ceiling": {k: ceiling[k] for k in ("share_r_above_0_5", "median_r", "n_features",
                                                        "n_undefined")},
        "in_domain": fid_kid(fid_real, fid_fake, extractor, kid_subset_size=max(2, min(len(fid_real),
                                                                                       len(fid_fake)) // 2)),
        "extractor_path": str(extractor_path), "extractor_training": extractor_training,
        "sweeps": _sweeps(run, settings, figures),
        "nsc": _nsc(requested, remeasured),
        "generated_cells_per_s": cells_per_s,
    }
    if truth is not None:
        payload["simulator_truth"] = _simulator_truth(truth, config.truth, requested, remeasured, real_remeasured)
    write_table(per_feature.reset_index(), out_dir / "cp2image_feature_correlations.csv")
    _panel(run, real, fake, figures)
    write_json_atomic(out_dir / "generation.json", payload)
    return payload
