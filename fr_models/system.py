"""The machine a figure was measured on, described one way everywhere (the privacy pipeline, the grid's report,
the benchmarks).

* :func:`rss_mib`: the current resident set size.
* :func:`peak_rss_mib`: the peak resident set size so far.
* :func:`versions`: the Python, platform and package versions.

Both read Linux's ``/proc/self`` first; elsewhere they fall back to :func:`resource.getrusage`'s ``ru_maxrss``,
whose unit differs by platform (bytes on macOS, KiB on Linux and the BSDs), so the current size falls back to the
peak there.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from collections.abc import Sequence

__all__ = ["PACKAGES", "peak_rss_mib", "rss_mib", "versions"]

#: The packages whose versions :func:`versions` reports by default (distribution names).
PACKAGES = ("torch", "torchvision", "numpy", "scipy", "gymnasium", "stable-baselines3", "opacus")


def versions(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
    """``{"python": ..., "platform": ..., "cpus": ..., <package>: <version or "not installed">}``.

    >>> versions(["no-such-package-xyz"])["no-such-package-xyz"]
    'not installed'
    """
    out = {"python": platform.python_version(), "platform": platform.platform(), "cpus": str(os.cpu_count())}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _ru_maxrss_mib() -> float:
    import resource  # not on Windows

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def rss_mib() -> float:
    """The current resident set size of this process in MiB (the peak where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return _ru_maxrss_mib()


def peak_rss_mib() -> float:
    """The peak resident set size of this process so far in MiB (Linux: ``VmHWM``, this process's own peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _ru_maxrss_mib()
