"""CP2Image on the real BBBC021 crops: generate each cell from its CellProfiler features, then measure
what the generated images keep.

Steps: import the 8,774 crops of the three npz files (the store of ``bbbc021_generative.py``);
measure every crop with cp_measure (``--feature-set``, 2 workers; cached under ``benchmarks/work/``);
choose ``model.input_dropout`` among :data:`DROPOUT_CHOICES` on validation plates (every value
trained for ``--select-epochs`` on the training plates alone, split again by plate, and scored on
the held-back 20%: the test plates play no part); train the built-in config ``cp2image_bbbc021``
with it (20% of the plates held out as the test split) within ``--train-minutes``, at 64 x 64 px so that FID/KID use the very extractor of the
GAN/VAE table (``bbbc021_generative.py``); ``evaluate generation`` on the held-out cells (per-feature
Pearson r between input and re-measured values, FID/KID, NSC of generated vs real profiles);
sweeps of nucleus area, orientation, DNA intensity and cytoplasm area (the other features held, then
following their slope on the swept one); the dose trajectory DMSO ->
cycloheximide 5 -> 15 -> 50 uM over the week-4 plates 27801, 27821, 27861 (each dose generated from
its feature centroid, re-measured, and compared with the real cells of that dose and of DMSO, as is
and with the generated DMSO image's offset removed; the same walk from the DMSO cell nearest its
centroid, ``explore trajectory``'s default; then 100 real DMSO cells moved by each dose's centroid
difference, scored the same way); training speed of a fresh ``--speed-epochs`` run against a bare
PyTorch loop of the same networks on the same batches; and two ablations, every arm trained for
``--compare-epochs`` epochs: the discriminator with and without spectral norm (the paper's text
names it, its released code does not use it), and the angles among the input features
(orientations, Zernike phases) as their cosine and sine (the default) or as raw standardised values
(the paper's released code).

``--cells N`` runs on a random subset of N crops (a quick check, not a result).

    python benchmarks/bbbc021_cp2image.py [--data ../shared/data] [--feature-set full|fast] [--train-minutes 30]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bbbc021_generative import PUBLISHED, _stores
from common import ROOT, cached_seconds, data_dir, print_table, write_result
from morphospace.evaluate.cp2image import closer_to_own_group
from morphospace.features.cellprofiler import FeaturesConfig, feature_columns
from morphospace.data.splits import group_split
from morphospace.io.store import CropStore, CropStoreWriter
from morphospace.models.blocks import frozen_batch_norm_stats, gan_losses
from morphospace.models.registry import load_run_config
from morphospace.models.run import load_run
from morphospace.models.training import resolve_precision
from morphospace.workflows.cp2image import (
    decode_to_table, encode_table, explore_sweep, explore_trajectory, feature_names, generate_from_table,
)
from morphospace.workflows.cp2image_evaluation import measure_generated, measurement_settings
from morphospace.workflows.evaluation import GenerationConfig, run_generation_evaluation
from morphospace.workflows.profiling import extract_features
from morphospace.workflows.train import trained

WEEK4_PLATES = ["Week4_27801", "Week4_27821", "Week4_27861"]
DOSES = [5.0, 15.0, 50.0]
SWEEPS = ["Nuclei_AreaShape_Area", "Nuclei_AreaShape_Orientation", "Nuclei_Intensity_MeanIntensity_DNA",
          "Cytoplasm_AreaShape_Area"]
PUBLISHED_CP2IMAGE = {"share_r_above_0_5": "more than 30% of features", "inception_fid": {**PUBLISHED["fid"],
                                                                                         "cp2image": 68}}


def _subset_store(store: Path, work: Path, cells: int) -> Path:
    """A store of ``cells`` crops drawn at random (seed 0) from ``store``, kept in store order."""
    target = work / "stores" / f"bbbc021_subset{cells}"
    if (target / "store.json").is_file():
        return target
    source = CropStore(store)
    rows = np.sort(np.random.default_rng(0).choice(len(source), min(cells, len(source)), replace=False))
    with CropStoreWriter(target, source.channels, source.crop_shape, str(source.images.dtype)) as writer:
        writer.append(source.read(rows), source.cells.iloc[rows].reset_index(drop=True))
    return target


def _features(store: Path, work: Path, feature_set: str) -> tuple[Path, float | None]:
    """The cached feature table of ``store`` and the seconds measuring it took (kept beside the cache
    in ``<table>.seconds``; None for a table cached without them)."""
    path = work / f"cp2image_{store.name}_{feature_set}.parquet"
    return path, cached_seconds(path, lambda: extract_features(store, path, FeaturesConfig(feature_set=feature_set),
                                                               workers=2, progress=False))


def _bare_step(model, batch: dict[str, torch.Tensor], opt_g, opt_d) -> None:
    """One CP2Image training batch without Lightning: a discriminator step, then a generator step."""
    real = batch["image"]
    fake = model.generator(model.training_inputs(batch[model.cfg.condition]))
    real_logit = model.discriminator.head(model.discriminator.intermediate(real)[-1]).squeeze(1)
    with frozen_batch_norm_stats(model.discriminator):
        fake_logit = model.discriminator.head(model.discriminator.intermediate(fake.detach())[-1]).squeeze(1)
    d_loss = gan_losses("dcgan", real_logit, fake_logit, for_generator=False)
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    g_loss, _ = model.generator_loss(real, fake)
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    model.generator_updates += 1


def _bare_images_per_second(run_dir: Path, n_batches: int = 30, repeats: int = 3) -> float:
    """Images/s of :func:`_bare_step` on a copy of the trained networks over ``n_batches`` in-memory
    training batches after one warm-up batch, at the precision the run trained with (bf16 autocast or
    fp32): the median over ``repeats`` timed passes."""
    run = load_run(run_dir)
    model = copy.deepcopy(run.module).train()
    opt_g, opt_d = model.configure_optimizers()
    batches: list[dict[str, torch.Tensor]] = []
    while len(batches) < n_batches + 1:  # as many epochs as a small store needs
        batches += itertools.islice(run.data.train_dataloader(), n_batches + 1 - len(batches))
    images = sum(len(b["image"]) for b in batches[1:])
    bf16 = resolve_precision(run.config.trainer.precision) == "bf16-mixed"
    rates = []
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        _bare_step(model, batches[0], opt_g, opt_d)
        for _ in range(repeats):
            start = time.perf_counter()
            for batch in batches[1:]:
                _bare_step(model, batch, opt_g, opt_d)
            rates.append(images / (time.perf_counter() - start))
    return float(np.median(rates))


def _share_by_group(path: Path) -> dict:
    """From the evaluation's per-feature table: the share of defined features with r > 0.5 per
    measurement (the name's second part: AreaShape, Intensity, RadialDistribution, ...; angles as
    their own groups) and over the features that are not angles."""
    table = pd.read_csv(path).dropna(subset=["pearson_r"])
    measurement = table["feature"].str.split("_").str[1].where(~table["circular"], "angles (circular r)")
    by = table.groupby(measurement)["pearson_r"]
    linear = table.loc[~table["circular"], "pearson_r"]
    return {"by_measurement": {name: {"features": int(len(r)), "share_r_above_0_5": float((r > 0.5).mean())}
                               for name, r in by},
            "without_angles": float((linear > 0.5).mean())}


def _speed(store: Path, features: Path, feature_set: str, epochs: int) -> dict:
    """Training images/s of a fresh run of ``epochs`` epochs (a temporary folder, so that it is
    timed in this very run) and of the bare loop on its networks right after, under the same load."""
    with tempfile.TemporaryDirectory() as runs:
        config = load_run_config("cp2image_bbbc021", [
            f"name=cp2image_speed_{feature_set}", f"data.store={store}", f"data.conditions.features.table={features}",
            f"runs_dir={runs}", "data.crop_size=64", f"trainer.max_epochs={epochs}"])
        summary = trained(config, progress=False)
        bare = _bare_images_per_second(config.run_dir)
    return {"train_images_per_s": summary.samples_per_second, "bare_images_per_s": bare,
            "ratio": summary.samples_per_second / bare, "epochs": epochs}


def _dose_trajectory(run_dir: Path, features: Path, compound: str, from_centroid: bool) -> dict:
    """``explore trajectory`` from DMSO through each cycloheximide dose on the week-4 plates (between
    the centroids with ``from_centroid``, else the DMSO cell nearest its centroid moved by the
    centroids' differences: the command's default); the images at DMSO and at each dose re-measured
    and compared with the real cells of each dose and of DMSO, as they are and after subtracting the
    generated DMSO image's offset from the real DMSO centroid."""
    plates = f"Metadata_Plate in {WEEK4_PLATES}"
    figure = explore_trajectory(run_dir, f"Metadata_Compound == 'DMSO' and {plates}",
                                f"Metadata_Compound == {compound!r} and {plates}", by="Metadata_Concentration",
                                steps=5, from_centroid=from_centroid)
    with np.load(figure.with_suffix(".npz")) as saved:
        images, labels = saved["images"], [str(label) for label in saved["labels"]]
    waypoints = np.concatenate([images[:1, 0], images[:, -1]])  # DMSO, then each dose
    run = load_run(run_dir)
    settings, _ = measurement_settings(features, {})
    remeasured, _ = measure_generated(waypoints, run, settings)
    table = pd.read_parquet(features)
    names = [c for c in feature_names(run_dir) if c in set(feature_columns(remeasured))]
    on_plates = table[table["Metadata_Plate"].isin(WEEK4_PLATES)]
    real = {"DMSO": on_plates.loc[on_plates["Metadata_Compound"] == "DMSO", names].to_numpy()}
    generated = {"DMSO": remeasured.iloc[[0]][names].to_numpy()}
    for position, dose in enumerate(labels[1:], start=1):
        level = float(dose.split("=")[1])
        cells = on_plates[(on_plates["Metadata_Compound"] == compound) & (on_plates["Metadata_Concentration"] == level)]
        real[dose] = cells[names].to_numpy()
        generated[dose] = remeasured.iloc[[position]][names].to_numpy()
    present = {dose: cells for dose, cells in real.items() if len(cells)}
    kept = {d: g for d, g in generated.items() if d in present}
    result = closer_to_own_group(kept, present, "DMSO")
    corrected = closer_to_own_group(kept, present, "DMSO", offset_from_reference=True)
    return {**result, "offset_from_dmso_removed": {k: corrected[k] for k in ("groups", "share_closer")},
            "labels": labels, "real_cells": {d: int(len(c)) for d, c in real.items()}, "figure": str(figure)}


