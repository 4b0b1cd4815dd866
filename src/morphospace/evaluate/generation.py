"""How real are generated cell crops: FID/KID, CellProfiler feature distributions, memorisation.

Every image batch is a float tensor or array (N, C, H, W) with values in [0, 1] (rescale model
outputs from [-1, 1] with ``(x + 1) / 2`` first); C is any number of channels.

- :func:`fid_kid` scores a fake set against a real one with torchmetrics' FID and KID on the
  embedding of an in-domain :class:`~morphospace.models.extractor.FeatureExtractor`;
  :func:`inception_fid_kid` does the same with the standard InceptionV3 (needs torch-fidelity and a
  local weights file).
- :func:`feature_distances` compares CellProfiler features per feature: Wasserstein distance in
  units of the real standard deviation, and the Kolmogorov-Smirnov statistic.
- :func:`nearest_real_neighbours` flags memorisation: fakes much closer to a training image than
  held-out real crops are.

Examples
--------
>>> import pandas as pd
>>> real = pd.DataFrame({"Cells_AreaShape_Area": [10.0, 12.0, 14.0]})  # SD 2
>>> table = compare_feature_tables(real, real + 3.0)
>>> table.loc["Cells_AreaShape_Area", ["normalized_wasserstein", "ks_statistic"]].tolist()
[1.5, 0.6666666666666666]
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import ks_2samp, wasserstein_distance
from torch import nn

from morphospace.errors import InputError
from morphospace.features.cellprofiler import (
    OBJECTS, feature_columns, masks_by_segmentation, measurable_objects, measure_crops, resolve_nucleus_channel,
)
from morphospace.models.extractor import FeatureExtractor, as_unit_images, device_of, fingerprint

__all__ = [
    "fid_kid",
    "inception_fid_kid",
    "compare_feature_tables",
    "feature_distances",
    "summarize_feature_distances",
    "nearest_real_neighbours",
]

ImageBatch = np.ndarray | torch.Tensor
_INCEPTION_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"


# ----------------------------------------------------------------------------- image batches


def _as_image_sets(named: dict[str, ImageBatch | None], in_channels: int | None = None) -> dict[str, torch.Tensor]:
    """Validate every non-None batch; all must share (C, H, W), and C must be ``in_channels`` if given."""
    tensors = {name: as_unit_images(images, name) for name, images in named.items() if images is not None}
    shapes = {name: tuple(t.shape[1:]) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise InputError(f"image batches differ in (C, H, W): {shapes}")
    channels = next(iter(shapes.values()))[0]
    if in_channels is not None and channels != in_channels:
        raise InputError(f"images have {channels} channel(s) but the feature extractor expects {in_channels}")
    return tensors


@torch.no_grad()
def _embed(extractor: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Embeddings (N, num_features) as float32 on the CPU, computed batch by batch."""
    device = device_of(extractor)
    parts = [extractor(images[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(parts)


# ----------------------------------------------------------------------------- FID and KID


def _torchmetrics_scores(
    fid: torch.nn.Module, kid: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
    prepare: Callable[[torch.Tensor], torch.Tensor], batch_size: int, device: torch.device, seed: int,
) -> tuple[float, float, float]:
    """Feed both sets through both metrics in batches (``prepare`` maps a [0, 1] batch to the
    metric's input); KID's random subsets are drawn under ``seed``. Returns (FID, KID mean, KID std)."""
    fid.to(device).eval()
    kid.to(device).eval()
    for images, is_real in ((real, True), (fake, False)):
        for start in range(0, len(images), batch_size):
            batch = prepare(images[start:start + batch_size]).to(device)
            fid.update(batch, real=is_real)
            kid.update(batch, real=is_real)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return float(fid.compute()), float(kid_mean), float(kid_std)


def _kid_metric(feature: nn.Module, normalize: bool, subsets: int, subset_size: int) -> torch.nn.Module:
    from torchmetrics.image.kid import KernelInceptionDistance

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
        return KernelInceptionDistance(feature=feature, normalize=normalize, subsets=subsets, subset_size=subset_size)


def _check_counts(real: torch.Tensor, fake: torch.Tensor) -> None:
    if len(real) < 2 or len(fake) < 2:
        raise InputError(f"FID and KID need at least 2 real and 2 fake images; got {len(real)} and {len(fake)}")


def fid_kid(
    real: ImageBatch,
    fake: ImageBatch,
    extractor: FeatureExtractor,
    kid_subset_size: int = 1000,
    batch_size: int = 256,
    kid_subsets: int = 100,
    seed: int = 0,
) -> dict:
    """FID and KID of ``fake`` against ``real`` in the embedding of ``extractor``.

    Both sets are (N, C, H, W) in [0, 1] with the extractor's channels. torchmetrics is built
    with ``feature=extractor, normalize=True``: with a custom module it passes the float images
    through unchanged (no x255, no uint8 cast), so the extractor sees [0, 1] floats. The
    extractor is put in eval mode and used on its own device. KID uses ``kid_subsets`` random
    subsets of ``min(kid_subset_size, n_real, n_fake)`` images, drawn under ``seed``.

    Returns
    -------
    dict
        ``fid``, ``kid_mean``, ``kid_std`` (floats; squared embedding units), ``extractor``
        (name with a weights fingerprint: compare scores only under the same name), ``n_real``,
        ``n_fake``, ``kid_subset_size``.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    sets = _as_image_sets({"real": real, "fake": fake}, extractor.in_channels)
    real_t, fake_t = sets["real"], sets["fake"]
    _check_counts(real_t, fake_t)
    extractor.eval()
    subset = min(kid_subset_size, len(real_t), len(fake_t))
    fid = FrechetInceptionDistance(feature=extractor, normalize=True)
    kid = _kid_metric(extractor, True, kid_subsets, subset)
    scores = _torchmetrics_scores(fid, kid, real_t, fake_t, lambda b: b, batch_size, device_of(extractor), seed)
    name = f"morphospace-cnn{extractor.num_features}-{fingerprint(extractor)}"
    return {"fid": scores[0], "kid_mean": scores[1], "kid_std": scores[2], "extractor": name,
            "n_real": len(real_t), "n_fake": len(fake_t), "kid_subset_size": subset}


def _torch_fidelity_installed() -> bool:
    return importlib.util.find_spec("torch_fidelity") is not None


def _inception_problems(weights_path: str | os.PathLike | None) -> list[str]:
    """What prevents the InceptionV3 path from running (empty when nothing)."""
    problems = []
    if not _torch_fidelity_installed():
        problems.append("the Python package torch-fidelity is not installed (pip install torch-fidelity)")
    if weights_path is None:
        problems.append(f"no InceptionV3 weights file given (weights_path=None; expected {_INCEPTION_WEIGHTS})")
    elif not Path(weights_path).is_file():
        problems.append(f"InceptionV3 weights file {weights_path} not found")
    return problems


def _to_rgb_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, 3, H, W) uint8: 1 channel replicated, 2 padded with a zero
    third channel, more than 3 truncated to the first 3."""
    channels = images.shape[1]
    if channels == 1:
        images = images.expand(-1, 3, -1, -1)
    elif channels == 2:
        images = torch.cat([images, torch.zeros_like(images[:, :1])], dim=1)
    else:
        images = images[:, :3]
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def inception_fid_kid(
    real: ImageBatch,
    fake: ImageBatch,
    weights_path: str | os.PathLike | None,
    kid_subset_size: int = 1000,
    batch_size: int = 64,
    kid_subsets: int = 100,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict:
    """FID and KID with the standard FID InceptionV3 (2048-d pool features), from a local file.

    Needs the optional package torch-fidelity and the weights file ``weights_path``
    (``pt_inception-2015-12-05-6726825d.pth``); nothing is downloaded. Channels map to RGB in
    order (1 channel replicated, 2 padded with a zero third channel, more than 3: the first 3);
    images are rounded to uint8 and resized to 299 px inside the network. KID reuses the FID's
    network (torchmetrics' KID cannot take a weights path).

    Raises :class:`InputError` saying what is missing (package and/or weights file), or naming the
    weights file when it cannot be loaded. Returns the keys of :func:`fid_kid`, with
    ``extractor`` = ``"inception-v3-2048"``.
    """
    problems = _inception_problems(weights_path)
    if problems:
        raise InputError("; ".join(problems))
    from torchmetrics.image.fid import FrechetInceptionDistance

    sets = _as_image_sets({"real": real, "fake": fake})
    real_t, fake_t = sets["real"], sets["fake"]
    _check_counts(real_t, fake_t)
    try:
        fid = FrechetInceptionDistance(feature=2048, normalize=False, feature_extractor_weights_path=str(weights_path))
    except Exception as exc:  # torch.load / load_state_dict failures inside torch-fidelity
        raise InputError(f"{weights_path}: cannot load InceptionV3 weights ({exc})") from None
    subset = min(kid_subset_size, len(real_t), len(fake_t))
    kid = _kid_metric(fid.inception, False, kid_subsets, subset)
    scores = _torchmetrics_scores(fid, kid, real_t, fake_t, _to_rgb_uint8, batch_size, torch.device(device), seed)
    return {"fid": scores[0], "kid_mean": scores[1], "kid_std": scores[2], "extractor": "inception-v3-2048",
            "n_real": len(real_t), "n_fake": len(fake_t), "kid_subset_size": subset}


# ----------------------------------------------------------------------------- CellProfiler features


def _feature_row(real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """Distances between the finite values of one feature in the real and fake sets."""
    distance = wasserstein_distance(real, fake)
    spread = real.std(ddof=1)
    return {
        "normalized_wasserstein": distance / spread if spread > 0 else np.nan,
        "wasserstein": distance,
        "real_std": spread,
        "real_mean": real.mean(),
        "fake_mean": fake.mean(),
        "ks_statistic": ks_2samp(real, fake).statistic,
        "n_real": len(real),
        "n_fake": len(fake),
    }


def compare_feature_tables(real: pd.DataFrame, fake: pd.DataFrame, min_values: int = 2) -> pd.DataFrame:
    """Per-feature distances between two feature tables (rows: cells; numeric, non-``Metadata_`` columns).

    For every feature present in both tables with at least ``min_values`` finite values in each:
    ``normalized_wasserstein`` (1-D Wasserstein distance divided by the real values' standard
    deviation, ddof=1; NaN when that is 0), ``wasserstein`` (feature units), ``real_std``,
    ``real_mean``, ``fake_mean``, ``ks_statistic`` (two-sample Kolmogorov-Smirnov, in [0, 1]),
    ``n_real``, ``n_fake`` (finite values used). One row per feature, index ``feature``, in the
    real table's column order.
    """
    fake_columns = set(feature_columns(fake))
    shared = [c for c in feature_columns(real) if c in fake_columns]
    rows = {}
    for column in shared:
        real_values = real[column].to_numpy(dtype=float)
        fake_values = fake[column].to_numpy(dtype=float)
        real_values, fake_values = real_values[np.isfinite(real_values)], fake_values[np.isfinite(fake_values)]
        if len(real_values) >= min_values and len(fake_values) >= min_values:
            rows[column] = _feature_row(real_values, fake_values)
    if not rows:
        raise InputError(f"no feature has {min_values} or more finite values in both the real and the fake table")
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("feature")


def _measure(
    images: torch.Tensor, masks: np.ndarray | None, channels: Sequence[str], feature_set: str,
    nucleus_channel: str, cytoplasm_channels: Sequence[str], source: str,
) -> pd.DataFrame:
    array = images.numpy()
    objects = tuple(OBJECTS)
    if masks is None:
        nucleus_channel = resolve_nucleus_channel(channels, nucleus_channel, source)
        masks = masks_by_segmentation(array, channels, nucleus_channel, cytoplasm_channels)
        objects, _ = measurable_objects(objects, channels, cytoplasm_channels)
    return measure_crops(array, np.asarray(masks), channels, feature_set, objects)


def feature_distances(
    real: ImageBatch,
    fake: ImageBatch,
    channels: Sequence[str],
    masks_real: np.ndarray | None = None,
    masks_fake: np.ndarray | None = None,
    feature_set: str = "fast",
    nucleus_channel: str = "auto",
    cytoplasm_channels: Sequence[str] = ("Actin", "Tubulin"),
    source: str = "the crops",
) -> pd.DataFrame:
    """CellProfiler features of real and fake crops compared per feature (see :func:`compare_feature_tables`).

    Crops (N, C, H, W) in [0, 1] are measured with :func:`~morphospace.features.cellprofiler.measure_crops`;
    a set without masks (N, H, W) (1 nucleus, 2 rest of the cell) is segmented first with
    :func:`~morphospace.features.cellprofiler.masks_by_segmentation` (``nucleus_channel``, ``auto``:
    chosen from the channel names by
    :func:`~morphospace.features.cellprofiler.resolve_nucleus_channel`; and those
    ``cytoplasm_channels`` present), and measured for the objects its channels outline (nuclei only
    without a cytoplasm channel). Crops where no nucleus is found give NaN features and drop out;
    ``n_real``/``n_fake`` count the crops used per feature. InputError names ``source`` when the
    nucleus channel cannot be found.
    """
    sets = _as_image_sets({"real": real, "fake": fake})
    n_channels = sets["real"].shape[1]
    if len(channels) != n_channels:
        raise InputError(f"{len(channels)} channel name(s) {list(channels)} for images with {n_channels} channels")
    options = (channels, feature_set, nucleus_channel, cytoplasm_channels, source)
    real_table = _measure(sets["real"], masks_real, *options)
    fake_table = _measure(sets["fake"], masks_fake, *options)
    return compare_feature_tables(real_table, fake_table)


def summarize_feature_distances(table: pd.DataFrame, n_worst: int = 10) -> dict:
    """Median and mean ``normalized_wasserstein`` over features (NaN ignored), the number of
    features, the CellProfiler objects measured (``Nuclei``, ``Cells``, ``Cytoplasm``, from the names),
    and the ``n_worst`` largest as ``{feature: value}``, largest first."""
    values = table["normalized_wasserstein"].dropna().sort_values(ascending=False)
    return {
        "n_features": len(values),
        "objects": [name for name in OBJECTS if any(str(feature).startswith(f"{name}_") for feature in values.index)],
        "median_normalized_wasserstein": float(values.median()),
        "mean_normalized_wasserstein": float(values.mean()),
        "worst_features": {str(k): float(v) for k, v in values.head(n_worst).items()},
    }


# ----------------------------------------------------------------------------- memorisation


def _nearest(queries: torch.Tensor, reference: torch.Tensor, exclude_self: bool = False,
             chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """L2 distance from each query row to its nearest reference row, and that row's index.

    ``exclude_self``: queries are the reference rows themselves; a row is not its own neighbour.
    """
    distances, indices = [], []
    for start in range(0, len(queries), chunk):
        block = torch.cdist(queries[start:start + chunk], reference)
        if exclude_self:
            rows = torch.arange(len(block))
            block[rows, rows + start] = torch.inf
        value, index = block.min(dim=1)
        distances.append(value)
        indices.append(index)
    return torch.cat(distances).numpy(), torch.cat(indices).numpy()


def nearest_real_neighbours(
    real_train: ImageBatch,
    fake: ImageBatch,
    real_holdout: ImageBatch | None = None,
    extractor: FeatureExtractor | None = None,
    n_examples: int = 8,
    batch_size: int = 256,
) -> dict:
    """Memorisation check: how close each fake is to its nearest training crop, against a baseline.

    Distances are L2 in ``extractor``'s embedding when given, else over all pixels (C*H*W values
    in [0, 1]). The baseline is the same statistic for ``real_holdout`` against the training crops
    (what new but realistic crops look like); without a holdout set, each training crop's distance
    to its nearest other training crop. A fake is flagged when it is closer to its nearest
    training crop than the 1st percentile of the baseline distances.

    Returns
    -------
    dict
        ``space`` ("embedding" or "pixel"), ``baseline`` ("holdout" or "train_leave_one_out"),
        ``n_train``, ``n_fake``, ``n_baseline``, ``fake_median``, ``baseline_median``,
        ``median_ratio`` (fake / baseline; near 1 is healthy, well below 1 suggests copying),
        ``threshold`` (1st percentile of the baseline), ``memorised_fraction`` (fakes below it;
        about 0.01 for fresh samples, near 1 for copies), ``example_nearest`` (indices into
        ``real_train`` of the nearest crops of the first ``n_examples`` fakes),
        ``example_distances``, and the arrays ``fake_distances`` (N_fake,) and
        ``baseline_distances``.
    """
    sets = _as_image_sets({"real_train": real_train, "fake": fake, "real_holdout": real_holdout},
                          extractor.in_channels if extractor is not None else None)
    if len(sets["real_train"]) < 2:
        raise InputError("the memorisation check needs at least 2 training images")
    if extractor is not None:
        extractor.eval()
        vectors = {name: _embed(extractor, images, batch_size) for name, images in sets.items()}
    else:
        vectors = {name: images.flatten(1) for name, images in sets.items()}
    fake_distances, fake_nearest = _nearest(vectors["fake"], vectors["real_train"])
    if "real_holdout" in vectors:
        baseline_distances, _ = _nearest(vectors["real_holdout"], vectors["real_train"])
    else:
        baseline_distances, _ = _nearest(vectors["real_train"], vectors["real_train"], exclude_self=True)
    threshold = float(np.percentile(baseline_distances, 1))
    fake_median, baseline_median = float(np.median(fake_distances)), float(np.median(baseline_distances))
    return {
        "space": "embedding" if extractor is not None else "pixel",
        "baseline": "holdout" if "real_holdout" in vectors else "train_leave_one_out",
        "n_train": len(sets["real_train"]),
        "n_fake": len(sets["fake"]),
        "n_baseline": len(baseline_distances),
        "fake_median": fake_median,
        "baseline_median": baseline_median,
        "median_ratio": fake_median / baseline_median if baseline_median > 0 else float("inf"),
        "threshold": threshold,
        "memorised_fraction": float(np.mean(fake_distances < threshold)),
        "example_nearest": [int(i) for i in fake_nearest[:n_examples]],
        "example_distances": [float(d) for d in fake_distances[:n_examples]],
        "fake_distances": fake_distances,
        "baseline_distances": baseline_distances,
    }
