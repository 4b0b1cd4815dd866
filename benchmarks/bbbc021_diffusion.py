"""Treatment-conditioned diffusion and flow matching on the real BBBC021 crops (64 x 64 centre crops,
the store of all three npz files that the GAN/VAE benchmark uses, so that FIDs share its in-domain
extractor):

- ``week4``: rectified flow noise -> image conditioned on the treatment (DMSO, cycloheximide 5, 15,
  50 uM) on the three week-4 plates that hold all four (configs/diffusion_bbbc021_week4.yaml);
- ``week4_from_controls``: the control -> treated flow (CellFlux's set-up) on the same cells
  (configs/flow_bbbc021_week4.yaml);
- ``allmoa``: rectified flow conditioned on the MoA of the 1,000 all-MoA crops
  (configs/diffusion_bbbc021_moa.yaml).

Each part trains its built-in config (budget in epochs; finished runs in ``benchmarks/work/diffusion``
are reused) and is scored by ``evaluate generation`` (overall and per-condition FID/KID on the GAN
table's extractor, condition accuracy of a classifier trained on real crops, CellProfiler shift
cosines; see morphospace.workflows.diffusion_evaluation). Speed: sampling seconds per image per
number of steps; training images/s of a fresh short run against a bare loop of the same MONAI
network, timed one after the other in this run.

    python benchmarks/bbbc021_diffusion.py [--data ../shared/data] [--parts week4,allmoa] [--quick]
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bbbc021_generative import _stores
from common import ROOT, data_dir, machine, print_table, write_result
from morphospace.models.registry import load_run_config
from morphospace.models.run import load_run
from morphospace.models.training import RunConfig, resolve_precision
from morphospace.workflows.evaluation import GenerationConfig, run_generation_evaluation
from morphospace.workflows.train import trained

WORK = ROOT / "work" / "diffusion"
EXTRACTOR = ROOT / "work" / "extractors" / "bbbc021_all.pt"
PARTS = {  # part: (built-in config, control query)
    "week4": ("diffusion_bbbc021_week4", "Metadata_Compound == 'DMSO'"),
    "week4_from_controls": ("flow_bbbc021_week4", "Metadata_Compound == 'DMSO'"),
    "allmoa": ("diffusion_bbbc021_moa", "Metadata_MoA == 'DMSO'"),
}
QUICK = ["trainer.max_epochs=1"]
SAMPLING_STEPS = (5, 10, 20, 50)
CONVENTION = (
    "64 x 64 centre crops in [-1, 1] (percentile 0.1-99.9 fitted on each run's cells); training budget in epochs of "
    "the built-in configs, wall-clock seconds on 2 CPU cores under training.seconds (the sum over the run's training "
    "sessions, each as train.log reports it; a run given a larger budget resumes in a new session); evaluation: see "
    "each block's "
    "evaluation.convention (FID/KID on the in-domain extractor of benchmarks/bbbc021_generative.py, trained to "
    "classify the compound of all 8,774 crops: the scores share that table's units; real = training cells of each "
    "condition, generated = one image per such cell with its conditions); condition_accuracy_*: logistic regression on "
    "that extractor's embeddings of real training cells, scored on held-out real cells and on generated cells; "
    "shift_cosine: per treated condition, cosine between the generated and the real shift of the median CellProfiler "
    "feature vector (fast set, standardised on the real cells) from the control condition's; "
    "sampling_seconds_per_image: wall clock of generating 32 images at each number of steps (one batch, the run's "
    "sampling precision), per image; train_images_per_s_ratio_to_bare_loop: a fresh run of the week4 config "
    "(train_speed_steps optimizer steps, data loading included) against a loop of the same MONAI network, loss and "
    "optimizer on in-memory random batches, timed one after the other"
)


def _config(name: str, store: Path, quick: bool) -> RunConfig:
    """The built-in config on the benchmark's store; --quick runs go to their own folder."""
    runs = WORK / ("runs_quick" if quick else "runs")
    return load_run_config(name, [f"data.store={store}", f"runs_dir={runs}", *(QUICK if quick else [])])


