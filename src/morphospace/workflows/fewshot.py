"""``explore fewshot``: how many annotated tiles a nuclei segmentation U-Net needs, trained from
scratch and initialised from an in-silico-labeling run (the seed's Figure 27).

For every training-set size N in ``sizes`` the segmentation config is trained twice on the same N
fixed tiles (``data.tiles.fixed_tiles``; ``all`` = new random tiles of the whole training region
every epoch) for the same number of optimiser steps: once from random weights, once starting from
``pretrained_run`` (matching tensors copied, the one-channel head taken from the output row of
``pretrained_target``). Each run is scored on the same held-out region by
:func:`morphospace.workflows.isl.evaluate_isl_run`.

Writes into ``runs_dir/name/``: one run directory per (N, start), ``fewshot.csv`` (one row per run),
``fewshot.json`` (rows, convention, resolved study config) and ``fewshot.png`` (mean Jaccard against N).
Finished runs are reused when the study is run again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd
import pydantic
from matplotlib.figure import Figure

from morphospace.atomic import write_json_atomic
from morphospace.config import Config
from morphospace.errors import InputError
from morphospace.evaluate.isl import InferenceConfig
from morphospace.explore.figures import save_figure
from morphospace.io.tables import write_table
from morphospace.models.registry import load_run_config, read_run_config, resolve_run_config
from morphospace.models.training import RunConfig
from morphospace.workflows.isl import evaluate_isl_run
from morphospace.workflows.train import trained

__all__ = ["FewShotConfig", "run_fewshot", "fewshot_figure"]

STARTS = ("scratch", "pretrained")


class FewShotConfig(Config):
    """A few-shot segmentation study."""

    name: str = pydantic.Field("fewshot", pattern=r"^[A-Za-z0-9_.-]+$")
    runs_dir: str = "runs"
    segmentation: str = pydantic.Field(description="segmentation training YAML (model.task: segmentation)")
    overrides: list[str] = pydantic.Field(default_factory=list, description="key=value overrides of that YAML")
    pretrained_run: str = pydantic.Field(description="finished in-silico-labeling run that initialises the network")
    pretrained_target: str | None = pydantic.Field("DAPI", description="its target whose output row starts the head")
    sizes: list[int | Literal["all"]] = pydantic.Field(default_factory=lambda: [1, 2, 5, 10, 50, "all"], min_length=1)
    steps: int = pydantic.Field(300, ge=1, description="optimiser steps of every run")
    inference: InferenceConfig = pydantic.Field(default_factory=InferenceConfig)

    @pydantic.field_validator("sizes")
    @classmethod
    def _positive(cls, value: list[int | str]) -> list[int | str]:
        if any(isinstance(v, int) and v < 1 for v in value):
            raise ValueError(f"sizes must be positive tile counts or 'all', got {value}")
        return value

    @property
    def out_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


def _base_config(config: FewShotConfig) -> RunConfig:
    base = load_run_config(config.segmentation, config.overrides)
    if base.model.family != "isl":
        raise InputError(f"{config.segmentation}: the few-shot study needs model.family: isl")
    if base.model.task != "segmentation":
        raise InputError(f"{config.segmentation}: the few-shot study needs model.task: segmentation")
    pretrained = read_run_config(config.pretrained_run)
    if pretrained.model.family != "isl":
        raise InputError(f"{config.pretrained_run}: a {pretrained.model.family} run, not an isl run")
    if pretrained.data.channels.inputs != base.data.channels.inputs:
        raise InputError(f"{config.pretrained_run}: its inputs {pretrained.data.channels.inputs} differ from "
                         f"the segmentation inputs {base.data.channels.inputs}")
    targets = pretrained.data.channels.targets
    if config.pretrained_target is not None and config.pretrained_target not in targets:
        raise InputError(f"pretrained_target {config.pretrained_target!r} is not a target of "
                         f"{config.pretrained_run} (has {targets})")
    return base


def _run_config(base: RunConfig, config: FewShotConfig, size: int | str, start: str) -> RunConfig:
    overrides = [f"name=n{size}_{start}", f"runs_dir={config.out_dir}",
                 f"data.tiles.fixed_tiles={'null' if size == 'all' else size}", f"trainer.max_steps={config.steps}",
                 "trainer.max_minutes=null", f"trainer.max_epochs={config.steps}"]
    if start == "pretrained":
        overrides += [f"model.init.run={config.pretrained_run}",
                      f"model.init.target={config.pretrained_target or 'null'}"]
    return resolve_run_config(base.to_dict(), overrides, source=f"few-shot run n{size}_{start}")


def run_fewshot(config: FewShotConfig, progress: bool = False) -> pd.DataFrame:
    """Train and score every (size, start) pair; returns the table also written to ``fewshot.csv``."""
    base = _base_config(config)
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in config.sizes:
        for start in STARTS:
            run = _run_config(base, config, size, start)
            summary = trained(run, progress)
            scores = evaluate_isl_run(run.run_dir, settings=config.inference, overwrite=True).scores
            rows.append({"tiles": size, "start": start, "steps": summary.optimizer_steps, "mean_iou": scores["mean_iou"],
                         "mean_iou_non_empty": scores["mean_iou_non_empty"], "f1_pooled": scores["f1_pooled"],
                         "test_crops": scores["crops"], "run": str(run.run_dir)})
    table = pd.DataFrame(rows)
    write_table(table, out / "fewshot.csv")
    write_json_atomic(out / "fewshot.json", {
        "convention": (f"mean foreground IoU (Jaccard) over the {config.inference.crop_size or base.data.tiles.size} "
                       "px crops of the test region, 1 when truth and prediction are both empty; also over crops "
                       "with nuclei only, and instance F1 at IoU 0.5 (pooled)"),
        "config": config.to_dict(), "rows": rows})
    save_figure(fewshot_figure(table), out / "fewshot.png")
    return table


def fewshot_figure(table: pd.DataFrame) -> Figure:
    """Mean Jaccard (all crops, and crops with nuclei) against the number of training tiles, one
    line per start."""
    fig = Figure(figsize=(7.5, 3.4))
    labels = [str(v) for v in dict.fromkeys(table["tiles"])]
    for ax, column, title in zip(fig.subplots(1, 2), ("mean_iou", "mean_iou_non_empty"),
                                 ("all test crops (empty/empty = 1)", "test crops with nuclei")):
        for start, group in table.groupby("start", sort=False):
            positions = [labels.index(str(v)) for v in group["tiles"]]
            ax.plot(positions, group[column], marker="o", label=start)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel("training tiles")
        ax.set_ylabel("mean Jaccard")
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
