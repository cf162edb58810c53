"""fr_models.system: one way to measure this process's memory."""

import subprocess
import sys

from fr_models.system import peak_rss_mib, rss_mib

# In a fresh process (a long test process reuses freed memory, so a new array may not grow its RSS).
CHECK = """
import numpy as np
from fr_models.system import peak_rss_mib, rss_mib
before, peak_before = rss_mib(), peak_rss_mib()
assert 0 < before <= peak_before + 1, (before, peak_before)
block = np.ones(128 * 2**20 // 8)  # 128 MiB, touched
grown, peak = rss_mib(), peak_rss_mib()
assert grown > before + 100 and peak >= before + 100, (before, grown, peak)
del block
assert rss_mib() < grown - 100 and peak_rss_mib() >= peak - 1  # freed: the size falls, the peak stays
print("ok")
"""


def test_rss_and_peak_follow_an_allocation():
    res = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
    assert 0 < rss_mib() <= peak_rss_mib() + 1