def _sampling_seconds(run_dir: Path, steps: tuple[int, ...], n: int = 32) -> dict[str, float]:
    """Seconds per generated image at each number of sampling steps (one batch of ``n``)."""
    run = load_run(run_dir, "generate")
    module = run.module
    start = module.starts(module.bank_controls(n, torch.Generator().manual_seed(0)), n,
                          torch.Generator().manual_seed(0))
    conditions = module.bank_conditions(n, torch.Generator().manual_seed(0))
    module.generate(start[:4], {k: v[:4] for k, v in conditions.items()}, steps=2)  # warm-up
    seconds = {}
    for count in steps:
        begin = time.perf_counter()
        module.generate(start, conditions, steps=count)
        seconds[str(count)] = (time.perf_counter() - begin) / n
    return seconds


def _bare_images_per_second(config: RunConfig, n_steps: int) -> float:
    """Images/s of a bare loop of the config's MONAI network: rflow loss, AdamW, the run's precision."""
    from morphospace.models.diffusion import DiffusionModel

    torch.manual_seed(0)
    shape = (3, config.data.crop_size, config.data.crop_size)
    entries = [{"name": name, "kind": "categorical", "size": 4, "names": []} for name in config.model.conditions]
    model = DiffusionModel(config.model.to_dict(), shape, entries).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.model.lr)
    batch = config.data.batch_size
    images = torch.rand(batch, *shape) * 2 - 1
    labels = {name: torch.randint(4, (batch,)) for name in config.model.conditions}
    bf16 = resolve_precision(config.trainer.precision).startswith("bf16")

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.diffusion_loss(images, model.context(labels, batch) if entries else None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    begin = time.perf_counter()
    for _ in range(n_steps):
        step()
    return n_steps * batch / (time.perf_counter() - begin)


def _speed(store: Path, steps: int) -> dict[str, Any]:
    """A fresh week4 run of ``steps`` optimizer steps, then the bare loop, timed back to back."""
    with tempfile.TemporaryDirectory() as runs:
        config = load_run_config("diffusion_bbbc021_week4", [
            "name=diffusion_speed", f"data.store={store}", f"runs_dir={runs}", f"trainer.max_steps={steps}",
            "trainer.max_epochs=1000", "trainer.sample_images=4"])
        summary = trained(config, progress=False)
        bare = _bare_images_per_second(config, steps)
    return {"train_images_per_s": summary.samples_per_second, "bare_images_per_s": bare,
            "ratio": summary.samples_per_second / bare, "steps": steps}


def _figures(store: Path, quick: bool) -> list[str]:
    """The figures people look at, copied to benchmarks/results/bbbc021_diffusion/: real and generated
    cells per condition (each part), the same control cells before and after the flow to each dose,
    and a walk from DMSO to 50 uM."""
    from morphospace.workflows.diffusion import generate_from_controls, interpolate_conditions

    target = ROOT / "results" / "bbbc021_diffusion"
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for part, (name, _) in PARTS.items():
        source = _config(name, store, quick).run_dir / "evaluation" / "figures" / "conditions_real_vs_generated.png"
        if source.is_file():
            shutil.copy(source, target / f"{part}_conditions_real_vs_generated.png")
            copied.append(f"{part}_conditions_real_vs_generated.png")
    flow = _config(PARTS["week4_from_controls"][0], store, quick).run_dir
    if (flow / "summary.json").is_file():
        for dose in (5, 15, 50):
            query = f"Metadata_Compound=cyclohexamide,Metadata_Concentration={dose}"
            _, _, figure = generate_from_controls(flow, store, query, n=8, seed=0)
            shutil.copy(figure, target / f"from_controls_cycloheximide_{dose}uM.png")
            copied.append(f"from_controls_cycloheximide_{dose}uM.png")
    week4 = _config(PARTS["week4"][0], store, quick).run_dir
    if (week4 / "summary.json").is_file():
        figure = interpolate_conditions(week4, "Metadata_Compound=DMSO", "Metadata_Concentration=50", steps=6, rows=3)
        shutil.copy(figure, target / "week4_dmso_to_cycloheximide_50uM.png")
        copied.append("week4_dmso_to_cycloheximide_50uM.png")
    return copied


def _session_seconds(run_dir: Path) -> list[float]:
    """Training seconds of every session of a run, from the lines ``train`` logs at its end."""
    lines = (run_dir / "train.log").read_text().splitlines()
    return [float(m.group(1)) for m in (re.search(r"trained .* steps in ([0-9.]+) s", line) for line in lines) if m]


def _part(part: str, store: Path, quick: bool, per_condition: int) -> dict[str, Any]:
    name, control = PARTS[part]
    config = _config(name, store, quick)
    started = time.perf_counter()
    summary = trained(config, progress=False)
    train_seconds = time.perf_counter() - started
    sessions = _session_seconds(config.run_dir)
    evaluation = run_generation_evaluation(config.run_dir, overwrite=True, config=GenerationConfig(
        extractor=str(EXTRACTOR), control=control, per_condition=per_condition, seed=0))
    accuracy = evaluation.get("condition_accuracy", {})
    parameters = sum(p.numel() for p in load_run(config.run_dir).module.unet.parameters())
    return {
        "fid": evaluation["in_domain"]["fid"], "kid": evaluation["in_domain"]["kid_mean"],
        "fid_per_condition": evaluation["fid_per_condition"],
        "fid_per_condition_mean": evaluation["fid_per_condition_mean"],
        "condition_accuracy_generated": accuracy.get("accuracy_generated"),
        "condition_accuracy_real": accuracy.get("accuracy_real"),
        "condition_accuracy_ratio_to_real": accuracy.get("ratio_to_real"),
        "shift_cosine": evaluation["shift_cosine"],
        "shift_cosine_min": min(evaluation["shift_cosine"].values()) if evaluation["shift_cosine"] else None,
        "nearest_real_group": evaluation["nearest_real_group"],
        "n_per_condition": evaluation["n_per_condition"],
        "generated_images_per_s": evaluation["generated_images_per_s"],
        "training": {"config": name, "epochs": summary.epochs, "optimizer_steps": summary.optimizer_steps,
                     "seconds": sum(sessions), "session_seconds": sessions,
                     "seconds_in_this_benchmark_run": train_seconds,
                     "images_per_s": summary.samples_per_second, "precision": resolve_precision(
                         config.trainer.precision), "network_parameters": parameters,
                     "channels": list(config.model.channels), "resumed": summary.resumed},
        "evaluation": evaluation,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="folder holding bbbc021/ (default ../shared/data)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {list(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="1 epoch and 30 cells per condition: a check only")
    parser.add_argument("--speed-steps", type=int, default=60, help="optimizer steps of the timed fresh run")
    parser.add_argument("--per-condition", type=int, default=200,
                        help="training cells per condition generated and compared (evaluate generation per_condition)")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",")]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {list(PARTS)}")
    store, _ = _stores(data_dir(args.data) / "bbbc021", ROOT / "work")
    blocks = {part: _part(part, store, args.quick, 30 if args.quick else args.per_condition) for part in parts}
    first = PARTS[parts[0]][0]
    sampling = _sampling_seconds(_config(first, store, args.quick).run_dir, SAMPLING_STEPS)
    speed = _speed(store, 10 if args.quick else args.speed_steps)
    figures = _figures(store, args.quick)
    payload = {
        "benchmark": "bbbc021_diffusion", "machine": machine(), "convention": CONVENTION, "quick": args.quick,
        "per_condition": 30 if args.quick else args.per_condition,
        **blocks,
        "sampling_seconds_per_image": sampling, "sampling_run": first,
        "train_images_per_s": speed["train_images_per_s"], "bare_images_per_s": speed["bare_images_per_s"],
        "train_images_per_s_ratio_to_bare_loop": speed["ratio"], "train_speed_steps": speed["steps"],
        "training_minutes_total": sum(b["training"]["seconds"] for b in blocks.values()) / 60,
        "aims": {"condition_accuracy_ratio_to_real": ">= 0.7", "shift_cosine": "> 0 for every dose (week4)"},
        "figures": figures,
    }
    path = write_result("bbbc021_diffusion_quick" if args.quick else "bbbc021_diffusion", payload)
    print_table([{"part": part, "fid": b["fid"], "kid": b["kid"], "fid_per_condition_mean": b["fid_per_condition_mean"],
                  "acc_generated": b["condition_accuracy_generated"], "acc_real": b["condition_accuracy_real"],
                  "acc_ratio": b["condition_accuracy_ratio_to_real"], "shift_cosine_min": b["shift_cosine_min"],
                  "epochs": b["training"]["epochs"], "train_min": b["training"]["seconds"] / 60}
                 for part, b in blocks.items()], "Conditional diffusion on BBBC021 (in-domain extractor)")
    print_table([{"steps": s, "seconds_per_image": v} for s, v in sampling.items()], f"Sampling ({first})")
    print(f"training {speed['train_images_per_s']:.1f} img/s vs bare loop {speed['bare_images_per_s']:.1f} "
          f"(ratio {speed['ratio']:.2f}); wrote {path}")


if __name__ == "__main__":
    main()
