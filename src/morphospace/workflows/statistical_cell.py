"""The Statistical Cell's analyses of trained runs: ``evaluate coupling``, ``evaluate drug-shift``
and ``explore beta-sweep``.

- :func:`evaluate_coupling`: on the run's held-out cells (test split, else validation), each
  cell's target ELBO (or, with ``estimator: reference_only``, the squared error of the structure
  the decoder expects from the reference alone) with its own reference and with one reference
  channel swapped for another cell's of the same structure, repeated; the coupling of every
  structure to every reference channel (Eq 4) with bootstrap intervals. Writes ``coupling.json``,
  ``coupling.csv`` and ``figures/coupling.png`` into the output folder (default ``RUN/evaluation``).
- :func:`evaluate_drug_shift`: cells of the run's store chosen by two pandas queries, embedded in
  the reference and target latent spaces (posterior means, active dimensions); one permutation
  test per treated group x structure x latent space, Benjamini-Hochberg q-values. Writes
  ``drug_shift.json`` and ``drug_shift.csv``.
- :func:`run_beta_sweep`: one run of a config per beta (finished runs reused), then the held-out
  reconstruction error and KL of both models and their active dimensions; writes
  ``beta_sweep.json``, ``beta_sweep.csv`` and ``beta_sweep.png`` (the rate-distortion figure).

The statistics themselves live in :mod:`morphospace.evaluate.statistical_cell`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, NamedTuple, Sequence

import numpy as np
import pandas as pd
import pydantic
import torch
from matplotlib.figure import Figure

from morphospace.atomic import refuse_existing, write_json_atomic
from morphospace.config import Config
from morphospace.data.transforms import View, apply_view, flip_rotate_views, view_average
from morphospace.errors import InputError
from morphospace.evaluate import statistical_cell as stats
from morphospace.explore.figures import save_figure
from morphospace.io.tables import read_table, select_cells, write_table
from morphospace.models.registry import resolve_run_config
from morphospace.models.run import Run, load_run
from morphospace.models.statistical_cell import MODELS
from morphospace.models.training import RunConfig
from morphospace.models.vae import squared_error_per_cell
from morphospace.workflows.cp2image_evaluation import held_out_rows

__all__ = ["CouplingConfig", "DrugShiftConfig", "CouplingScores", "coupling_scores", "evaluate_coupling",
           "evaluate_drug_shift", "run_beta_sweep", "beta_sweep_figure", "beta_sweep_dir", "prepared_cells", "MODELS",
           "GIVEN_REFERENCE", "swapped_reference", "coupling_truth", "shift_truth_scores"]

GIVEN_REFERENCE = "target_given_reference"
BATCH_SIZE = 64
CONTROL = "\x00control"
"""Group name of the control cells inside :func:`evaluate_drug_shift` (never a value of ``--by``)."""


class CouplingConfig(Config):
    """``evaluate coupling``: swaps, cells, bootstrap."""

    repeats: int = pydantic.Field(8, ge=1, description="swap partners per cell and reference channel")
    cells: int = pydantic.Field(500, ge=2, description="held-out cells evaluated at most (a random subset)")
    bootstrap: int = pydantic.Field(1000, ge=1, description="bootstrap resamples of the interval")
    confidence: float = pydantic.Field(0.95, gt=0, lt=1)
    seed: int = 0
    truth: str | None = pydantic.Field(None, description="truth folder of a structures store (structures.parquet)")
    estimator: Literal["elbo", "reference_only"] = pydantic.Field(
        "elbo", description="elbo: the target ELBO (Eq 4); reference_only: minus the squared error of the structure "
                            "expected from the reference alone (runs trained with model.null_latent_share or "
                            "model.expected_target: unet)")
    views: Literal["none", "trained"] = pydantic.Field(
        "none", description="trained: average over the flips and quarter turns the run trained with (reference_only: "
                            "the expected structure; elbo: the ELBO of the viewed target and reference)")
    trim: float = pydantic.Field(
        0.0, ge=0, le=0.5, description="share of a structure's cells cut at each end of its per-cell couplings "
                                       "before averaging (0: the mean, as the paper; 0.5: the median)")


class DrugShiftConfig(Config):
    """``evaluate drug-shift``: groups, tests and the truth."""

    by: str = pydantic.Field("Metadata_Compound", description="cell-table column: one test per value among treated")
    permutations: int = pydantic.Field(1000, ge=1)
    alpha: float = pydantic.Field(0.05, gt=0, lt=1, description="level of 'significant': of the false discovery "
                                                                "rate (bh) or the family-wise error rate (holm)")
    correction: Literal["bh", "holm"] = pydantic.Field(
        "bh", description="multiple-test correction within each latent space: bh (Benjamini-Hochberg q-values) or "
                          "holm (Holm's adjusted p-values)")
    active_threshold: float | None = pydantic.Field(
        None, ge=0, description="nats of mean training KL for an active dimension; null: the model's")
    seed: int = 0
    given_reference: bool = pydantic.Field(
        False, description="also test the target space given the reference (latent target_given_reference: the "
                           "target code less its linear fit on the reference code, per structure)")
    truth: str | None = pydantic.Field(None, description="truth folder of a structures store (drugs.parquet)")


# ----------------------------------------------------------------------------- shared


def prepared_cells(run: Run, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Target (N, Ct, ...), reference (N, Cr, ...) and label indices (N,) (None without a label) of
    the store ``rows``, prepared as the run trained on them, without augmentation."""
    module, data = run.module, run.data
    dataset = data.dataset_for(data.store, rows)
    batches = [dataset.batch(np.arange(s, min(s + BATCH_SIZE, len(rows)))) for s in range(0, len(rows), BATCH_SIZE)]
    target = torch.cat([b["image"] for b in batches])
    reference = torch.cat([b[module.cfg.reference] for b in batches])
    labels = torch.cat([b[module.cfg.label] for b in batches]) if module.cfg.label else None
    return target, reference, labels


