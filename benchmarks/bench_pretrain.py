"""Pretraining throughput (patches/s) on this machine for each method, cpu-tiny settings.

Writes synthetic curated shards (202 bands, 128 px, some locations with two dates) to a
temp folder and runs ``spectralearth.ssl.pretrain`` for MoCo (spec_resnet18), DINO
(spec_resnet18) and MAE (spec_vit_tiny) with the cpu-tiny profile's batch (8) and crops
(64 px). Throughput is timed over the steps after the first two (warm-up excluded) and
counts patches of the global batch (a two-view method sees each location twice).

    python benchmarks/bench_pretrain.py [--steps 10] [--methods moco,dino,mae]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--methods", default="moco,dino,mae")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        shards, stats = write_shards(Path(tmp))
        for method in args.methods.split(","):
            base = load_settings(
                profile="cpu-tiny", overrides={"pretrain": {"method": method}}
            ).pretrain
            settings = base.__class__(
                **{**vars(base), "backbone": BACKBONES[method], "steps": args.steps}
            )
            timer = StepTimes()
            run = pretrain(
                settings, shards, stats, Path(tmp) / method, progress=False, callbacks=[timer]
            )
            t = timer.times
            rate = settings.batch_size * (len(t) - 2) / (t[-1] - t[1])
            rows.append((method, settings.backbone, settings.batch_size, settings.crop_size, rate))
            print(
                f"{method}: {rate:.2f} patches/s (final loss {run['final_loss']:.3f})", flush=True
            )
    print("\n| method | backbone | batch | crop | patches/s |\n|---|---|---|---|---|")
    for method, backbone, batch, crop, rate in rows:
        print(f"| {method} | {backbone} | {batch} | {crop} | {rate:.2f} |")


if __name__ == "__main__":
    main()
