"""What a stage costs: wall time, its own peak resident memory and peak GPU memory.

``ru_maxrss`` is the process's lifetime peak, so in one process every later stage would
carry the peaks of the earlier ones. :class:`StageUsage` samples the resident set size on a
background thread while the stage runs (every ``interval`` seconds, plus at start and end)
and resets CUDA's peak counter at the start, so each stage reports its own peak.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float:
    """Resident set size of this process now, in MB (Linux /proc; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE / 2**20
    except OSError:  # pragma: no cover - not Linux
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def _cuda():
    """torch.cuda when torch is already imported and a GPU is there (never imports torch)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda


@dataclass(frozen=True)
class Usage:
    seconds: float
    peak_rss_mb: float  # the highest RSS sampled while the stage ran
    start_rss_mb: float  # RSS when it started (what earlier stages left in the process)
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

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.result: Usage | None = None
        self._peak = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, rss_mb())

    def __enter__(self) -> StageUsage:
        self._start_time = time.perf_counter()
        self._start_rss = self._peak = rss_mb()
        cuda = _cuda()
        if cuda is not None:
            cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, name="stage-usage", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._peak = max(self._peak, rss_mb())
        cuda = _cuda()
        self.result = Usage(
            seconds=time.perf_counter() - self._start_time,
            peak_rss_mb=self._peak,
            start_rss_mb=self._start_rss,
            peak_gpu_mb=cuda.max_memory_allocated() / 2**20 if cuda is not None else None,
        )