def _structure_names(run: Run, labels: torch.Tensor | None, n: int) -> np.ndarray:
    """(N,) structure name of every cell: its label, or the target channel(s) without a label."""
    if labels is None:
        return np.full(n, "+".join(run.data.image_channels), dtype=object)
    return np.asarray(run.module.structures, dtype=object)[labels.cpu().numpy()]


def _chunks(n: int) -> list[slice]:
    return [slice(s, min(s + BATCH_SIZE, n)) for s in range(0, n, BATCH_SIZE)]


def _out_dir(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None) -> Path:
    return Path(out_dir) if out_dir is not None else Path(run_dir) / "evaluation"


def _truth_table(truth_dir: str, name: str, columns: Sequence[str]) -> pd.DataFrame:
    """``truth_dir/name``; InputError naming the file when it is missing or lacks ``columns``."""
    return read_table(Path(truth_dir) / name, columns, "--truth takes the truth folder of a store written by "
                      "morphospace simulate --mode structures")


# ----------------------------------------------------------------------------- coupling


COUPLING_CONVENTION = (
    "held-out cells of the run (split named under split); per cell a score of the target given the reference and "
    "the structure label, by estimator: elbo (the paper's Eq 4) = -(squared error summed over pixels + KL) of the "
    "target model (posterior mean, or the mean over elbo_samples draws; the same draws for a cell's true and "
    "swapped evaluations); reference_only = -(squared error summed over pixels) between the target and the "
    "structure the decoder expects from the reference and label alone (its learnt null latent, "
    "model.null_latent_share), the form of the simulator's truth; with views (listed as [mirrored, quarter "
    "turns]) beyond the identity, target and reference are flipped and turned alike by each and the ELBO is "
    "averaged over them, or the expected structure is, each turned back first; for each reference channel in turn, "
    "that channel alone replaced by the same channel of another held-out cell of the same structure (repeats "
    "partners per cell, drawn uniformly, shared by the channels); coupling per cell = 1 - score(true) / "
    "mean score(swapped) (0 when the structure ignores the channel, towards 1 when it follows it), "
    "averaged over a structure's cells (with trim > 0, after cutting that share of its cells at each end of "
    "their couplings; config.trim), with a percentile bootstrap interval over cells of the same statistic; "
    "differential (never trimmed) = "
    "mean over cells of (c_first - c_second) / (c_first + c_second) of the first two channels (Eq 5); "
    "agreement (with truth): Spearman r between estimated and true couplings per channel and pooled over "
    "(structure, channel) pairs, ties of the truth at 0 resolved (spearman_ties_resolved)"
)
COUPLING_SCORE_NAMES = {"elbo": "ELBO", "reference_only": "error"}
"""The per-cell score of each estimator as the coupling figure's axis names it (reference_only: the
squared error of the structure expected from the reference)."""


