"""What a stage costs: wall time and its own peak memory (resident and GPU), measured by
:class:`spectralearth.memory.PeakMemory` (so a later stage never carries an earlier one's
peak), plus the resident memory it started with (what earlier stages left in the process)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from spectralearth.memory import PeakMemory, current_rss_mb


@dataclass(frozen=True)
class Usage:
    seconds: float
    peak_rss_mb: float  # the stage's own peak resident set
    start_rss_mb: float  # resident set when it started
    peak_gpu_mb: float | None  # torch.cuda.max_memory_allocated during the stage; None on CPU

    def metadata(self) -> dict[str, float]:
        out = {
            "seconds": round(self.seconds, 3),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "rss_growth_mb": round(self.peak_rss_mb - self.start_rss_mb, 1),
        }
        if self.peak_gpu_mb is not None:
            out["peak_gpu_mb"] = round(self.peak_gpu_mb, 1)
        return out


class StageUsage:
    """``with StageUsage() as usage: ...`` then ``usage.result`` (a :class:`Usage`)."""

    def __init__(self, interval: float = 0.01) -> None:
        self._peak = PeakMemory(interval)
        self.result: Usage | None = None

    def __enter__(self) -> StageUsage:
        self._start_rss = current_rss_mb()
        self._start = time.perf_counter()
        self._peak.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._peak.__exit__(*exc)
        gpu = self._peak.gpu_mb
        self.result = Usage(
            seconds=time.perf_counter() - self._start,
            peak_rss_mb=self._peak.rss_mb,
            start_rss_mb=self._start_rss,
            peak_gpu_mb=None if math.isnan(gpu) else gpu,
        )
