"""Conditions: what a sample carries beside its image, named in ``data.conditions``.

Each condition is a batch entry under its name, fitted on the training split and saved with the
run (``conditions.json`` and the Lightning checkpoint), so that inference encodes exactly as
training did:

``categorical``
    A metadata column as int64 indices (B,) into a vocabulary of the values seen in the training
    split (sorted as strings). A value outside the vocabulary is an error naming it.
``numeric``
    A metadata column as float32 (B,), optionally ``log10(value + offset)`` (``offset`` defaults
    to half the smallest positive training value, so that a dose of 0 stays finite), standardised
    to mean 0 and SD 1 on the training split.
``features``
    Numeric columns of a table joined on ``Metadata_StoreIndex`` (the crop's store row, as
    ``morphospace features`` writes it), as float32 (B, F). ``standardize: global`` (default):
    each feature minus its training-split mean, over its training-split SD.
    ``standardize: controls_per_plate``: each feature minus the mean of the control cells
    (``controls``, a pandas query on the cell table) of the cell's own plate (``plate_column``),
    over the SD of the training split's control cells after that centring (pooled over plates),
    as plate normalisation to DMSO does in profiling. Each plate's control mean comes from that
    plate's own controls, held-out plates included (no treated cell is used); a table of new
    plates is centred on its own controls. Missing values become the centre (0 after
    standardising); constant features keep SD 1.
``channels``
    Other channels of the same crop, (B, Cr, H, W), normalised and augmented together with the
    image (handled by :class:`~morphospace.data.dataset.CropDataModule`, not here).
``controls``
    Another crop (B, C, H, W) of the image channels: a control cell (``query``, a pandas query or
    ``COLUMN=VALUE`` equalities on the cell table) of the same split and the same value of ``by``
    (the plate), drawn anew every time the crop is served, normalised and augmented like the
    image (handled by the data module). This is the source of a control -> treated flow.

Examples
--------
>>> import pandas as pd
>>> cells = pd.DataFrame({"Metadata_Compound": ["taxol", "DMSO", "taxol"],
...                       "Metadata_Concentration": [1.0, 0.0, 10.0]})
>>> compound = fit_condition("compound", CategoricalCondition(column="Metadata_Compound"), cells)
>>> compound.vocabulary, compound.encode(cells).tolist()
(['DMSO', 'taxol'], [1, 0, 1])
>>> dose = fit_condition("dose", NumericCondition(column="Metadata_Concentration", log=True), cells)
>>> dose.offset, dose.encode(cells).astype(float).round(3).tolist()
(0.5, [-0.224, -1.097, 1.321])
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
import pandas as pd
import pydantic

from morphospace.config import PATH, Config, ConfigError, key_error
from morphospace.errors import InputError
from morphospace.features.profiles import control_mask
from morphospace.io.tables import read_table, select_cells

__all__ = [
    "CategoricalCondition", "NumericCondition", "FeatureCondition", "ChannelCondition", "ControlCondition",
    "ConditionConfig", "control_groups",
    "CategoricalEncoder", "NumericEncoder", "FeatureEncoder", "Encoder", "fit_condition", "encoder_from_dict",
    "category_labels",
    "STORE_INDEX", "RESERVED_KEYS",
]

STORE_INDEX = "Metadata_StoreIndex"
RESERVED_KEYS = ("image", "index")


class CategoricalCondition(Config):
    """A metadata column as indices into the training split's vocabulary; several columns make one
    class of each distinct combination of their values (e.g. compound and concentration: the
    treatment, named ``"taxol | 0.3"``)."""

    kind: Literal["categorical"] = "categorical"
    column: str | list[str] = pydantic.Field(description="metadata column, or columns whose values together "
                                                         "name the class")

    @pydantic.field_validator("column")
    @classmethod
    def _distinct(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and (not value or len(set(value)) < len(value)):
            raise ValueError(f"column must be one name or distinct names, got {value}")
        return value


class NumericCondition(Config):
    """A numeric metadata column, optionally on a log scale, standardised on the training split."""

    kind: Literal["numeric"] = "numeric"
    column: str
    log: bool = pydantic.Field(False, description="log10(value + offset)")
    offset: float | None = pydantic.Field(
        None, ge=0, description="added before the log; null: half the smallest positive training value")


class FeatureCondition(Config):
    """Feature columns of a table joined on Metadata_StoreIndex, standardised on the training split."""

    kind: Literal["features"] = "features"
    table: Annotated[str, PATH] = pydantic.Field(description="Parquet or CSV table with Metadata_StoreIndex (morphospace features)")
    columns: list[str] | None = pydantic.Field(
        None, min_length=1, description="feature columns; null: every numeric non-Metadata column")
    standardize: Literal["global", "controls_per_plate"] = pydantic.Field(
        "global", description="global: training mean and SD; controls_per_plate: each plate's control mean, "
                              "pooled control SD")
    controls: str = pydantic.Field("Metadata_Compound == 'DMSO'",
                                   description="pandas query selecting the control cells (controls_per_plate)")
    plate_column: str = pydantic.Field("Metadata_Plate", description="plate column (controls_per_plate)")


class ChannelCondition(Config):
    """Channels of the same crop given as the condition of the image channels."""

    kind: Literal["channels"] = "channels"
    channels: list[str] = pydantic.Field(min_length=1)


class ControlCondition(Config):
    """A random control crop of the same split and group (plate), served beside each crop."""

    kind: Literal["controls"] = "controls"
    query: str = pydantic.Field("Metadata_Compound == 'DMSO'",
                                description="pandas query or COLUMN=VALUE equalities selecting the control cells")
    by: str | None = pydantic.Field("Metadata_Plate", description="controls come from the crop's own value of this "
                                                                  "column; null: from any control of the split")


ConditionConfig = Annotated[
    Union[CategoricalCondition, NumericCondition, FeatureCondition, ChannelCondition, ControlCondition],
    pydantic.Field(discriminator="kind"),
]


def _key(name: str, field: str) -> str:
    return f"data.conditions.{name}.{field}"


def _column(cells: pd.DataFrame, name: str, column: str) -> pd.Series:
    if column not in cells.columns:
        raise key_error(_key(name, "column"), f"no column {column!r} in the cell table "
                                              f"(metadata columns: {[c for c in cells.columns][:12]})")
    values = cells[column]
    if values.isna().any():
        raise key_error(_key(name, "column"), f"column {column!r} has {int(values.isna().sum())} missing value(s); "
                                              "restrict the rows with data.include")
    return values


def category_labels(cells: pd.DataFrame, name: str, column: str | list[str]) -> pd.Series:
    """The class name of each cell: the column's values as text, or several columns' values joined
    by ``" | "``; ConfigError naming ``data.conditions.<name>.column`` for a missing column or value.

    >>> cells = pd.DataFrame({"Metadata_Compound": ["taxol", "DMSO"], "Metadata_Concentration": [0.3, 0.0]})
    >>> category_labels(cells, "treatment", ["Metadata_Compound", "Metadata_Concentration"]).tolist()
    ['taxol | 0.3', 'DMSO | 0.0']
    """
    columns = [column] if isinstance(column, str) else column
    parts = [_column(cells, name, c).astype(str) for c in columns]
    return parts[0] if len(parts) == 1 else pd.concat(parts, axis=1).agg(" | ".join, axis=1)


class CategoricalEncoder:
    """Fitted categorical condition: ``vocabulary`` (sorted strings); index i means vocabulary[i]."""

    kind = "categorical"

    def __init__(self, name: str, column: str | list[str], vocabulary: list[str]) -> None:
        self.name, self.column, self.vocabulary = name, column, list(vocabulary)
        self._codes = {value: i for i, value in enumerate(self.vocabulary)}

    @classmethod
    def fit(cls, name: str, config: CategoricalCondition, train: pd.DataFrame) -> "CategoricalEncoder":
        return cls(name, config.column, sorted(category_labels(train, name, config.column).unique()))

    def encode(self, cells: pd.DataFrame) -> np.ndarray:
        """int64 indices (N,); InputError naming values outside the vocabulary."""
        values = category_labels(cells, self.name, self.column)
        unknown = sorted(set(values.unique()) - set(self._codes))
        if unknown:
            raise InputError(f"condition {self.name!r}: value(s) {unknown[:8]} of {self.column} were not in the "
                             f"training split (vocabulary of {len(self.vocabulary)}: {self.vocabulary[:8]}...)")
        return values.map(self._codes).to_numpy(np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return ()

    @property
    def names(self) -> list[str]:
        return self.vocabulary

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "column": self.column, "vocabulary": self.vocabulary}


class NumericEncoder:
    """Fitted numeric condition: ``(transform(value) - mean) / std``, transform the optional log."""

    kind = "numeric"

    def __init__(self, name: str, column: str, log: bool, offset: float, mean: float, std: float) -> None:
        self.name, self.column, self.log, self.offset, self.mean, self.std = name, column, log, offset, mean, std

    @staticmethod
    def _values(cells: pd.DataFrame, name: str, column: str) -> np.ndarray:
        values = pd.to_numeric(_column(cells, name, column), errors="coerce")
        if values.isna().any():
            raise InputError(f"condition {name!r}: column {column} holds non-numeric value(s)")
        return values.to_numpy(np.float64)

    def _transform(self, values: np.ndarray) -> np.ndarray:
        if not self.log:
            return values
        shifted = values + self.offset
        if (shifted <= 0).any():
            raise InputError(f"condition {self.name!r}: log10 of {self.column} + {self.offset:g} is undefined for "
                             f"{int((shifted <= 0).sum())} value(s) <= {-self.offset:g}")
        return np.log10(shifted)

    @classmethod
    def fit(cls, name: str, config: NumericCondition, train: pd.DataFrame) -> "NumericEncoder":
        values = cls._values(train, name, config.column)
        offset = config.offset
        if config.log and offset is None:
            positive = values[values > 0]
            if not positive.size:
                raise key_error(_key(name, "offset"), f"{config.column} has no positive training value; set an offset")
            offset = float(positive.min()) / 2
        encoder = cls(name, config.column, config.log, float(offset or 0.0), 0.0, 1.0)
        try:
            transformed = encoder._transform(values)
        except InputError as exc:
            raise key_error(_key(name, "offset"), str(exc)) from None
        std = float(transformed.std())
        encoder.mean, encoder.std = float(transformed.mean()), std if std > 0 else 1.0
        return encoder

    def encode(self, cells: pd.DataFrame) -> np.ndarray:
        """float32 (N,) standardised values."""
        values = self._transform(self._values(cells, self.name, self.column))
        return ((values - self.mean) / self.std).astype(np.float32)

    @property
    def shape(self) -> tuple[int, ...]:
        return ()

    @property
    def names(self) -> list[str]:
        return [self.column]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "column": self.column, "log": self.log, "offset": self.offset,
                "mean": self.mean, "std": self.std}


class FeatureEncoder:
    """Fitted feature condition: per-column centre and SD of a table joined on the store row.

    The centre is the training mean (``plate_column`` None), or with ``plate_column`` set the mean
    of each plate's control cells (``plate_means``, plate -> (F,)), ``mean`` then being the
    training plates' control mean (the filler of :meth:`unstandardize`).
    """

    kind = "features"

    def __init__(self, name: str, table: str, columns: list[str], mean: list[float], std: list[float],
                 plate_column: str | None = None, controls: str | None = None,
                 plate_means: dict[str, list[float]] | None = None) -> None:
        self.name, self.table, self.columns = name, table, list(columns)
        self.mean, self.std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
        self.plate_column, self.controls = plate_column, controls
        self.plate_means = {str(p): np.asarray(m, np.float64) for p, m in (plate_means or {}).items()}
        self._rows: pd.DataFrame | None = None

    @staticmethod
    def _read(name: str, table: str) -> pd.DataFrame:
        try:
            frame = read_table(table)
        except InputError as exc:
            raise key_error(_key(name, "table"), str(exc)) from None
        if STORE_INDEX not in frame.columns:
            raise key_error(_key(name, "table"), f"{table} has no {STORE_INDEX} column to join on "
                                                 "(write it with morphospace features)")
        duplicated = frame[STORE_INDEX].duplicated()
        if duplicated.any():
            raise key_error(_key(name, "table"), f"{table}: {int(duplicated.sum())} repeated {STORE_INDEX} value(s)")
        return frame.set_index(STORE_INDEX)

    def rows(self, store_rows: np.ndarray) -> pd.DataFrame:
        """The feature columns of ``store_rows``; InputError when the table lacks some of them."""
        if self._rows is None:
            self._rows = self._read(self.name, self.table)[self.columns].apply(pd.to_numeric, errors="coerce")
        missing = np.setdiff1d(store_rows, self._rows.index.to_numpy())
        if missing.size:
            raise InputError(f"{self.table}: no features for {missing.size} crop(s) of condition {self.name!r} "
                             f"(store rows {missing[:5].tolist()}...)")
        return self._rows.loc[store_rows]

    @classmethod
    def fit(cls, name: str, config: FeatureCondition, train: pd.DataFrame,
            cells: pd.DataFrame | None = None) -> "FeatureEncoder":
        """Fit on the training split's cell table ``train``; ``cells`` (every split, default
        ``train``) gives each plate its control mean under ``controls_per_plate``."""
        frame = cls._read(name, config.table)
        columns = config.columns or [c for c in frame.columns
                                     if not str(c).startswith("Metadata_") and pd.api.types.is_numeric_dtype(frame[c])]
        absent = [c for c in columns if c not in frame.columns]
        if absent or not columns:
            raise key_error(_key(name, "columns"), f"{config.table} lacks column(s) {absent[:8]}" if absent
                            else f"{config.table} has no numeric feature column")
        encoder = cls(name, config.table, columns, [0.0] * len(columns), [1.0] * len(columns))
        if config.standardize == "controls_per_plate":
            encoder._fit_controls(config, train, train if cells is None else cells)
            return encoder
        values = encoder._finite(encoder._train_rows(train))
        encoder.mean = encoder._column_means(values, encoder.mean)
        encoder._set_std(values)
        return encoder

    def _train_rows(self, cells: pd.DataFrame) -> pd.DataFrame:
        try:
            return self.rows(cells.index.to_numpy())
        except InputError as exc:
            raise key_error(_key(self.name, "table"), str(exc)) from None

    @staticmethod
    def _finite(rows: pd.DataFrame) -> np.ndarray:
        """(N, F) float64 values with infinite ones counted as missing (NaN)."""
        values = rows.to_numpy(np.float64)
        return np.where(np.isfinite(values), values, np.nan)

    def _set_std(self, centred: np.ndarray) -> None:
        std = np.nan_to_num(np.nanstd(centred, axis=0))
        self.std = np.where(std > 0, std, 1.0)

    def _fit_controls(self, config: FeatureCondition, train: pd.DataFrame, cells: pd.DataFrame) -> None:
        if config.plate_column not in cells.columns:
            raise key_error(_key(self.name, "plate_column"), f"no column {config.plate_column!r} in the cell table")
        self.plate_column, self.controls = config.plate_column, config.controls
        try:
            is_control = control_mask(cells, config.controls).to_numpy(bool)
        except InputError as exc:
            raise key_error(_key(self.name, "controls"), str(exc)) from None
        controls = cells[is_control]
        in_train = controls.index.isin(train.index)
        if in_train.sum() < 2:
            raise key_error(_key(self.name, "controls"), f"{config.controls!r} selects {int(in_train.sum())} "
                                                         "training cell(s); at least 2 are needed for an SD")
        values = self._finite(self._train_rows(controls))
        plates = controls[config.plate_column].astype(str).to_numpy()
        self.mean = self._column_means(values[in_train], np.zeros(values.shape[1]))
        self.plate_means = self._group_means(values, plates)
        centred = values - np.stack([self.plate_means[p] for p in plates])
        self._set_std(centred[in_train])

    @staticmethod
    def _column_means(values: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        """(F,) mean of the finite values of each column of ``values`` (N, F); ``fallback`` where none."""
        counts = np.isfinite(values).sum(axis=0)
        return np.where(counts > 0, np.nansum(values, axis=0) / np.maximum(counts, 1), fallback)

    def _group_means(self, values: np.ndarray, plates: np.ndarray) -> dict[str, np.ndarray]:
        """Plate -> mean of ``values`` (N, F) over that plate's rows (a column with none: ``self.mean``)."""
        return {str(plate): self._column_means(values[plates == plate], self.mean) for plate in np.unique(plates)}

    def _centres(self, features: pd.DataFrame, values: np.ndarray) -> np.ndarray:
        """The centre of each row of ``features``: (F,) for global, (N, F) per plate."""
        if self.plate_column is None:
            return self.mean
        if self.plate_column not in features.columns:
            raise InputError(f"condition {self.name!r} is standardised against each plate's controls: the table "
                             f"lacks the plate column {self.plate_column!r}")
        plates = features[self.plate_column].astype(str).to_numpy()
        means = dict(self.plate_means)
        new = ~np.isin(plates, list(means))
        if new.any():
            is_control = control_mask(features, self.controls).to_numpy(bool) & new
            means |= self._group_means(values[is_control], plates[is_control])
        uncovered = sorted(set(plates) - set(means))
        if uncovered:
            raise InputError(f"condition {self.name!r}: plate(s) {uncovered[:5]} were not in the training table and "
                             f"the table holds no control cell ({self.controls}) on them to centre on")
        return np.stack([means[p] for p in plates]) if len(plates) else self.mean

    def encode(self, cells: pd.DataFrame) -> np.ndarray:
        """float32 (N, F) standardised features of the crops whose store rows are ``cells.index``
        (``cells``: the store's cell table, for the plate and the controls)."""
        rows = self.rows(cells.index.to_numpy())
        if self.plate_column is not None:
            extra = [c for c in cells.columns if c not in rows.columns]
            rows = pd.concat([rows, cells.loc[rows.index, extra]], axis=1)
        return self.standardize(rows)

    def standardize(self, features: pd.DataFrame) -> np.ndarray:
        """float32 (N, F) standardised values of any table holding the feature columns (and, per
        plate, the plate column); missing or non-numeric values become the centre. InputError
        naming the columns it lacks, or the plates it cannot centre."""
        absent = [c for c in self.columns if c not in features.columns]
        if absent:
            raise InputError(f"condition {self.name!r}: the table lacks {len(absent)} feature column(s) the model "
                             f"was trained on: {absent[:8]}")
        values = self._finite(features[self.columns].apply(pd.to_numeric, errors="coerce"))
        centres = self._centres(features, values)
        values = np.where(np.isfinite(values), values, centres)
        return ((values - centres) / self.std).astype(np.float32)

    def unstandardize(self, standardized: np.ndarray) -> pd.DataFrame:
        """Standardised values (N, F) back in the table's units (per plate: around the training
        plates' control mean), as a table of the feature columns."""
        return pd.DataFrame(np.asarray(standardized, np.float64) * self.std + self.mean, columns=self.columns)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.columns),)

    @property
    def names(self) -> list[str]:
        return self.columns

    def to_dict(self) -> dict[str, Any]:
        state = {"kind": self.kind, "table": str(Path(self.table)), "columns": self.columns,
                 "mean": self.mean.tolist(), "std": self.std.tolist()}
        if self.plate_column is not None:
            state |= {"plate_column": self.plate_column, "controls": self.controls,
                      "plate_means": {p: m.tolist() for p, m in self.plate_means.items()}}
        return state


