"""Does pretraining learn? Representation quality of MoCo-v2, DINO and MAE against random init.

For each method the script pretrains under a fixed budget (a profile of params.yaml, by
default ``cpu-small``) on a synthetic archive large enough to matter, one run per seed, and
measures what the encoder learnt against **random init of the same architecture** (the same
seeds), with probes that never train the encoder:

1. ``knn`` and ``linear``: pooled embeddings of the ``synth_landcover`` patches, patch-level
   label = the dominant class of the patch's class map (``ssl_probes``); test split.
2. ``frozen_dense``: the frozen protocol of the pipeline
   (``spectralearth.downstream.run.evaluate_model``, recipe ``cpu``: a linear head on the
   stride-16 feature map) on ``synth_landcover``; test pixels.
3. ``potsdam``: the real EnMAP Potsdam task (``enmap_potsdam``, 2 test tiles), frozen
   encoder + the paper's dense head (FCN on the dilated Spec-ResNet, upconv on Spec-ViT
   tokens), with the random forest beside it.

The archive (``spectralearth.synth.write_archive`` + ``stages.curate.curate_archive`` +
the ``synth_landcover`` task) is cached in ``--cache`` (default ``benchmarks/out/bench_ssl``,
git-ignored) under a name made of its parameters, and so are the pretraining runs (reused
when their settings are the same; ``--fresh`` retrains). Results: ``rows.csv`` (one row per
method x init x seed x probe x metric), ``summary.md`` (mean ± std over seeds, the
difference to random init in units of the larger std, the verdict) and ``runs.json`` (each
run's steps, seconds, loss and collapse summary) under ``<cache>/results/<profile>/``.

A difference counts only when ``|mean_pretrained - mean_random| >= 2 x the larger std``
(``spectralearth.downstream.report.NOISE_RULE``); else it is within noise.

    nice -n 19 python benchmarks/bench_ssl.py                      # cpu-small, seeds 0 1 2
    python benchmarks/bench_ssl.py --methods moco --seeds 0 --steps 20 --no-potsdam
    python benchmarks/bench_ssl.py --profile paper                 # the paper models on a GPU
    python benchmarks/bench_ssl.py --profile paper --dry-run       # their code path on a CPU

``--profile paper`` runs the paper's models and recipes (Spec-ResNet-50 for MoCo and DINO,
Spec-ViT-S/4 for MAE, bf16 on every GPU) on an archive of 128 px patches; it needs a GPU.
``--dry-run`` takes the same path on the CPU with tiny settings (batch 4, 2 steps, a small
archive, 1 epoch heads): it proves the code runs, its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a shared,
# oversubscribed CPU (load 10-18 on 2 cores) spinning threads made a Spec-ResNet-18 step
# ~5x slower (16 s vs 3 s, same minutes, same process niceness).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ssl_probes  # noqa: E402  (the helper module beside this script)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO / "benchmarks" / "out" / "bench_ssl"
POTSDAM = REPO.parent / "shared" / "data" / "enmap_potsdam"
PRETRAINED, RANDOM = "pretrained", "random_init"
# random init with its BatchNorm statistics re-estimated on the probe's train patches: what
# pretraining's gradient steps add beyond moving those statistics (pooled probes only)
RANDOM_BN = "random_init_bn"
FOREST = "random_forest"
PROBES = ("knn", "linear", "frozen_dense", "potsdam")
DENSE_METRICS = ("overall_accuracy", "macro_f1", "macro_iou")
SEG_DATASET = "synth_landcover"


# --- the archive -----------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveSpec:
    scenes: int = 24
    size: int = 512
    patch_size: int = 64
    seed: int = 7
    revisit_fraction: float = 0.6
    val_frac: float = 0.15
    test_frac: float = 0.15

    @property
    def key(self) -> str:
        return (
            f"synth-s{self.scenes}-z{self.size}-p{self.patch_size}-r{self.revisit_fraction:g}"
            f"-seed{self.seed}"
        )


@dataclass(frozen=True)
class Archive:
    root: Path
    curated: Path
    labels: Path
    task: Path  # the synth_landcover folder
    info: dict

    @property
    def shards(self) -> Path:
        return self.curated / "shards"


READY = "READY.json"


def prepare_archive(cache: Path, spec: ArchiveSpec, log=print) -> Archive:
    """The synthetic archive, curated, and its ``synth_landcover`` task under
    ``cache/<spec.key>``; built once (``READY.json`` marks a whole folder), then reused."""
    from spectralearth.config import load_settings
    from spectralearth.stages.curate import curate_archive
    from spectralearth.stages.downstream import downstream_dataset
    from spectralearth.synth import write_archive

    root = Path(cache) / spec.key
    paths = {
        "curated": root / "curated",
        "labels": root / "labels",
        "task": root / SEG_DATASET,
    }
    if (root / READY).is_file():
        info = json.loads((root / READY).read_text())
        return Archive(root, **paths, info=info)
    if root.exists():  # a build that was interrupted
        shutil.rmtree(root)
    t0 = time.perf_counter()
    log(f"bench_ssl: writing {spec.scenes} synthetic scenes of {spec.size} px -> {root}")
    products = write_archive(
        root / "archive", paths["labels"], spec.scenes, spec.size, spec.seed,
        spec.revisit_fraction,
    )  # fmt: skip
    curate = dataclasses.replace(
        load_settings().curate,
        patch_size=spec.patch_size,
        val_frac=spec.val_frac,
        test_frac=spec.test_frac,
    )
    curation = curate_archive(products, paths["curated"], curate, log=lambda _m: None)
    task = downstream_dataset(paths["curated"], paths["labels"], paths["task"])
    shutil.rmtree(root / "archive")  # the products are not needed once curated
    index = pd.read_parquet(paths["curated"] / "index.parquet", columns=["location_id", "split"])
    dates = index.groupby("location_id").size()
    info = {
        "spec": dataclasses.asdict(spec),
        "patches": int(len(index)),
        "locations": int(dates.size),
        "multi_date_locations": int((dates > 1).sum()),
        "train_locations": int(index[index["split"] == "train"]["location_id"].nunique()),
        "task_patches": dict(task.patches),
        "classes": list(task.classes),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    log(f"bench_ssl: {curation.index.summary()}")
    (root / READY).write_text(json.dumps(info, indent=2) + "\n")
    return Archive(root, **paths, info=info)


# --- pretraining -------------------------------------------------------------------------


def _budget_callback(seconds: float | None, every: int = 10):
    import lightning.pytorch as pl

    class TimeBudget(pl.Callback):
        """Prints the loss every ``every`` steps; stops the fit after the step that passes
        ``seconds`` of training."""

        def on_train_start(self, trainer, pl_module) -> None:
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            elapsed = time.perf_counter() - self.t0
            step = int(trainer.global_step)
            if step % every == 0 and pl_module.loss_history:
                std = (pl_module.feature_std_history or [math.nan])[-1]
                print(f"  step {step}: loss {pl_module.loss_history[-1]:.4f}, feature std "
                      f"{std:.4f}, {elapsed:.0f} s", flush=True)  # fmt: skip
            if seconds is not None and elapsed > seconds:
                trainer.should_stop = True

    return TimeBudget()


def method_settings(profile: str, method: str, seed: int, args: argparse.Namespace):
    """The profile's settings for ``method`` and ``seed`` (``--steps``, ``--dry-run``)."""
    from spectralearth.config import load_settings

    pre = load_settings(profile=profile, overrides={"pretrain": {"method": method}}).pretrain
    values = {**dataclasses.asdict(pre), "seed": seed, "checkpoint_every_n_steps": 0}
    if args.steps is not None:
        values.update(steps=args.steps, epochs=0)
    values.update(_overrides(args.set, method))
    if args.dry_run:
        values.update(
            steps=2, epochs=0, batch_size=4, accelerator="cpu", devices=1, precision="32-true",
            num_workers=0, sync_batchnorm=False, memory_bank_size=16, warmup_epochs=0.0,
        )  # fmt: skip
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return dataclasses.replace(pre, **values)


