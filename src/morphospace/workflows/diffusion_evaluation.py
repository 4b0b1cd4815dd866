"""``evaluate generation`` of a conditioned ``diffusion`` run: realism overall and per condition,
whether the condition comes through, and whether the generated shifts between conditions follow
the real ones.

Groups are the values of one cell-table column (``condition_column``; default the column of the
run's first categorical condition). For every group, up to ``per_condition`` training cells are
drawn: their crops are the real set, and one image is generated for each of them with its encoded
conditions (from noise, or for a control -> treated flow from a control crop of the same plate
drawn from the training split, noised as in training). Written into the output folder:
``generation.json``, ``conditional_groups.csv`` and ``figures/conditions_real_vs_generated.png``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from morphospace.atomic import write_json_atomic
from morphospace.errors import InputError
from morphospace.evaluate import conditional
from morphospace.evaluate.generation import _embed, _measure, fid_kid
from morphospace.explore.figures import save_figure
from morphospace.explore.latent import image_rows_figure
from morphospace.io.tables import select_cells, write_table
from morphospace.models.base import to_unit_range
from morphospace.models.run import Run

if TYPE_CHECKING:
    from morphospace.workflows.evaluation import GenerationConfig

__all__ = ["run_diffusion_evaluation", "grouping_column", "generate_like"]

logger = logging.getLogger(__name__)

CONVENTION = (
    "groups = values of condition_column; per group up to per_condition training cells: their crops (as the model "
    "saw them, [0, 1]) are the real set, and one image is generated per cell with that cell's encoded conditions "
    "(start and guidance under sampling); FID/KID on the in-domain extractor (squared embedding units): overall = all "
    "groups pooled, per condition = each group alone (few cells bias FID upwards: compare groups of similar n), "
    "fid_per_condition_mean = their mean; condition accuracy: logistic regression on the extractor's embeddings of "
    "the real training cells, scored on up to per_condition held-out real cells per group (test, else validation "
    "split) and on the generated cells (their intended group); ratio_to_real = generated / real; shifts: "
    "CellProfiler features (feature_set, cells segmented crop by crop) standardised by the real cells' mean and SD, "
    "group profile = median over the group's cells; shift_cosine per treated group = cosine between (group profile - "
    "control profile) of generated and of real cells; nearest_real_group: the real group whose profile is nearest "
    "each generated group's profile (Euclidean)"
)


def grouping_column(run: Run, config: "GenerationConfig") -> str:
    """``condition_column`` of the config, or the column of the run's first categorical condition."""
    from morphospace.data.conditions import CategoricalCondition

    if config.condition_column is not None:
        if config.condition_column not in run.data.table.columns:
            raise InputError(f"condition_column {config.condition_column!r} is not a column of the cell table of "
                             f"{run.config.data.store}")
        return config.condition_column
    for name in run.module.cfg.conditions:
        condition = run.config.data.conditions[name]
        if isinstance(condition, CategoricalCondition):
            if isinstance(condition.column, list):
                raise InputError(f"{run.path}: condition {name!r} joins the columns {condition.column}; name the "
                                 "column to group the cells by with condition_column")
            return condition.column
    raise InputError(f"{run.path}: no categorical condition to group the cells by; set condition_column")


def _control_group(table: pd.DataFrame, groups: pd.Series, query: str, source: str) -> str:
    matched = groups[select_cells(table, query, "control", source)]
    values = matched.unique()
    if len(values) != 1:
        raise InputError(f"control {query!r}: its cells fall into {len(values)} groups {list(values)[:5]}; the control "
                         "must be one group of condition_column")
    return str(values[0])


