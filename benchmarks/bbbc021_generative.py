"""CytoGAN and the VAE family on the real BBBC021 crops: train, embed, score MoA and generation.

For each model (DCGAN, LSGAN, WGAN-GP, VAE, beta-VAE, VAE-GAN; the built-in configs <model>_bbbc021):
train unsupervised on all 8,774 crops (the three npz files: DMSO of 6 plates, cycloheximide, 1,000
all-MoA; 64 x 64 centre crops) within a wall-clock budget; embed the 1,000 all-MoA crops (GANs:
the discriminator's penultimate layer, 100-d; VAEs: the posterior mean, 100-d); score MoA; score
1,000 samples against 1,000 real crops (FID/KID on an in-domain extractor trained once on the real
crops to classify their compound; CellProfiler feature distances; memorisation). Baselines on the
same 1,000 crops: pixel PCA (100 components fitted on all crops) and CellProfiler features.

MoA conventions (1,000 single cells, 103 treatments, median 5 cells per treatment, so noisy):
``nsc_cytogan``: treatment profile = mean of the cells' embeddings, cosine 1-NN, same compound
excluded (CytoGAN's protocol); ``nsc_profiles``: morphospace's default profile recipe (wells =
median of cells, log where positive, centring on each batch's DMSO wells with pooled scaling,
whitening on DMSO), then the same 1-NN; NSCB excludes the same batch too (103 treatments).

Work files (stores, runs, extractor) go to ``benchmarks/work/`` and are reused: an interrupted
benchmark resumes (training continues from its last checkpoint).

    python benchmarks/bbbc021_generative.py [--data ../shared/data] [--minutes 20] [--models lsgan,vae]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from common import ROOT, data_dir, print_table, write_result
from morphospace.config import resolve_config
from morphospace.data.transforms import center_crop_or_pad
from morphospace.evaluate.moa import evaluate_moa, treatment_profiles
from morphospace.features.cellprofiler import FeaturesConfig
from morphospace.features.profiles import ProfilesConfig
from morphospace.io.importers import import_npz
from morphospace.io.store import CropStore
from morphospace.workflows.evaluation import GenerationConfig, run_generation_evaluation
from morphospace.workflows.latent import embed_store, explore_algebra, explore_interpolate, generate
from morphospace.workflows.profiling import extract_features, make_profiles
from morphospace.models.registry import load_run_config
from morphospace.workflows.train import train

MODELS = ["dcgan", "lsgan", "wgan_gp", "vae", "beta_vae", "vae_gan"]
CHANNELS = ["DNA", "Actin", "Tubulin"]
FILES = ["bbbc021_crops68_dmso_6plates.npz", "bbbc021_crops68_cycloheximide.npz", "bbbc021_crops68_random1000_allmoa.npz"]
PUBLISHED = {"nsc": {"dcgan": 0.51, "wgan_gp": 0.56, "lsgan": 0.68, "vae": 0.49, "vae_gan": 0.90},
             "fid": {"vae": 352, "vae_gan": 28, "lsgan": 25}}
BATCH_PROFILES = {"normalize": {"by": "Metadata_Batch"}}


def _stores(bbbc021: Path, work: Path) -> tuple[Path, Path]:
    training, allmoa = work / "stores" / "bbbc021_all", work / "stores" / "bbbc021_allmoa"
    if not (training / "store.json").is_file():
        import_npz([bbbc021 / f for f in FILES], training, CHANNELS, bbbc021_dir=bbbc021, overwrite=True)
    if not (allmoa / "store.json").is_file():
        import_npz(bbbc021 / FILES[-1], allmoa, CHANNELS, bbbc021_dir=bbbc021, overwrite=True)
    return training, allmoa


def moa_scores(table: pd.DataFrame) -> dict[str, float]:
    """NSC / NSCB of a per-cell table, by CytoGAN's protocol and by the default profile recipe."""
    raw = evaluate_moa(treatment_profiles(table, operation="mean"))
    profiled = evaluate_moa(treatment_profiles(make_profiles(table, config=resolve_config(ProfilesConfig,
                                                                                           BATCH_PROFILES))))
    return {"nsc_cytogan": raw["nsc"].accuracy, "nscb_cytogan": raw["nscb"].accuracy,
            "nsc_profiles": profiled["nsc"].accuracy, "nscb_profiles": profiled["nscb"].accuracy}