def _overrides(pairs: Sequence[str], method: str) -> dict:
    """``--set KEY=VALUE`` (every method) and ``--set METHOD.KEY=VALUE`` (one method);
    values are YAML (``--set crop_scale=[0.25,1]``)."""
    import yaml

    out = {}
    for pair in pairs or ():
        key, _, value = pair.partition("=")
        scope, _, name = key.rpartition(".")
        if scope in ("", method):
            out[name] = yaml.safe_load(value)
    return out


def cached_run(settings, out: Path, budget_s: float | None) -> dict | None:
    """The run.json in ``out`` when it was trained with these settings and budget, else None."""
    run_file = out / "run.json"
    wanted = json.loads(json.dumps(dataclasses.asdict(settings), default=list))
    if run_file.is_file():
        run = json.loads(run_file.read_text())
        if run.get("settings") == wanted and run.get("budget_s") == budget_s:
            return run
    return None


def pretrain_run(settings, archive: Archive, out: Path, budget_s: float | None, fresh: bool):
    """Pretrain into ``out`` (reused when its run.json has the same settings) -> run.json."""
    from spectralearth.ssl.train import pretrain
    from spectralearth.stages.statistics import read_statistics

    run_file = out / "run.json"
    if not fresh and (run := cached_run(settings, out, budget_s)) is not None:
        return run
    from spectralearth.ssl.collapse import RepresentationCollapseWarning

    stats, _ = read_statistics(archive.curated)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RepresentationCollapseWarning)
        run = pretrain(
            settings, archive.shards, stats, out, progress=False,
            callbacks=[_budget_callback(budget_s)],
        ).as_json()  # fmt: skip
    warned = [w for w in caught if issubclass(w.category, RepresentationCollapseWarning)]
    for w in warned:
        print(f"bench_ssl: {out.name}: RepresentationCollapseWarning: {w.message}", flush=True)
    run["budget_s"] = budget_s
    run["collapse_warning"] = bool(warned)
    run_file.write_text(json.dumps(run, indent=2) + "\n")
    return run


