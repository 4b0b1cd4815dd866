"""The ``morphospace`` command line: parses arguments, loads configs and calls the Python API."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from morphospace import __version__
from morphospace.atomic import json_text
from morphospace.config import load_config
from morphospace.errors import InputError, MorphospaceError
from morphospace.runs import is_rank_zero, setup_logging

logger = logging.getLogger("morphospace.cli")

_EXAMPLES = {
    "simulate": ("morphospace simulate --out screen --seed 1 --set plates=4 --workers 2\n"
                 "  morphospace simulate --mode structures --out cells3d --set dims=3 --workers 2\n"
                 "  morphospace simulate --mode donors --out donors --set donors.phenotype_strength=0.3 --workers 2"),
    "manifest": "morphospace manifest --from raw_fields --out raw_fields/manifest.csv --channels DAPI=DNA",
    "prepare": "morphospace prepare --manifest screen/manifest.csv --out store --set crops.size=68 --workers 2",
    "import": (
        "morphospace import --npz crops.npz --out store --channels DNA,Actin,Tubulin --annotate-bbbc021 BBBC021_tables/\n"
        "  morphospace import --images crops/ --metadata crops.csv --out store\n"
        "  morphospace import --folders my_crops --label-column Metadata_Phenotype --out my_store"
    ),
    "demo": "morphospace demo --out morphospace-demo --workers 2",
    "config": "morphospace config vae_simulated --out my_vae.yaml",
    "features": "morphospace features --store store --out cells.parquet --set feature_set=full --workers 2",
    "profiles": (
        "morphospace profiles --features cells.parquet --out profiles.parquet --set sphere.enabled=true\n"
        "  morphospace profiles --features per_well.csv.gz --out profiles.parquet --annotate-bbbc021 BBBC021_tables/\n"
        "  morphospace profiles --features cells.parquet --out cell_profiles.parquet --level cells"
    ),
    "evaluate": "morphospace evaluate moa --profiles profiles.parquet --out eval --json",
    "moa": "morphospace evaluate moa --profiles profiles.parquet --out eval --set operation=median --json",
    "retrieval": "morphospace evaluate retrieval --profiles profiles.parquet --out eval",
    "clustering": "morphospace evaluate clustering --table embeddings.parquet --label Metadata_MoA --out eval",
    "probe": ("morphospace evaluate probe --table embeddings.parquet --label Metadata_MoA --out eval\n"
              "  morphospace evaluate probe --table embeddings.parquet --label Metadata_MoA --group Metadata_Compound"),
    "compare-embeddings": ("morphospace evaluate compare-embeddings --table cnn=cnn/samples.parquet "
                           "--table pca=pca/samples.parquet --label Metadata_Group --out comparison"),
    "generation": (
        "morphospace evaluate generation --run runs/lsgan_bbbc021 --set n=1000 --json\n"
        "  morphospace evaluate generation --run runs/vae_crops --labels Metadata_Phenotype\n"
        "  morphospace evaluate generation --run runs/cp2image_bbbc021 --set feature_cells=1000\n"
        "  morphospace evaluate generation --run runs/cp2image_simulated --truth screen/truth"
    ),
    "train": "morphospace train lsgan_bbbc021 --set trainer.max_minutes=20",
    "embed": ("morphospace embed --run runs/lsgan_bbbc021 --store bbbc021_allmoa --out embeddings.parquet\n"
              "  morphospace embed --run runs/classifier_fields --manifest donors/manifest.csv --out donor_embeddings"),
    "generate": (
        "morphospace generate --run runs/lsgan_bbbc021 --n 64 --seed 3\n"
        "  morphospace generate --run runs/cp2image_bbbc021 --features bbbc021_cells.parquet "
        "--per Metadata_Compound,Metadata_Concentration --npz centroids.npz\n"
        "  morphospace generate --run runs/diffusion_week4 --condition \"Metadata_Concentration=15\" --guidance 1.5\n"
        "  morphospace generate --run runs/flow_week4 --from-controls bbbc021_week4 "
        "--condition \"Metadata_Compound=cycloheximide,Metadata_Concentration=50\""
    ),
    "explore": "morphospace explore algebra --run runs/vae_bbbc021 --attribute NucleusArea",
    "interpolate": ("morphospace explore interpolate --run runs/lsgan_bbbc021 --seeds 0,1,2,3\n"
                    "  morphospace explore interpolate --run runs/diffusion_week4 --from Metadata_Compound=DMSO "
                    "--to Metadata_Concentration=50"),
    "algebra": "morphospace explore algebra --run runs/vae_bbbc021 --attribute Mean_Tubulin --quantile 0.2",
    "traverse": "morphospace explore traverse --run runs/vae_bbbc021 --dims 8",
    "sweep": "morphospace explore sweep --run runs/cp2image_bbbc021 --feature Nuclei_AreaShape_Area --range=-2,2 --steps 7",
    "trajectory": ("morphospace explore trajectory --run runs/cp2image_bbbc021 --from \"Metadata_Compound == 'DMSO'\" "
                   "--to \"Metadata_Compound == 'cyclohexamide'\" --by Metadata_Concentration"),
    "fewshot": "morphospace explore fewshot fewshot_finkbeiner --set steps=300",
    "map": ("morphospace explore map --table runs/vae_bbbc021/embeddings.parquet --store bbbc021 --color "
            "Metadata_MoA --out vae_map.html"),
    "report": ("morphospace report --run runs/vae_bbbc021\n"
               "  morphospace report --runs runs"),
    "predict": "morphospace predict --run runs/isl_simulated --manifest screen/manifest.csv --out predicted",
    "isl": "morphospace evaluate isl --run runs/isl_simulated --set empty_threshold=2.0 --json",
    "segmentation": "morphospace evaluate segmentation --run runs/nuclei_simulated --json",
    "coupling": ("morphospace evaluate coupling --run runs/statistical_cell_simulated --repeats 8 --truth "
                 "structures/truth --json"),
    "drug-shift": ("morphospace evaluate drug-shift --run runs/statistical_cell_simulated --control "
                   "\"Metadata_Compound == 'DMSO'\" --treated \"Metadata_Compound != 'DMSO'\" --truth structures/truth"),
    "beta-sweep": ("morphospace explore beta-sweep statistical_cell_simulated --betas 0.1,0.3,0.5 "
                   "--set data.store=structures"),
    "segment": ("morphospace segment --manifest isl_finkbeiner/manifest.csv --channel DAPI --out isl_finkbeiner/nuclei "
                "--manifest-out isl_finkbeiner/manifest_nuclei.csv --set nuclei.sigma=2"),
}


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file (defaults when omitted)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set crops.size=68 (repeatable)")


def _add_parallel_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1: in-process)")
    parser.add_argument("--scheduler", help="address of a running dask scheduler to use instead")


def _subparser(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name, help=help_text, description=help_text, epilog=f"example:\n  {_EXAMPLES[name]}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_simulate(subparsers) -> None:
    parser = _subparser(subparsers, "simulate",
                         "Simulate a BBBC021-like screen (fields, manifest, ground truth), single-cell structure crops "
                         "or donors' monolayers.")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, help="random seed (same seed, same screen)")
    parser.add_argument("--mode", choices=["fluorescence", "transmitted", "structures", "donors"],
                        help="fluorescence: DNA, Actin, Tubulin (default); transmitted: phase-contrast-like light "
                             "paired with DNA and membrane fluorescence and nuclei labels; structures: a crop store "
                             "of single cells (Membrane, DNA, one tagged Structure; --set dims=3 for z-stacks); "
                             "donors: whole monolayer fields (DNA, Actin, Junctions) of healthy and disease donors")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    _add_config_options(parser)
    _add_parallel_options(parser)
    parser.set_defaults(handler=_simulate)


def _add_manifest(subparsers) -> None:
    parser = _subparser(subparsers, "manifest", "Folder of microscope files (TIFF, OME-TIFF, OME-Zarr, ND2, CZI, LIF) "
                                                "-> manifest for prepare.")
    parser.add_argument("--from", dest="source", type=Path, required=True, metavar="DIR",
                        help="folder searched, sub-folders included")
    parser.add_argument("--out", type=Path, required=True, help="manifest CSV to write (paths relative to its folder)")
    parser.add_argument("--pattern", help="regular expression searched in each path below DIR; its named groups "
                                          "plate, well, site (or any name) become metadata, 'channel' names the "
                                          "channel of one-channel-per-file layouts (default matches "
                                          "Plate1_B02_s3.tif, Plate1/B02_s3_DNA.tif, Plate1_B02_s3_w1DAPI.tif)")
    parser.add_argument("--channels", help="new channel names in the order found (DNA,Actin) or OLD=NEW pairs "
                                           "(DAPI=DNA); default: the names in the files' metadata")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing manifest")
    parser.set_defaults(handler=_manifest)


def _add_prepare(subparsers) -> None:
    parser = _subparser(subparsers, "prepare", "Raw fields -> crop store (QC, corrections, segmentation, crops).")
    parser.add_argument("--manifest", type=Path, required=True, help="CSV: one row per field, FileName_<channel> columns")
    parser.add_argument("--out", type=Path, required=True, help="crop store to create")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store")
    parser.add_argument("--restart", action="store_true", help="discard unfinished work instead of resuming")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_config_options(parser)
    _add_parallel_options(parser)
    parser.set_defaults(handler=_prepare)


def _add_import(subparsers) -> None:
    parser = _subparser(subparsers, "import", "Existing crops (npz arrays, image files, class folders) -> crop "
                                              "store.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--npz", type=Path, nargs="+", help="npz file(s) with an 'images' array and per-crop "
                                                              "metadata arrays (several files go into one store)")
    source.add_argument("--images", "--tiff", dest="images", type=Path,
                        help="folder of image crops: TIFF, PNG, JPEG, BMP, ... (needs --metadata)")
    source.add_argument("--folders", type=Path, metavar="DIR",
                        help="folder with one sub-folder of images per class; the sub-folder name is the label")
    parser.add_argument("--metadata", type=Path, help="CSV with a 'file' column (and optional 'frame') for --images")
    parser.add_argument("--label-column", help="column for the class names of --folders (default Metadata_Label; "
                                               "Metadata_ is prefixed when missing: phenotype -> Metadata_Phenotype)")
    parser.add_argument("--out", type=Path, required=True, help="crop store to create")
    parser.add_argument("--channels", help="comma-separated channel names, e.g. DNA,Actin,Tubulin")
    parser.add_argument("--layout", default="auto", choices=["auto", "NHWC", "NCHW", "NHW"], help="image axis order")
    _add_bbbc021_option(parser)
    parser.add_argument("--pixel-size", type=float, help="pixel size in micrometres")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store")
    parser.set_defaults(handler=_import)


def _add_bbbc021_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotate-bbbc021", type=Path, metavar="DIR",
                        help="set compound, concentration, batch and MoA from the official BBBC021 tables in DIR")


def _add_features(subparsers) -> None:
    parser = _subparser(subparsers, "features", "CellProfiler measurements (cp_measure) of every crop of a store.")
    parser.add_argument("--store", type=Path, required=True, help="crop store")
    parser.add_argument("--out", type=Path, required=True, help="output table (.parquet)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    _add_config_options(parser)
    _add_parallel_options(parser)
    parser.set_defaults(handler=_features)


def _add_profiles(subparsers) -> None:
    parser = _subparser(subparsers, "profiles", "Aggregate, normalise, select and sphere a feature or embedding table.")
    parser.add_argument("--features", type=Path, required=True, help="feature or embedding table (.parquet, .csv[.gz])")
    parser.add_argument("--out", type=Path, required=True, help="profile table to write (.parquet or .csv)")
    parser.add_argument("--level", choices=["wells", "cells"],
                        help="wells: aggregate cells per well (default); cells: one profile per cell, no aggregation, "
                             "plates and controls used only when the table has them")
    _add_bbbc021_option(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    _add_config_options(parser)
    parser.set_defaults(handler=_profiles)


_EVALUATIONS = {
    "moa": "NSC / NSCB MoA accuracy by 1-NN over treatment profiles.",
    "retrieval": "copairs mAP: same-MoA retrieval and replicates against controls.",
    "clustering": "SVM cross-validation and clustering metrics for a label column.",
    "probe": "Linear-probe and kNN accuracy (k-fold) of a label column: what an embedding holds.",
}


def _add_evaluate(subparsers) -> None:
    parser = _subparser(subparsers, "evaluate", "Score profiles or embeddings (moa, retrieval, clustering, probe) or a "
                                                "run's samples (generation).")
    kinds = parser.add_subparsers(dest="evaluation", metavar="KIND", required=True)
    generation = _subparser(kinds, "generation", "FID/KID, CellProfiler feature distances and memorisation of a run.")
    generation.add_argument("--run", type=Path, required=True, help="training run directory")
    generation.add_argument("--labels", metavar="COLUMN",
                            help="store column the FID extractor learns to classify (config key extractor_labels; "
                                 "default Metadata_Compound when the store has it, else self-supervised training)")
    generation.add_argument("--truth", type=Path, metavar="DIR",
                            help="truth folder of the simulated screen the store was prepared from (config key "
                                 "truth; cp2image runs: block simulator_truth)")
    generation.add_argument("--out", type=Path, help="output folder (default RUN/evaluation)")
    generation.add_argument("--json", action="store_true", help="print every number as JSON")
    generation.add_argument("--overwrite", action="store_true", help="replace an earlier result in the output")
    _add_config_options(generation)
    generation.set_defaults(handler=_evaluate_generation)
    _add_statistical_cell_evaluations(kinds)
    _add_embedding_comparison(kinds)
    for kind, text in (("isl", "Per-crop PCC (empty / non-empty), SSIM, PSNR and nuclei Jaccard of an "
                               "in-silico-labeling run on its held-out region."),
                       ("segmentation", "Mean IoU and instance F1 at IoU 0.5 of a segmentation run on its "
                                        "held-out region.")):
        sub = _subparser(kinds, kind, text)
        sub.add_argument("--run", type=Path, required=True, help="training run directory")
        sub.add_argument("--split", default="test", help="split of regions.json to score (default test)")
        sub.add_argument("--out", type=Path, help="output folder (default RUN/evaluation)")
        sub.add_argument("--json", action="store_true", help="print every number as JSON")
        sub.add_argument("--overwrite", action="store_true", help="replace an earlier result in the output")
        _add_config_options(sub)
        sub.set_defaults(handler=_evaluate_isl)
    for kind, text in _EVALUATIONS.items():
        sub = _subparser(kinds, kind, text)
        sub.add_argument("--profiles", "--table", dest="table", type=Path, required=True,
                         help="profile or embedding table (.parquet, .csv[.gz])")
        sub.add_argument("--out", type=Path, help="folder for JSON, CSV and figures")
        sub.add_argument("--json", action="store_true", help="print every number as JSON")
        sub.add_argument("--overwrite", action="store_true", help="replace an earlier result in the output")
        if kind in ("clustering", "probe"):
            sub.add_argument("--label", help="label column (default Metadata_MoA)")
        if kind == "probe":
            sub.add_argument("--group", help="column whose values the folds keep apart (e.g. Metadata_Compound)")
        if kind in ("moa", "retrieval"):
            for column, default in (("compound", "Metadata_Compound"), ("concentration", "Metadata_Concentration"),
                                    ("moa", "Metadata_MoA"), ("batch", "Metadata_Batch")):
                sub.add_argument(f"--{column}-column", dest=f"{column}_column",
                                 help=f"{column} column of the table (default {default})")
        _add_config_options(sub)
        sub.set_defaults(handler=_evaluate)


def _add_embedding_comparison(kinds) -> None:
    sub = _subparser(kinds, "compare-embeddings", "Several embeddings of the same samples in one table (SVM accuracy "
                                                  "and one clustering's scores per embedding, as Table 6.1 of the "
                                                  "whole-image thesis).")
    sub.add_argument("--table", dest="tables", action="append", required=True, metavar="NAME=TABLE",
                     help="an embedding (or profile) table and its column name in the comparison (repeat)")
    sub.add_argument("--label", help="label column (default Metadata_MoA)")
    sub.add_argument("--clustering", default="K-means (k=2)",
                     help="clustering whose scores are compared (default 'K-means (k=2)'; also 'K-means (k=labels)', "
                          "'Agglomerative cosine (k=labels)' with the number of labels)")
    sub.add_argument("--out", type=Path, help="folder for embedding_comparison.csv")
    sub.add_argument("--overwrite", action="store_true", help="replace an earlier comparison in the output")
    _add_config_options(sub)
    sub.set_defaults(handler=_compare_embeddings)


def _compare_embeddings(args: argparse.Namespace) -> int:
    from morphospace.workflows import evaluation

    tables = {}
    for value in args.tables:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--table {value!r}: expected NAME=TABLE, e.g. cnn=embeddings/samples.parquet")
        tables[name] = Path(path)
    overrides = list(args.overrides) + ([f"label={args.label}"] if args.label else [])
    config = load_config(evaluation.ClusteringConfig, args.config, overrides)
    comparison = evaluation.run_embedding_comparison(tables, args.out, config, args.clustering, args.overwrite)
    print(comparison.to_string(float_format=lambda v: f"{v:.3f}") + (f"\n-> {args.out}" if args.out else ""))
    return 0


def _add_statistical_cell_evaluations(kinds) -> None:
    coupling = _subparser(kinds, "coupling", "Statistical Cell: coupling of each structure to each reference channel "
                                             "by channel swaps (Eq 4), with bootstrap intervals.")
    coupling.add_argument("--repeats", type=int, help="swap partners per cell and channel (config key repeats; "
                                                      "default 8)")
    coupling.add_argument("--cells", type=int, help="held-out cells evaluated at most (config key cells; default 500)")
    coupling.add_argument("--bootstrap", type=int, help="bootstrap resamples (config key bootstrap; default 1000)")
    coupling.add_argument("--truth", type=Path, metavar="DIR", help="truth folder of a structures store: adds the "
                                                                    "Spearman agreement with the true couplings")
    coupling.add_argument("--estimator", choices=["elbo", "reference_only"],
                          help="elbo: the target ELBO (Eq 4, default); reference_only: the squared error of the "
                               "structure expected from the reference alone (runs with model.null_latent_share or "
                               "model.expected_target: unet)")
    coupling.add_argument("--views", choices=["none", "trained"],
                          help="trained: average over the flips and quarter turns the run trained with (default none)")
    coupling.add_argument("--trim", type=float, help="share of a structure's cells cut at each end of its per-cell "
                                                     "couplings before averaging (config key trim; default 0, the "
                                                     "mean; 0.5: the median)")
    coupling.set_defaults(handler=_evaluate_coupling)
    shift = _subparser(kinds, "drug-shift", "Statistical Cell: shifts of treated cells from control cells in the "
                                            "reference and target latent spaces (permutation tests, BH q-values "
                                            "or Holm's adjusted p-values).")
    shift.add_argument("--control", required=True, help="pandas query on the store's cells: the control cells")
    shift.add_argument("--treated", required=True, help="pandas query on the store's cells: the treated cells")
    shift.add_argument("--by", help="column: one test per value among the treated cells (config key by; default "
                                    "Metadata_Compound)")
    shift.add_argument("--permutations", type=int, help="label shuffles per test (default 1000)")
    shift.add_argument("--alpha", type=float, help="level of 'significant' (default 0.05): of the false discovery "
                                                   "rate with bh, of the family-wise error rate with holm")
    shift.add_argument("--correction", choices=["bh", "holm"],
                       help="multiple-test correction within each latent space: bh (Benjamini-Hochberg, default) or "
                            "holm (Holm: the chance of any false call at most alpha)")
    shift.add_argument("--truth", type=Path, metavar="DIR", help="truth folder of a structures store: adds recall and "
                                                                 "false positives (drugs.parquet)")
    shift.add_argument("--given-reference", dest="given_reference", action="store_const", const=True,
                       help="also test the target space given the reference: the target code less its linear fit "
                            "on the reference code, per structure (latent target_given_reference)")
    shift.set_defaults(handler=_evaluate_drug_shift)
    for sub in (coupling, shift):
        sub.add_argument("--run", type=Path, required=True, help="training run directory (statistical_cell family)")
        sub.add_argument("--seed", type=int, help="seed of the swaps / permutations (default 0)")
        sub.add_argument("--out", type=Path, help="output folder (default RUN/evaluation)")
        sub.add_argument("--json", action="store_true", help="print every number as JSON")
        sub.add_argument("--overwrite", action="store_true", help="replace an earlier result in the output")
        _add_config_options(sub)


def _add_predict(subparsers) -> None:
    parser = _subparser(subparsers, "predict", "Whole-field predictions of an in-silico-labeling or segmentation "
                                               "run, as TIFFs.")
    parser.add_argument("--run", type=Path, required=True, help="training run directory")
    parser.add_argument("--manifest", type=Path, help="fields to predict (default: the run's own manifest)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier predictions in the output")
    _add_config_options(parser)
    parser.set_defaults(handler=_predict)


def _add_segment(subparsers) -> None:
    parser = _subparser(subparsers, "segment", "Nuclei label images of a manifest's fields, and a copy of the manifest "
                                               "with their column (for paired-field configs' data.channels.mask).")
    parser.add_argument("--manifest", type=Path, required=True, help="CSV: one row per field, FileName_<channel> columns")
    parser.add_argument("--out", type=Path, required=True, help="folder for <field>_nuclei.tiff label images")
    parser.add_argument("--channel", help="nuclear-stain channel (default: the one named like DNA, DAPI, Hoechst, ...)")
    parser.add_argument("--manifest-out", type=Path, help="manifest copy with the label column (default OUT/manifest.csv)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing label images, manifest copy or column")
    _add_config_options(parser)
    parser.set_defaults(handler=_segment)


def _add_train(subparsers) -> None:
    parser = _subparser(subparsers, "train", "Train a model from a YAML config; model.family picks the family "
                                             "(gan, vae: crop stores; isl: paired fields; or a registered plug-in).")
    parser.add_argument("config", type=Path, help="training YAML, or the name of a built-in config (morphospace config lists them)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set trainer.max_epochs=5 (repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="start the run again from scratch")
    parser.set_defaults(handler=_train)


def _add_embed(subparsers) -> None:
    parser = _subparser(subparsers, "embed", "Encoder vectors of every crop of a store -> embeddings.parquet; or, "
                                             "with --manifest, of whole fields' tiles, averaged per field and sample.")
    parser.add_argument("--run", type=Path, required=True, help="training run directory")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--store", type=Path, help="crop store (default: the run's training store)")
    source.add_argument("--manifest", type=Path, help="fields to tile with the run's own prepare settings (runs "
                                                       "trained on tiles); --out is then a folder")
    parser.add_argument("--out", type=Path, help="output table (default RUN/embeddings.parquet); with --manifest an "
                                                 "output folder (required): tiles.parquet, fields.parquet, "
                                                 "samples.parquet")
    parser.add_argument("--by", help="with --manifest: comma-separated sample column(s) (default: the run's "
                                     "data.split.by)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=1, help="with --manifest: prepare's worker processes")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.set_defaults(handler=_embed)


def _add_generate(subparsers) -> None:
    parser = _subparser(subparsers, "generate", "Sample images from a run and save a grid (and optionally arrays).")
    parser.add_argument("--run", type=Path, required=True, help="training run directory")
    parser.add_argument("--n", type=int, default=64, help="number of samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="grid PNG (default RUN/figures/generated_seed<seed>.png)")
    parser.add_argument("--npz", type=Path, help="also save the samples (N, C, H, W) in [0, 1] to this npz")
    parser.add_argument("--features", type=Path, metavar="TABLE",
                        help="cp2image runs: one image per row of this feature table instead of prior samples")
    parser.add_argument("--per", help="with --features: one image per group centroid of these comma-separated "
                                      "columns, e.g. Metadata_Compound,Metadata_Concentration")
    parser.add_argument("--n-per-row", type=int, default=1, help="with --features: images per row (different noise)")
    parser.add_argument("--condition", metavar="QUERY",
                        help="diffusion runs: each image takes the conditions of a cell matching this pandas query or "
                             "COLUMN=VALUE[,COLUMN=VALUE] on the run's cell table")
    parser.add_argument("--from-controls", type=Path, metavar="STORE",
                        help="diffusion runs trained with start_from: controls: flow control crops of this store "
                             "(the same plate where it has it) to --condition, shown before and after")
    parser.add_argument("--guidance", type=float, help="diffusion runs: classifier-free guidance scale (default: "
                                                       "the run's model.guidance_scale; 1: none)")
    parser.add_argument("--steps", type=int, help="diffusion runs: sampling steps (default: model.sampling_steps)")
    parser.add_argument("--start-noise", type=float, default=0.0,
                        help="with --from-controls: SD of noise added to the control crops (default 0)")
    parser.set_defaults(handler=_generate)


def _add_explore(subparsers) -> None:
    parser = _subparser(subparsers, "explore", "Latent-space figures (interpolate, algebra, traverse), CP2Image "
                                                  "feature figures (sweep, trajectory) and the few-shot segmentation "
                                                  "study (fewshot).")
    kinds = parser.add_subparsers(dest="exploration", metavar="KIND", required=True)
    interpolation = _subparser(kinds, "interpolate", "Rows of transitions between noise vectors or real cells.")
    interpolation.add_argument("--seeds", default="0,1,2,3,4,5,6,7", help="comma-separated noise seeds, in pairs")
    interpolation.add_argument("--cells", help="comma-separated store indices of real cells, in pairs")
    interpolation.add_argument("--steps", type=int, default=8)
    interpolation.add_argument("--linear", action="store_true", help="linear instead of spherical interpolation")
    interpolation.add_argument("--from", dest="start", metavar="QUERY",
                               help="diffusion runs: walk the condition from the cells matching this query ...")
    interpolation.add_argument("--to", dest="end", metavar="QUERY", help="... to the cells matching this one")
    interpolation.add_argument("--rows", type=int, default=4, help="with --from/--to: rows (starting noises)")
    algebra = _subparser(kinds, "algebra", "Attribute vectors (group mean differences) added to other cells.")
    algebra.add_argument("--attribute", default="NucleusArea",
                         help="cell-table column or quick measure (NucleusArea, Mean_<Channel>)")
    algebra.add_argument("--quantile", type=float, default=0.2, help="top / bottom share defining the two groups")
    algebra.add_argument("--with", dest="query_with", help="pandas query for the cells with the attribute")
    algebra.add_argument("--without", dest="query_without", help="pandas query for the cells without it")
    algebra.add_argument("--cells", type=int, default=400, help="cells sampled to estimate the vector")
    traversal = _subparser(kinds, "traverse", "Walk single latent dimensions (most informative first).")
    traversal.add_argument("--dims", type=int, default=8)
    traversal.add_argument("--extent", type=float, default=3.0)
    sweep = _subparser(kinds, "sweep", "CP2Image: vary one feature (standardised units) with the others held.")
    sweep.add_argument("--feature", required=True, help="feature column the run was trained on")
    sweep.add_argument("--range", dest="value_range", default="-2,2",
                       help="low,high in training SDs (write --range=-2,2: the value starts with '-')")
    sweep.add_argument("--steps", type=int, default=7)
    sweep.add_argument("--cell", help="comma-separated store indices of the cells whose other features are held "
                                      "(default: the --n-cells cells nearest the centre)")
    sweep.add_argument("--n-cells", type=int, default=4, help="without --cell: this many measured cells nearest "
                                                               "the centre")
    sweep.add_argument("--follow", action="store_true", help="move the other features by their slope on the swept "
                                                             "one (default: hold them)")
    trajectory = _subparser(kinds, "trajectory", "CP2Image: walk between group centroids in feature space.")
    trajectory.add_argument("--from-centroid", action="store_true",
                            help="walk between the centroids themselves (default: move the start group's cell "
                                 "nearest its centroid by the centroids' differences)")
    trajectory.add_argument("--from", dest="start", required=True, help="pandas query on the cells: start group")
    trajectory.add_argument("--to", dest="end", required=True, help="pandas query on the cells: end group")
    trajectory.add_argument("--by", help="numeric column: pass through the centroid of each of its values in the end "
                                         "group, increasing (e.g. Metadata_Concentration)")
    trajectory.add_argument("--steps", type=int, default=7, help="images per leg, ends included")
    for sub in (sweep, trajectory):
        sub.add_argument("--run", type=Path, required=True, help="training run directory (cp2image family)")
        sub.add_argument("--seed", type=int, default=0, help="noise seed (models with model.noise_dim > 0)")
        sub.set_defaults(handler=_explore_cp2image)
    for sub in (interpolation, algebra, traversal):
        sub.add_argument("--run", type=Path, required=True, help="training run directory")
        sub.set_defaults(handler=_explore)
    fewshot = _subparser(kinds, "fewshot", "Few-shot nuclei segmentation: N training tiles, from scratch vs "
                                           "initialised from an in-silico-labeling run; table and curve.")
    fewshot.add_argument("config", type=Path, help="study YAML, or a built-in name (fewshot_simulated, fewshot_finkbeiner)")
    fewshot.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a study key, e.g. --set steps=100 (repeatable)")
    fewshot.set_defaults(handler=_explore_fewshot)
    beta_sweep = _subparser(kinds, "beta-sweep", "Statistical Cell: one run per beta, then held-out reconstruction "
                                                 "error against KL and active dimensions of both models.")
    beta_sweep.add_argument("config", type=Path, help="statistical_cell training YAML, or a built-in name")
    beta_sweep.add_argument("--betas", required=True, help="comma-separated betas, e.g. 0.1,0.3,0.5 (model.beta; "
                                                            "runs named <name>_beta0.3, finished ones reused)")
    beta_sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                            help="override a key of the training config, e.g. --set trainer.max_epochs=10 (repeatable)")
    beta_sweep.add_argument("--cells", type=int, default=500, help="held-out cells measured per run (default 500)")
    beta_sweep.add_argument("--out", type=Path, help="output folder (default RUNS_DIR/<name>_beta_sweep)")
    beta_sweep.set_defaults(handler=_explore_beta_sweep)
    _add_explore_map(kinds)


def _add_explore_map(kinds) -> None:
    cell_map = _subparser(kinds, "map", "An interactive map of a table (features, profiles, embeddings) in one "
                                        "self-contained HTML page: colour by any metadata column, the crop on hover, "
                                        "a gallery of a click or lasso selection.")
    cell_map.add_argument("--table", type=Path, required=True, help="Parquet or CSV table with Metadata_* columns")
    cell_map.add_argument("--store", type=Path, help="crop store the rows come from (crops on hover; rows without "
                                                     "Metadata_StoreIndex, e.g. wells, show a montage of their cells)")
    cell_map.add_argument("--color", help="metadata column to colour by first (default MoA, compound or plate)")
    cell_map.add_argument("--method", choices=("pca", "umap"), default="pca",
                          help="layout (umap needs the morphospace[umap] extra)")
    cell_map.add_argument("--max-points", type=int, default=10_000, help="rows drawn at most (random, seeded)")
    cell_map.add_argument("--thumbnail-size", type=int, default=64, help="thumbnail side in pixels")
    cell_map.add_argument("--seed", type=int, default=0)
    cell_map.add_argument("--out", type=Path, required=True, help="the page to write, FILE.html")
    cell_map.set_defaults(handler=_explore_map)


def _add_report(subparsers) -> None:
    parser = _subparser(subparsers, "report", "Write RUN/report.html from a run's config, curves, figures, scores "
                                              "and embedding map, or an index of every run in a folder.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", type=Path, help="training run directory")
    which.add_argument("--runs", type=Path, help="folder of runs: writes DIR/index.html, their scores in one table, "
                                                 "each linking its report (written where missing or older)")
    parser.set_defaults(handler=_report)


def _add_demo(subparsers) -> None:
    parser = _subparser(subparsers, "demo", "The whole study on a simulated screen, with an HTML report.")
    parser.add_argument("--out", type=Path, default=Path("morphospace-demo"), help="output folder (default: morphospace-demo)")
    parser.add_argument("--seed", type=int, help="random seed of the simulated screen")
    parser.add_argument("--overwrite", action="store_true", help="start again in an existing output folder")
    _add_config_options(parser)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.set_defaults(handler=_demo)


def _add_config(subparsers) -> None:
    parser = _subparser(subparsers, "config", "List the built-in example configs, or copy one to edit.")
    parser.add_argument("name", nargs="?", help="built-in config to copy (e.g. vae_simulated); omit to list them")
    parser.add_argument("--out", type=Path, help="file to write (default: print the YAML)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    parser.set_defaults(handler=_config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="morphospace",
        description="Generative models and learned representations of fluorescence microscopy cells.",
        epilog="Run `morphospace demo` for the whole study on a simulated screen.",
    )
    parser.add_argument("--version", action="version", version=f"morphospace {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_simulate, _add_manifest, _add_prepare, _add_import, _add_features, _add_profiles, _add_train,
                _add_embed, _add_generate, _add_explore, _add_evaluate, _add_predict, _add_segment, _add_report, _add_demo,
                _add_config):
        add(subparsers)
    return parser


def _seed_overrides(args: argparse.Namespace, key: str = "seed") -> list[str]:
    return [*args.overrides, f"{key}={args.seed}"] if args.seed is not None else list(args.overrides)


def _simulate(args: argparse.Namespace) -> int:
    from morphospace.simulate import SimulateConfig, simulate

    overrides = _seed_overrides(args) + ([f"mode={args.mode}"] if args.mode else [])
    config = load_config(SimulateConfig, args.config, overrides)
    written = simulate(config, args.out, workers=args.workers, progress=args.progress, overwrite=args.overwrite,
                       scheduler=args.scheduler)
    print(written.summary())
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from morphospace.workflows.prepare import PrepareConfig, prepare

    config = load_config(PrepareConfig, args.config, args.overrides)
    summary = prepare(args.manifest, args.out, config, workers=args.workers, scheduler=args.scheduler,
                      overwrite=args.overwrite, restart=args.restart, progress=args.progress)
    if args.json:
        print(json_text(vars(summary)))
    else:
        print(summary.line())
    return 0


def _manifest(args: argparse.Namespace) -> int:
    from morphospace.io.manifest import manifest_from_folder

    channels = [c.strip() for c in args.channels.split(",")] if args.channels else None
    print(manifest_from_folder(args.source, args.out, args.pattern, channels, overwrite=args.overwrite).line())
    return 0


def _import(args: argparse.Namespace) -> int:
    from morphospace.io.importers import import_folders, import_images, import_npz

    channels = [c.strip() for c in args.channels.split(",")] if args.channels else None
    common = dict(channels=channels, layout=args.layout, pixel_size_um=args.pixel_size, overwrite=args.overwrite,
                  progress=args.progress)
    if args.label_column and not args.folders:
        raise MorphospaceError("--label-column names the class column of --folders")
    if args.folders:
        if args.annotate_bbbc021:
            raise MorphospaceError("--annotate-bbbc021 needs plate and well columns, which --folders does not give")
        store = import_folders(args.folders, args.out, args.label_column or "Metadata_Label", **common)
    elif args.npz:
        store = import_npz(args.npz, args.out, bbbc021_dir=args.annotate_bbbc021, **common)
    else:
        if args.metadata is None:
            raise MorphospaceError("--images needs --metadata CSV naming each crop's file")
        store = import_images(args.images, args.metadata, args.out, bbbc021_dir=args.annotate_bbbc021, **common)
    print(f"imported {len(store)} crops {store.crop_shape} with channels {','.join(store.channels)} -> {store.path}")
    return 0


def _features(args: argparse.Namespace) -> int:
    from morphospace.features.cellprofiler import FeaturesConfig
    from morphospace.workflows.profiling import extract_features

    config = load_config(FeaturesConfig, args.config, args.overrides)
    summary = extract_features(args.store, args.out, config, workers=args.workers, scheduler=args.scheduler,
                               overwrite=args.overwrite, progress=args.progress)
    print(summary.line())
    return 0


def _profiles(args: argparse.Namespace) -> int:
    from morphospace.features.profiles import ProfilesConfig
    from morphospace.workflows.profiling import make_profiles

    config = load_config(ProfilesConfig, args.config, args.overrides + ([f"level={args.level}"] if args.level else []))
    profiles = make_profiles(args.features, args.out, config, bbbc021_dir=args.annotate_bbbc021,
                             overwrite=args.overwrite)
    n_features = sum(not c.startswith("Metadata_") for c in profiles.columns)
    print(f"wrote {len(profiles)} profiles x {n_features} features -> {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from morphospace.io.tables import read_table
    from morphospace.workflows import evaluation
    from morphospace.workflows.profiling import cellprofiler_metadata

    models = {"moa": (evaluation.MoAEvaluationConfig, evaluation.run_moa_evaluation),
              "retrieval": (evaluation.RetrievalConfig, evaluation.run_retrieval_evaluation),
              "clustering": (evaluation.ClusteringConfig, evaluation.run_clustering_evaluation),
              "probe": (evaluation.ProbeConfig, evaluation.run_probe_evaluation)}
    model, run = models[args.evaluation]
    options = {key: getattr(args, key, None) for key in ("label", "group", "compound_column", "concentration_column",
                                                          "moa_column", "batch_column")}
    overrides = list(args.overrides) + [f"{key}={value}" for key, value in options.items() if value]
    config = load_config(model, args.config, overrides)
    payload = run(cellprofiler_metadata(read_table(args.table)), args.out, config, source=str(args.table),
                  overwrite=args.overwrite)
    if args.json:
        print(json_text(payload))
    else:
        print(_evaluation_line(args.evaluation, payload) + _dropped_line(payload.get("dropped_features", []))
              + (f" -> {args.out}" if args.out else ""))
    return 0


def _dropped_line(dropped: list[str]) -> str:
    if not dropped:
        return ""
    return f"; left out {len(dropped)} feature(s) with NaN or infinite values: " + ", ".join(dropped[:5]) + (
        " ..." if len(dropped) > 5 else "")


def _evaluation_line(kind: str, payload: dict) -> str:
    if kind == "moa":
        parts = [f"{k.upper()} {payload[k]['accuracy']:.1%} ({payload[k]['treatments']} treatments)"
                 for k in ("nsc", "nscb", "nscb_multi_batch_moas") if k in payload]
        note = f"; {payload['nscb_note']}" if "nscb_note" in payload else ""
        return ("MoA accuracy: " + ", ".join(parts).replace("NSCB_MULTI_BATCH_MOAS", "NSCB without single-batch MoAs")
                + note)
    if kind == "retrieval":
        parts = [f"{k} mAP {payload[k]['mean_average_precision']:.3f}, {payload[k]['fraction_retrieved']:.0%} "
                 f"retrieved" for k in ("moa", "replicates") if k in payload]
        return "retrieval: " + "; ".join(parts)
    if kind == "probe":
        grouped = f", folds keeping {payload['group_column']} apart" if payload["group_column"] else ""
        return (f"probe of {payload['label_column']} ({payload['labels']} labels, {payload['rows']} rows, "
                f"{payload['folds']} folds{grouped}): linear {payload['linear_accuracy']:.1%}, {payload['k']}-NN "
                f"{payload['knn_accuracy']:.1%}, chance {payload['chance']:.1%}")
    return (f"clustering by {payload['label']}: SVM {payload['svm_folds']}-fold accuracy {payload['svm_accuracy']:.1%}; "
            + ", ".join(f"{name} V-measure {m['V-measure']:.3f}" for name, m in payload["metrics"].items()))


def _train(args: argparse.Namespace) -> int:
    from morphospace.models.registry import load_run_config
    from morphospace.workflows.train import train

    config = load_run_config(args.config, args.overrides)
    summary = train(config, overwrite=args.overwrite, progress=args.progress)
    if is_rank_zero():  # the other processes of a multi-process run stay quiet
        print(summary.line())
    return 0


def _embed(args: argparse.Namespace) -> int:
    from morphospace.workflows.latent import embed_store

    if args.manifest is not None:
        return _embed_fields(args)
    summary = embed_store(args.run, args.store, args.out, batch_size=args.batch_size, overwrite=args.overwrite,
                          progress=args.progress)
    print(summary.line())
    return 0


def _embed_fields(args: argparse.Namespace) -> int:
    from morphospace.workflows.fields import embed_fields

    if args.out is None:
        raise InputError("embed --manifest needs --out: the output folder")
    by = [c.strip() for c in args.by.split(",") if c.strip()] if args.by else None
    summary = embed_fields(args.run, args.manifest, args.out, by=by, workers=args.workers, batch_size=args.batch_size,
                           overwrite=args.overwrite, progress=args.progress)
    print(summary.line())
    return 0


def _generate(args: argparse.Namespace) -> int:
    from morphospace.workflows.latent import generate

    if args.features is not None:
        return _generate_from_features(args)
    if args.condition is not None or args.from_controls is not None:
        return _generate_conditioned(args)
    images, path = generate(args.run, args.n, args.seed, out=args.out, npz=args.npz)
    print(f"generated {len(images)} images -> {path}" + (f" and {args.npz}" if args.npz else ""))
    return 0


def _generate_conditioned(args: argparse.Namespace) -> int:
    from morphospace.workflows import diffusion

    if args.condition is None:
        raise InputError("--from-controls needs --condition: the cells whose conditions the controls flow to")
    if args.from_controls is not None:
        _, images, path = diffusion.generate_from_controls(args.run, args.from_controls, args.condition, args.n, args.seed,
                                                           args.guidance, args.steps, args.start_noise, args.out,
                                                           args.npz)
    else:
        images, path = diffusion.generate_for_cells(args.run, args.condition, args.n, args.seed, args.guidance,
                                                    args.steps, args.out, args.npz)
    print(f"generated {len(images)} images for {args.condition} -> {path}" + (f" and {args.npz}" if args.npz else ""))
    return 0


def _generate_from_features(args: argparse.Namespace) -> int:
    from morphospace.workflows.cp2image import generate_images

    per = [c.strip() for c in args.per.split(",")] if args.per else None
    images, path = generate_images(args.run, args.features, per, args.n_per_row, args.seed, args.out, args.npz)
    print(f"generated {len(images)} images from {args.features} -> {path}" + (f" and {args.npz}" if args.npz else ""))
    return 0


def _explore_cp2image(args: argparse.Namespace) -> int:
    from morphospace.workflows import cp2image

    if args.exploration == "sweep":
        try:
            low, high = (float(v) for v in args.value_range.split(","))
            cells = [int(c) for c in args.cell.split(",")] if args.cell else None
        except ValueError:
            raise InputError(f"--range {args.value_range!r} / --cell {args.cell!r}: expected LOW,HIGH such as -2,2 "
                             "and comma-separated store indices") from None
        path = cp2image.explore_sweep(args.run, args.feature, (low, high), args.steps, cells, args.seed,
                                      args.n_cells, "follow" if args.follow else "held")
    else:
        path = cp2image.explore_trajectory(args.run, args.start, args.end, args.by, args.steps, args.seed,
                                           args.from_centroid)
    print(f"wrote {path} and {path.with_suffix('.npz').name}")
    return 0


def _explore(args: argparse.Namespace) -> int:
    from morphospace.workflows import latent

    if args.exploration == "interpolate" and (args.start is not None or args.end is not None):
        from morphospace.workflows.diffusion import interpolate_conditions

        if args.start is None or args.end is None:
            raise InputError("walking between conditions needs both --from and --to")
        path = interpolate_conditions(args.run, args.start, args.end, args.steps, args.rows)
    elif args.exploration == "interpolate":
        cells = [int(c) for c in args.cells.split(",")] if args.cells else None
        seeds = [int(s) for s in args.seeds.split(",")]
        path = latent.explore_interpolate(args.run, seeds, cells, args.steps, spherical=not args.linear)
    elif args.exploration == "algebra":
        path = latent.explore_algebra(args.run, args.attribute, args.quantile, n_cells=args.cells,
                                      query_with=args.query_with, query_without=args.query_without)
    else:
        path = latent.explore_traverse(args.run, args.dims, args.extent)
    print(f"wrote {path}")
    return 0


def _explore_map(args: argparse.Namespace) -> int:
    from morphospace.explore.cell_map import write_map

    path, cell_map = write_map(args.table, args.out, args.store, args.color, args.method, args.max_points, args.seed,
                               args.thumbnail_size)
    shown = "with crops" if cell_map.thumbnails is not None else "without crops"
    print(f"wrote {path}: {cell_map.n_points:,} points {shown}, {path.stat().st_size / 1e6:.1f} MB"
          + "".join(f"; {note}" for note in cell_map.notes))
    return 0


def _explore_fewshot(args: argparse.Namespace) -> int:
    from morphospace.workflows.fewshot import FewShotConfig, run_fewshot

    config = load_config(FewShotConfig, args.config, args.overrides)
    table = run_fewshot(config, progress=args.progress)
    print(table.drop(columns="run").to_string(index=False, float_format="{:.3f}".format))
    print(f"wrote {config.out_dir / 'fewshot.csv'} and {config.out_dir / 'fewshot.png'}")
    return 0


def _evaluate_generation(args: argparse.Namespace) -> int:
    from morphospace.workflows.evaluation import GenerationConfig, run_generation_evaluation

    labels = [f"extractor_labels={args.labels}"] if args.labels else []
    truth = [f"truth={args.truth}"] if args.truth else []
    config = load_config(GenerationConfig, args.config, [*args.overrides, *labels, *truth])
    payload = run_generation_evaluation(args.run, args.out, config, overwrite=args.overwrite)
    print(json_text(payload) if args.json else _generation_summary(payload))
    return 0


def _generation_summary(payload: dict) -> str:
    """One line of the scores of ``evaluate generation``'s JSON."""
    in_domain = payload["in_domain"]
    column = payload["extractor_training"]["labels"]
    trained_on = f"trained on {column}" if column else "self-supervised"
    realism = f"FID {in_domain['fid']:.4g}, KID {in_domain['kid_mean']:.4g} ({in_domain['extractor']}, {trained_on})"
    if payload.get("family") == "cp2image":
        correlation = payload["feature_correlation"]
        return (f"{correlation['share_r_above_0_5']:.1%} of features with r > 0.5 on {correlation['n_cells']} "
                f"{correlation['split']} cells (median r {correlation['median_r']:.3f}; real crops "
                f"{payload['measurement_ceiling']['share_r_above_0_5']:.1%}); {realism}")
    if payload.get("family") == "diffusion":
        accuracy = payload.get("condition_accuracy")
        came_through = (f"; condition accuracy {accuracy['accuracy_generated']:.3f} generated vs "
                        f"{accuracy['accuracy_real']:.3f} real" if accuracy else "")
        cosines = ", ".join(f"{g} {c:.2f}" for g, c in payload["shift_cosine"].items())
        return (f"{realism} over {len(payload['fid_per_condition'])} conditions of {payload['condition_column']} "
                f"(mean per condition {payload['fid_per_condition_mean']:.4g}){came_through}; shift cosine "
                f"{cosines}")
    return (f"{realism}; median feature distance {payload['feature_distances']['median_normalized_wasserstein']:.3f}; "
            f"memorised fraction {payload['memorisation']['memorised_fraction']:.3f}")


