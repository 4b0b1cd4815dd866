"""How much the built-in simulated screen looks and responds like real BBBC021 cells.

Real: the 5,318 DMSO crops of week 4 and the 1,000 all-MoA crops in ``bbbc021/`` (68 px, centred
on each nucleus, raw), and the Ljosa et al. 2013 per-well profiles. Simulated: a screen with the
simulator's defaults (pixel size, optics, phenotypes) and every compound at every dose, cut into
68 px crops centred on each nucleus straight from the raw fields, as the real crops were
(``morphospace.simulate.cell_crops``). Both are imported and measured the same way: CellProfiler
fast-set features, each crop segmented by ``features``.

Stain batches: BBBC021's stains differ in brightness between plates (week 1: tubulin 2.3x and actin
0.6x the other weeks' in the Ljosa DMSO wells; the 1,000-crop file's few DMSO cells of week 1 agree,
2.9x and 0.57x). Each real crop's channels are divided by its plate's brightness
(``morphospace.evaluate.realism.control_brightness`` on the Ljosa per-well profiles: per plate the
median over its 6 DMSO wells of the nuclear DNA, cell actin and cell tubulin mean intensities, over
the median of all DMSO wells) before it is measured, so that cells of every week share one DMSO
reference. The simulated screen's plates share the same stains and need no such step.

Measures (``morphospace.evaluate.realism``):

- ``dmso_auc_all_features`` / ``dmso_auc_dimensionless``: 5-fold cross-validated AUC of a logistic
  regression telling real DMSO cells (week 4) from simulated DMSO cells (3,000 of each at most),
  on every shared feature or on the unit-free ones (shape ratios, normalised moments, Pearson
  correlations); features standardised on the pooled training fold.
  The same AUC against the three DMSO plates the renderer's texture was last chosen on
  (``LOOK_PLATES``) and against the other three (held out).
- scale and texture, medians over DMSO cells: nucleus area (``nucleus_area_ratio`` = simulated /
  real), cell-to-nucleus area ratio, within-cell tubulin coefficient of variation (SD / mean over
  the cell's pixels), cytoplasm solidity.
- MoA shifts: every feature in SDs of its source's own DMSO cells (real crops: the 1,000-crop
  file's DMSO cells, all batches pooled, as most batches hold under 10 of them; simulated: centred
  on each plate's DMSO cells), values clipped to +-10, averaged per MoA; then per MoA the cosine
  between the simulated and the real shift, the mean cosine of mismatched MoA pairs, and the
  Spearman of shift magnitudes across the 12 MoAs.
- Held-out compounds: each MoA's phenotype model in the simulator was fitted on one compound (the
  one with the most crops in the 1,000-crop file, ``CALIBRATION_COMPOUNDS``); the headline
  ``moa_shift_cosine_*`` and ``moa_shift_magnitude_spearman`` compare the simulated MoA with the
  real crops of the MoA's *other* compounds. The same numbers on the calibration compounds and on
  all compounds are reported beside them, with the real crops' split-half cosine per MoA (how
  well two random halves of the real cells agree: a ceiling set by the few real cells), and the
  cosine between the real calibration compound's shift and the real shift of the MoA's other
  compounds (``real_calibration_vs_heldout``: what a simulator reproducing each calibration
  compound exactly would score on the held-out ones, a ceiling set by how alike a MoA's compounds
  are).
- Ljosa per-well profiles, on the features both sets share: each plate centred on the median of
  its DMSO wells and scaled by the pooled DMSO-well SD; the simulated cells are averaged per well
  and treated the same way.

Writes ``results/simulator_realism.json``, the per-MoA table and ``results/simulator_realism/
montage.png`` (real crops, as measured, and simulated crops per MoA).

    python benchmarks/simulator_realism.py [--data ../shared/data] [--workers 2] [--plates 2]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from common import ROOT, RESULTS, cached_seconds, data_dir, print_table, write_result
from morphospace.config import resolve_config
from morphospace.evaluate.realism import (
    brightness_normalised,
    control_brightness,
    control_standardised,
    dimensionless_features,
    domain_auc,
    group_shifts,
    shared_features,
    shift_agreement,
)
from matplotlib.figure import Figure

from morphospace.explore.figures import crops_rgb, display_limits, montage, save_figure
from morphospace.features.cellprofiler import FeaturesConfig
from morphospace.io.bbbc021 import annotate_bbbc021
from morphospace.io.importers import import_npz
from morphospace.simulate import SimulateConfig
from morphospace.simulate.cell_crops import screen_crops
from morphospace.simulate.phenotypes import MOA_EFFECTS
from morphospace.workflows.profiling import cellprofiler_metadata, extract_features

CHANNELS = ["DNA", "Actin", "Tubulin"]
ALLMOA_FILE = "bbbc021_crops68_random1000_allmoa.npz"
CONTROL = "DMSO"
CROP = 68
WORK = ROOT / "work" / "simulator_realism"
CALIBRATION_COMPOUNDS = {
    "Actin disruptors": "latrunculin B", "Aurora kinase inhibitors": "AZ-A",
    "Cholesterol-lowering": "mevinolin/lovastatin", "DNA damage": "mitomycin C", "DNA replication": "camptothecin",
    "Eg5 inhibitors": "AZ-C", "Epithelial": "AZ-U", "Kinase inhibitors": "alsterpaullone",
    "Microtubule destabilizers": "vincristine", "Microtubule stabilizers": "taxol",
    "Protein degradation": "proteasome inhibitor I", "Protein synthesis": "emetine",
}
"""Per MoA, the compound with the most of the 1,000 real crops (ties: the first by name): the
simulator's phenotype models were fitted on these, so scores on them are not held out."""
LJOSA_CHANNELS = {"CorrDAPI": "DNA", "CorrActin": "Actin", "CorrTub": "Tubulin"}
BRIGHTNESS_COLUMNS = {"DNA": "Nuclei_Intensity_MeanIntensity_DNA", "Actin": "Cells_Intensity_MeanIntensity_Actin",
                      "Tubulin": "Cells_Intensity_MeanIntensity_Tubulin"}