# --- probes ------------------------------------------------------------------------------


def _encoder(init: str, backbone: str, checkpoint: Path | None, bands: int, seed: int,
             splits=None, runtime=None):  # fmt: skip
    import torch

    from spectralearth.models import create_model, load_pretrained

    if init == PRETRAINED:
        return load_pretrained(checkpoint)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # downstream.run.load_encoder's random init
        encoder = create_model(backbone, in_chans=bands)
    if init == RANDOM_BN:
        ssl_probes.recalibrate_batchnorm(encoder, splits[0].dataset, runtime=runtime)
    return encoder


def probe_splits(archive: Archive, train_fraction: float):
    """The synthetic task's probe splits: a seeded ``train_fraction`` of train (the same
    patches for every encoder), and all of test."""
    import numpy as np

    from spectralearth.downstream.datasets.registry import open_split

    train_ds = open_split(archive.task, "train")
    test_ds = open_split(archive.task, "test", train_ds.stats)
    n = len(train_ds)
    keep = np.arange(n)
    if train_fraction < 1.0:
        k = max(1, math.ceil(train_fraction * n))
        keep = np.sort(np.random.default_rng(0).permutation(n)[:k])
    return ssl_probes.ProbeSplit.of(train_ds, keep.tolist()), ssl_probes.ProbeSplit.of(test_ds)