def _dose_shifted_cells(run_dir: Path, features: Path, compound: str, n_cells: int = 100) -> dict:
    """Move ``n_cells`` real DMSO cells of the week-4 plates (drawn with seed 0; a missing feature
    is the centre, as in training) by each dose's centroid minus DMSO's (standardised), generate,
    re-measure, and compare the generated cells of each dose with the real cells of that dose and
    of DMSO."""
    table = pd.read_parquet(features)
    names = feature_names(run_dir)
    on_plates = table[table["Metadata_Plate"].isin(WEEK4_PLATES)]
    dmso = on_plates[on_plates["Metadata_Compound"] == "DMSO"]
    cells = dmso.iloc[np.sort(np.random.default_rng(0).choice(len(dmso), min(n_cells, len(dmso)), replace=False))]
    start = encode_table(run_dir, dmso).mean(0)
    shifted, real = {}, {"DMSO": dmso[names].to_numpy()}
    for dose in DOSES:
        treated = on_plates[(on_plates["Metadata_Compound"] == compound) & (on_plates["Metadata_Concentration"] == dose)]
        if treated.empty:
            continue
        shifted[f"{dose:g} uM"] = encode_table(run_dir, cells) + (encode_table(run_dir, treated).mean(0) - start)
        real[f"{dose:g} uM"] = treated[names].to_numpy()
    images = generate_from_table(run_dir, decode_to_table(run_dir, np.concatenate(list(shifted.values()))))
    settings, _ = measurement_settings(features, {})
    remeasured, _ = measure_generated(images, load_run(run_dir), settings)
    kept = [c for c in names if c in set(feature_columns(remeasured))]
    positions = np.cumsum([0, *(len(v) for v in shifted.values())])
    generated = {dose: remeasured.iloc[a:b][kept].to_numpy() for dose, a, b in zip(shifted, positions, positions[1:])}
    result = closer_to_own_group(generated, {d: pd.DataFrame(v, columns=names)[kept].to_numpy()
                                             for d, v in real.items()}, "DMSO")
    return {**result, "n_dmso_cells_moved": len(cells)}


