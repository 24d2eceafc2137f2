"""Timing and memory measurement shared by the benchmarks."""

from __future__ import annotations

import multiprocessing as mp
import resource
import threading
import time
from pathlib import Path


def _rss_anon_kb() -> int:
    """Resident anonymous memory of this process (kB); excludes memory-mapped files."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # fallback: peak RSS


class PeakMemory:
    """Samples anonymous RSS every ``interval`` s in a thread; ``peak_mb`` after exit."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_kb = 0
        self.start_kb = 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, _rss_anon_kb())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self.start_kb = _rss_anon_kb()
        self.peak_kb = self.start_kb
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, _rss_anon_kb())

    @property
    def peak_mb(self) -> float:
        return round(self.peak_kb / 1024, 1)

    @property
    def added_mb(self) -> float:
        return round((self.peak_kb - self.start_kb) / 1024, 1)


def _child(conn, fn, args, kwargs) -> None:
    try:
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            result = fn(*args, **kwargs)
            seconds = time.perf_counter() - t0
        conn.send(("ok", seconds, mem.peak_mb, mem.added_mb, result))
    except BaseException as e:  # noqa: BLE001 (reported to the parent)
        conn.send(("error", repr(e), None, None, None))
    finally:
        conn.close()


def run_isolated(fn, *args, **kwargs) -> dict:
    """Run ``fn`` in a fresh process; ``{seconds, peak_anon_mb, added_anon_mb, result}``."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args, kwargs))
    proc.start()
    child.close()
    status, seconds, peak, added, result = parent.recv()
    proc.join()
    if status != "ok":
        raise RuntimeError(f"benchmark worker failed: {seconds}")
    return {
        "seconds": round(seconds, 3),
        "peak_anon_mb": peak,
        "added_anon_mb": added,
        "result": result,
    }