Encoder = CategoricalEncoder | NumericEncoder | FeatureEncoder
_ENCODERS = {"categorical": CategoricalEncoder, "numeric": NumericEncoder, "features": FeatureEncoder}


def fit_condition(name: str, config: ConditionConfig, train: pd.DataFrame,
                  cells: pd.DataFrame | None = None) -> Encoder:
    """Fit the metadata condition ``name`` on the training split's cell table (its index the store
    rows; ``cells``: every split, for the per-plate control means of a features condition); raises
    ConfigError naming the condition's key when the data does not fit the config."""
    if isinstance(config, (ChannelCondition, ControlCondition)):
        raise ValueError(f"{config.kind} conditions are read with the image, not fitted on the cell table")
    try:
        if isinstance(config, FeatureCondition):
            return FeatureEncoder.fit(name, config, train, cells)
        return _ENCODERS[config.kind].fit(name, config, train)
    except ConfigError:
        raise
    except InputError as exc:
        raise key_error(f"data.conditions.{name}", str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise key_error(f"data.conditions.{name}", f"cannot be fitted ({exc})") from None


def encoder_from_dict(name: str, state: dict[str, Any]) -> Encoder:
    """Rebuild an encoder saved with its ``to_dict``."""
    state = dict(state)
    kind = state.pop("kind")
    if kind not in _ENCODERS:
        raise InputError(f"condition {name!r}: unknown saved kind {kind!r}")
    return _ENCODERS[kind](name, **state)


def control_groups(name: str, config: ControlCondition, cells: pd.DataFrame, chosen: np.ndarray,
                   where: str) -> list[np.ndarray]:
    """For each chosen row of ``cells`` (the selected cell table, indexed by store row; ``chosen``
    (N,) bool, e.g. one split), the store rows of the control cells it may be paired with: those
    matching ``config.query`` with its value of ``config.by``, taken among the chosen rows when
    any, else among all rows (a small validation split may hold no control of a plate).
    ConfigError naming the condition when a group has no control cell at all."""
    try:
        is_control = select_cells(cells, config.query, f"data.conditions.{name}.query", where)
    except InputError as exc:
        raise key_error(_key(name, "query"), str(exc)) from None
    if config.by is not None and config.by not in cells.columns:
        raise key_error(_key(name, "by"), f"no column {config.by!r} in the cell table of {where}")
    groups = (cells[config.by].astype(str).to_numpy() if config.by is not None
              else np.full(len(cells), "all", dtype=object))
    rows = cells.index.to_numpy()
    pools = {}
    for group in np.unique(groups[chosen]):
        in_group = is_control & (groups == group)
        own = in_group & chosen
        pools[group] = rows[own] if own.any() else rows[in_group]
    empty = sorted(group for group, pool in pools.items() if not len(pool))
    if empty:
        raise key_error(_key(name, "by"), f"{len(empty)} group(s) of {config.by} without a control cell in {where}: "
                                          f"{empty[:5]}")
    return [pools[group] for group in groups[chosen]]