"""The Ljosa per-well column that measures each channel's stain brightness per plate."""
LOOK_PLATES = ("Week4_27481", "Week4_27521", "Week4_27542")
"""Three of the six DMSO plates: the renderer's last texture settings were chosen by the AUC against
these, so the AUC against the other three is the held-out estimate."""


def measured(npz: Path, name: str, workers: int, bbbc021: Path | None) -> tuple[pd.DataFrame, float | None]:
    """Fast-set features of the crops in ``npz`` (cached under the work folder by ``name``) and the
    seconds importing and measuring them took (see ``common.cached_seconds``)."""
    table = WORK / f"{name}.parquet"

    def measure() -> None:
        store = import_npz(npz, WORK / f"{name}.store", channels=CHANNELS, bbbc021_dir=bbbc021, progress=False,
                           overwrite=True)
        extract_features(store.path, table, FeaturesConfig(feature_set="fast"), workers=workers, progress=False)

    seconds = cached_seconds(table, measure)
    return pd.read_parquet(table), seconds


def stain_brightness(wells: pd.DataFrame) -> pd.DataFrame:
    """Each plate's stain brightness per channel from its Ljosa DMSO wells (plates x channels)."""
    return control_brightness(wells, wells["Metadata_MoA"] == CONTROL, BRIGHTNESS_COLUMNS)


def stain_normalised(npz: Path, name: str, brightness: pd.DataFrame) -> Path:
    """A copy of the real crops in ``npz`` with each crop's channels divided by its plate's
    ``brightness`` (cached under the work folder by ``name`` and the brightness table)."""
    path = WORK / f"{name}_{settings_key(brightness.round(6).to_csv())}.npz"
    if not path.is_file():
        with np.load(npz) as source:
            arrays = dict(source)
        arrays["images"] = brightness_normalised(arrays["images"], arrays["plate"], brightness, CHANNELS)
        WORK.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
    return path


def real_cells(bbbc021: Path, workers: int,
               brightness: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, float | None]:
    """Features of the real week-4 DMSO crops and of the 1,000 all-MoA crops, stain-normalised by
    ``brightness`` (:func:`stain_normalised`), and the seconds measuring them took (None when cached)."""
    tables, seconds = [], []
    for file, name in (("bbbc021_crops68_dmso_6plates.npz", "real_dmso"), (ALLMOA_FILE, "real_allmoa")):
        table, took = measured(stain_normalised(bbbc021 / file, name, brightness), f"{name}_stain", workers, bbbc021)
        tables.append(table)
        seconds.append(took)
    return tables[0], tables[1], None if None in seconds else sum(seconds)


def settings_key(*settings: object) -> str:
    """A short name for cached work made with ``settings`` (12 hex digits of their SHA-256)."""
    return hashlib.sha256("".join(map(str, settings)).encode()).hexdigest()[:12]


