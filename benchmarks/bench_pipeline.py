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
        from spectralearth.config import load_settings
        from spectralearth.stages import curate, downstream, evaluate, ingest, pretrain, validate

        s = load_settings()
        layout = s.layout
        times = {}

        def stage(name, fn, *args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            times[name] = time.perf_counter() - t0
            usage = getattr(out, "usage", None)
            peak = f"   peak RSS {usage.peak_rss_mb:.0f} MB" if usage is not None else ""
            print(f"{name:12s} {times[name]:7.1f} s{peak}", flush=True)
            return out

        stage("synth", ingest.synth_archive, s.synth, layout.archive, layout.labels)
        stage("catalog", ingest.catalog, layout.archive, layout.catalog)
        products = ingest.ok_products(layout.catalog)
        stage("curate", curate.curate_archive, products, layout.patches, s.curate, lambda *_: None)
        stage("validate", validate.validate, s, layout.patches)
        out = layout.checkpoint(s.checkpoint_name()).root
        stage("pretrain", pretrain.pretrain, s.pretrain, layout.patches, out, s.tracking,
              progress=False)  # fmt: skip
        stage("downstream", downstream.downstream_dataset, layout.patches, layout.labels,
              layout.downstream / s.evaluate.task)  # fmt: skip

        def evaluate_all():
            for request in evaluate.default_requests(s):
                evaluate.evaluate(request, s.evaluate, layout, layout.results, s.tracking,
                                  default_backbone=s.pretrain.backbone)  # fmt: skip
            return evaluate.benchmark_results(layout.results)

        stage("evaluate", evaluate_all)
        total = sum(times.values())
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"total        {total:7.1f} s   peak RSS {rss:.0f} MB")
        print(f"ratio total/budget(900 s): {total / BUDGET_S:.2f}")


if __name__ == "__main__":
    main()