def _option_overrides(args: argparse.Namespace, keys: Sequence[str]) -> list[str]:
    """``--set`` overrides followed by ``key=value`` of every option in ``keys`` given on the command line."""
    return [*args.overrides, *(f"{key}={getattr(args, key)}" for key in keys if getattr(args, key) is not None)]


def _evaluate_coupling(args: argparse.Namespace) -> int:
    from morphospace.workflows.statistical_cell import CouplingConfig, evaluate_coupling

    config = load_config(CouplingConfig, args.config,
                         _option_overrides(args, ("repeats", "cells", "bootstrap", "seed", "truth", "estimator",
                                                 "views", "trim")))
    payload = evaluate_coupling(args.run, args.out, config, overwrite=args.overwrite)
    if args.json:
        print(json_text(payload))
        return 0
    parts = [f"{row['structure']}/{row['channel']} {row['coupling']:.3f}" for row in payload["coupling"]]
    print(f"coupling ({payload['estimator']}, {payload['summary']} over cells) on {payload['n_cells']} "
          f"{payload['split']} cells: " + ", ".join(parts))
    if "agreement" in payload:
        pooled = payload["agreement"]["per_channel"]["pooled"]["spearman_ties_resolved"]
        print(f"Spearman with the truth (pooled, ties resolved): {_shown_number(pooled)}")
    return 0


