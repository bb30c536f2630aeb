"""Pretraining throughput (patches/s) on this machine for each method.

Writes synthetic curated shards (202 bands, 128 px, some locations with two dates) to a
temp folder and runs ``spectralearth.ssl.pretrain`` for each method. Throughput is timed
over the steps after the first two (warm-up excluded) and counts patches of the global batch
(a two-view method sees each location twice); with CUDA, the peak GPU memory (run.json's
``peak_gpu_mb``) is printed too, and always the share of training time spent waiting for the
loader (run.json's ``data_wait_share``).

* ``--profile cpu-tiny`` (default): MoCo and DINO on spec_resnet18, MAE on spec_vit_tiny,
  the profile's batch (8) and crops (64 px): what the CPU pipeline runs.
* ``--profile paper``: the paper's recipes from params.yaml (Spec-ResNet-50 for MoCo and
  DINO, Spec-ViT-S/4 for MAE, global batch 256, 128 px, bf16 on every GPU) for ``--steps``
  steps: the GPU benchmark (e.g. ``--steps 300`` on a lent GPU). ``--accelerator cpu
  --precision 32-true --batch 8`` runs the same models on a CPU as a dry run.

    python benchmarks/bench_pretrain.py [--steps 10] [--methods moco,dino,mae]
    python benchmarks/bench_pretrain.py --profile paper --steps 300
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch

from spectralearth.config import load_settings
from spectralearth.ssl import pretrain

BANDS, SIZE = 202, 128
BACKBONES = {"moco": "spec_resnet18", "dino": "spec_resnet18", "mae": "spec_vit_tiny"}


def write_shards(root: Path, n_locations: int = 16, seed: int = 0) -> tuple[Path, dict]:
    rng = np.random.default_rng(seed)
    shards = root / "shards"
    shards.mkdir(parents=True)
    rows, patches = [], []
    for loc in range(n_locations):
        base = rng.integers(200, 4000, size=(BANDS, 1, 1))
        for d in range(2 if loc % 2 == 0 else 1):
            noise = rng.integers(-150, 150, size=(BANDS, SIZE, SIZE))
            patches.append((base + noise + 300 * d).astype(np.int16))
            rows.append(
                {
                    "patch_id": f"{loc:07d}/{d:05d}",
                    "location_id": loc,
                    "scene_id": 100 * d + loc,
                    "datetime": pd.Timestamp("2023-01-01", tz="UTC") + pd.Timedelta(days=40 * d),
                    "split": "train",
                    "shard": "shard-00000.npy",
                    "index": len(patches) - 1,
                }
            )
    data = np.stack(patches)
    np.save(shards / "shard-00000.npy", data)
    pd.DataFrame(rows).to_parquet(shards / "manifest.parquet", index=False)
    stats = {
        "mean": data.mean(axis=(0, 2, 3)).tolist(),
        "std": data.std(axis=(0, 2, 3)).tolist(),
    }
    return shards, stats


class StepTimes(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter())


def bench_settings(profile: str, method: str, args: argparse.Namespace):
    """The profile's settings for ``method``, run for ``args.steps`` steps (not epochs)."""
    base = load_settings(profile=profile, overrides={"pretrain": {"method": method}}).pretrain
    values = {**vars(base), "steps": args.steps, "epochs": 0, "checkpoint_every_n_steps": 0}
    values["warmup_epochs"] = 0.0  # throughput only: no epoch-long warm-up
    if profile == "cpu-tiny":
        values["backbone"] = BACKBONES[method]
    for key in ("accelerator", "precision", "devices"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.batch is not None:
        values["batch_size"] = args.batch
    return base.__class__(**values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--methods", default="moco,dino,mae")
    ap.add_argument("--profile", default="cpu-tiny", help="a params.yaml pretrain profile")
    ap.add_argument("--batch", type=int, help="global batch (default: the profile's)")
    ap.add_argument("--accelerator", help="override the profile's (cpu, gpu)")
    ap.add_argument("--precision", help="override the profile's (32-true, bf16-mixed, ...)")
    ap.add_argument("--devices", type=int, help="override the profile's device count")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = [bench_settings(args.profile, m, args) for m in args.methods.split(",")]
        # enough locations for whole batches of the largest global batch
        shards, stats = write_shards(Path(tmp), max(16, max(s.batch_size for s in settings)))
        for s in settings:
            timer = StepTimes()
            run = pretrain(
                s, shards, stats, Path(tmp) / s.method, progress=False, callbacks=[timer]
            )
            t = timer.times
            rate = s.batch_size * (len(t) - 2) / (t[-1] - t[1])
            peak = run.peak_gpu_mb / 1024 if run.peak_gpu_mb is not None else None
            rows.append(
                (s.method, s.backbone, s.batch_size, s.crop_size, s.precision, rate, peak,
                 run.data_wait_share)
            )  # fmt: skip
            print(
                f"{s.method}: {rate:.2f} patches/s (final loss {run['final_loss']:.3f})", flush=True
            )
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"\nprofile {args.profile}, {args.steps} steps, {device}")
    print("| method | backbone | batch | crop | precision | patches/s | peak GPU GiB | data wait |")
    print("|---|---|---|---|---|---|---|---|")
    for method, backbone, batch, crop, precision, rate, peak, wait in rows:
        mem = "-" if peak is None else f"{peak:.1f}"
        print(
            f"| {method} | {backbone} | {batch} | {crop} | {precision} | {rate:.2f} | {mem} "
            f"| {wait:.1%} |"
        )


if __name__ == "__main__":
    main()
