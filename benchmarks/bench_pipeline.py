"""Wall time of the whole default pipeline (what `make run` computes), stage by stage.

Runs the library stages with params.yaml's defaults into a temporary data folder and prints
each stage's seconds, the total, and the ratio to the 15-minute budget for `make run` on
2 cores (the environment setup, ~3-5 min on a fresh machine, comes on top and is not timed).
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

BUDGET_S = 15 * 60


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SPECTRALEARTH_DATA_DIR"] = str(Path(tmp) / "data")
        from spectralearth import pipeline
        from spectralearth.config import load_settings

        s = load_settings()
        times = {}

        def stage(name, fn, *args):
            t0 = time.perf_counter()
            out = fn(*args)
            times[name] = time.perf_counter() - t0
            print(f"{name:12s} {times[name]:7.1f} s", flush=True)
            return out

        stage("synth", pipeline.synth_archive, s)
        stage("catalog", pipeline.catalog, s)
        products = pipeline.scenes_to_curate(s)
        stage("curate", pipeline.curate_archive, s, products, None, lambda *_: None)
        stage("validate", pipeline.validate, s)
        stage("stats", pipeline.band_statistics, s)
        stage("pretrain", pipeline.pretrain, s)
        stage("downstream", pipeline.downstream_dataset, s)
        stage("evaluate", pipeline.evaluate, s)
        total = sum(times.values())
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"total        {total:7.1f} s   peak RSS {rss:.0f} MB")
        print(f"ratio total/budget(900 s): {total / BUDGET_S:.2f}")


if __name__ == "__main__":
    main()
