"""A model family: everything the run skeleton needs to know to train, restore and use one kind of
model. A family is one module in ``models/`` holding its config, its LightningModule and a
:class:`Family` subclass, registered in :mod:`morphospace.models.registry`.

What a family declares:

- ``name``: the value of ``model.family`` in configs;
- ``config``: the pydantic model of the ``model`` section (with ``family: Literal[name]``);
- ``data``: the data source it trains on (``crops`` or ``paired``, :mod:`morphospace.data.sources`);
- ``verbs``: what a trained run supports: ``embed``, ``generate`` (samples from the model, which
  also gives sample grids during training), ``explore`` (latent-space figures), ``predict``
  (whole-field predictions) and ``evaluate`` (the kinds :meth:`Family.evaluations` lists);
- :meth:`Family.batch_requirements`: the batch keys and kinds its module reads;
- :meth:`Family.check`: rules that tie the config to the data (crop sizes, ranges), as ConfigErrors
  naming the key;
- :meth:`Family.build`: a fresh LightningModule for the data's :class:`~morphospace.data.spec.DataSpec`;
- :meth:`Family.restore`: the module again from the hyper-parameters its checkpoint saved;
- :meth:`Family.callbacks`: family-specific training callbacks;
- :meth:`Family.notes_after_fit`: notes for ``summary.json`` that the module learned while training;
- :meth:`Family.has_unused_parameters`: whether multi-process training must look for parameters a
  backward pass does not reach (adversarial models).

LightningModules save their constructor arguments as plain hyper-parameters
(``save_hyperparameters``), so a checkpoint restores without unpickling objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping

import lightning.pytorch as pl

from morphospace.config import Config
from morphospace.data.spec import DataSpec
from morphospace.models.training import RunConfig

__all__ = ["Family", "VERBS"]

VERBS = ("embed", "generate", "explore", "predict", "evaluate")


class Family:
    """Base of the model families; see the module docstring. Subclasses set the class attributes
    and implement :meth:`module_class` and :meth:`build`."""

    name: ClassVar[str]
    config: ClassVar[type[Config]]
    data: ClassVar[str] = "crops"
    verbs: ClassVar[frozenset[str]] = frozenset()
    sample_unit: ClassVar[str] = "crops"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = set(getattr(cls, "verbs", ())) - set(VERBS)
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown verb(s) {sorted(unknown)}; verbs are {list(VERBS)}")

    def module_class(self, model: Mapping[str, Any]) -> type[pl.LightningModule]:
        """The LightningModule class of a model config (as a plain dict)."""
        raise NotImplementedError

    def batch_requirements(self, model: Config) -> dict[str, str]:
        """Batch keys and their kinds that the module reads (checked against the data's spec)."""
        return {"image": "image"} if self.data == "crops" else {"input": "input"}

    def check(self, config: RunConfig, spec: DataSpec) -> None:
        """Raise ConfigError (via :func:`morphospace.config.key_error`) when ``config`` cannot train
        on data of ``spec``."""

    def build(self, config: RunConfig, spec: DataSpec, data: pl.LightningDataModule
              ) -> tuple[pl.LightningModule, dict[str, str]]:
        """A fresh module for a new run and notes for ``summary.json`` (what was initialised how)."""
        raise NotImplementedError

    def restore(self, hparams: Mapping[str, Any]) -> pl.LightningModule:
        """The module of saved hyper-parameters (its constructor arguments), weights not loaded."""
        return self.module_class(hparams["config"])(**hparams)

    def callbacks(self, config: RunConfig, run_dir: Path) -> list[pl.Callback]:
        """Family-specific training callbacks (write files only on global rank 0)."""
        return []

    def notes_after_fit(self, module: pl.LightningModule) -> dict[str, str]:
        """Notes for ``summary.json`` from the fitted module (e.g. what it fitted when training
        started), added to those of :meth:`build`."""
        return {}

    def evaluations(self, model: Config) -> tuple[str, ...]:
        """The ``evaluate`` kinds that apply to runs of ``model``."""
        return ()

    def has_unused_parameters(self, model: Config) -> bool:
        """Whether some backward passes of the module leave parameters without gradients (a GAN's
        discriminator step leaves the generator's), which multi-process training must be told."""
        return False

    def supports(self, verb: str, model: Config | None = None, kind: str | None = None) -> bool:
        """Whether runs of this family support ``verb`` (and, for ``evaluate``, the ``kind``)."""
        if verb not in self.verbs:
            return False
        return kind is None or (model is not None and kind in self.evaluations(model))

    def describe(self, model: Config) -> str:
        """What runs of ``model`` support, for messages."""
        verbs = sorted(self.verbs - {"evaluate"})
        kinds = self.evaluations(model)
        if kinds and "evaluate" in self.verbs:
            verbs.append(f"evaluate {'|'.join(kinds)}")
        return ", ".join(verbs) or "training only"