DROPOUT_CHOICES = (0.0, 0.25, 0.5, 0.75)
"""Values of ``model.input_dropout`` compared on validation plates before the main run."""

ARMS = {"default": [], "spectral_norm": ["model.spectral_norm=true"], "raw_angles": ["model.encode_angles=false"]}
"""Arms of the ablations, as overrides of the built-in config (default: no spectral norm, angles as
cosine and sine)."""
COMPARISONS = {"spectral_norm_comparison": ("model.spectral_norm", {"off": "default", "on": "spectral_norm"}),
               "angle_encoding_comparison": ("model.encode_angles", {"cos_sin": "default", "raw": "raw_angles"})}


def _arm(store: Path, features: Path, work: Path, feature_set: str, epochs: int, eval_cells: int,
         arm: str, dropout: float) -> dict:
    """Train (or reuse) one ablation arm for ``epochs`` from seed 0 on the main run's split, with the
    main run's input dropout, and score it on ``eval_cells`` held-out cells."""
    config = load_run_config("cp2image_bbbc021", [
        f"name=cp2image_{store.name}_{feature_set}_dropout{dropout:g}_{arm}_e{epochs}", f"data.store={store}",
        f"data.conditions.features.table={features}", f"runs_dir={work / 'runs'}", "data.crop_size=64",
        f"trainer.max_epochs={epochs}", f"model.input_dropout={dropout}", *ARMS[arm]])
    summary = trained(config, progress=False)
    evaluation = run_generation_evaluation(config.run_dir, overwrite=True, config=GenerationConfig(
        n=500, extractor=str(work / "extractors" / f"{store.name}.pt"), feature_cells=eval_cells,
        feature_set=feature_set))
    return {"share_r_above_0_5": evaluation["feature_correlation"]["share_r_above_0_5"],
            "median_r": evaluation["feature_correlation"]["median_r"],
            "fid": evaluation["in_domain"]["fid"], "kid": evaluation["in_domain"]["kid_mean"],
            "train_images_per_s": summary.samples_per_second, "epochs": summary.epochs}


