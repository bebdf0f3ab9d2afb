"""Wall time and peak memory of a block of work."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass

import psutil


@dataclass
class Cost:
    seconds: float = 0.0
    peak_mb: float = 0.0  # peak resident memory of the process during the block (CUDA: peak allocated)


@contextlib.contextmanager
def measure(interval: float = 0.005):
    """Yield a Cost filled in when the block ends; RSS is sampled on a background thread."""
    cost = Cost()
    proc = psutil.Process()
    peak = proc.memory_info().rss
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, proc.memory_info().rss)
            stop.wait(interval)

    torch = sys.modules.get("torch")  # a block can hold CUDA memory only once torch is loaded
    cuda = torch is not None and torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    try:
        yield cost
    finally:
        cost.seconds = time.perf_counter() - t0
        stop.set()
        thread.join()
        peak = max(peak, proc.memory_info().rss)
        cost.peak_mb = (torch.cuda.max_memory_allocated() if cuda else peak) / 2**20