def pooled_probes(encoder, splits, seed: int, runtime=None) -> tuple[list[dict], dict]:
    """kNN and linear probe scores on the synthetic task, and the test features' collapse."""
    train = ssl_probes.pooled_split(encoder, splits[0], runtime=runtime)
    test = ssl_probes.pooled_split(encoder, splits[1], runtime=runtime)
    rows = []
    for probe, scores in (
        ("knn", ssl_probes.knn_probe(train, test)),
        ("linear", ssl_probes.linear_probe(train, test, seed)),
    ):
        for metric, value in scores.items():
            rows.append({"probe": probe, "metric": metric, "value": value,
                         "test_patches": len(test.labels), "test_pixels": math.nan})  # fmt: skip
    return rows, ssl_probes.feature_collapse(test.features)


def dense_probe(
    model: str, dataset: Path, settings, seed: int, backbone: str, head: str | None,
    probe: str, baseline: str | None = None, fraction: float = 1.0,
) -> list[dict]:  # fmt: skip
    """The pipeline's evaluation (``evaluate_model``, recipe ``cpu``) -> test rows."""
    from spectralearth.downstream.run import evaluate_model

    outcome = evaluate_model(
        model, dataset, settings, None if baseline else "frozen", head=head, recipe="cpu",
        baseline=baseline, backbone=backbone, seeds=(seed,), label_fractions=(fraction,),
    )  # fmt: skip
    test = outcome.test_rows()
    test = test[test["metric"].isin(DENSE_METRICS)]
    return [
        {"probe": probe, "metric": r.metric, "value": float(r.value), "test_patches": r.patches,
         "test_pixels": r.pixels, "seconds": float(r.seconds)}
        for r in test.itertuples()
    ]  # fmt: skip


class ProbeCache:
    """Probe results kept in ``folder`` (one JSON per encoder x probe settings), so that a
    rerun, or another run sharing the same random-init baseline, reads them back."""

    def __init__(self, folder: Path, archive: str, encoder: dict) -> None:
        self.folder = Path(folder)
        self.base = {"archive": archive, "encoder": encoder}

    def get(self, probe: dict, compute):
        import hashlib

        key = json.dumps({**self.base, **probe}, sort_keys=True, default=str)
        path = self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
        if path.is_file():
            return json.loads(path.read_text())["value"]
        value = compute()
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": json.loads(key), "value": value}, default=float))
        tmp.replace(path)
        return value


