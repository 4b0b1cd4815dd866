"""``evaluate moa | retrieval | clustering | generation``: score a profile or embedding table (or a
trained run's samples) and write the numbers (JSON, CSV) and figures (PNG) into an output folder.

Every JSON names its convention, so a number is never separated from how it was computed.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pydantic
from matplotlib.figure import Figure

from morphospace.config import Config
from morphospace.evaluate.clustering import (
    compare_embeddings, dendrogram_figure, evaluate_clustering, scatter_figure,
)
from morphospace.evaluate.moa import (
    BATCH, COMPOUND, CONCENTRATION, MOA, confusion_table, evaluate_moa, treatment_profiles,
)
from morphospace.evaluate.probe import probe_accuracy
from morphospace.evaluate.retrieval import moa_retrieval, replicate_retrieval
from morphospace.errors import InputError
from morphospace.explore.figures import save_figure
from morphospace.features.cellprofiler import feature_columns
from morphospace.features.profiles import finite_features
from morphospace.atomic import refuse_existing, write_json_atomic
from morphospace.io.tables import read_table, write_table

__all__ = [
    "MoAEvaluationConfig",
    "RetrievalConfig",
    "ClusteringConfig",
    "run_moa_evaluation",
    "run_retrieval_evaluation",
    "run_clustering_evaluation",
    "ProbeConfig",
    "run_probe_evaluation",
    "confusion_figure",
    "GenerationConfig",
    "run_generation_evaluation",
]

logger = logging.getLogger(__name__)

MOA_CONVENTION = (
    "1-nearest-neighbour by cosine over treatment profiles ({operation} of rows per {treatment}); control "
    "'{control}' is neither query nor neighbour; NSC excludes neighbours of the same compound, NSCB also of a "
    "shared batch (Metadata_Batch); 'accuracy' pools treatments, 'compound_accuracy' averages per-compound "
    "accuracies; nscb_multi_batch_moas drops MoAs whose treatments lie in one batch (BBBC021's 92-treatment "
    "convention), nscb keeps all (103)"
)


class AnnotationColumns(Config):
    """Which columns of the table hold the compound, its concentration, the MoA and the batch (for
    tables from other tools, e.g. pycytominer's ``Metadata_moa``)."""

    compound_column: str = COMPOUND
    concentration_column: str = CONCENTRATION
    moa_column: str = MOA
    batch_column: str = BATCH

    def canonical(self, table: pd.DataFrame, source: str = "the table") -> pd.DataFrame:
        """``table`` with these columns under morphospace's names; InputError naming ``source`` and
        the setting when the compound or MoA column is missing."""
        renames = {COMPOUND: self.compound_column, CONCENTRATION: self.concentration_column, MOA: self.moa_column,
                   BATCH: self.batch_column}
        for name, key in ((self.compound_column, "compound_column"), (self.moa_column, "moa_column")):
            if name not in table.columns:
                metadata = [c for c in table if str(c).startswith("Metadata_")]
                raise InputError(f"{source}: no column {name!r} (set {key}; --{key.replace('_', '-')} on the "
                                 f"command line); its metadata columns: {metadata}")
        moved = {given: canonical for canonical, given in renames.items() if given != canonical and given in table}
        return table.drop(columns=[c for c in moved.values() if c in table.columns]).rename(columns=moved)


class MoAEvaluationConfig(AnnotationColumns):
    """Treatment profiles and the MoA protocol."""

    operation: Literal["mean", "median"] = "mean"
    treatment: list[str] = [COMPOUND, CONCENTRATION]
    control: str = "DMSO"


class RetrievalConfig(AnnotationColumns):
    """copairs mAP settings."""

    operation: Literal["mean", "median"] = "mean"
    treatment: list[str] = [COMPOUND, CONCENTRATION]
    control: str = "DMSO"
    null_size: int = pydantic.Field(10000, ge=100)
    threshold: float = pydantic.Field(0.05, gt=0, lt=1)
    seed: int = 0


class ClusteringConfig(Config):
    """Clustering evaluation settings."""

    label: str = "Metadata_MoA"
    folds: int = pydantic.Field(5, ge=2)
    seed: int = 0
    pca_components: int | None = pydantic.Field(None, ge=2)
    scatter: Literal["pca", "umap"] = "pca"
    exclude_control: bool = pydantic.Field(True, description="drop rows whose label equals 'control'")
    control: str = "DMSO"


class ProbeConfig(Config):
    """Linear-probe and kNN evaluation settings (:mod:`morphospace.evaluate.probe`)."""

    label: str = "Metadata_MoA"
    group: str | None = pydantic.Field(None, description="column whose values the folds keep apart (e.g. "
                                                         "Metadata_Compound); null: stratified folds of rows")
    folds: int = pydantic.Field(5, ge=2)
    k: int = pydantic.Field(10, ge=1, description="neighbours of the kNN vote")
    C: float = pydantic.Field(1.0, gt=0, description="inverse L2 strength of the logistic regression")
    seed: int = 0
    exclude_control: bool = pydantic.Field(False, description="drop rows whose label equals 'control'")
    control: str = "DMSO"


def _write_json(out_dir: Path, name: str, payload: dict[str, Any]) -> None:
    write_json_atomic(out_dir / name, payload)


def _save_figure(fig: Figure, path: Path) -> None:
    save_figure(fig, path)


def confusion_figure(confusion: pd.DataFrame, title: str) -> Figure:
    """Heat map of a true x predicted MoA count table."""
    size = 2.5 + 0.45 * len(confusion)
    fig = Figure(figsize=(size + 1.5, size), layout="tight")
    ax = fig.subplots()
    image = ax.imshow(confusion.to_numpy(), cmap="Blues")
    ax.set_xticks(range(len(confusion.columns)), confusion.columns, rotation=75, ha="right", fontsize=7)
    ax.set_yticks(range(len(confusion.index)), confusion.index, fontsize=7)
    for (i, j), count in np.ndenumerate(confusion.to_numpy()):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=6,
                    color="white" if count > confusion.to_numpy().max() / 2 else "black")
    ax.set_xlabel("predicted MoA")
    ax.set_ylabel("true MoA")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04)
    return fig


