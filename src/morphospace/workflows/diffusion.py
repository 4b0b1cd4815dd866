"""Commands on diffusion runs: images generated for the conditions of chosen cells, and walks
between the conditions of two groups of cells.

Cells are chosen on the run's cell table with a pandas query or ``COLUMN=VALUE`` equalities
(:func:`~morphospace.io.tables.select_cells`); every generated image takes the encoded conditions
(treatment, dose, features: whatever the run was trained on) of one chosen cell, so that a query
spanning several doses gives the mixture of those doses.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from morphospace.atomic import write_npz_atomic
from morphospace.errors import InputError
from morphospace.explore.figures import save_figure
from morphospace.explore.latent import image_rows_figure
from morphospace.explore.samples import write_sample_grid
from morphospace.io.tables import select_cells
from morphospace.models.base import to_unit_range
from morphospace.models.diffusion import DiffusionModel
from morphospace.models.run import Run, load_run
from morphospace.workflows.latent import figures_dir

__all__ = ["chosen_conditions", "generate_for_cells", "generate_from_controls", "interpolate_conditions"]


def _diffusion_run(run_dir: str | os.PathLike, verb: str) -> Run:
    run = load_run(run_dir, verb)
    if not isinstance(run.module, DiffusionModel):
        raise InputError(f"{run_dir}: a {run.config.model.family} run; conditions are chosen for diffusion runs")
    if not run.module.conditioned:
        raise InputError(f"{run_dir}: the run was trained without conditions (model.conditions is empty)")
    return run


def chosen_conditions(run: Run, query: str, n: int, seed: int = 0, option: str = "--condition"
                      ) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Encoded conditions of ``n`` cells drawn (with replacement when fewer match) among the
    cells of the run's store that match ``query``, each a tensor (n, ...) by condition name, and
    the positions of those cells in the run's cell table (n,)."""
    matched = np.flatnonzero(select_cells(run.data.table, query, option, run.config.data.store))
    picks = np.random.default_rng(seed).choice(matched, n, replace=len(matched) < n)
    conditions = {name: torch.as_tensor(run.data.condition_values[name][picks]) for name in run.module.cfg.conditions}
    return conditions, picks


def _slug(query: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in query).strip("_")[:80]


def generate_for_cells(run_dir: str | os.PathLike, query: str, n: int = 64, seed: int = 0,
                       guidance_scale: float | None = None, steps: int | None = None,
                       out: str | os.PathLike | None = None, npz: str | os.PathLike | None = None
                       ) -> tuple[np.ndarray, Path]:
    """``n`` images (n, C, H, W) in [0, 1] generated for the conditions of cells matching
    ``query`` (cells and starts drawn with ``seed``: noise, or for a control -> treated flow
    training control crops noised as in training), and their grid PNG (default
    ``figures/generated_<query>_seed<seed>.png``); with ``npz`` also the images (array ``images``)."""
    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}")
    run = _diffusion_run(run_dir, "generate")
    conditions, _ = chosen_conditions(run, query, n, seed)
    generator = torch.Generator().manual_seed(seed)
    start = run.module.starts(run.module.bank_controls(n, generator), n, generator)
    images = torch.cat([run.module.generate(start[s:s + 256], {k: v[s:s + 256] for k, v in conditions.items()},
                                            guidance_scale, steps) for s in range(0, n, 256)])
    path = Path(out) if out is not None else figures_dir(run_dir) / f"generated_{_slug(query)}_seed{seed}.png"
    write_sample_grid(path, images, run.data.image_channels)
    unit = to_unit_range(images)
    if npz is not None:
        write_npz_atomic(npz, images=unit)
    return unit, path