# --- the summary -------------------------------------------------------------------------


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per method, probe and metric: pretrained and random-init mean ± std over seeds, the
    difference in units of the larger std, and the verdict of the noise rule."""
    from spectralearth.downstream.report import noise_verdict

    out = []
    keys = ["method", "backbone", "probe", "metric"]
    enc = rows[rows["init"].isin([PRETRAINED, RANDOM])]
    for (method, backbone, probe, metric), g in enc.groupby(keys, sort=False):
        p = g[g["init"] == PRETRAINED]["value"]
        r = g[g["init"] == RANDOM]["value"]
        if p.empty or r.empty:
            continue
        forest = rows[(rows["init"] == FOREST) & (rows["probe"] == probe)]
        forest = forest[forest["metric"] == metric]["value"]
        control = rows[(rows["init"] == RANDOM_BN) & (rows["method"] == method)]
        control = control[(control["probe"] == probe) & (control["metric"] == metric)]["value"]
        verdict = noise_verdict(p.mean(), p.std(), len(p), r.mean(), r.std(), len(r))
        vs_control = (
            noise_verdict(p.mean(), p.std(), len(p), control.mean(), control.std(), len(control))
            if len(control)
            else "-"
        )
        larger = max(_nz(p.std()), _nz(r.std()))
        out.append(
            {
                "method": method,
                "backbone": backbone,
                "probe": probe,
                "metric": metric,
                "pretrained": _pm(p),
                "random_init": _pm(r),
                "random_init_bn": _pm(control) if len(control) else "-",
                "random_forest": _pm(forest) if len(forest) else "-",
                "delta": round(float(p.mean() - r.mean()), 4),
                "delta_in_std": round(float((p.mean() - r.mean()) / larger), 2)
                if larger > 0
                else math.nan,
                "verdict": verdict,
                "vs_random_init_bn": vs_control,
                "seeds": f"{len(p)}/{len(r)}",
                "test_patches": int(g["test_patches"].max()),
                "test_pixels": int(g["test_pixels"].max()) if g["test_pixels"].notna().any()
                else "-",
            }
        )  # fmt: skip
    return pd.DataFrame(out)


def _nz(v: float) -> float:
    return 0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _pm(values: pd.Series) -> str:
    if len(values) > 1:
        return f"{values.mean():.3f} ± {values.std():.3f}"
    return f"{values.mean():.3f}"


def markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "(nothing measured)"
    header = "| " + " | ".join(df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join([header, sep, *body])


def runs_table(runs: list[dict]) -> pd.DataFrame:
    out = []
    for r in runs:
        c = r.get("collapse") or {}
        losses = r.get("loss_history") or []
        std = c.get("feature_std")
        out.append(
            {
                "method": r["method"],
                "backbone": r["backbone"],
                "seed": r["seed"],
                "steps": r["steps"],
                "seconds": round(r["seconds"], 1),
                "patches/s": r.get("patches_per_second"),
                "loss first -> last": f"{losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "-",
                # the mean of the last 10% of steps beside MoCo's chance level, ln(K + 1): the
                # loss when the positive key is no more similar than each of the K queued ones
                "loss (last 10%)": round(float(np.mean(losses[-max(1, len(losses) // 10):])), 3)
                if losses
                else "-",
                "chance ln(K+1)": round(math.log(r["settings"]["memory_bank_size"] + 1), 3)
                if r["method"] == "moco"
                else "-",
                "feature_std x sqrt(D)": round(std * math.sqrt(c["dim"]), 3) if std else "-",
                "effective_rank": round(c["effective_rank"], 2) if c.get("effective_rank") else "-",
                "collapsed": c.get("collapsed"),
                "warned": r.get("collapse_warning"),
            }
        )  # fmt: skip
    return pd.DataFrame(out)


# --- main --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu-small", help="params.yaml pretraining profile")
    p.add_argument("--methods", default="moco,dino,mae")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=None, help="override the profile's steps")
    p.add_argument(
        "--set", action="append", default=[], metavar="[METHOD.]KEY=VALUE",
        help="override a profile key (e.g. --set crop_size=16 --set mae.lr=0.002)",
    )  # fmt: skip
    p.add_argument(
        "--train-fraction", type=float, default=1.0,
        help="share of the synthetic train patches the probes fit on (seeded; cost)",
    )  # fmt: skip
    p.add_argument(
        "--budget-minutes", type=float, default=None,
        help="stop a pretraining run after this many minutes (default: the profile's steps)",
    )  # fmt: skip
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--scenes", type=int, default=None)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--patch-size", type=int, default=None)
    p.add_argument("--potsdam", type=Path, default=POTSDAM)
    p.add_argument("--no-potsdam", action="store_true")
    p.add_argument("--potsdam-epochs", type=int, default=10)
    p.add_argument("--potsdam-head", default="paper")
    p.add_argument("--dense-epochs", type=int, default=None, help="synthetic frozen protocol")
    p.add_argument("--probes", default=",".join(PROBES))
    p.add_argument("--fresh", action="store_true", help="retrain instead of reusing runs")
    p.add_argument(
        "--reuse-only", action="store_true",
        help="summarise the runs already trained: skip a method x seed with no cached run",
    )  # fmt: skip
    p.add_argument(
        "--no-bn-control", dest="bn_control", action="store_false",
        help="skip the random-init control with BatchNorm statistics of the data",
    )  # fmt: skip
    p.add_argument(
        "--bn-control-seeds", type=int, nargs="+", default=None, metavar="SEED",
        help="run the control for these seeds only (default: every seed; it costs a pass)",
    )  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="--profile paper on a CPU, tiny")
    p.add_argument("--tag", default=None, help="results folder name (default: the profile)")
    return p.parse_args(argv)


def archive_spec(args: argparse.Namespace, crop: int) -> ArchiveSpec:
    base = ArchiveSpec(scenes=6, size=256, patch_size=64) if args.dry_run else ArchiveSpec()
    patch = args.patch_size or max(base.patch_size, 128 if crop > 64 else 64)
    return dataclasses.replace(
        base, scenes=args.scenes or base.scenes, size=args.size or base.size, patch_size=patch
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from spectralearth.config import load_settings

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    probes = [p.strip() for p in args.probes.split(",") if p.strip()]
    if args.profile == "paper" and not args.dry_run and not torch.cuda.is_available():
        print("bench_ssl: --profile paper needs a GPU (none visible); --dry-run runs its "
              "code path on the CPU", file=sys.stderr)  # fmt: skip
        return 2
    first = method_settings(args.profile, methods[0], args.seeds[0], args)
    archive = prepare_archive(args.cache, archive_spec(args, first.crop_size))
    print(f"bench_ssl: archive {archive.root.name}: {json.dumps(archive.info)}")
    from spectralearth.downstream.protocols import Runtime

    evaluate = load_settings().evaluate
    if args.dry_run:
        evaluate = dataclasses.replace(evaluate, accelerator="cpu", precision="32-true")
    runtime = Runtime.of(evaluate)  # a GPU when one is visible (evaluate.accelerator: auto)
    dense = dataclasses.replace(evaluate, epochs=1 if args.dry_run else args.dense_epochs)
    potsdam = dataclasses.replace(evaluate, epochs=1 if args.dry_run else args.potsdam_epochs)
    use_potsdam = "potsdam" in probes and not args.no_potsdam
    if use_potsdam and not args.potsdam.is_dir():
        print(f"bench_ssl: {args.potsdam} not found: Potsdam probe skipped", file=sys.stderr)
        use_potsdam = False
    budget = None if args.budget_minutes is None else 60.0 * args.budget_minutes
    tag = args.tag or (f"{args.profile}-dry-run" if args.dry_run else args.profile)
    out_dir = args.cache / "results" / tag
    out_dir.mkdir(parents=True, exist_ok=True)
    bands = len(json.loads((archive.curated / "band_stats.json").read_text())["mean"])

    rows: list[dict] = []
    runs: list[dict] = []
    splits = None
    collapse_rows: list[dict] = []
    t_start = time.perf_counter()

    def add(new: list[dict], **where) -> None:
        rows.extend({**where, **r} for r in new)

    for method in methods:
        for seed in args.seeds:
            settings = method_settings(args.profile, method, seed, args)
            ckpt = args.cache / "runs" / tag / f"{method}-{settings.backbone}-seed{seed}"
            t0 = time.perf_counter()
            if args.reuse_only and cached_run(settings, ckpt, budget) is None:
                print(f"bench_ssl: {method} seed {seed}: no cached run, skipped (--reuse-only)")
                continue
            run = pretrain_run(settings, archive, ckpt, budget, args.fresh)
            runs.append(run)
            print(f"bench_ssl: {method} seed {seed}: {run['steps']} steps in "
                  f"{run['seconds']:.0f} s (collapse: {run['collapse']})", flush=True)  # fmt: skip
            control = args.bn_control and (
                args.bn_control_seeds is None or seed in args.bn_control_seeds
            )
            for init in (PRETRAINED, RANDOM, *((RANDOM_BN,) if control else ())):
                where = {"method": method, "backbone": settings.backbone, "init": init,
                         "seed": seed}  # fmt: skip
                model = str(ckpt) if init == PRETRAINED else "random"
                # what the probe results depend on: the encoder (a run's settings and step
                # count, or the random init's backbone and seed) and the probe's settings
                who = (
                    {"run": str(ckpt), "settings": run["settings"], "steps": run["steps"]}
                    if init == PRETRAINED
                    else {init: settings.backbone, "seed": seed, "bands": bands}
                )
                memo = ProbeCache(args.cache / "probes", archive.root.name, who)
                if {"knn", "linear"} & set(probes):

                    def pooled(init=init, backbone=settings.backbone, seed=seed, ckpt=ckpt):
                        nonlocal splits
                        if splits is None:
                            splits = probe_splits(archive, args.train_fraction)
                        enc = _encoder(init, backbone, ckpt, bands, seed, splits, runtime)
                        found, collapse = pooled_probes(enc, splits, seed, runtime)
                        return {"rows": found, "collapse": collapse}

                    got = memo.get({"probe": "pooled", "fraction": args.train_fraction}, pooled)
                    add([r for r in got["rows"] if r["probe"] in probes], **where)
                    collapse_rows.append({**where, **got["collapse"]})
                if init == RANDOM_BN:
                    continue  # the control runs the pooled probes only
                if "frozen_dense" in probes:
                    key = {"probe": "frozen_dense", "fraction": args.train_fraction,
                           "epochs": dense.epochs}  # fmt: skip
                    add(memo.get(key, lambda m=model, s=seed, b=settings.backbone: dense_probe(
                        m, archive.task, dense, s, b, None, "frozen_dense",
                        fraction=args.train_fraction)), **where)  # fmt: skip
                if use_potsdam:
                    key = {"probe": "potsdam", "epochs": potsdam.epochs, "head": args.potsdam_head}
                    add(memo.get(key, lambda m=model, s=seed, b=settings.backbone: dense_probe(
                        m, args.potsdam, potsdam, s, b, args.potsdam_head, "potsdam")),
                        **where)  # fmt: skip
            print(f"bench_ssl: {method} seed {seed} probed in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    forest_where = {"method": "-", "backbone": "none", "init": FOREST}
    for seed in args.seeds:
        memo = ProbeCache(args.cache / "probes", archive.root.name, {"forest": seed})
        if use_potsdam:
            add(memo.get({"probe": "potsdam"}, lambda s=seed: dense_probe(
                "random", args.potsdam, potsdam, s, "none", None, "potsdam", baseline=FOREST)),
                **forest_where, seed=seed)  # fmt: skip
        if "frozen_dense" in probes:
            add(memo.get({"probe": "frozen_dense", "fraction": args.train_fraction},
                         lambda s=seed: dense_probe(
                "random", archive.task, dense, s, "none", None, "frozen_dense",
                baseline=FOREST, fraction=args.train_fraction)),
                **forest_where, seed=seed)  # fmt: skip

    table = pd.DataFrame(rows)
    table.to_csv(out_dir / "rows.csv", index=False)
    (out_dir / "runs.json").write_text(json.dumps(runs, indent=2) + "\n")
    summary = summarise(table)
    text = "\n\n".join(
        [
            f"# bench_ssl: profile {args.profile}{' (dry run)' if args.dry_run else ''}",
            f"archive {archive.root.name}: {archive.info['patches']} patches at "
            f"{archive.info['locations']} locations ({archive.info['multi_date_locations']} "
            f"with several dates); task patches {archive.info['task_patches']}",
            "## Probes: pretrained vs random init\n\n" + markdown(summary),
            "## Pretraining runs\n\n" + markdown(runs_table(runs)),
            "## Collapse measures of the test embeddings\n\n"
            + markdown(pd.DataFrame(collapse_rows).round(4)),
            f"wall time {time.perf_counter() - t_start:.0f} s; load average "
            f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} at the end",
        ]
    )
    (out_dir / "summary.md").write_text(text + "\n")
    print(text)
    print(f"bench_ssl: results in {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