def _training_plates(config) -> list:
    """The plates of ``config``'s training split (the split does not depend on the model)."""
    cells = CropStore(config.data.store).cells
    split = config.data.split
    assignment = group_split(cells, split.by, {"train": split.train, "val": split.val, "test": split.test},
                             seed=config.data.seed)
    return sorted(cells.loc[assignment == "train", split.by].unique().tolist())


def _select_input_dropout(store: Path, features: Path, work: Path, feature_set: str, epochs: int,
                          eval_cells: int, plates: list) -> dict:
    """Train one run per value of :data:`DROPOUT_CHOICES` for ``epochs`` on the main run's training
    plates alone, split again by plate (80% train, 20% validation), and score each on
    ``eval_cells`` cells of the validation plates; the main run's test plates are not used."""
    scored = {}
    for dropout in DROPOUT_CHOICES:
        config = load_run_config("cp2image_bbbc021", [
            f"name=cp2image_{store.name}_{feature_set}_dropout{dropout:g}_e{epochs}_trainplates",
            f"data.store={store}", f"data.conditions.features.table={features}", f"runs_dir={work / 'runs'}",
            "data.crop_size=64", f"trainer.max_epochs={epochs}", f"model.input_dropout={dropout}",
            f"data.include={json.dumps({'Metadata_Plate': plates})}"])
        trained(config, progress=False)
        scored_before = config.run_dir / "evaluation" / "generation.json"
        if scored_before.is_file() and json.loads(scored_before.read_text())["config"]["feature_cells"] == eval_cells:
            evaluation = json.loads(scored_before.read_text())  # the arm's run and its scoring are seeded
        else:
            evaluation = run_generation_evaluation(config.run_dir, overwrite=True, config=GenerationConfig(
                n=200, extractor=str(work / "extractors" / f"{store.name}.pt"), feature_cells=eval_cells,
                feature_set=feature_set))
        correlation = evaluation["feature_correlation"]
        scored[f"{dropout:g}"] = {"validation_share_r_above_0_5": correlation["share_r_above_0_5"],
                                  "validation_median_r": correlation["median_r"]}
    chosen = max(scored, key=lambda value: scored[value]["validation_share_r_above_0_5"])
    return {"setting": "model.input_dropout", "chosen": float(chosen), "arms": scored, "convention": (
        f"every arm {epochs} epochs from seed 0 on the main run's {len(plates)} training plates only, split again "
        f"by plate (80/20); share of features with r > 0.5 on {eval_cells} cells of the validation plates; "
        "the main run's test plates are never seen by the choice, so its held-out numbers estimate the chosen "
        "setting")}