def _views(run: Run, views: str, spatial: Sequence[int]) -> list[View]:
    """The identity alone (``views: none``) or every flip and turn the run trained with."""
    augment = run.config.data.augment
    return ([(False, 0)] if views == "none" else
            flip_rotate_views(augment.flips, augment.rot90, square=spatial[-1] == spatial[-2]))


def _target_scores(run: Run, target: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor | None,
                   seed: int, estimator: str, views: list[View]) -> np.ndarray:
    """(N,) score of each cell's target under ``reference`` (see :data:`COUPLING_CONVENTION`),
    evaluated in fixed chunks so that every cell gets the same posterior draws whatever its
    reference; averaged over ``views`` (reference_only: the expected structure, elbo: the score)."""
    module, scores = run.module, []
    for k, part in enumerate(_chunks(len(target))):
        part_labels = None if labels is None else labels[part]
        if estimator == "reference_only":
            expected = view_average(lambda viewed: module.expected_target(viewed, part_labels), reference[part],
                                    views)
            scores.append(-squared_error_per_cell(target[part].to(expected.device), expected).cpu().numpy())
        else:
            elbos = [module.elbo_per_cell(apply_view(target[part], v), apply_view(reference[part], v), part_labels,
                                          seed=seed + k, models=("target",))["target"].cpu().numpy() for v in views]
            scores.append(np.mean(elbos, axis=0))
    return np.concatenate(scores)


def coupling_truth(truth_dir: str, channels: Sequence[str]) -> pd.DataFrame:
    """The truth couplings as ``structure``, ``channel``, ``coupling`` rows (column
    ``coupling_<channel in lower case>`` of ``structures.parquet`` per channel)."""
    columns = {channel: f"coupling_{channel.lower()}" for channel in channels}
    return stats.truth_long(_truth_table(truth_dir, "structures.parquet", ["structure", *columns.values()]), columns)


def swapped_reference(reference: torch.Tensor, partners: np.ndarray, channel: int) -> torch.Tensor:
    """A copy of ``reference`` (N, Cr, ...) whose channel ``channel`` is each cell's partner's
    (``partners`` (N,) cell indices, :func:`~morphospace.evaluate.statistical_cell.draw_swap_partners`)."""
    other = reference.clone()
    other[:, channel] = reference[partners, channel]
    return other


class CouplingScores(NamedTuple):
    """The per-cell scores behind :func:`evaluate_coupling` (see :data:`COUPLING_CONVENTION`)."""

    rows: np.ndarray
    """(N,) held-out store rows drawn."""
    split: str
    """The split they were drawn from."""
    structures: np.ndarray
    """(N,) each cell's structure."""
    true: np.ndarray
    """(N,) each cell's score with its true reference."""
    swapped: dict[str, np.ndarray]
    """Per reference channel, (N, repeats) scores with that channel swapped for each partner's."""
    views: list[View]
    """The views the scores are averaged over."""