def _starts(run: Run, positions: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """Starting points of the cells at table ``positions``: noise, or for a control -> treated flow
    a training control crop of each cell's plate, noised as in training."""
    module, data = run.module, run.data
    if module.cfg.start_from == "noise":
        return module.starts(None, len(positions), generator)
    train_positions = data.table.index.get_indexer(data.indices("train"))
    pools = dict(zip(train_positions, data.control_pools("train")[module.cfg.controls]))
    rng = np.random.default_rng(int(torch.randint(2**31, (), generator=generator)))
    rows = np.array([rng.choice(pools[p]) for p in positions])
    controls = data.dataset_for(data.store, rows, conditions=()).load(np.arange(len(rows)))
    return module.starts(controls, len(positions), generator)


def generate_like(run: Run, positions: np.ndarray, seed: int, guidance_scale: float | None = None,
                  steps: int | None = None, batch_size: int = 128) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] generated with the encoded conditions of the cells at table
    ``positions`` of the run's data module."""
    generator = torch.Generator().manual_seed(seed)
    parts = []
    for s in range(0, len(positions), batch_size):
        chunk = positions[s:s + batch_size]
        conditions = {name: torch.as_tensor(run.data.condition_values[name][chunk])
                      for name in run.module.cfg.conditions}
        start = _starts(run, chunk, generator)
        parts.append(to_unit_range(run.module.generate(start, conditions, guidance_scale, steps)))
    return np.concatenate(parts)


def _group_order(labels) -> list[str]:
    """Labels sorted as numbers when they all are (0, 5, 15, 50), else as text."""
    unique = sorted(set(labels))
    try:
        return sorted(unique, key=float)
    except ValueError:
        return unique


