"""The ``morphospace`` command line: parses arguments, loads configs and calls the Python API."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from morphospace import __version__
from morphospace.config import load_config
from morphospace.errors import MorphospaceError
from morphospace.runs import setup_logging

logger = logging.getLogger("morphospace.cli")

_EXAMPLES = {
    "simulate": "morphospace simulate --out screen --seed 1 --set plates=4 --workers 2",
    "prepare": "morphospace prepare --manifest screen/manifest.csv --out store --set crops.size=68 --workers 2",
    "import": (
        "morphospace import --npz crops.npz --out store --channels DNA,Actin,Tubulin --annotate-bbbc021 BBBC021_tables/\n"
        "  morphospace import --tiff crops/ --metadata crops.csv --out store"
    ),
    "demo": "morphospace demo --out morphospace-demo --workers 2",
    "features": "morphospace features --store store --out cells.parquet --set feature_set=full --workers 2",
    "profiles": (
        "morphospace profiles --features cells.parquet --out profiles.parquet --set sphere.enabled=true\n"
        "  morphospace profiles --features per_well.csv.gz --out profiles.parquet --annotate-bbbc021 BBBC021_tables/"
    ),
    "evaluate": "morphospace evaluate moa --profiles profiles.parquet --out eval --json",
    "moa": "morphospace evaluate moa --profiles profiles.parquet --out eval --set operation=median --json",
    "retrieval": "morphospace evaluate retrieval --profiles profiles.parquet --out eval",
    "clustering": "morphospace evaluate clustering --table embeddings.parquet --label Metadata_MoA --out eval",
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
    parser = _subparser(subparsers, "simulate", "Simulate a BBBC021-like screen: fields, manifest, ground truth.")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, help="random seed (same seed, same screen)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    _add_config_options(parser)
    _add_parallel_options(parser)
    parser.set_defaults(handler=_simulate)


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
    parser = _subparser(subparsers, "import", "Existing crops (npz arrays or TIFF files) -> crop store.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--npz", type=Path, help="npz with an 'images' array and per-crop metadata arrays")
    source.add_argument("--tiff", type=Path, help="folder of TIFF crops (needs --metadata)")
    parser.add_argument("--metadata", type=Path, help="CSV with a 'file' column (and optional 'frame') for --tiff")
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
    _add_bbbc021_option(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    _add_config_options(parser)
    parser.set_defaults(handler=_profiles)


_EVALUATIONS = {
    "moa": "NSC / NSCB MoA accuracy by 1-NN over treatment profiles.",
    "retrieval": "copairs mAP: same-MoA retrieval and replicates against controls.",
    "clustering": "SVM cross-validation and clustering metrics for a label column.",
}


def _add_evaluate(subparsers) -> None:
    parser = _subparser(subparsers, "evaluate", "Score profiles or embeddings: moa, retrieval, clustering.")
    kinds = parser.add_subparsers(dest="evaluation", metavar="KIND", required=True)
    for kind, text in _EVALUATIONS.items():
        sub = _subparser(kinds, kind, text)
        sub.add_argument("--profiles", "--table", dest="table", type=Path, required=True,
                         help="profile or embedding table (.parquet, .csv[.gz])")
        sub.add_argument("--out", type=Path, help="folder for JSON, CSV and figures")
        sub.add_argument("--json", action="store_true", help="print every number as JSON")
        if kind == "clustering":
            sub.add_argument("--label", help="label column (default Metadata_MoA)")
        _add_config_options(sub)
        sub.set_defaults(handler=_evaluate)


def _add_demo(subparsers) -> None:
    parser = _subparser(subparsers, "demo", "The whole study on a simulated screen, with an HTML report.")
    parser.add_argument("--out", type=Path, default=Path("morphospace-demo"), help="output folder (default: morphospace-demo)")
    parser.add_argument("--seed", type=int, help="random seed of the simulated screen")
    parser.add_argument("--overwrite", action="store_true", help="start again in an existing output folder")
    _add_config_options(parser)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.set_defaults(handler=_demo)


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
    for add in (_add_simulate, _add_prepare, _add_import, _add_features, _add_profiles, _add_evaluate, _add_demo):
        add(subparsers)
    return parser


def _seed_overrides(args: argparse.Namespace, key: str = "seed") -> list[str]:
    return [*args.overrides, f"{key}={args.seed}"] if args.seed is not None else list(args.overrides)


def _simulate(args: argparse.Namespace) -> int:
    from morphospace.simulate import SimulateConfig, simulate_screen

    config = load_config(SimulateConfig, args.config, _seed_overrides(args))
    screen = simulate_screen(config, args.out, workers=args.workers, progress=args.progress, overwrite=args.overwrite,
                             scheduler=args.scheduler)
    print(f"simulated {screen.n_cells} cells in {screen.n_fields} fields -> {screen.manifest_path}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from morphospace.workflows.prepare import PrepareConfig, prepare

    config = load_config(PrepareConfig, args.config, args.overrides)
    summary = prepare(args.manifest, args.out, config, workers=args.workers, scheduler=args.scheduler,
                      overwrite=args.overwrite, restart=args.restart, progress=args.progress)
    if args.json:
        print(json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(summary).items()}, indent=2))
    else:
        print(summary.line())
    return 0


def _import(args: argparse.Namespace) -> int:
    from morphospace.io.importers import import_npz, import_tiff

    channels = [c.strip() for c in args.channels.split(",")] if args.channels else None
    common = dict(channels=channels, layout=args.layout, bbbc021_dir=args.annotate_bbbc021, pixel_size_um=args.pixel_size,
                  overwrite=args.overwrite, progress=args.progress)
    if args.npz:
        store = import_npz(args.npz, args.out, **common)
    else:
        if args.metadata is None:
            raise MorphospaceError("--tiff needs --metadata CSV naming each crop's file")
        store = import_tiff(args.tiff, args.metadata, args.out, **common)
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

    config = load_config(ProfilesConfig, args.config, args.overrides)
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
              "clustering": (evaluation.ClusteringConfig, evaluation.run_clustering_evaluation)}
    model, run = models[args.evaluation]
    overrides = list(args.overrides) + ([f"label={args.label}"] if getattr(args, "label", None) else [])
    config = load_config(model, args.config, overrides)
    payload = run(cellprofiler_metadata(read_table(args.table)), args.out, config)
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
    else:
        print(_evaluation_line(args.evaluation, payload) + (f" -> {args.out}" if args.out else ""))
    return 0


def _evaluation_line(kind: str, payload: dict) -> str:
    if kind == "moa":
        parts = [f"{k.upper()} {payload[k]['accuracy']:.1%} ({payload[k]['treatments']} treatments)"
                 for k in ("nsc", "nscb", "nscb_multi_batch_moas") if k in payload]
        return "MoA accuracy: " + ", ".join(parts).replace("NSCB_MULTI_BATCH_MOAS", "NSCB without single-batch MoAs")
    if kind == "retrieval":
        parts = [f"{k} mAP {payload[k]['mean_average_precision']:.3f}, {payload[k]['fraction_retrieved']:.0%} "
                 f"retrieved" for k in ("moa", "replicates") if k in payload]
        return "retrieval: " + "; ".join(parts)
    return (f"clustering by {payload['label']}: SVM {payload['svm_folds']}-fold accuracy {payload['svm_accuracy']:.1%}; "
            + ", ".join(f"{name} V-measure {m['V-measure']:.3f}" for name, m in payload["metrics"].items()))


def _demo(args: argparse.Namespace) -> int:
    from morphospace.workflows.demo import DemoConfig, run_demo

    config = load_config(DemoConfig, args.config, _seed_overrides(args, "simulate.seed"))
    summary = run_demo(args.out, config, workers=args.workers, overwrite=args.overwrite, progress=args.progress)
    print(summary.line())
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