def _comparisons(store: Path, features: Path, work: Path, feature_set: str, epochs: int,
                 eval_cells: int, dropout: float) -> dict:
    """Both ablations (spectral norm on the discriminator; angles as cosine and sine or raw), their
    arms trained for the same ``epochs`` from the same seed on the same split; the default arm is
    shared."""
    scored = {arm: _arm(store, features, work, feature_set, epochs, eval_cells, arm, dropout) for arm in ARMS}
    result = {}
    for key, (setting, arms) in COMPARISONS.items():
        table = {label: scored[arm] for label, arm in arms.items()}
        better = {"share_r_above_0_5": max(table, key=lambda label: table[label]["share_r_above_0_5"]),
                  "fid": min(table, key=lambda label: table[label]["fid"])}
        result[key] = {"setting": setting, "convention": (
            f"every arm {epochs} epochs from seed 0 on the same split; {eval_cells} held-out cells re-measured; "
            "FID/KID of 500 generated held-out cells against 500 training crops on the in-domain extractor"),
            "arms": table, "better": better}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--feature-set", choices=["fast", "full"], default="full",
                        help="cp_measure set (full: about 16 min for 8,774 crops on 2 workers)")
    parser.add_argument("--train-minutes", type=float, default=30.0)
    parser.add_argument("--cells", type=int, help="random subset of the crops, for a quick check")
    parser.add_argument("--speed-epochs", type=int, default=2,
                        help="epochs of the fresh run timed against the bare loop")
    parser.add_argument("--eval-cells", type=int, default=1000, help="held-out cells re-measured")
    parser.add_argument("--select-epochs", type=int, default=25,
                        help="epochs of each input-dropout arm on the training plates (0: the config's value)")
    parser.add_argument("--select-eval-cells", type=int, default=300,
                        help="validation cells re-measured per input-dropout arm")
    parser.add_argument("--compare-epochs", type=int, default=10,
                        help="epochs of each arm of the spectral-norm and angle-encoding comparisons (0: skip them)")
    parser.add_argument("--compare-eval-cells", type=int, default=300,
                        help="held-out cells re-measured per arm of the comparison")
    args = parser.parse_args()
    bbbc021 = data_dir(args.data) / "bbbc021"
    work = ROOT / "work"
    store, _ = _stores(bbbc021, work)
    if args.cells:
        store = _subset_store(store, work, args.cells)
    features, feature_seconds = _features(store, work, args.feature_set)
    base = load_run_config("cp2image_bbbc021", [f"data.store={store}", "data.crop_size=64"])
    selection = _select_input_dropout(store, features, work, args.feature_set, args.select_epochs,
                                      args.select_eval_cells, _training_plates(base)) if args.select_epochs else {}
    dropout = selection["chosen"] if selection else base.model.input_dropout
    config = load_run_config("cp2image_bbbc021", [
        f"name=cp2image_{store.name}_{args.feature_set}_dropout{dropout:g}", f"data.store={store}",
        f"data.conditions.features.table={features}", f"runs_dir={work / 'runs'}", "data.crop_size=64",
        f"trainer.max_minutes={args.train_minutes}", "trainer.max_epochs=1000", f"model.input_dropout={dropout}"])
    summary = trained(config, progress=False)  # a rerun reads the finished run's summary
    run = config.run_dir
    speed = _speed(store, features, args.feature_set, args.speed_epochs)
    for feature, others in itertools.product(SWEEPS, ("held", "follow")):
        if feature in feature_names(run):
            explore_sweep(run, feature, steps=7, others=others)
    extractor = work / "extractors" / f"{store.name}.pt"
    evaluation = run_generation_evaluation(run, overwrite=True, config=GenerationConfig(
        n=1000, extractor=str(extractor), feature_cells=args.eval_cells, feature_set=args.feature_set))
    compound = next(c for c in CropStore(store).cells["Metadata_Compound"].unique() if str(c).startswith("cyclohex"))
    trajectory = _dose_trajectory(run, features, compound, from_centroid=True)
    from_cell = _dose_trajectory(run, features, compound, from_centroid=False)  # the command's default
    shifted = _dose_shifted_cells(run, features, compound)
    comparisons = _comparisons(store, features, work, args.feature_set, args.compare_epochs,
                               args.compare_eval_cells, dropout) if args.compare_epochs else {}
    correlation, nsc = evaluation["feature_correlation"], evaluation["nsc"]
    groups = _share_by_group(run / "evaluation" / "cp2image_feature_correlations.csv")
    report = json.loads(Path(f"{features}.json").read_text())
    row = {
        "heldout_share_r_above_0_5": correlation["share_r_above_0_5"], "heldout_median_r": correlation["median_r"],
        "heldout_share_r_above_0_5_without_angles": groups["without_angles"],
        "ceiling_share_r_above_0_5": evaluation["measurement_ceiling"]["share_r_above_0_5"],
        "fid": evaluation["in_domain"]["fid"], "kid": evaluation["in_domain"]["kid_mean"],
        "nsc_generated": nsc["nsc_generated"] if isinstance(nsc, dict) else None,
        "nsc_real": nsc["nsc_real"] if isinstance(nsc, dict) else None,
        "dose_trajectory_share_closer_to_dose": trajectory["share_closer"],
        "dose_trajectory_share_closer_after_dmso_offset": trajectory["offset_from_dmso_removed"]["share_closer"],
        "dose_trajectory_from_real_cell_share_closer": from_cell["share_closer"],
        "dose_shifted_dmso_cells_share_closer": shifted["share_closer"],
        "train_images_per_s": speed["train_images_per_s"], "bare_images_per_s": speed["bare_images_per_s"],
        "train_images_per_s_ratio_to_bare_loop": speed["ratio"],
        "main_run_train_images_per_s": summary.samples_per_second,
        "generated_cells_per_s": evaluation["generated_cells_per_s"],
    }
    print_table([row], f"CP2Image on BBBC021 ({len(CropStore(store))} crops, {args.feature_set} features, "
                       f"{args.train_minutes:g} min training, 2 CPU cores)")
    print_table([{"feature": k, "r": v} for k, v in list(correlation["best"].items())[:5]
                 + list(correlation["worst"].items())[:5]], "best and worst features (held-out cells)")
    print_table([{"dose": d, **v} for d, v in trajectory["groups"].items()], "dose trajectory (centroids)")
    print_table([{"dose": d, **v} for d, v in trajectory["offset_from_dmso_removed"]["groups"].items()],
                "dose trajectory (centroids, generated DMSO offset removed)")
    print_table([{"dose": d, **v} for d, v in from_cell["groups"].items()],
                "dose trajectory (the DMSO cell nearest its centroid, moved)")
    print_table([{"dose": d, **v} for d, v in shifted["groups"].items()],
                f"dose trajectory ({shifted['n_dmso_cells_moved']} real DMSO cells moved)")
    if selection:
        print_table([{"model.input_dropout": value, **scores} for value, scores in selection["arms"].items()],
                    f"input dropout on validation plates ({args.select_epochs} epochs each; chosen {dropout:g})")
    for key, comparison in comparisons.items():
        print_table([{comparison["setting"]: arm, **scores} for arm, scores in comparison["arms"].items()],
                    f"{key} ({args.compare_epochs} epochs each)")
    path = write_result("bbbc021_cp2image" if not args.cells else f"bbbc021_cp2image_subset{args.cells}", {
        "convention": (
            "held-out = test split (20% of the plates, split by Metadata_Plate); r = Pearson between each input "
            "feature and the same feature re-measured (same cp_measure settings) on the image generated from it, "
            "circular correlation (Jammalamadaka-SenGupta) for the angles (orientations, Zernike phases); "
            "share over features with a defined r; ceiling = the same for the cells' real crops through the same "
            "64 px crop, normalisation and segmentation; FID/KID on the in-domain extractor of "
            "bbbc021_generative.json (same store, 64 px, same normalisation config), 1,000 random training crops vs "
            "cells generated from held-out features; NSC = 1-NN MoA over treatment means of DMSO-standardised cells, "
            "generated vs the same cells' real features; dose trajectory: centroid of each group's features over "
            "the week-4 plates (all splits) generated once, re-measured, closer (standardised on the real cells) "
            "to that dose's real centroid than to DMSO's; after_dmso_offset: the same after subtracting the "
            "generated DMSO centroid image's offset from the real DMSO centroid from every dose's; from_real_cell: "
            "explore trajectory's default, the DMSO cell nearest its centroid moved by the centroids' differences; "
            "dose-shifted DMSO cells: 100 real DMSO cells of those "
            "plates moved by each dose's standardised centroid minus DMSO's, generated, re-measured, their centroid "
            "compared the same way; speed: images/s of a fresh run of --speed-epochs epochs of the whole "
            "morphospace training (data loading included) over a bare loop of the same networks and losses on "
            "in-memory batches right after it, both in this run; main_run_train_images_per_s: the 30-minute "
            "run's own rate"),
        **row,
        "feature_set": args.feature_set, "features": report["n_features"], "feature_seconds": feature_seconds,
        "budgets": {"train_minutes": args.train_minutes, "epochs": summary.epochs, "crops": len(CropStore(store)),
                    "eval_cells": args.eval_cells, "fid_cells": 1000, "cpu_cores": 2, "feature_workers": 2,
                    "precision": resolve_precision(config.trainer.precision)},
        "evaluation": {k: evaluation[k] for k in ("feature_correlation", "measurement_ceiling", "in_domain",
                                                  "sweeps", "nsc", "intensity_mapped_to_feature_scale")},
        "share_r_above_0_5_by_measurement": groups["by_measurement"],
        "dose_trajectory": trajectory,
        "dose_trajectory_from_real_cell": from_cell,
        "dose_shifted_dmso_cells": shifted,
        "input_dropout_selection": selection,
        **comparisons,
        "published": PUBLISHED_CP2IMAGE,
    })
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