def _evaluate_drug_shift(args: argparse.Namespace) -> int:
    from morphospace.workflows.statistical_cell import GIVEN_REFERENCE, DrugShiftConfig, evaluate_drug_shift

    config = load_config(DrugShiftConfig, args.config,
                         _option_overrides(args, ("by", "permutations", "alpha", "correction", "seed", "truth",
                                                         "given_reference")))
    payload = evaluate_drug_shift(args.run, args.control, args.treated, args.out, config, overwrite=args.overwrite)
    if args.json:
        print(json_text(payload))
        return 0
    tests = payload["tests"]
    spaces = [name for name in ("target", "reference", GIVEN_REFERENCE) if any(t["latent"] == name for t in tests)]
    for latent in spaces:
        hits = [f"{t['drug']}/{t['structure']}" for t in tests if t["latent"] == latent and t["significant"]]
        total = sum(t["latent"] == latent for t in tests)
        print(f"{latent} space: {len(hits)} of {total} tests significant ({config.correction} q <= {config.alpha})"
              + (": " + ", ".join(hits) if hits else ""))
    if "truth_scores" in payload:
        target = payload["truth_scores"]["target"]
        print(f"against the truth: recall {_shown_number(target['recall'])}, {target['false_positives']} false "
              f"positive(s) in the target space, {payload['truth_scores']['reference']['false_positives']} in the "
              "reference space")
        if GIVEN_REFERENCE in payload["truth_scores"]:
            given = payload["truth_scores"][GIVEN_REFERENCE]
            print(f"given the reference: recall {_shown_number(given['recall'])}, {given['false_positives']} false "
                  "positive(s)")
    return 0


