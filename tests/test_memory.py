"""Peak memory of one block, not the process's lifetime peak (the #13 defect)."""

from __future__ import annotations

import math

import numpy as np

from spectralearth.memory import PeakMemory, current_rss_mb, lifetime_peak_rss_mb


def test_a_small_block_after_a_big_allocation_reports_its_own_peak():
    big_mb = 600
    with PeakMemory() as big:
        block = np.ones(big_mb * 1024 * 1024 // 8)  # touched: resident
        del block
    with PeakMemory() as small:
        x = np.ones(5 * 1024 * 1024 // 8)
        del x
    # the big block's peak holds its allocation; the lifetime peak still does afterwards
    assert big.rss_mb >= big_mb * 0.95
    assert lifetime_peak_rss_mb() >= big.rss_mb - 1
    # the small block does not carry it: its own peak is its baseline plus ~5 MB
    assert small.rss_mb < big.rss_mb - big_mb * 0.8, (small.rss_mb, big.rss_mb)
    assert small.rss_mb < current_rss_mb() + 50


def test_no_cuda_means_nan_gpu_peak():
    import torch

    with PeakMemory() as peak:
        pass
    if not torch.cuda.is_available():
        assert math.isnan(peak.gpu_mb)
    assert peak.rss_mb > 0