def coupling_scores(run: Run, config: CouplingConfig, run_dir: str | os.PathLike) -> CouplingScores:
    """:class:`CouplingScores` of ``run`` under ``config``. InputError for the reference_only
    estimator on a run that did not learn the structure expected from the reference alone
    (``model.null_latent_share`` 0 and no ``model.expected_target: unet``)."""
    rows, split = held_out_rows(run.data)
    rng = np.random.default_rng(config.seed)
    rows = np.sort(rng.choice(rows, min(config.cells, len(rows)), replace=False))
    target, reference, labels = prepared_cells(run, rows)
    structures = _structure_names(run, labels, len(rows))
    partners = stats.draw_swap_partners(len(rows), config.repeats, structures, config.seed)
    if config.estimator == "reference_only" and not run.module.cfg.learns_expected_target:
        raise InputError(f"{run_dir}: the reference_only coupling needs a run trained with model.null_latent_share "
                         "> 0 or model.expected_target: unet (either learns the structure expected from the "
                         "reference alone); this one was trained with neither: use --estimator elbo or train with "
                         "model.null_latent_share: 0.25")
    views = _views(run, config.views, target.shape[2:])
    true = _target_scores(run, target, reference, labels, config.seed, config.estimator, views)
    swapped: dict[str, np.ndarray] = {}
    for k, channel in enumerate(run.module.reference_channels):
        swapped[channel] = np.empty((len(rows), config.repeats))
        for r in range(config.repeats):
            other = swapped_reference(reference, partners[:, r], k)
            swapped[channel][:, r] = _target_scores(run, target, other, labels, config.seed, config.estimator, views)
    return CouplingScores(rows, split, structures, true, swapped, views)