def interpolate_conditions(run_dir: str | os.PathLike, start: str, end: str, steps: int = 8, rows: int = 4,
                           seed: int = 0, guidance_scale: float | None = None) -> Path:
    """A figure of ``rows`` rows (one start each: noise, or a training control crop for a control
    -> treated flow) of ``steps`` images whose condition
    tokens go linearly from the mean tokens of the cells matching ``start`` to those of ``end``
    (e.g. DMSO to a treatment, or a low to a high dose). Writes
    ``figures/condition_interpolation_<start>_to_<end>.png`` and the images (rows, steps, C, H, W)
    in [0, 1] as ``.npz`` beside it."""
    if steps < 2 or rows < 1:
        raise InputError(f"--steps must be at least 2 and --rows at least 1, got {steps} and {rows}")
    run = _diffusion_run(run_dir, "explore")
    module = run.module
    ends = []
    for query, option in ((start, "--from"), (end, "--to")):
        matched = np.flatnonzero(select_cells(run.data.table, query, option, run.config.data.store))
        conditions = {name: torch.as_tensor(run.data.condition_values[name][matched]) for name in module.cfg.conditions}
        with torch.no_grad():
            ends.append(module.context(conditions, len(matched)).float().mean(0))
    weights = torch.linspace(0, 1, steps)
    path_tokens = torch.stack([(1 - w) * ends[0] + w * ends[1] for w in weights])
    generator = torch.Generator().manual_seed(seed)
    starts = module.starts(module.bank_controls(rows, generator), rows, generator, noise_probability=0.0)
    images = np.stack([to_unit_range(module.generate(starts[r:r + 1].expand(steps, *starts.shape[1:]),
                                                     guidance_scale=guidance_scale, context=path_tokens))
                       for r in range(rows)])
    path = figures_dir(run_dir) / f"condition_interpolation_{_slug(start)}_to_{_slug(end)}.png"
    figure = image_rows_figure(images, run.data.image_channels,
                               title=f"{start} (left) to {end} (right): condition tokens interpolated, "
                                     "one start per row")
    save_figure(figure, path)
    write_npz_atomic(path.with_suffix(".npz"), images=images, weights=weights.numpy())
    return path


def _control_crops(run: Run, store_path: str | os.PathLike, groups: np.ndarray, seed: int
                   ) -> tuple[torch.Tensor, np.ndarray]:
    """One control crop of ``store_path`` per entry of ``groups`` (the chosen cells' values of the
    controls condition's ``by``; from the same group when the store has it, else any control),
    prepared as the run prepares crops: (crops (n, C, H, W), their store rows)."""
    from morphospace.io.store import CropStore

    condition = run.config.data.conditions[run.module.cfg.controls]
    store = CropStore(store_path)
    cells = store.cells.reset_index(drop=True)
    is_control = select_cells(cells, condition.query, "the run's controls query", store_path)
    rng = np.random.default_rng(seed)
    plates = cells[condition.by].astype(str).to_numpy() if condition.by in cells.columns else None
    rows = []
    for group in groups:
        same = is_control & (plates == group) if plates is not None and group is not None else is_control
        pool = np.flatnonzero(same if same.any() else is_control)
        rows.append(int(rng.choice(pool)))
    rows = np.asarray(rows)
    return run.data.dataset_for(store, rows, conditions=()).load(np.arange(len(rows))), rows


def generate_from_controls(run_dir: str | os.PathLike, controls_store: str | os.PathLike, query: str, n: int = 8,
                           seed: int = 0, guidance_scale: float | None = None, steps: int | None = None,
                           start_noise: float = 0.0, out: str | os.PathLike | None = None,
                           npz: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray, Path]:
    """Control crops of ``controls_store`` (cells matching the run's controls query, of the same
    plate as each chosen cell where the store has that plate) flowed to the conditions of ``n``
    cells matching ``query``: the same cells before and after. ``start_noise``: SD of noise added
    to the control crops (0: the crops as they are). Returns (controls, generated), each (n, C, H,
    W) in [0, 1], and the figure path (default ``figures/from_controls_<query>_seed<seed>.png``,
    controls above, generated below); ``npz`` also keeps ``controls``, ``images`` and
    ``control_rows`` (store rows)."""
    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}")
    run = _diffusion_run(run_dir, "generate")
    module = run.module
    if module.cfg.start_from != "controls":
        raise InputError(f"{run_dir}: the run flows from noise (model.start_from: noise); --from-controls needs a run "
                         "trained with start_from: controls")
    conditions, picks = chosen_conditions(run, query, n, seed)
    by = run.config.data.conditions[module.cfg.controls].by
    groups = (run.data.table[by].astype(str).to_numpy()[picks] if by is not None and by in run.data.table.columns
              else np.full(n, None))
    controls, rows = _control_crops(run, controls_store, groups, seed)
    start = controls + start_noise * module.noise(n, torch.Generator().manual_seed(seed))
    images = torch.cat([module.generate(start[s:s + 256], {k: v[s:s + 256] for k, v in conditions.items()},
                                        guidance_scale, steps) for s in range(0, n, 256)])
    before, after = to_unit_range(controls), to_unit_range(images)
    path = Path(out) if out is not None else figures_dir(run_dir) / f"from_controls_{_slug(query)}_seed{seed}.png"
    shown = min(n, 8)
    figure = image_rows_figure(np.stack([before[:shown], after[:shown]]), run.data.image_channels,
                               row_labels=["control crop", "after the flow"],
                               title=f"The same control cells before (top) and after the flow to {query}")
    save_figure(figure, path)
    if npz is not None:
        write_npz_atomic(npz, controls=before, images=after, control_rows=rows)
    return before, after, path