def simulated_config(plates: int, seed: int) -> SimulateConfig:
    """The default screen with every compound at every dose, 24 DMSO wells per plate and 512 px fields
    (cells per field scaled with the area)."""
    screen = resolve_config(SimulateConfig, {"seed": seed, "plates": plates, "compounds_per_moa": 3,
                                             "dmso_wells_per_plate": 24})
    return screen.with_field_size(512)


def simulated_crops(config: SimulateConfig) -> tuple[Path, dict]:
    """Crops of the simulated screen saved as ``.npz`` (cached by the config's text and the phenotype
    models, so that a refit renders anew)."""
    models = {moa: dict(effects) for moa, effects in MOA_EFFECTS.items()}
    path = WORK / f"simulated_{settings_key(config.model_dump_json(), sorted(models.items()))}.npz"

    def render() -> None:
        images, cells = screen_crops(config, CROP)
        WORK.mkdir(parents=True, exist_ok=True)
        columns = {c.removeprefix("Metadata_").lower(): np.asarray(cells[c].to_numpy()).astype(
                   float if c == "Metadata_Concentration" else str) for c in
                   ("Metadata_Plate", "Metadata_Well", "Metadata_Compound", "Metadata_Concentration",
                    "Metadata_MoA", "Metadata_CellKind", "Metadata_TruthNucleusArea")}
        np.savez(path, images=images, **columns)

    return path, {"render_seconds": cached_seconds(path, render)}


def scale_statistics(dmso: pd.DataFrame) -> dict[str, float]:
    """Medians over DMSO cells of the quantities the issue quotes."""
    return {
        "nucleus_area_px2": float(dmso["Nuclei_AreaShape_Area"].median()),
        "cell_to_nucleus_area": float((dmso["Cells_AreaShape_Area"] / dmso["Nuclei_AreaShape_Area"]).median()),
        "tubulin_cv_in_cell": float((dmso["Cells_Intensity_StdIntensity_Tubulin"]
                                     / dmso["Cells_Intensity_MeanIntensity_Tubulin"]).median()),
        "cytoplasm_solidity": float(dmso["Cytoplasm_AreaShape_Solidity"].median()),
    }


def moa_shifts(cells: pd.DataFrame, features: list[str], by: str | None) -> pd.DataFrame:
    standard = control_standardised(cells, features, cells["Metadata_MoA"] == CONTROL, by=by)
    return group_shifts(standard, cells["Metadata_MoA"], exclude=[CONTROL])