def _scored_table(table: pd.DataFrame, out_dir: str | os.PathLike | None, result: str, source: str,
                  overwrite: bool) -> tuple[pd.DataFrame, list[str]]:
    """``table`` with only finite features, and the names of the features left out for NaN or
    infinite values, after checking that ``out_dir/result`` may be written."""
    if out_dir is not None:
        refuse_existing(Path(out_dir) / result, overwrite)
    scored = finite_features(table, source=source)
    kept = set(feature_columns(scored))
    return scored, [c for c in feature_columns(table) if c not in kept]


def run_moa_evaluation(
    table: pd.DataFrame, out_dir: str | os.PathLike | None = None, config: MoAEvaluationConfig | None = None,
    source: str = "the table", overwrite: bool = False,
) -> dict[str, Any]:
    """NSC / NSCB of a profile table (wells or cells); returns the JSON-ready result and, with
    ``out_dir``, writes ``moa.json``, ``moa_predictions.csv``, ``moa_per_moa.csv`` and
    ``figures/moa_confusion_<convention>.png``. Features with non-finite values are left out (named
    in a warning and in ``dropped_features``)."""
    config = config or MoAEvaluationConfig()
    table, dropped = _scored_table(config.canonical(table, source), out_dir, "moa.json", source, overwrite)
    profiles = treatment_profiles(table, config.treatment, config.operation)
    results = evaluate_moa(profiles, control=config.control)
    payload: dict[str, Any] = {
        "convention": MOA_CONVENTION.format(operation=config.operation, treatment=" + ".join(config.treatment),
                                            control=config.control),
        "config": config.to_dict(),
        **{name: result.summary() for name, result in results.items()},
        "per_moa": {name: result.per_moa().set_index(MOA).to_dict(orient="index") for name, result in results.items()},
        "dropped_features": dropped,
    }
    if "nscb" not in results:
        payload["nscb_note"] = (f"NSCB not computed: no {config.batch_column} column" if BATCH not in profiles.columns
                                else "NSCB not computed: no treatment has a neighbour outside its batches")
    if out_dir is not None:
        out_dir = Path(out_dir)
        predictions = pd.concat([r.predictions.assign(evaluation=name) for name, r in results.items()])
        write_table(predictions, out_dir / "moa_predictions.csv")
        write_table(pd.concat([r.per_moa().assign(evaluation=name) for name, r in results.items()]),
                    out_dir / "moa_per_moa.csv")
        for name, result in results.items():
            fig = confusion_figure(confusion_table(result), f"{result.convention}: accuracy {result.accuracy:.1%}")
            _save_figure(fig, out_dir / "figures" / f"moa_confusion_{name}.png")
        _write_json(out_dir, "moa.json", payload)
    return payload