def evaluate_coupling(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                      config: CouplingConfig | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Coupling of every structure to every reference channel of a ``statistical_cell`` run (see
    the module docstring); writes into ``out_dir`` (default ``RUN/evaluation``) and returns the
    JSON. InputError for a run of another family, a one-channel reference, a bad truth folder, or
    too few held-out cells of a structure to swap."""
    config = config or CouplingConfig()
    out_dir = _out_dir(run_dir, out_dir)
    refuse_existing(out_dir / "coupling.json", overwrite)
    run = load_run(run_dir, "evaluate", "coupling")
    channels = list(run.module.reference_channels)
    if len(channels) < 2:
        raise InputError(f"{run_dir}: the reference holds one channel ({channels[0]}); coupling swaps one reference "
                         "channel while keeping the others, so it needs a reference of two or more channels")
    truth = coupling_truth(config.truth, channels) if config.truth is not None else None
    rows, split, structures, true, swapped, views = coupling_scores(run, config, run_dir)
    table = stats.coupling_table(true, swapped, structures, config.bootstrap, config.confidence, config.seed,
                                 config.trim)
    first, second = (stats.coupling_per_cell(true, swapped[c]) for c in channels[:2])
    summary = stats.summary_name(config.trim)
    payload: dict[str, Any] = {
        "convention": COUPLING_CONVENTION, "run": str(run_dir), "config": config.to_dict(), "split": split,
        "n_cells": len(rows), "channels": channels, "estimator": config.estimator, "views": [list(v) for v in views],
        "summary": summary,
        "elbo_samples": run.module.cfg.elbo_samples,
        "coupling": table.to_dict(orient="records"),
        "differential": {"channels": channels[:2],
                         "per_structure": stats.differential_coupling(first, second, structures).to_dict()},
    }
    if truth is not None:
        agreement = stats.coupling_agreement(table, truth)
        payload["agreement"] = {"truth": config.truth, "per_channel": agreement.to_dict(orient="index")}
    write_table(table, out_dir / "coupling.csv")
    title = f"coupling on {len(rows)} {split} cells, {config.repeats} swaps per channel\n{summary} per structure"
    save_figure(stats.coupling_figure(table, truth, channels, title, COUPLING_SCORE_NAMES[config.estimator]),
                out_dir / "figures" / "coupling.png")
    write_json_atomic(out_dir / "coupling.json", payload)
    return payload


# ----------------------------------------------------------------------------- drug shifts


DRUG_SHIFT_CONVENTION = (
    "cells of the run's store chosen by the control and treated queries on its cell table (training cells "
    "included); embeddings: posterior means of the reference model (reference channels) and of the target model "
    "(structure given reference and label); active dimensions: mean KL per dimension over the last training "
    "epoch above active_threshold nats (all dimensions when none is, said under active_dimensions); one test "
    "per treated group (each value of 'by' among the treated cells) x structure x latent space, treated cells "
    "of the group against control cells of the same structure: Euclidean distance between the group "
    "centroids in the active dimensions, permutation p-value (labels shuffled; (1 + #null >= observed) / "
    "(1 + permutations)), p-values adjusted within each latent space (q_value: Benjamini-Hochberg q-values, "
    "or Holm's adjusted p-values with correction holm; config.correction), significant: q <= alpha; "
    "truth scores: the target space against drugs.parquet (a (drug, structure) pair is shifted when any of "
    "its rows is); the reference space: the simulator's drugs leave membrane and DNA alone, so every "
    "significant reference-space test is a false positive; with given_reference, a third space "
    "target_given_reference: the target code (active dimensions) less its least-squares fit with an intercept "
    "on the reference code (active dimensions), fitted per structure over every tested cell of it, all its "
    "dimensions used, scored against the truth as the target space is"
)


def _groups(cells: pd.DataFrame, control: str, treated: str, by: str, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Store rows of the control and treated cells and their group (N,): :data:`CONTROL` or the
    treated cell's value of ``by``."""
    if by not in cells.columns:
        raise InputError(f"{source}: no column {by!r} (--by) in the cell table; its columns: {list(cells.columns)}")
    is_control = select_cells(cells, control, "--control", source)
    is_treated = select_cells(cells, treated, "--treated", source)
    both = is_control & is_treated
    if both.any():
        raise InputError(f"{int(both.sum())} cell(s) of {source} match both --control {control!r} and --treated "
                         f"{treated!r}; the groups must not overlap")
    rows = np.flatnonzero(is_control | is_treated)
    groups = np.where(is_control[rows], CONTROL, cells[by].astype(str).to_numpy()[rows])
    return rows, groups


def _active_mask(run: Run, model: str, threshold: float | None) -> tuple[np.ndarray, dict[str, Any]]:
    """(K,) bool of the active dimensions of ``model`` and how they were chosen."""
    limit = run.module.cfg.active_threshold if threshold is None else threshold
    kl = getattr(run.module, f"{model}_kl_per_dimension").cpu().numpy()
    mask = kl > limit
    note = {"threshold_nats": limit, "n_active": int(mask.sum()), "n_dimensions": len(kl)}
    if not mask.any():
        return np.ones(len(kl), dtype=bool), {**note, "used": "all dimensions (none above the threshold)"}
    return mask, {**note, "used": "active dimensions"}


def _embeddings(run: Run, rows: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Posterior means of both latent spaces ((N, K) each) and the structure names (N,) of ``rows``."""
    target, reference, labels = prepared_cells(run, rows)
    latents: dict[str, list[np.ndarray]] = {name: [] for name in MODELS}
    for part in _chunks(len(rows)):
        mus = run.module.embed_latents(target[part], reference[part], None if labels is None else labels[part])
        for name, mu in zip(MODELS, mus):
            latents[name].append(mu.cpu().numpy())
    return {name: np.concatenate(parts) for name, parts in latents.items()}, _structure_names(run, labels, len(rows))


def shift_truth_scores(table: pd.DataFrame, truth_dir: str, by: str = "Metadata_Compound") -> dict[str, Any]:
    """The ``truth_scores`` of ``evaluate drug-shift`` for a table of calls (rows of
    :func:`~morphospace.evaluate.statistical_cell.drug_shift_table`, or the same tests called again
    by :func:`~morphospace.evaluate.statistical_cell.call_shifts`) against the truth folder
    ``truth_dir`` of a structures store: recall and false positives per latent space."""
    truth = _truth_table(truth_dir, "drugs.parquet", [by, "structure", "shifted"])
    return _shift_truth(table, truth, by, truth_dir)


def _shift_truth(table: pd.DataFrame, truth: pd.DataFrame, by: str, truth_dir: str) -> dict[str, Any]:
    target = stats.shift_recall(table, truth, "target", by)
    reference = table[table["latent"] == "reference"]
    called = reference.loc[reference["significant"], ["drug", "structure"]].values.tolist()
    scores = {"truth": truth_dir, "target": target,
              "reference": {"false_positives": len(called), "false_positive_pairs": called}}
    if (table["latent"] == GIVEN_REFERENCE).any():
        scores[GIVEN_REFERENCE] = stats.shift_recall(table, truth, GIVEN_REFERENCE, by)
    return scores


def evaluate_drug_shift(run_dir: str | os.PathLike, control: str, treated: str,
                        out_dir: str | os.PathLike | None = None, config: DrugShiftConfig | None = None,
                        overwrite: bool = False) -> dict[str, Any]:
    """Drug shifts of a ``statistical_cell`` run's latent spaces (see the module docstring):
    ``control`` and ``treated`` are pandas queries on the store's cell table. Writes
    ``drug_shift.json`` and ``drug_shift.csv`` into ``out_dir`` (default ``RUN/evaluation``) and
    returns the JSON. InputError for a run of another family, a bad query, no matching cells,
    overlapping groups, or a bad truth folder, before anything is written."""
    config = config or DrugShiftConfig()
    out_dir = _out_dir(run_dir, out_dir)
    refuse_existing(out_dir / "drug_shift.json", overwrite)
    run = load_run(run_dir, "evaluate", "drug-shift")
    store = run.data.store
    rows, groups = _groups(store.cells, control, treated, config.by, store.path)
    truth = (_truth_table(config.truth, "drugs.parquet", [config.by, "structure", "shifted"])
             if config.truth is not None else None)
    latents, structures = _embeddings(run, rows)
    active, notes = {}, {}
    for name in MODELS:
        active[name], notes[name] = _active_mask(run, name, config.active_threshold)
    if config.given_reference:
        latents[GIVEN_REFERENCE] = stats.reference_adjusted(latents["target"][:, active["target"]],
                                                            latents["reference"][:, active["reference"]], structures)
    table = stats.drug_shift_table(latents, groups, structures, CONTROL, active, config.permutations, config.alpha,
                                   config.seed, config.correction)
    if table.empty:
        raise InputError(f"{store.path}: no structure has both control and treated cells; nothing to test")
    payload: dict[str, Any] = {
        "convention": DRUG_SHIFT_CONVENTION, "run": str(run_dir), "config": config.to_dict(),
        "control": control, "treated": treated, "n_control": int((groups == CONTROL).sum()),
        "n_treated": int((groups != CONTROL).sum()), "active_dimensions": notes,
        "tests": table.to_dict(orient="records"),
    }
    if truth is not None:
        payload["truth_scores"] = _shift_truth(table, truth, config.by, config.truth)
    write_table(table, out_dir / "drug_shift.csv")
    write_json_atomic(out_dir / "drug_shift.json", payload)
    return payload


# ----------------------------------------------------------------------------- beta sweep


BETA_SWEEP_CONVENTION = (
    "one run per beta (model.beta, the convex objective's weight of the KL in both models), trained to the "
    "config's budget; on each run's held-out cells (split named under split), per model: recon = squared error "
    "summed over pixels from the posterior mean (or the mean over elbo_samples draws), kl = KL to the prior "
    "summed over dimensions (nats), both averaged over cells (the unweighted ELBO's terms, not the training "
    "loss); active_dims: dimensions whose mean KL over the last training epoch exceeds active_threshold nats"
)


def _sweep_run_config(base: RunConfig, beta: float) -> RunConfig:
    name = f"{base.name}_beta{beta:g}"
    return resolve_run_config(base.to_dict(), [f"name={name}", f"model.beta={beta}"],
                              source=f"{base.source} (beta-sweep run {name})")


@torch.no_grad()
def _held_out_terms(run: Run, max_cells: int, seed: int) -> tuple[dict[str, dict[str, float]], str, int]:
    """Per model the mean ``recon`` and ``kl`` (nats) over up to ``max_cells`` held-out cells, the split
    and the number of cells."""
    rows, split = held_out_rows(run.data)
    rows = np.sort(np.random.default_rng(seed).choice(rows, min(max_cells, len(rows)), replace=False))
    target, reference, labels = prepared_cells(run, rows)
    module = run.module
    sums = {f"{name}_{term}": 0.0 for name in MODELS for term in ("recon", "kl")}
    for k, part in enumerate(_chunks(len(rows))):
        terms = module.terms(target[part], reference[part], None if labels is None else labels[part],
                             module.cfg.elbo_samples, torch.Generator().manual_seed(seed + k))
        for name in MODELS:
            sums[f"{name}_recon"] += float(terms[f"{name}_recon"].sum())
            sums[f"{name}_kl"] += float(terms[f"{name}_kl_per_dim"].sum())
    return ({name: {term: sums[f"{name}_{term}"] / len(rows) for term in ("recon", "kl")} for name in MODELS},
            split, len(rows))


def beta_sweep_dir(config: RunConfig) -> Path:
    """Default output folder of a beta sweep of ``config``: ``runs_dir/<name>_beta_sweep``."""
    return Path(config.runs_dir) / f"{config.name}_beta_sweep"


def run_beta_sweep(config: RunConfig, betas: Sequence[float], out_dir: str | os.PathLike | None = None,
                   max_cells: int = 500, progress: bool = False) -> pd.DataFrame:
    """Train (or reuse) one run of the ``statistical_cell`` ``config`` per beta and measure it (see
    the module docstring); writes into ``out_dir`` (default ``runs_dir/<name>_beta_sweep``) and
    returns the table of ``beta_sweep.csv``: one row per (beta, model) with ``recon``, ``kl``,
    ``elbo``, ``active_dims``, ``latent_dim``, ``epochs``, ``split``, ``n_cells`` and ``run``."""
    from morphospace.workflows.train import trained

    if config.model.family != "statistical_cell":
        raise InputError(f"{config.source}: beta-sweep needs model.family: statistical_cell, not "
                         f"{config.model.family}")
    fixed = [key for key in ("reference_beta", "target_beta") if getattr(config.model, key) is not None]
    if fixed:
        raise InputError(f"{config.source}: model.{fixed[0]} is set, so model.beta would not reach that model; "
                         f"remove it (--set model.{fixed[0]}=null) to sweep beta")
    if not betas:
        raise InputError("--betas names no beta")
    runs = [_sweep_run_config(config, float(beta)) for beta in betas]  # every beta checked before training
    out = Path(out_dir) if out_dir is not None else beta_sweep_dir(config)
    rows = []
    for beta, run_config in zip(betas, runs):
        summary = trained(run_config, progress)
        run = load_run(run_config.run_dir)
        terms, split, n_cells = _held_out_terms(run, max_cells, run_config.seed)
        for name in MODELS:
            rows.append({"beta": float(beta), "model": name, "recon": terms[name]["recon"], "kl": terms[name]["kl"],
                         "elbo": -(terms[name]["recon"] + terms[name]["kl"]),
                         "active_dims": run.module.active_dimensions(model=name),
                         "latent_dim": getattr(run.module.cfg, f"{name}_latent_dim"), "epochs": summary.epochs,
                         "split": split, "n_cells": n_cells, "run": str(run_config.run_dir)})
    table = pd.DataFrame(rows)
    write_table(table, out / "beta_sweep.csv")
    write_json_atomic(out / "beta_sweep.json", {
        "convention": BETA_SWEEP_CONVENTION, "config": config.source, "betas": [float(b) for b in betas],
        "active_threshold_nats": config.model.active_threshold, "objective": config.model.objective,
        "budget": {"max_epochs": config.trainer.max_epochs, "max_steps": config.trainer.max_steps,
                   "max_minutes": config.trainer.max_minutes},
        "rows": rows})
    save_figure(beta_sweep_figure(table), out / "beta_sweep.png")
    return table


def beta_sweep_figure(table: pd.DataFrame) -> Figure:
    """Rate-distortion: mean reconstruction error against mean KL (nats) per beta, one panel per
    model, points joined in beta order and labelled with beta and the active dimensions."""
    fig = Figure(figsize=(8.0, 3.4), layout="tight")
    for ax, name in zip(fig.subplots(1, 2), MODELS):
        part = table[table["model"] == name].sort_values("beta")
        ax.plot(part["kl"], part["recon"], marker="o", color="C0" if name == "reference" else "C1")
        for row in part.itertuples():
            ax.annotate(f"β={row.beta:g}\n{row.active_dims}/{row.latent_dim} active", (row.kl, row.recon),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel("KL to the prior (nats, rate)")
        ax.set_ylabel("reconstruction error (squared error)")
        ax.set_title(f"{name} model", fontsize=9)
        ax.ticklabel_format(useOffset=False)
        ax.margins(0.2)
        ax.grid(alpha=0.3)
    return fig