def split_half_cosines(cells: pd.DataFrame, features: list[str], seed: int = 0, repeats: int = 20) -> pd.Series:
    """Per MoA, the mean cosine between the shifts of two random halves of the MoA's real cells."""
    standard = control_standardised(cells, features, cells["Metadata_MoA"] == CONTROL)
    rng = np.random.default_rng(seed)
    result = {}
    for moa, rows in standard.groupby(cells["Metadata_MoA"]):
        if moa == CONTROL or len(rows) < 4:
            continue
        values = []
        for _ in range(repeats):
            half = rng.permutation(len(rows)) < len(rows) // 2
            a, b = rows[half].mean().to_numpy(), rows[~half].mean().to_numpy()
            values.append(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        result[moa] = float(np.mean(values))
    return pd.Series(result)


def ljosa_wells(bbbc021: Path) -> pd.DataFrame:
    """The Ljosa per-well profiles annotated with compound and MoA, channels named as in this project."""
    wells = cellprofiler_metadata(pd.read_csv(bbbc021 / "ljosa_jbiomolscreen_2013_per_well_mean.csv.gz"))
    wells = annotate_bbbc021(wells, bbbc021).dropna(subset=["Metadata_MoA"])
    return wells.rename(columns=lambda column: functools.reduce(
        lambda name, pair: name.replace(*pair), LJOSA_CHANNELS.items(), column))


def well_means(cells: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Mean feature per simulated well, with its plate, compound and MoA."""
    keys = ["Metadata_Plate", "Metadata_Well", "Metadata_Compound", "Metadata_MoA"]
    return cells.groupby(keys, as_index=False)[features].mean()


def agreement_summary(simulated: pd.DataFrame, real: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    agreement = shift_agreement(simulated, real)
    return {
        "cosine_mean": float(agreement.cosine.mean()), "cosine_min": float(agreement.cosine.min()),
        "mismatched_cosine_mean": agreement.mismatched_cosine, "magnitude_spearman": agreement.magnitude_spearman,
        "moas": len(agreement.table),
    }, agreement.table


def montage_figure(real_images: np.ndarray, real: pd.DataFrame, sim_images: np.ndarray, sim: pd.DataFrame,
                   per_group: int = 6, seed: int = 0) -> Figure:
    """One row per MoA (DMSO first): ``per_group`` real crops, then as many simulated crops; each
    source has its own display range (1st-99.5th percentile of its shown crops per channel)."""
    rng = np.random.default_rng(seed)
    groups = [CONTROL] + sorted(set(real["Metadata_MoA"]) - {CONTROL})

    def pick(images, table, moa):
        rows = np.flatnonzero(table["Metadata_MoA"].to_numpy() == moa)
        chosen = rng.choice(rows, min(per_group, len(rows)), replace=False)
        return np.moveaxis(images[np.sort(chosen)], -1, 1).astype(np.float32)

    real_sets = [pick(real_images, real, g) for g in groups]
    sim_sets = [pick(sim_images, sim, g) for g in groups]
    real_limits = display_limits(np.concatenate(real_sets), 1.0, 99.5)
    sim_limits = display_limits(np.concatenate(sim_sets), 1.0, 99.5)
    fig = Figure(figsize=(2 * per_group * 0.8 + 2.2, 0.85 * len(groups) + 0.6), layout="tight")
    axes = fig.subplots(len(groups), 2, squeeze=False)
    for row, group in enumerate(groups):
        for column, (crops, limits) in enumerate(((real_sets[row], real_limits), (sim_sets[row], sim_limits))):
            ax = axes[row, column]
            ax.imshow(montage(crops_rgb(crops, CHANNELS, limits), per_group))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(("real BBBC021, stain-normalised per plate", "simulated")[column], fontsize=9)
        axes[row, 0].set_ylabel(group, rotation=0, ha="right", va="center", fontsize=8)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--plates", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", help="write results/simulator_realism_<tag>.json instead of the headline file")
    args = parser.parse_args()
    bbbc021 = data_dir(args.data) / "bbbc021"
    WORK.mkdir(parents=True, exist_ok=True)
    ljosa = ljosa_wells(bbbc021)
    brightness = stain_brightness(ljosa)
    real_dmso, real, real_seconds = real_cells(bbbc021, args.workers, brightness)

    config = simulated_config(args.plates, args.seed)
    sim_npz, timings = simulated_crops(config)
    sim, timings["features_seconds"] = measured(sim_npz, sim_npz.stem, args.workers, None)
    sim_dmso = sim[sim["Metadata_MoA"] == CONTROL]

    features = shared_features(real_dmso, real, sim)
    unitless = dimensionless_features(features)
    chosen_on = real_dmso["Metadata_Plate"].isin(LOOK_PLATES)
    look = {
        "dmso_auc_all_features": domain_auc(real_dmso, sim_dmso, features, seed=args.seed),
        "dmso_auc_dimensionless": domain_auc(real_dmso, sim_dmso, unitless, seed=args.seed),
        # the renderer's look was chosen against LOOK_PLATES: the other three plates are held out
        "dmso_auc_dimensionless_look_plates": domain_auc(real_dmso[chosen_on], sim_dmso, unitless, seed=args.seed),
        "dmso_auc_dimensionless_heldout_plates": domain_auc(real_dmso[~chosen_on], sim_dmso, unitless, seed=args.seed),
        "look_plates": list(LOOK_PLATES),
        "features": len(features), "dimensionless_features": len(unitless),
        "real_dmso_cells": len(real_dmso), "simulated_dmso_cells": len(sim_dmso),
    }
    real_scale, sim_scale = scale_statistics(real_dmso), scale_statistics(sim_dmso)
    scale_rows = [{"quantity": k, "real": real_scale[k], "simulated": sim_scale[k],
                   "simulated / real": sim_scale[k] / real_scale[k]} for k in real_scale]

    sim_shift = moa_shifts(sim, features, by="Metadata_Plate")
    calibration = real["Metadata_Compound"].isin(CALIBRATION_COMPOUNDS.values())
    is_control = real["Metadata_MoA"] == CONTROL
    parts = {
        "heldout": real[~calibration | is_control],
        "calibration": real[calibration | is_control],
        "all_compounds": real,
    }
    summaries, tables = {}, {}
    for name, cells in parts.items():
        summaries[name], tables[name] = agreement_summary(sim_shift, moa_shifts(cells, features, by=None))
    ceiling = split_half_cosines(real[~calibration | is_control], features, seed=args.seed)
    # what a simulator that reproduced each calibration compound exactly would score on the others
    summaries["real_calibration_vs_heldout"], tables["real_calibration_vs_heldout"] = agreement_summary(
        moa_shifts(parts["calibration"], features, by=None), moa_shifts(parts["heldout"], features, by=None))

    ljosa_features = [f for f in features if f in ljosa.columns]
    ljosa_heldout = ljosa[~ljosa["Metadata_Compound"].isin(CALIBRATION_COMPOUNDS.values())]
    ljosa_shift = moa_shifts(ljosa_heldout, ljosa_features, by="Metadata_Plate")
    sim_well_shift = moa_shifts(well_means(sim, ljosa_features), ljosa_features, by="Metadata_Plate")
    summaries["ljosa_heldout"], tables["ljosa_heldout"] = agreement_summary(sim_well_shift, ljosa_shift)
    crops_vs_ljosa, _ = agreement_summary(moa_shifts(real, ljosa_features, by=None),
                                          moa_shifts(ljosa, ljosa_features, by="Metadata_Plate"))

    per_moa = tables["heldout"].rename(columns=lambda c: f"heldout_{c}")
    per_moa["heldout_real_cells"] = parts["heldout"].groupby("Metadata_MoA").size()
    per_moa["heldout_split_half_cosine"] = ceiling
    per_moa["heldout_cosine_of_real_calibration_compound"] = tables["real_calibration_vs_heldout"]["cosine"]
    per_moa["calibration_cosine"] = tables["calibration"]["cosine"]
    per_moa["all_compounds_cosine"] = tables["all_compounds"]["cosine"]
    per_moa["ljosa_heldout_cosine"] = tables["ljosa_heldout"]["cosine"]
    per_moa["ljosa_heldout_real_magnitude"] = tables["ljosa_heldout"]["real_magnitude"]
    per_moa["ljosa_heldout_simulated_magnitude"] = tables["ljosa_heldout"]["simulated_magnitude"]
    per_moa = per_moa.reset_index().rename(columns={"group": "moa"})

    out = RESULTS / "simulator_realism"
    out.mkdir(parents=True, exist_ok=True)
    with np.load(stain_normalised(bbbc021 / ALLMOA_FILE, "real_allmoa", brightness)) as real_npz, np.load(sim_npz) as sim_npz_file:
        sim_meta = pd.DataFrame({"Metadata_MoA": sim_npz_file["moa"]})
        figure = montage_figure(real_npz["images"], pd.DataFrame({"Metadata_MoA": real_npz["moa"]}),
                                sim_npz_file["images"], sim_meta, seed=args.seed)
    montage_path = save_figure(figure, out / (f"montage_{args.tag}.png" if args.tag else "montage.png"), dpi=90)

    headline = {
        "dmso_auc_all_features": look["dmso_auc_all_features"],
        "dmso_auc_dimensionless": look["dmso_auc_dimensionless"],
        "moa_shift_cosine_mean": summaries["heldout"]["cosine_mean"],
        "moa_shift_cosine_min": summaries["heldout"]["cosine_min"],
        "moa_shift_magnitude_spearman": summaries["heldout"]["magnitude_spearman"],
        "nucleus_area_ratio": sim_scale["nucleus_area_px2"] / real_scale["nucleus_area_px2"],
    }
    aims = {
        "dmso_auc_dimensionless <= 0.85": headline["dmso_auc_dimensionless"] <= 0.85,
        "moa_shift_cosine_min >= 0.3": headline["moa_shift_cosine_min"] >= 0.3,
        "moa_shift_cosine_mean >= 0.6": headline["moa_shift_cosine_mean"] >= 0.6,
        "moa_shift_magnitude_spearman >= 0.7": headline["moa_shift_magnitude_spearman"] >= 0.7,
        "0.8 <= nucleus_area_ratio <= 1.25": 0.8 <= headline["nucleus_area_ratio"] <= 1.25,
    }
    print_table([{"measure": k, "value": v} for k, v in headline.items()], "simulator realism (headline)")
    print_table(scale_rows, "DMSO cells, medians")
    print_table([{"comparison": k, **v} for k, v in summaries.items()], "MoA shift agreement")
    print_table(per_moa.to_dict("records"), "per MoA")
    path = write_result(f"simulator_realism_{args.tag}" if args.tag else "simulator_realism", {
        **headline,
        "aims": aims,
        "convention": __doc__.split("Writes")[0].strip(),
        "calibration_compounds": CALIBRATION_COMPOUNDS,
        "look": look,
        "scale": scale_rows,
        "shift_agreement": summaries,
        "real_crops_vs_ljosa_all_compounds": crops_vs_ljosa,
        "per_moa": per_moa.to_dict("records"),
        "simulated_screen": {"config": config.model_dump(mode="json"), "cells": len(sim), **timings},
        "real_features_seconds": real_seconds,
        "montage": str(montage_path),
    })
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
