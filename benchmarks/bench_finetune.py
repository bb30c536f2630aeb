"""P6: fine-tuning cost per protocol and dataset: wall time and peak memory vs `frozen`.

Each (dataset, protocol) runs in a fresh process (peak RSS is a per-process high-water mark)
with ``evaluate_model`` on a random-init spec_resnet18: two fake datasets in the released
layout (tests/data/downstream/make_fake.py; enmap_cdl with 202 bands, desis_cdl with 235),
32 px patches, 8 train / 2 val / 2 test, 2 epochs, batch 4, 2 CPU cores (by default). A process that
loads the same data and encoder and trains nothing gives the memory floor.

    python benchmarks/bench_finetune.py [--size 32] [--train 8] [--epochs 2] [--datasets ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTOCOLS = ("frozen", "adapter", "first-n", "full")
DATASETS = ("enmap_cdl", "desis_cdl")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(root: Path, dataset: str, protocol: str, epochs: int) -> dict:
    """Run in the child process: one evaluation, its seconds and this process's peak RSS."""
    import torch

    from spectralearth.config import EvaluateSettings
    from spectralearth.downstream.run import evaluate_model

    torch.set_num_threads(2)
    settings = EvaluateSettings(
        task=dataset, protocol="frozen", epochs=epochs, batch_size=4, lr=0.01, seed=0
    )
    t0 = time.perf_counter()
    if protocol == "none":  # the floor: data and encoder loaded, nothing trained
        from spectralearth.downstream.datasets.registry import open_split, resolve
        from spectralearth.downstream.run import load_encoder

        ds = open_split(resolve(root / dataset), "train")
        load_encoder("random", ds.bands, dataset, "spec_resnet18")
        _ = [ds[i] for i in range(len(ds))]
        return {"seconds": time.perf_counter() - t0, "peak_mem_mb": _peak_mb()}
    rows = evaluate_model(
        "random", root / dataset, settings, protocol, backbone="spec_resnet18",
        allow_band_mismatch=True,
    )  # fmt: skip
    test = rows[(rows["split"] == "test") & (rows["metric"] == "overall_accuracy")]
    return {
        "seconds": float(test["seconds"].iloc[0]),
        "wall_seconds": time.perf_counter() - t0,
        "peak_mem_mb": _peak_mb(),
        "overall_accuracy": float(test["value"].iloc[0]),
    }


def make_data(root: Path, size: int, train: int, datasets=DATASETS) -> None:
    lists = root / "lists"
    counts = {"train": train, "val": max(2, train // 4), "test": max(2, train // 4)}
    for name in datasets:
        (lists / name).mkdir(parents=True, exist_ok=True)
        for split, n in counts.items():
            base = {"train": 0, "val": 100_000, "test": 200_000}[split]
            lines = [f"{base + i:07d}/{i:05d}.tif" for i in range(n)]
            (lists / name / f"{split}.txt").write_text("\n".join(lines) + "\n")
    fake = runpy.run_path(str(REPO / "tests" / "data" / "downstream" / "make_fake.py"))
    fake["main"](
        [str(lists), str(root / "data"), "--per-split", str(train), "--size", str(size)]
        + ["--datasets", *datasets]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--train", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument(
        "--one", nargs=3, metavar=("ROOT", "DATASET", "PROTOCOL"), help=argparse.SUPPRESS
    )
    args = ap.parse_args()
    if args.one:
        root, dataset, protocol = args.one
        print(json.dumps(one(Path(root), dataset, protocol, args.epochs)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        make_data(Path(tmp), args.size, args.train, args.datasets)
        data = Path(tmp) / "data"
        print(
            f"{args.train} train patches of {args.size} px, {args.epochs} epochs, "
            "random-init spec_resnet18, one process per run"
        )
        print(f"{'dataset':10s} {'protocol':8s} {'seconds':>8s} {'x frozen':>8s} "
              f"{'peak MB':>8s} {'x frozen':>8s} {'OA':>6s}")  # fmt: skip
        for dataset in args.datasets:
            res = {}
            for protocol in ("none", *PROTOCOLS):
                out = subprocess.run(
                    [sys.executable, __file__, "--epochs", str(args.epochs), "--one",
                     str(data), dataset, protocol],
                    check=True, capture_output=True, text=True,
                )  # fmt: skip
                res[protocol] = json.loads(out.stdout.strip().splitlines()[-1])
            f = res["frozen"]
            print(f"{dataset:10s} {'(floor)':8s} {res['none']['seconds']:8.1f} {'':8s} "
                  f"{res['none']['peak_mem_mb']:8.0f}")  # fmt: skip
            for protocol in PROTOCOLS:
                r = res[protocol]
                print(
                    f"{dataset:10s} {protocol:8s} {r['seconds']:8.1f} "
                    f"{r['seconds'] / f['seconds']:8.2f} {r['peak_mem_mb']:8.0f} "
                    f"{r['peak_mem_mb'] / f['peak_mem_mb']:8.2f} {r['overall_accuracy']:6.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