def run_retrieval_evaluation(
    table: pd.DataFrame, out_dir: str | os.PathLike | None = None, config: RetrievalConfig | None = None,
    source: str = "the table", overwrite: bool = False,
) -> dict[str, Any]:
    """Same-MoA mAP over treatment profiles and replicate-vs-control mAP over the rows (wells) of
    ``table``; with ``out_dir`` writes ``retrieval.json`` and per-group CSVs. Features with
    non-finite values are left out (named in a warning and in ``dropped_features``)."""
    config = config or RetrievalConfig()
    table, dropped = _scored_table(config.canonical(table, source), out_dir, "retrieval.json", source, overwrite)
    profiles = treatment_profiles(table, config.treatment, config.operation)
    common = dict(control=config.control, null_size=config.null_size, threshold=config.threshold, seed=config.seed)
    results, notes = {}, {}
    moa_pairs = profiles[profiles[MOA].notna() & (profiles[COMPOUND] != config.control)]
    if moa_pairs.groupby(MOA)[COMPOUND].nunique().max() > 1:
        results["moa"] = moa_retrieval(profiles, **common)
    else:
        notes["moa"] = "not computed: no MoA has two compounds"
    treated = table[table[COMPOUND] != config.control]
    if (treated.groupby(config.treatment).size() > 1).any():
        results["replicates"] = replicate_retrieval(table, tuple(config.treatment), **common)
    else:
        notes["replicates"] = "not computed: no treatment has replicate rows"
    payload = {
        "convention": (f"copairs mAP, cosine similarity; p-values from a {config.null_size}-draw null, "
                       f"Benjamini-Hochberg corrected; retrieved = corrected p < {config.threshold}"),
        "config": config.to_dict(),
        **{name: result.summary() for name, result in results.items()},
        **({"notes": notes} if notes else {}),
        "dropped_features": dropped,
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        for name, result in results.items():
            write_table(result.per_group, out_dir / f"retrieval_{name}.csv")
        _write_json(out_dir, "retrieval.json", payload)
    return payload


def _without_controls(table: pd.DataFrame, config: ClusteringConfig | ProbeConfig) -> pd.DataFrame:
    """``table`` without the rows labelled ``config.control`` when ``config.exclude_control``."""
    if config.exclude_control and config.label in table.columns:
        return table[table[config.label] != config.control]
    return table


def run_clustering_evaluation(
    table: pd.DataFrame, out_dir: str | os.PathLike | None = None, config: ClusteringConfig | None = None,
    source: str = "the table", overwrite: bool = False,
) -> dict[str, Any]:
    """SVM cross-validation and clustering metrics of ``table`` by ``config.label``; with
    ``out_dir`` writes ``clustering.json``, ``clustering_metrics.csv`` and dendrogram / scatter PNGs.
    Features with non-finite values are left out (named in a warning and in ``dropped_features``).
    InputError naming ``source`` when the label column is missing."""
    config = config or ClusteringConfig()
    if config.label not in table.columns:
        metadata = [c for c in table.columns if str(c).startswith("Metadata_")]
        raise InputError(f"{source}: no label column {config.label!r} (choose one: --label NAME); its metadata "
                         f"columns: {metadata}")
    table, dropped = _scored_table(table, out_dir, "clustering.json", source, overwrite)
    table = _without_controls(table, config)
    result = evaluate_clustering(table, config.label, config.folds, config.seed, config.pca_components)
    payload = {
        "convention": ("features z-scored; SVM (RBF) stratified k-fold accuracy; K-means (Euclidean) with k = "
                       "number of labels and k = 2; agglomerative (cosine, average linkage) with k = number of "
                       "labels; homogeneity/completeness/V-measure against the labels; Davies-Bouldin and "
                       "silhouette in the clustering's metric"),
        "config": config.to_dict(),
        **result.summary(),
        "dropped_features": dropped,
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_table(result.metrics.rename_axis("metric").reset_index(), out_dir / "clustering_metrics.csv")
        _save_figure(dendrogram_figure(table, config.label, seed=config.seed), out_dir / "figures" / "dendrogram.png")
        _save_figure(scatter_figure(table, config.label, config.scatter, config.seed),
                     out_dir / "figures" / f"scatter_{config.scatter}.png")
        _write_json(out_dir, "clustering.json", payload)
    return payload


def run_probe_evaluation(
    table: pd.DataFrame, out_dir: str | os.PathLike | None = None, config: ProbeConfig | None = None,
    source: str = "the table", overwrite: bool = False,
) -> dict[str, Any]:
    """Linear-probe and kNN accuracy of ``table``'s features predicting ``config.label``; with
    ``out_dir`` writes ``probe.json``. Features with non-finite values are left out (named in
    ``dropped_features``). InputError naming ``source`` when a column is missing."""
    config = config or ProbeConfig()
    for key, column in (("label", config.label), ("group", config.group)):
        if column is not None and column not in table.columns:
            metadata = [c for c in table.columns if str(c).startswith("Metadata_")]
            raise InputError(f"{source}: no {key} column {column!r} (choose one: --{key} NAME); its metadata "
                             f"columns: {metadata}")
    table, dropped = _scored_table(table, out_dir, "probe.json", source, overwrite)
    table = _without_controls(table, config)
    result = probe_accuracy(table, config.label, config.folds, config.group, config.k, config.C, config.seed)
    payload = {
        "convention": ("features z-scored on each training fold; linear probe = L2 logistic regression; kNN = "
                       "similarity-weighted vote of the k nearest rows by cosine distance; mean and SD over "
                       + ("stratified folds that keep each group on one side" if config.group else
                          "stratified folds of rows") + "; chance = share of the commonest label"),
        "config": config.to_dict(),
        **result.summary(),
        "dropped_features": dropped,
    }
    if out_dir is not None:
        _write_json(Path(out_dir), "probe.json", payload)
    return payload


def run_embedding_comparison(
    tables: dict[str, str | os.PathLike], out_dir: str | os.PathLike | None = None,
    config: ClusteringConfig | None = None, clustering: str = "K-means (k=2)", overwrite: bool = False,
) -> pd.DataFrame:
    """Several embeddings of the same samples side by side, laid out like Table 6.1 of the
    whole-image thesis (:func:`~morphospace.evaluate.clustering.compare_embeddings`): ``tables``
    maps a name to a table file (one row per field or sample); each is scored by ``config.label``
    as :func:`run_clustering_evaluation` scores one (non-finite features left out, control rows
    dropped). Returns the metrics x embedders frame; with ``out_dir`` writes
    ``embedding_comparison.csv``. InputError names a file that is missing or lacks the label."""
    config = config or ClusteringConfig()
    if len(tables) < 1:
        raise InputError("no embedding table to compare: give one or more NAME=TABLE")
    if out_dir is not None:
        refuse_existing(Path(out_dir) / "embedding_comparison.csv", overwrite)
    scored = {}
    for name, path in tables.items():
        scored[name] = _without_controls(finite_features(read_table(path, required=[config.label]), source=str(path)),
                                         config)
    comparison = compare_embeddings(scored, config.label, clustering, config.folds, config.seed, config.pca_components)
    if out_dir is not None:
        write_table(comparison.rename_axis("metric").reset_index(), Path(out_dir) / "embedding_comparison.csv")
    return comparison


class GenerationConfig(Config):
    """``evaluate generation``: how many cells, which extractor, which extra checks."""

    n: int = pydantic.Field(1000, ge=10, description="generated and real crops compared")
    seed: int = 0
    extractor: str | None = pydantic.Field(
        None, description="in-domain FID extractor file; trained on the store's crops and saved there when missing")
    extractor_labels: str | None = pydantic.Field(
        None, description="store column the extractor learns to classify (--labels); None: Metadata_Compound when the "
                          "store has 2 or more compounds, else self-supervised (contrastive) training")
    extractor_epochs: int = pydantic.Field(15, ge=1)
    extractor_max_cells: int = pydantic.Field(5000, ge=10)
    inception_weights: str | None = pydantic.Field(None, description="local InceptionV3 weights (torch-fidelity)")
    feature_set: Literal["fast", "full"] = "fast"
    feature_cells: int = pydantic.Field(300, ge=10, description="crops per set measured with CellProfiler")
    nucleus_channel: str = pydantic.Field(
        "auto", description="channel to segment nuclei in for the CellProfiler features; auto: chosen from the "
                            "channel names, as in features")
    cytoplasm_channels: list[str] = pydantic.Field(
        ["Actin", "Tubulin"], description="channels to segment cells in; without any, nuclei only are measured")
    truth: str | None = pydantic.Field(
        None, description="truth folder of the simulated screen the run's store was prepared from (cp2image runs: "
                          "correlations of features with the simulator's exact nucleus area, DNA level, cell area)")
    condition_column: str | None = pydantic.Field(
        None, description="conditioned diffusion runs: cell-table column whose values are the conditions scored; "
                          "None: the column of the run's first categorical condition")
    per_condition: int = pydantic.Field(300, ge=2, description="conditioned diffusion runs: cells per condition")
    control: str = pydantic.Field("Metadata_Compound == 'DMSO'",
                                  description="conditioned diffusion runs: query of the control cells (one condition)")
    guidance_scale: float | None = pydantic.Field(
        None, ge=0, description="conditioned diffusion runs: guidance at sampling; None: the run's")
    sampling_steps: int | None = pydantic.Field(
        None, ge=1, description="conditioned diffusion runs: sampling steps; None: the run's")


def _real_crops(data, indices: np.ndarray) -> np.ndarray:
    """Crops of the run's store at ``indices`` as the model saw them, in [0, 1]."""
    from morphospace.models.base import to_unit_range

    dataset = data.dataset_for(data.store, indices, conditions=())
    return np.concatenate([to_unit_range(dataset.load(np.arange(s, min(s + 512, len(indices)))))
                           for s in range(0, len(indices), 512)])


def _random_crops(data, rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray | None:
    """Up to ``n`` crops (k, C, H, W) in [0, 1] drawn at random from the store ``rows`` of the run's
    data module ``data`` (None when ``rows`` is empty), in the order drawn, so that any first few are a
    random sample whatever the store's order (a store sorted by class shows every class)."""
    picks = rng.choice(rows, min(n, len(rows)), replace=False)
    if not len(picks):
        return None
    order = np.argsort(picks)  # read in store order, return in drawn order
    return _real_crops(data, picks[order])[np.argsort(order)]


def _extractor_labels(config: GenerationConfig, store) -> str | None:
    """The store column the FID extractor learns to classify, or None for self-supervised training
    (see :attr:`GenerationConfig.extractor_labels`)."""
    cells = store.cells
    if config.extractor_labels is None:
        return COMPOUND if COMPOUND in cells.columns and cells[COMPOUND].nunique() >= 2 else None
    if config.extractor_labels not in cells.columns:
        metadata = [c for c in cells.columns if str(c).startswith("Metadata_")]
        raise InputError(f"{store.path}: no column {config.extractor_labels!r} to train the FID extractor on "
                         f"(extractor_labels, --labels); its metadata columns: {metadata}")
    if cells[config.extractor_labels].nunique() < 2:
        raise InputError(f"{store.path}: column {config.extractor_labels!r} holds fewer than 2 labels; the FID "
                         "extractor needs 2 or more to learn from (omit --labels to train it self-supervised)")
    return config.extractor_labels


def _extractor_key(data, store, labels: str | None) -> dict[str, Any]:
    """What an extractor's inputs depend on; a cached extractor is reused only for the same key."""
    return {"store": str(store.path.resolve()), "channels": data.image_channels,
            "crop_size": data.config.crop_size, "normalization": data.config.normalization.to_dict(),
            "labels": labels}


def _extractor_training(labels: str | None) -> dict[str, Any]:
    """How the FID extractor learned, for the JSON."""
    if labels is None:
        return {"objective": "self-supervised: contrastive (NT-Xent) on two augmented views of each crop",
                "labels": None}
    return {"objective": f"classification of {labels}", "labels": labels}


def _extractor(config: GenerationConfig, data, store, run_dir: Path):
    """The run's FID extractor (loaded when cached for the same inputs, else trained and saved), its
    path and how it learned."""
    from morphospace.models.extractor import load_feature_extractor, save_feature_extractor, train_feature_extractor

    labels = _extractor_labels(config, store)
    key = _extractor_key(data, store, labels)
    name = f"{store.path.name}_{len(key['channels'])}ch_{data.crop_shape[-1]}px_{labels or 'self-supervised'}.pt"
    default = Path(run_dir).parent / "extractors" / name
    path = Path(config.extractor) if config.extractor else default
    key_path = path.with_name(path.name + ".json")
    if path.is_file():
        saved = json.loads(key_path.read_text()) if key_path.is_file() else None
        if saved is not None and saved != key:
            raise InputError(f"{path}: this FID extractor was trained on other inputs ({saved}); this run needs "
                             f"{key}. Give another extractor path so that scores stay comparable")
        return load_feature_extractor(path), path, _extractor_training(labels)
    rng = np.random.default_rng(config.seed)
    picks = np.sort(rng.choice(len(store), min(config.extractor_max_cells, len(store)), replace=False))
    targets = store.cells[labels].astype(str).to_numpy()[picks] if labels is not None else None
    logger.info("training the in-domain FID extractor on %d crops (%s) -> %s", len(picks),
                f"labels: {labels}" if labels else "self-supervised", path)
    extractor = train_feature_extractor(_real_crops(data, picks), targets, epochs=config.extractor_epochs,
                                        seed=config.seed, progress=False)
    save_feature_extractor(extractor, path)
    write_json_atomic(key_path, key)
    return extractor, path, _extractor_training(labels)


def run_generation_evaluation(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                              config: GenerationConfig | None = None, overwrite: bool = False) -> dict[str, Any]:
    """FID / KID (in-domain extractor, and InceptionV3 when its weights are given), CellProfiler
    feature distances and the memorisation check of a run's samples against real crops of its store;
    writes ``generation.json`` and figures into ``out_dir`` (default ``RUN/evaluation``). A
    ``cp2image`` run is scored on what its cells keep of their features instead (see
    :mod:`morphospace.workflows.cp2image_evaluation`), a conditioned ``diffusion`` run overall and
    per condition (see :mod:`morphospace.workflows.diffusion_evaluation`)."""
    out_dir = Path(out_dir) if out_dir is not None else Path(run_dir) / "evaluation"
    refuse_existing(out_dir / "generation.json", overwrite)
    import torch

    from morphospace.evaluate import generation
    from morphospace.models.base import to_unit_range
    from morphospace.models.run import load_run

    config = config or GenerationConfig()
    run = load_run(run_dir, "evaluate", "generation")
    if run.config.model.family == "cp2image":
        from morphospace.workflows.cp2image_evaluation import run_cp2image_evaluation

        return run_cp2image_evaluation(run, out_dir, config)
    if run.config.model.family == "diffusion" and run.module.conditioned:
        from morphospace.workflows.diffusion_evaluation import run_diffusion_evaluation

        return run_diffusion_evaluation(run, out_dir, config)
    if config.truth is not None:
        logger.warning("truth %s not used: only cp2image runs are scored against the simulator's truth", config.truth)
    model, data = run.module, run.data
    store = data.store
    rng = np.random.default_rng(config.seed)
    training = data.indices("train")
    held_out = np.concatenate([data.indices("test"), data.indices("val")])
    real = _random_crops(data, training, config.n, rng)
    holdout = _random_crops(data, held_out, config.n, rng)
    fake = np.concatenate([to_unit_range(model.sample(min(256, config.n - s), torch.Generator().manual_seed(config.seed + s)))
                           for s in range(0, config.n, 256)])
    extractor, extractor_path, extractor_training = _extractor(config, data, store, Path(run_dir))
    payload: dict[str, Any] = {
        "convention": ("real = random crops of the run's training split, generated = prior samples, both in [0, 1]; "
                       "FID/KID on the named extractor's embedding, trained as extractor_training says (compare "
                       "scores only for the same extractor; KID subsets of half the crops); feature distances: "
                       "Wasserstein per CellProfiler feature in units of the real SD, both sets segmented the same way, "
                       "of the objects the channels outline; memorisation: distance of each generated crop to its nearest training "
                       "crop in the extractor's embedding, against held-out real crops (the test and validation "
                       "splits) or, without any, training crops leave-one-out"),
        "config": config.to_dict(), "extractor_path": str(extractor_path), "extractor_training": extractor_training,
        "in_domain": generation.fid_kid(real, fake, extractor, kid_subset_size=max(2, len(real) // 2)),
    }
    try:
        payload["inception"] = generation.inception_fid_kid(real, fake, config.inception_weights,
                                                            kid_subset_size=max(2, len(real) // 2))
    except InputError as exc:
        payload["inception"] = f"InceptionV3 not available: {exc}"
    channels = data.image_channels
    k = min(config.feature_cells, config.n)
    distances = generation.feature_distances(real[:k], fake[:k], channels, feature_set=config.feature_set,
                                             nucleus_channel=config.nucleus_channel,
                                             cytoplasm_channels=config.cytoplasm_channels, source=str(store.path))
    payload["feature_distances"] = generation.summarize_feature_distances(distances)
    memorisation = generation.nearest_real_neighbours(real, fake, holdout, extractor)
    payload["memorisation"] = {k: v for k, v in memorisation.items() if not isinstance(v, np.ndarray)}
    write_table(distances.reset_index(names="feature"), out_dir / "generation_feature_distances.csv")
    _save_figure(_real_vs_generated_figure(real, fake, channels, memorisation), out_dir / "figures" / "real_vs_generated.png")
    _write_json(out_dir, "generation.json", payload)
    return payload


def _real_vs_generated_figure(real: np.ndarray, fake: np.ndarray, channels: list[str], memorisation: dict) -> Figure:
    from morphospace.explore.latent import image_rows_figure

    n = min(8, len(memorisation["example_nearest"]), len(fake))
    rows = np.stack([real[:n], fake[:n], real[np.asarray(memorisation["example_nearest"][:n])]])
    return image_rows_figure(rows, channels, row_labels=["real", "generated", "nearest real\nto generated"],
                             title="Real crops, generated crops, and each generated crop's nearest training crop")