def _pixel_pca(training: Path, allmoa: Path, components: int = 100) -> pd.DataFrame:
    """Pixel PCA embeddings of the all-MoA crops (PCA fitted on a sample of all crops, 64 px, scaled)."""
    import torch
    from sklearn.decomposition import PCA

    def flat(store: CropStore, rows: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(store.read(rows).astype(np.float32))
        return center_crop_or_pad(x, 64).flatten(1).numpy()

    train_store, target = CropStore(training), CropStore(allmoa)
    rows = np.sort(np.random.default_rng(0).choice(len(train_store), min(4000, len(train_store)), replace=False))
    scale = np.percentile(flat(train_store, rows), 99.9)
    pca = PCA(components, random_state=0).fit(flat(train_store, rows) / scale)
    vectors = pca.transform(flat(target, np.arange(len(target))) / scale)
    return pd.concat([target.cells.reset_index(drop=True),
                      pd.DataFrame(vectors, columns=[f"PC{i:03d}" for i in range(components)])], axis=1)


def _baselines(training: Path, allmoa: Path, work: Path) -> list[dict]:
    features = work / "cellprofiler_allmoa.parquet"
    if not features.is_file():
        extract_features(allmoa, features, FeaturesConfig(feature_set="fast"), workers=2, progress=False)
    return [{"model": "pixel PCA (100)", **moa_scores(_pixel_pca(training, allmoa))},
            {"model": "CellProfiler (fast set)", **moa_scores(pd.read_parquet(features))}]


def _run_model(name: str, training: Path, allmoa: Path, work: Path, minutes: float) -> dict:
    config = load_run_config(f"{name}_bbbc021",
                             [f"data.store={training}", f"runs_dir={work / 'runs'}", f"trainer.max_minutes={minutes}",
                              "trainer.max_epochs=1000"])
    summary = train(config, progress=False)
    run = config.run_dir
    embeddings = run / "embeddings_allmoa.parquet"
    embed_store(run, allmoa, embeddings, overwrite=True, progress=False)
    generation = run_generation_evaluation(run, overwrite=True, config=GenerationConfig(
        n=1000, extractor=str(work / "extractors" / "bbbc021_all.pt"), feature_cells=300))
    generate(run, n=32, seed=0)
    explore_interpolate(run, seeds=tuple(range(8)), steps=8)
    explore_algebra(run, "NucleusArea", n_cells=120)  # GANs project each cell by optimising z: keep it small
    explore_algebra(run, "Mean_Tubulin", n_cells=120)
    return {"model": name, "epochs": summary.epochs, "train_images_per_s": summary.samples_per_second,
            **moa_scores(pd.read_parquet(embeddings)),
            "fid": generation["in_domain"]["fid"], "kid": generation["in_domain"]["kid_mean"],
            "feature_distance_median": generation["feature_distances"]["median_normalized_wasserstein"],
            "memorised_fraction": generation["memorisation"]["memorised_fraction"],
            "nn_distance_ratio": generation["memorisation"]["median_ratio"],
            "extractor": generation["in_domain"]["extractor"], "inception": str(generation["inception"])[:120]}


def _collect_figures(work: Path, names: list[str]) -> list[str]:
    target = ROOT / "results" / "bbbc021_generative"
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in names:
        run = work / "runs" / f"{name}_bbbc021"
        for figure in ("generated_seed0", "interpolation_noise", "algebra_NucleusArea", "algebra_Mean_Tubulin"):
            source = run / "figures" / f"{figure}.png"
            if source.is_file():
                shutil.copy(source, target / f"{name}_{figure}.png")
                copied.append(f"{name}_{figure}.png")
        source = run / "evaluation" / "figures" / "real_vs_generated.png"
        if source.is_file():
            shutil.copy(source, target / f"{name}_real_vs_generated.png")
            copied.append(f"{name}_real_vs_generated.png")
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per model")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    bbbc021 = data_dir(args.data) / "bbbc021"
    work = ROOT / "work"
    training, allmoa = _stores(bbbc021, work)
    names = [m for m in args.models.split(",") if m]
    rows = [_run_model(name, training, allmoa, work, args.minutes) for name in names]
    baselines = _baselines(training, allmoa, work)
    shown = [{k: v for k, v in r.items() if k not in ("extractor", "inception")} for r in rows]
    print_table(shown, f"CytoGAN / VAE family on BBBC021 ({args.minutes:g} min training each, 2 CPU cores)")
    print_table(baselines, "baselines on the same 1,000 crops")
    print_table([{"model": m, "published_nsc": PUBLISHED["nsc"].get(m), "published_fid": PUBLISHED["fid"].get(m)}
                 for m in names], "published on full BBBC021 (CytoGAN Table 1; CP2Image Table 1)")
    path = write_result("bbbc021_generative", {
        "convention": ("NSC on the 1,000 all-MoA crops (103 treatments): nsc_cytogan = mean embedding per treatment, "
                       "cosine 1-NN, same compound excluded; nsc_profiles = default profile recipe with batch-wise "
                       "DMSO centring; NSCB also excludes the same batch. FID/KID: 1,000 samples vs 1,000 real crops "
                       "in [0, 1] on the in-domain extractor named in each row (squared embedding units; not "
                       "comparable to Inception FIDs). feature_distance_median: median over CellProfiler features "
                       "of the Wasserstein distance in real-SD units (300 crops each). memorised_fraction: generated "
                       "crops nearer a training crop than the 1st percentile of held-out real crops."),
        "training": {"crops": 8774, "crop_size": 64, "minutes_per_model": args.minutes, "cpu_cores": 2},
        "rows": rows, "baselines": baselines, "published": PUBLISHED,
        "figures": _collect_figures(work, names),
    })
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
