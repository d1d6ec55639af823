"""The benchmarks' per-process accounting reads /proc as proc(5) lays it out."""

from __future__ import annotations

import os
import resource
import time

from bench.emulator_process import process_cpu_s, process_peak_rss_mb


def test_cpu_seconds_and_peak_memory_of_a_process_agree_with_getrusage() -> None:
    started = time.process_time()
    while time.process_time() - started < 0.3:  # burn some CPU so that the figure is not all start-up
        sum(range(10_000))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    ours = process_cpu_s(os.getpid())
    # /proc counts in clock ticks (1/100 s here); getrusage in microseconds.
    assert abs(ours - (usage.ru_utime + usage.ru_stime)) < 0.1
    assert ours >= 0.3
    assert abs(process_peak_rss_mb(os.getpid()) - usage.ru_maxrss / 1024) < 5
