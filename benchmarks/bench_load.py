"""Load: curate an archive of 50 small scenes with 2 worker processes (as Dagster's
multiprocess executor or a 2-run backfill would), then build the index. All partitions must
succeed and memory must stay flat: the peak RSS of a worker after 50 scenes is compared with
the same worker after its first scene (goal <= 1.2x), and with a 10-scene run.

Scenes: synthetic products of 256 px (patch size 128), revisits included.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from spectralearth.config import load_settings
from spectralearth.patches.store import build_index
from spectralearth.synth import write_archive

SCENES, SIZE, WORKERS = 50, 256, 2
REPO = Path(__file__).resolve().parents[1]


def _worker(products: list[Path], root: Path) -> tuple[int, float, float]:
    from spectralearth.patches.curate import curate_scene

    settings = load_settings(REPO / "params.yaml").curate
    done, first_peak = 0, 0.0
    for product in products:
        curate_scene(product, root, settings)
        done += 1
        if done == 1:
            first_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return done, first_peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(products: list[Path], root: Path) -> dict:
    start = time.perf_counter()
    shares = [products[i::WORKERS] for i in range(WORKERS)]
    with ProcessPoolExecutor(WORKERS) as pool:
        results = list(pool.map(_worker, shares, [root] * WORKERS))
    index = build_index(root, 0.1, 0.1)
    return {
        "seconds": time.perf_counter() - start,
        "scenes": sum(r[0] for r in results),
        "first_peak": max(r[1] for r in results),
        "peak": max(r[2] for r in results),
        "patches": len(index),
        "locations": index["location_id"].nunique(),
    }


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        products = write_archive(tmp / "archive", tmp / "labels", scenes=SCENES, size=SIZE, seed=11)
        small = _run(products[:10], tmp / "p10")
        full = _run(products, tmp / "p50")
    for label, r in (("10 scenes", small), (f"{SCENES} scenes", full)):
        print(
            f"{label}: {r['scenes']} curated, {r['patches']} patches at {r['locations']} "
            f"locations in {r['seconds']:.1f} s with {WORKERS} workers; worker peak RSS "
            f"{r['peak']:.0f} MB (after its first scene {r['first_peak']:.0f} MB)"
        )
    ok = full["scenes"] == SCENES
    print(f"all partitions succeeded: {ok}")
    print(f"ratio peak {SCENES} scenes / first scene: {full['peak'] / full['first_peak']:.2f}x")
    print(f"ratio peak {SCENES} / 10 scenes: {full['peak'] / small['peak']:.2f}x (goal <= 1.2x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
