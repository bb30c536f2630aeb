"""A stage's peak memory is its own: an earlier allocation does not show in a later stage."""

import time

import numpy as np

from spectralearth.profiling import StageUsage


def test_a_later_stage_does_not_carry_an_earlier_peak():
    with StageUsage() as big:
        block = np.ones(300 * 2**20 // 8)  # 300 MB, touched
        block.sum()
        # held a moment, as a stage holds its data: the sampler thread needs the GIL, which a
        # single numpy call can keep for its whole length (memory.py: a shorter spike under
        # an earlier lifetime peak can be missed, and a busy worker had one)
        time.sleep(0.3)
        del block
    with StageUsage() as small:
        np.ones(10 * 2**20 // 8).sum()
    assert big.result.peak_rss_mb - big.result.start_rss_mb > 250
    assert small.result.peak_rss_mb - small.result.start_rss_mb < 100
    assert small.result.peak_rss_mb < big.result.peak_rss_mb - 150
    assert small.result.peak_gpu_mb is None  # no GPU here: not a made-up zero
