"""fr_models.memory: one way to measure this process's memory."""

import numpy as np

from fr_models.memory import peak_rss_mib, rss_mib


def test_rss_and_peak_follow_an_allocation():
    before, peak_before = rss_mib(), peak_rss_mib()
    assert 0 < before <= peak_before + 1
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    assert rss_mib() > before + 48 and peak_rss_mib() >= max(peak_before, before + 48)
    del block
    assert peak_rss_mib() >= rss_mib() - 1  # the peak never falls below the current size
