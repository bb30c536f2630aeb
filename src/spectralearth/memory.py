"""The peak memory of one block of work, not of the process's whole life.

``getrusage``'s ``ru_maxrss`` is the process's lifetime peak: a stage that runs after a
bigger one would report the bigger one's peak. :class:`PeakMemory` samples the resident set
size from a background thread while the block runs (every ``interval`` seconds, from
``/proc/self/statm`` on Linux, psutil elsewhere) and also takes ``ru_maxrss`` where the
block raised it, so a block that sets a new lifetime peak reports that peak exactly and a
smaller block reports its own. A spike shorter than the interval that stays below the
lifetime peak can be missed (the measure is then a lower bound).

On a CUDA device the peak of ``torch.cuda.max_memory_allocated`` over the block is reported
beside it (the counter is reset when the block starts); without CUDA it is NaN.

    with PeakMemory() as peak:
        work()
    peak.rss_mb, peak.gpu_mb
"""

from __future__ import annotations

import math
import os
import resource
import sys
import threading
from types import TracebackType

MB = 1024 * 1024


def current_rss_mb() -> float:
    """Resident set size of this process now, in MB."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / MB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return psutil.Process().memory_info().rss / MB
    except ImportError:  # pragma: no cover - neither /proc nor psutil
        return lifetime_peak_rss_mb()


def lifetime_peak_rss_mb() -> float:
    """The process's peak resident memory so far (``ru_maxrss``), in MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / MB if sys.platform == "darwin" else rss / 1024  # bytes vs KB


def _cuda_available() -> bool:
    """A CUDA device, asked only where torch is already imported (no import cost here)."""
    if "torch" not in sys.modules:
        return False
    import torch

    return torch.cuda.is_available()


class PeakMemory:
    """Context manager: peak RSS (``rss_mb``) and peak CUDA memory (``gpu_mb``) of its block."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.rss_mb = math.nan
        self.gpu_mb = math.nan
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak = 0.0
        self._lifetime_before = 0.0
        self._cuda = False

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, current_rss_mb())

    def __enter__(self) -> PeakMemory:
        self._lifetime_before = lifetime_peak_rss_mb()
        self._peak = current_rss_mb()
        self._cuda = _cuda_available()
        if self._cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        peak = max(self._peak, current_rss_mb())
        lifetime = lifetime_peak_rss_mb()
        if lifetime > self._lifetime_before:  # this block set a new lifetime peak: exact
            peak = max(peak, lifetime)
        self.rss_mb = peak
        if self._cuda:
            import torch

            self.gpu_mb = torch.cuda.max_memory_allocated() / MB
