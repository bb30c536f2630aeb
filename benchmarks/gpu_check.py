"""GPU check (issue #17): do pretraining and downstream evaluation work on a CUDA GPU with the
paper's models and recipes, how fast, with how much memory, and does bf16 train like fp32?

For each paper model (Spec-ResNet-50 with MoCo-v2 and DINO; Spec-ViT-S/4 with MoCo-v2, DINO
and MAE) it runs the pretraining stage (``spectralearth.stages.pretrain``, as the CLI and the
Dagster asset do) with params.yaml's ``paper`` profile on one GPU (global batch 256, 128 px
crops, bf16-mixed) for ``--steps`` steps, and reports

- patches/s: global-batch items per second over the steps after ``--warmup`` (a two-view
  method reads two patches per item), timed at the end of each step after a CUDA sync;
- peak GPU memory: the stage result's ``peak_gpu_mb`` (``torch.cuda.max_memory_allocated``
  of fit), checked to be the one in run.json; and the stage's peak RSS;
- data wait: the share of training time the loop waited for its loader (run.json
  ``data_wait_share``). The store made here holds few batches per epoch and every epoch's
  first batch is read with nothing to overlap it, so on a real store the share is lower;
  the table gives the batches per epoch;
- bf16 vs fp32: the same run in ``32-true`` (same seed, data and schedule) stopped after
  ``--compare-steps`` steps; the largest relative difference of the step losses must stay
  within ``--loss-tolerance``.

Then it evaluates the first model's checkpoint on the synthetic land-cover task on the GPU
(bf16-mixed): once frozen with a linear probe, once fully fine-tuned (``cpu`` recipe,
``--eval-epochs`` epochs), checking the test metrics are finite and GPU memory was used.

The data are made on the spot by the library itself: a synthetic EnMAP L2A archive
(``spectralearth.synth``, written by parallel workers) curated by the curation stage
(``curate_scene`` in parallel, then ``patch_index``, ``band_statistics``),
so whatever training store curation writes is the one read. Clouds and snow are kept (only
throughput is measured). ``--data DIR`` keeps it for a rerun.

    python benchmarks/gpu_check.py                       # sized for ~10 min on one H200 (estimate)
    python benchmarks/gpu_check.py --steps 100 --models moco:spec_resnet50,mae:spec_vit_small
    python benchmarks/gpu_check.py --dry-run-cpu         # the same code paths, tiny, on the CPU

Exit status: 0 every check passed; 1 a check failed (the table says which and why); 2 bad
arguments; 3 no CUDA device and no ``--dry-run-cpu``: nothing was run.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from spectralearth import names

EXIT_OK, EXIT_FAILED, EXIT_NO_CUDA = 0, 1, 3
PAPER_MODELS = (
    (names.MOCO, "spec_resnet50"),
    (names.DINO, "spec_resnet50"),
    (names.MOCO, "spec_vit_small"),
    (names.DINO, "spec_vit_small"),
    (names.MAE, "spec_vit_small"),
)
PROFILE = "paper"
DONE = "gpu-check-data.json"  # written last into --data: the data are complete


@dataclass(frozen=True)
class Scale:
    """Sizes of one kind of check; ``pretrain`` replaces paper-profile keys."""

    accelerator: str
    scenes: int
    scene_size: int  # px
    patch_size: int  # px, curation
    revisit_fraction: float
    steps: int
    warmup: int
    compare_steps: int
    loss_tolerance: float
    eval_epochs: int
    eval_batch_size: int
    pretrain: dict = field(default_factory=dict)
    backbones: dict = field(default_factory=dict)  # a paper backbone -> the one run instead


GPU = Scale("gpu", 32, 1024, 128, 0.25, steps=200, warmup=10, compare_steps=10,
            loss_tolerance=0.05, eval_epochs=3, eval_batch_size=32)  # fmt: skip
# The dry run: every step of the GPU check, on tiny data with the small members of the two
# backbone families (a CPU needs minutes for a step of Spec-ResNet-50 on the paper's
# batch); its loss comparison only proves the path: bf16 on a CPU at batch 4 says nothing
# of bf16 on a GPU.
CPU_DRY_RUN = Scale("cpu", 4, 128, 32, 0.5, steps=3, warmup=1, compare_steps=2,
                    loss_tolerance=0.5, eval_epochs=1, eval_batch_size=4,
                    pretrain={"batch_size": 4, "crop_size": 32, "memory_bank_size": 16,
                              "num_workers": 0, "head_hidden_dim": 64},
                    backbones={"spec_resnet50": "spec_resnet18",
                               "spec_vit_small": "spec_vit_tiny"})  # fmt: skip


@dataclass
class Check:
    """One row of the report: what ran, its figures, and whether it passed."""

    what: str
    figures: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def expect(self, condition: bool, failure: str) -> None:
        if not condition:
            self.failures.append(failure)


# --- data ------------------------------------------------------------------------------------


def _synth_part(part: Path, scenes: int, size: int, seed: int, revisit: float) -> list[str]:
    from spectralearth.synth import write_archive

    products = write_archive(
        part / "archive", part / "labels", scenes=scenes, size=size, seed=seed,
        revisit_fraction=revisit,
    )  # fmt: skip
    return [str(p) for p in products]


def _curate_one(product: str, curated: str, settings, keys: list[str]) -> int:
    from spectralearth.stages.curate import curate_scene

    return curate_scene(Path(product), Path(curated), settings, keys).kept


def make_data(params: Path, scale: Scale, workers: int) -> dict:
    """The synthetic archive, its curated training store, band statistics and the synthetic
    land-cover task, under the data folder of ``params``; returns what was made."""
    from spectralearth.config import load_settings
    from spectralearth.enmap.archive import find_scenes, newest_processings
    from spectralearth.patches.curate import scene_key_for
    from spectralearth.stages.curate import patch_index
    from spectralearth.stages.downstream import downstream_dataset
    from spectralearth.stages.statistics import band_statistics

    s = load_settings(params, profile=PROFILE)
    layout = s.layout
    done = layout.data_dir / DONE
    if done.is_file():
        return json.loads(done.read_text())
    shutil.rmtree(layout.data_dir, ignore_errors=True)
    parts_dir = layout.data_dir / "parts"
    workers = max(1, min(workers, scale.scenes))
    shares = [scale.scenes // workers + (i < scale.scenes % workers) for i in range(workers)]
    spawn = multiprocessing.get_context("spawn")  # no fork of a process that imported torch
    start = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
        jobs = [
            pool.submit(_synth_part, parts_dir / f"{i:02d}", n, scale.scene_size, 1000 + i,
                        scale.revisit_fraction)
            for i, n in enumerate(shares) if n
        ]  # fmt: skip
        for job in jobs:
            job.result()
    # one archive and one labels folder (datatake ids are random: no two names collide)
    for folder in (layout.archive, layout.labels):
        folder.mkdir(parents=True, exist_ok=True)
    for part in sorted(parts_dir.iterdir()):
        for kind, target in (("archive", layout.archive), ("labels", layout.labels)):
            for entry in (part / kind).iterdir():
                os.replace(entry, target / entry.name)
    shutil.rmtree(parts_dir)
    synth_seconds = time.perf_counter() - start

    start = time.perf_counter()
    products = newest_processings(find_scenes(layout.archive))
    keys = sorted({scene_key_for(p) for p in products})
    with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
        kept = sum(
            pool.map(
                _curate_one, [str(p) for p in products], [str(layout.patches)] * len(products),
                [s.curate] * len(products), [keys] * len(products),
            )
        )  # fmt: skip
    index = patch_index(layout.patches, s.curate)
    stats = band_statistics(layout.patches)
    task = downstream_dataset(layout.patches, layout.labels, layout.downstream / names.SYNTH_TASK)
    made = {
        "scenes": len(products),
        "patches": kept,
        "locations": index.locations,
        "splits": dict(index.splits),
        "train_patches": stats.n_patches,
        "downstream": task.summary(),
        "synth_seconds": round(synth_seconds, 1),
        "curate_seconds": round(time.perf_counter() - start, 1),
    }
    done.write_text(json.dumps(made, indent=2))
    return made


def write_params(root: Path, scale: Scale) -> Path:
    """The repo's params.yaml with its data folder under ``root`` and this check's sizes."""
    from spectralearth.config import find_params_file, project_root

    try:
        source = find_params_file()
    except FileNotFoundError:
        source = project_root() / "params.yaml"
    raw = yaml.safe_load(source.read_text())
    raw["data_dir"] = str(root / "data")
    raw["archive_dir"] = None
    raw["synth"].update(scenes=scale.scenes, size=scale.scene_size)
    raw["curate"].update(
        patch_size=scale.patch_size, max_cloud_frac=1.0, max_snow_frac=1.0,
        val_frac=0.15, test_frac=0.15,
    )  # fmt: skip
    raw["evaluate"].update(
        task=names.SYNTH_TASK, recipe="cpu", accelerator=scale.accelerator,
        precision="bf16-mixed", epochs=scale.eval_epochs, batch_size=scale.eval_batch_size,
        baselines=[], seeds=[],
    )  # fmt: skip
    raw["mlflow"]["tracking_uri"] = None  # the local store under root (never the user's)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# --- pretraining -------------------------------------------------------------------------------


def _callbacks():
    import lightning.pytorch as pl
    import torch

    class StepClock(pl.Callback):
        """The time each optimizer step ends (after a CUDA sync: the GPU's work is done)."""

        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if torch.cuda.is_available() and trainer.strategy.root_device.type == "cuda":
                torch.cuda.synchronize(trainer.strategy.root_device)
            self.ends.append(time.perf_counter())

    class StopAfter(pl.Callback):
        """Stop the run after ``steps`` steps (its schedule stays the full run's)."""

        def __init__(self, steps: int) -> None:
            self.steps = int(steps)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step >= self.steps:
                trainer.should_stop = True

    return StepClock, StopAfter


def _pretrain_settings(params: Path, method: str, backbone: str, scale: Scale, precision: str):
    from spectralearth.config import load_settings

    overrides = {
        "method": method,
        "backbone": backbone,
        "steps": scale.steps,
        "epochs": 0,  # steps, not the paper's epochs
        "warmup_epochs": 0.0,  # a warm-up of epochs would be the whole of a short run
        "devices": 1,
        "num_nodes": 1,
        "accelerator": scale.accelerator,
        "precision": precision,
        "checkpoint_every_n_steps": 0,
        "sync_batchnorm": False,  # one device: nothing to synchronise
        **scale.pretrain,
    }
    return load_settings(params, profile=PROFILE, overrides={"pretrain": overrides})


def check_pretraining(params: Path, method: str, backbone: str, scale: Scale) -> Check:
    """One paper model: the bf16 run (figures) and the fp32 run of its first steps."""
    import torch

    from spectralearth.layout import CheckpointLayout
    from spectralearth.stages.pretrain import pretrain

    check = Check(f"pretrain {method} {backbone}")
    step_clock, stop_after = _callbacks()
    s = _pretrain_settings(params, method, backbone, scale, "bf16-mixed")
    p = s.pretrain
    out = s.layout.models / f"{method}-{backbone}-bf16"
    clock = step_clock()
    result = pretrain(p, s.layout.patches, out, s.tracking, progress=False, callbacks=[clock])
    record = json.loads(CheckpointLayout(out).run.read_text())
    ends = clock.ends[scale.warmup :]
    rate = (
        p.batch_size * (len(ends) - 1) / (ends[-1] - ends[0])
        if len(ends) > 1
        else result.patches_per_second
    )
    # an epoch is one batch drawn with replacement when the store holds less than one
    per_epoch = max(1, record["train_items"] // record["micro_batch_size"])
    check.figures.update(
        checkpoint=str(out),
        precision=p.precision,
        batch=p.batch_size,
        crop=p.crop_size,
        steps=result.steps,
        patches_per_s=round(rate, 1) if rate else None,
        peak_gpu_mb=result.peak_gpu_mb,
        peak_rss_mb=round(result.usage.peak_rss_mb) if result.usage else None,
        data_wait_share=record.get("data_wait_share"),
        batches_per_epoch=per_epoch,
        final_loss=result.final_loss,
        device=result.device,
    )
    check.expect(result.steps == scale.steps, f"ran {result.steps} of {scale.steps} steps")
    losses = record["loss_history"]
    check.expect(all(math.isfinite(v) for v in losses), "a non-finite loss")
    check.expect("peak_gpu_mb" in record, "run.json has no peak_gpu_mb")
    check.expect(record.get("peak_gpu_mb") == result.peak_gpu_mb, "run.json's GPU peak differs")
    check.expect(record.get("data_wait_share") is not None, "run.json has no data_wait_share")
    if scale.accelerator == "gpu":
        check.expect(result.device.startswith("cuda"), f"trained on {result.device}")
        check.expect((result.peak_gpu_mb or 0) > 0, "no peak GPU memory in the stage result")
    else:
        check.expect(result.peak_gpu_mb is None, "a GPU peak without a GPU")

    # the same run in fp32, stopped after its first steps (the bf16 run's memory freed first)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    s32 = _pretrain_settings(params, method, backbone, scale, "32-true")
    out32 = s.layout.models / f"{method}-{backbone}-fp32"
    k = scale.compare_steps
    pretrain(s32.pretrain, s.layout.patches, out32, s.tracking, progress=False,
             callbacks=[stop_after(k)])  # fmt: skip
    reference = json.loads(CheckpointLayout(out32).run.read_text())["loss_history"][:k]
    if len(reference) < k or len(losses) < k:
        check.failures.append(f"fewer than {k} losses to compare")
    else:
        diffs = [abs(a - b) / max(abs(b), 1e-6) for a, b in zip(losses[:k], reference, strict=True)]
        check.figures.update(
            bf16_vs_fp32_first=round(diffs[0], 4), bf16_vs_fp32_max=round(max(diffs), 4)
        )
        check.expect(
            max(diffs) <= scale.loss_tolerance,
            f"bf16 and fp32 losses differ by {max(diffs):.3f} (relative) within {k} steps "
            f"(tolerance {scale.loss_tolerance})",
        )
    return check


# --- evaluation -----------------------------------------------------------------------------------


def check_evaluation(
    params: Path, checkpoint: Path, backbone: str, protocol: str, scale: Scale
) -> Check:
    from spectralearth.config import load_settings
    from spectralearth.layout import ResultsLayout
    from spectralearth.stages.evaluate import EvaluationRequest, evaluate

    check = Check(f"evaluate {protocol} ({checkpoint.name})")
    s = load_settings(params, profile=PROFILE)
    request = EvaluationRequest(
        model=str(checkpoint), dataset=names.SYNTH_TASK, protocol=protocol, head="linear"
    )
    result = evaluate(request, s.evaluate, s.layout, ResultsLayout(s.layout.data_dir / "results"),
                      s.tracking, default_backbone=backbone)  # fmt: skip
    test = result.test
    metrics = {str(k): float(v) for k, v in test.groupby("metric")["value"].mean().items()}
    gpu = float(test["peak_gpu_mem_mb"].max()) if len(test) else float("nan")
    check.figures.update(
        peak_gpu_mb=None if math.isnan(gpu) else round(gpu, 1),
        precision=s.evaluate.precision,
        **{k: round(v, 4) for k, v in metrics.items()},
    )
    check.expect(bool(metrics), "no test metric")
    check.expect(all(math.isfinite(v) for v in metrics.values()), "a non-finite test metric")
    if scale.accelerator == "gpu":
        check.expect(gpu > 0, "the evaluation used no GPU memory")
    return check


# --- report ------------------------------------------------------------------------------------


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_table(title: str, checks: list[Check], columns: list[str]) -> None:
    print(f"\n{title}")
    print("| check | " + " | ".join(columns) + " | status |")
    print("|---" * (len(columns) + 2) + "|")
    for c in checks:
        cells = [_cell(c.figures.get(k)) for k in columns]
        status = "ok" if c.ok else "FAILED: " + "; ".join(c.failures)
        print(f"| {c.what} | " + " | ".join(cells) + f" | {status} |")


def _guarded(check_name: str, fn, *args) -> Check:
    try:
        return fn(*args)
    except Exception as exc:
        traceback.print_exc()
        return Check(check_name, failures=[f"{type(exc).__name__}: {exc}"])


def _isolated(check_name: str, fn, *args) -> Check:
    """``fn(*args)`` in a fresh process: each model's peak memory (GPU and RSS) is its own,
    and a crash (out of memory, a killed process) fails only its own row."""
    spawn = multiprocessing.get_context("spawn")
    start = time.perf_counter()
    try:
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            check = pool.submit(_guarded, check_name, fn, *args).result()
    except Exception as exc:  # the process died
        check = Check(
            check_name, failures=[f"the check's process died: {type(exc).__name__}: {exc}"]
        )
    check.figures["seconds"] = round(time.perf_counter() - start, 1)
    print(f"{check.what}: {'ok' if check.ok else check.failures} {json.dumps(check.figures)}",
          flush=True)  # fmt: skip
    return check


def parse_models(text: str | None) -> list[tuple[str, str]]:
    if not text:
        return list(PAPER_MODELS)
    models = []
    for item in text.split(","):
        method, _, backbone = item.partition(":")
        if method not in names.METHODS or backbone not in names.BACKBONES:
            raise argparse.ArgumentTypeError(
                f"--models {item!r}: expected METHOD:BACKBONE with METHOD in {names.METHODS} "
                "and a BACKBONE of spectralearth.names.BACKBONES"
            )
        models.append((method, backbone))
    return models


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run-cpu", action="store_true",
                    help="run the same code paths with tiny sizes on the CPU (no GPU needed)")  # fmt: skip
    ap.add_argument("--models", type=parse_models, default=None,
                    help="METHOD:BACKBONE,... (default: the five paper models)")  # fmt: skip
    ap.add_argument("--steps", type=int, help="pretraining steps per model (GPU default 200)")
    ap.add_argument("--compare-steps", type=int, help="fp32 steps compared (GPU default 10)")
    ap.add_argument("--loss-tolerance", type=float,
                    help="largest relative bf16-fp32 loss difference allowed (GPU default 0.05)")  # fmt: skip
    ap.add_argument("--scenes", type=int, help="synthetic scenes (GPU default 32)")
    ap.add_argument("--scene-size", type=int, help="their size in px (GPU default 1024)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="processes writing and curating the data")  # fmt: skip
    ap.add_argument("--data", type=Path,
                    help="keep the work folder here (reused by a rerun) instead of a temp one")  # fmt: skip
    ap.add_argument("--skip-eval", action="store_true", help="pretraining checks only")
    args = ap.parse_args(argv)

    import torch

    if not args.dry_run_cpu and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing was "
            "run. Run it on a machine with an NVIDIA GPU, or use --dry-run-cpu to exercise "
            "the same code paths on the CPU.",
            file=sys.stderr,
        )
        return EXIT_NO_CUDA
    scale = CPU_DRY_RUN if args.dry_run_cpu else GPU
    replace = {
        k: v
        for k, v in (
            ("steps", args.steps),
            ("compare_steps", args.compare_steps),
            ("scenes", args.scenes),
            ("scene_size", args.scene_size),
            ("loss_tolerance", args.loss_tolerance),
        )
        if v is not None
    }
    scale = dataclasses.replace(scale, **replace)
    if scale.steps <= scale.warmup + 1 and not args.dry_run_cpu:
        ap.error(f"--steps {scale.steps} leaves no timed step after {scale.warmup} warm-up steps")
    if scale.compare_steps > scale.steps:
        ap.error(f"--compare-steps {scale.compare_steps} exceeds --steps {scale.steps}")
    # the check's own data folder and MLflow store: never the user's
    for var in ("SPECTRALEARTH_DATA_DIR", "SPECTRALEARTH_ARCHIVE", "MLFLOW_TRACKING_URI"):
        os.environ.pop(var, None)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    root = args.data.resolve() if args.data else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    root.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    print(f"gpu_check: {'dry run on the CPU' if args.dry_run_cpu else 'GPU'} ({device}); "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}; work folder {root}", flush=True)  # fmt: skip
    begin = time.perf_counter()
    checks: list[Check] = []
    pretraining: list[Check] = []
    evaluations: list[Check] = []
    try:
        params = write_params(root, scale)
        data = _guarded(
            "data", lambda: Check("data", figures=make_data(params, scale, args.workers))
        )
        print(f"data: {json.dumps(data.figures)}", flush=True)
        checks.append(data)
        if data.ok:
            for method, paper_backbone in args.models or PAPER_MODELS:
                backbone = scale.backbones.get(paper_backbone, paper_backbone)
                pretraining.append(
                    _isolated(f"pretrain {method} {backbone}", check_pretraining, params,
                              method, backbone, scale)
                )  # fmt: skip
        trained = [c for c in pretraining if "checkpoint" in c.figures]
        if trained and not args.skip_eval:
            checkpoint, backbone = (
                Path(trained[0].figures["checkpoint"]),
                trained[0].what.split()[-1],
            )
            for protocol in ("frozen", "full"):
                evaluations.append(
                    _isolated(f"evaluate {protocol}", check_evaluation, params, checkpoint,
                              backbone, protocol, scale)
                )  # fmt: skip
        elif not args.skip_eval:
            evaluations.append(Check("evaluate", failures=["no checkpoint was trained"]))
        checks += pretraining + evaluations
    finally:
        if not args.data:
            shutil.rmtree(root, ignore_errors=True)

    print_table(
        f"Pretraining, {PROFILE} profile, one device ({device}); bf16 vs fp32: relative loss "
        f"difference at step 1 and at most over {scale.compare_steps} steps "
        f"(tolerance {scale.loss_tolerance})",
        pretraining,
        ["precision", "batch", "crop", "steps", "patches_per_s", "peak_gpu_mb", "peak_rss_mb",
         "data_wait_share", "batches_per_epoch", "bf16_vs_fp32_first", "bf16_vs_fp32_max",
         "seconds"],
    )  # fmt: skip
    if evaluations:
        metrics = sorted(
            {k for c in evaluations for k in c.figures} - {"seconds", "peak_gpu_mb", "precision"}
        )
        print_table("Downstream evaluation (synthetic land cover, linear head)", evaluations,
                    ["precision", "seconds", "peak_gpu_mb", *metrics])  # fmt: skip
    failed = [c for c in checks if not c.ok]
    print(f"\ngpu_check: {len(checks) - len(failed)} of {len(checks)} checks passed in "
          f"{time.perf_counter() - begin:.0f} s", flush=True)  # fmt: skip
    for c in failed:
        print(f"FAILED {c.what}: {'; '.join(c.failures)}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