def _draw(rows: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Up to ``n`` of ``rows`` per label (labels drawn in text order), sorted."""
    return {label: np.sort(rng.choice(rows[labels == label], min(n, int((labels == label).sum())), replace=False))
            for label in sorted(set(labels))}


def _features(images: np.ndarray, channels: list[str], config: "GenerationConfig", source: str) -> pd.DataFrame:
    table = _measure(torch.from_numpy(images), None, channels, config.feature_set, config.nucleus_channel,
                     config.cytoplasm_channels, source)
    return table.select_dtypes("number")


def _figure(real: dict[str, np.ndarray], fake: dict[str, np.ndarray], channels: list[str], column: str):
    """One row per group: real cells on the left, generated cells on the right."""
    shown = min(3, *(len(v) for v in real.values()), *(len(v) for v in fake.values()))
    order = _group_order(real)
    rows = np.stack([np.concatenate([real[g][:shown], fake[g][:shown]]) for g in order])
    return image_rows_figure(rows, channels, row_labels=order,
                             column_labels=["real"] * shown + ["generated"] * shown,
                             title=f"Real (left) and generated (right) cells per {column}")


def run_diffusion_evaluation(run: Run, out_dir: Path, config: "GenerationConfig") -> dict[str, Any]:
    """Score a conditioned diffusion run (see the module docstring); returns the JSON written."""
    from morphospace.workflows.evaluation import _extractor, _real_crops

    data, module = run.data, run.module
    if not module.conditioned:
        raise InputError(f"{run.path}: the run has no conditions; conditional scores need a conditioned run")
    column = grouping_column(run, config)
    table = data.table
    groups = table[column].astype(str)
    control = _control_group(table, groups, config.control, str(run.config.data.store))
    rng = np.random.default_rng(config.seed)
    train = data.indices("train")
    held_out = np.concatenate([data.indices("test"), data.indices("val")])
    train_draw = _draw(train, groups.loc[train].to_numpy(), config.per_condition, rng)
    held_draw = _draw(held_out, groups.loc[held_out].to_numpy(), config.per_condition, rng) if len(held_out) else {}
    real = {g: _real_crops(data, rows) for g, rows in train_draw.items()}
    started = time.perf_counter()
    fake = {g: generate_like(run, table.index.get_indexer(rows), config.seed + k, config.guidance_scale,
                             config.sampling_steps)
            for k, (g, rows) in enumerate(train_draw.items())}
    seconds = time.perf_counter() - started
    n_fake = sum(len(v) for v in fake.values())
    extractor, extractor_path, extractor_training = _extractor(config, data, data.store, run.path)
    pooled_real, pooled_fake = np.concatenate(list(real.values())), np.concatenate(list(fake.values()))
    overall = fid_kid(pooled_real, pooled_fake, extractor, kid_subset_size=max(2, len(pooled_real) // 2))
    per_group = {g: fid_kid(real[g], fake[g], extractor, kid_subset_size=max(2, len(real[g]) // 2))
                 for g in real if len(real[g]) >= 2}
    payload: dict[str, Any] = {
        "family": "diffusion", "convention": CONVENTION, "config": config.to_dict(), "condition_column": column,
        "control": control,
        "guidance_scale": module.cfg.guidance_scale if config.guidance_scale is None else config.guidance_scale,
        "sampling_steps": module.cfg.sampling_steps if config.sampling_steps is None else config.sampling_steps,
        "start_from": module.cfg.start_from, "extractor_path": str(extractor_path),
        "extractor_training": extractor_training, "in_domain": overall,
        "fid_per_condition": {g: s["fid"] for g, s in per_group.items()},
        "kid_per_condition": {g: s["kid_mean"] for g, s in per_group.items()},
        "fid_per_condition_mean": float(np.mean([s["fid"] for s in per_group.values()])),
        "n_per_condition": {g: len(v) for g, v in fake.items()},
        "generation_seconds": seconds, "generated_images_per_s": n_fake / seconds,
    }
    if held_draw:
        embed = lambda images: _embed(extractor, torch.from_numpy(images), 256).numpy()  # noqa: E731
        held = {g: _real_crops(data, rows) for g, rows in held_draw.items()}
        payload["condition_accuracy"] = conditional.condition_accuracy(
            embed(pooled_real), np.repeat(list(real), [len(v) for v in real.values()]),
            embed(np.concatenate(list(held.values()))), np.repeat(list(held), [len(v) for v in held.values()]),
            embed(pooled_fake), np.repeat(list(fake), [len(v) for v in fake.values()]), config.seed)
        payload["condition_accuracy"]["split"] = "test and validation"
    channels = data.image_channels
    real_features = _features(pooled_real, channels, config, "the real crops")
    fake_features = _features(pooled_fake, channels, config, "the generated crops")
    (real_scaled, fake_scaled), dropped = conditional.standardise_on_real(real_features, fake_features)
    real_profiles = conditional.group_profiles(real_scaled, np.repeat(list(real), [len(v) for v in real.values()]))
    fake_profiles = conditional.group_profiles(fake_scaled, np.repeat(list(fake), [len(v) for v in fake.values()]))
    shifts = conditional.shift_cosines(real_profiles, fake_profiles, control)
    nearest = conditional.nearest_groups(real_profiles, fake_profiles)
    payload["shift_cosine"] = dict(zip(shifts["group"], shifts["cosine"]))
    payload["shifts"] = shifts.to_dict(orient="records")
    payload["nearest_real_group"] = nearest.reset_index(names="generated").to_dict(orient="records")
    payload["features"] = {"n_features": real_scaled.shape[1], "dropped_constant": len(dropped),
                           "feature_set": config.feature_set}
    order = _group_order(fake)
    groups_table = pd.DataFrame({"group": order, "n": [len(fake[g]) for g in order],
                                 "fid": [payload["fid_per_condition"].get(g) for g in order],
                                 "shift_cosine": [payload["shift_cosine"].get(g) for g in order],
                                 "nearest_real_group": [nearest.loc[g, "nearest"] for g in order]})
    write_table(groups_table, out_dir / "conditional_groups.csv")
    save_figure(_figure(real, fake, channels, column), out_dir / "figures" / "conditions_real_vs_generated.png")
    write_json_atomic(out_dir / "generation.json", payload)
    return payload