def _shown_number(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


def _explore_beta_sweep(args: argparse.Namespace) -> int:
    from morphospace.models.registry import load_run_config
    from morphospace.workflows.statistical_cell import beta_sweep_dir, run_beta_sweep

    try:
        betas = [float(b) for b in args.betas.split(",")]
    except ValueError:
        raise InputError(f"--betas {args.betas!r}: expected comma-separated numbers such as 0.1,0.3,0.5") from None
    config = load_run_config(args.config, args.overrides)
    table = run_beta_sweep(config, betas, args.out, max_cells=args.cells, progress=args.progress)
    print(table.drop(columns=["run", "split"]).to_string(index=False, float_format="{:.4g}".format))
    out = args.out or beta_sweep_dir(config)
    print(f"wrote {out / 'beta_sweep.csv'}, beta_sweep.json and beta_sweep.png")
    return 0


def _segment(args: argparse.Namespace) -> int:
    from morphospace.workflows.segment import SegmentConfig, segment_manifest

    config = load_config(SegmentConfig, args.config, args.overrides)
    if args.channel:
        config.nuclei.channel = args.channel
    summary = segment_manifest(args.manifest, args.out, config, args.manifest_out, overwrite=args.overwrite,
                               progress=args.progress)
    print(summary.line())
    return 0


def _predict(args: argparse.Namespace) -> int:
    from morphospace.evaluate.isl import InferenceConfig
    from morphospace.workflows.isl import predict_fields

    settings = load_config(InferenceConfig, args.config, args.overrides)
    written = predict_fields(args.run, args.out, args.manifest, settings, overwrite=args.overwrite)
    print(f"predicted {len(written)} image(s) -> {args.out}")
    return 0


def _evaluate_isl(args: argparse.Namespace) -> int:
    from morphospace.evaluate.isl import InferenceConfig
    from morphospace.workflows.isl import evaluate_isl_run

    settings = load_config(InferenceConfig, args.config, args.overrides)
    evaluation = evaluate_isl_run(args.run, args.out, args.split, settings, kind=args.evaluation,
                                  overwrite=args.overwrite)
    print(json_text(evaluation.scores) if args.json else evaluation.line())
    return 0


def _report(args: argparse.Namespace) -> int:
    from morphospace.explore.run_report import write_run_report, write_runs_index

    if args.run is not None:
        print(f"wrote {write_run_report(args.run)}")
        return 0
    path, table = write_runs_index(args.runs)
    print(f"wrote {path}: {len(table)} run(s)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from morphospace.workflows.demo import DemoConfig, run_demo

    config = load_config(DemoConfig, args.config, _seed_overrides(args, "simulate.seed"))
    summary = run_demo(args.out, config, workers=args.workers, overwrite=args.overwrite, progress=args.progress)
    print(summary.line())
    return 0


def _config(args: argparse.Namespace) -> int:
    from morphospace.config import builtin_config_summary, copy_builtin_config

    if args.name is None:
        print(builtin_config_summary())
    elif args.out is None:
        print(copy_builtin_config(args.name).rstrip())
    else:
        copy_builtin_config(args.name, args.out, overwrite=args.overwrite)
        print(f"wrote {args.out}: edit it, then pass it to the command its first lines name")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``morphospace`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    setup_logging(verbose=args.verbose)
    try:
        return handler(args)
    except (MorphospaceError, FileExistsError) as exc:
        print(f"morphospace {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"morphospace {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
