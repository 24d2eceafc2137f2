"""Micro-batching: photos of concurrent requests gathered into one encoder pass and one batched
search.

One worker thread takes the first waiting job, then keeps gathering jobs until ``max_batch``
photos or ``max_wait_ms`` have passed — unless nobody can come: no request is being read
(``arriving``) and no batch of the last second had company, so that a lone request is answered
at once while bursts under load still share batches. The photos are decoded and preprocessed
in a thread pool, then every group of jobs with the same model and search settings runs as
one :meth:`~hierloc.locate.base.BaseLocator.predict_prepared` call. The queue is bounded in
photos: a job that would overflow it is refused at once (:class:`QueueFull`, the service's
503), so memory never grows with the load. :meth:`MicroBatcher.close` finishes what was queued.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from hierloc.locate.base import prepare_photos
from hierloc.locate.types import Locator, Prediction, Rejected

COMPANY_MEMORY_S = 1.0  # after a batch with company, batches wait for company this long


class QueueFull(Exception):
    """The queue holds too many photos; retry later."""


class Closed(Exception):
    """The batcher is shutting down."""


@dataclass
class Job:
    model: str
    photos: list[tuple[str, bytes]]
    top_k: int
    beam: int
    future: Future = field(default_factory=Future)

    @property
    def key(self) -> tuple[str, int, int]:
        return self.model, self.top_k, self.beam


@dataclass
class BatchStats:
    batches: int = 0
    photos: int = 0
    sizes: list[int] = field(default_factory=list)  # the last 1,000 batch sizes (photos)


class MicroBatcher:
    def __init__(
        self,
        locators: dict[str, Locator],
        max_batch: int = 64,
        max_wait_ms: float = 5.0,
        max_queue: int | None = None,
        decode_workers: int = 2,
        on_batch: Callable[[int], None] | None = None,
        arriving: Callable[[], int] | None = None,
    ) -> None:
        self.locators = locators
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.max_queue = int(max_queue if max_queue is not None else 8 * max_batch)
        self.on_batch = on_batch
        self.arriving = arriving  # requests the service is still reading (None: always wait)
        self.stats = BatchStats()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._pending = 0  # photos queued or running
        self._last_company = -math.inf  # when a batch last gathered more than one job
        self._lock = threading.Lock()
        self._closed = False
        self._pool = ThreadPoolExecutor(max(1, decode_workers), thread_name_prefix="decode")
        self._thread = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Photos waiting or running."""
        return self._pending

    def submit(self, model: str, photos: list[tuple[str, bytes]], top_k: int, beam: int) -> Future:
        """Queue a job; its future gives ``(predictions, rejected)``. Raises :class:`QueueFull`
        when it would not fit and :class:`Closed` after :meth:`close`."""
        job = Job(model, photos, top_k, beam)
        with self._lock:
            if self._closed:
                raise Closed("the service is shutting down")
            if self._pending and self._pending + len(photos) > self.max_queue:
                raise QueueFull(f"{self._pending} photos are queued (limit {self.max_queue})")
            self._pending += len(photos)
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Refuse new jobs, finish the queued ones, stop the worker."""
        with self._lock:
            self._closed = True
        self._queue.put(None)
        self._thread.join()
        self._pool.shutdown()

    # -- the worker ---------------------------------------------------------------------
    def _gather(self, first: Job) -> tuple[list[Job], bool]:
        jobs, n = [first], len(first.photos)
        deadline = time.monotonic() + self.max_wait
        stop = False
        while n < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self._alone() and self._queue.empty():
                break  # no load, and no request is being read: nobody to wait for
            try:  # with ``arriving``, look again every millisecond
                job = self._queue.get(timeout=left if self.arriving is None else min(left, 1e-3))
            except queue.Empty:
                continue
            if job is None:
                stop = True
                break
            jobs.append(job)
            n += len(job.photos)
        return jobs, stop

    def _alone(self) -> bool:
        """Whether a job may go without waiting: ``arriving`` is given and reads 0, and no batch
        of the last second had company (under load, requests reach the queue in bursts faster
        than the service can read them, so the wait is kept)."""
        if self.arriving is None or self.arriving():
            return False
        return time.monotonic() - self._last_company > COMPANY_MEMORY_S

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            jobs, stop = self._gather(first)
            if len(jobs) > 1:
                self._last_company = time.monotonic()
            groups: dict[tuple, list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for group in groups.values():
                self._run_group(group)
        while True:  # after close(): whatever is still queued
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._run_group([job])

    def _run_group(self, jobs: list[Job]) -> None:
        model, top_k, beam = jobs[0].key
        loc = self.locators[model]
        n = sum(len(j.photos) for j in jobs)
        try:
            if getattr(loc, "batches_photos", False):
                results = self._batched(loc, jobs, top_k, beam)
            else:
                results = [loc.predict_photos(j.photos, top_k=top_k, beam=beam) for j in jobs]
        except Exception as e:  # noqa: BLE001 (handed to each request, which reports it)
            for j in jobs:
                j.future.set_exception(e)
        else:
            for j, r in zip(jobs, results, strict=True):
                j.future.set_result(r)
        finally:
            with self._lock:
                self._pending -= n
            self.stats.batches += 1
            self.stats.photos += n
            self.stats.sizes = [*self.stats.sizes[-999:], n]
            if self.on_batch is not None:
                self.on_batch(n)

    def _batched(self, loc, jobs: list[Job], top_k: int, beam: int):
        owner = [k for k, j in enumerate(jobs) for _ in j.photos]
        photos = [p for j in jobs for p in j.photos]
        kept, tensors, bad = prepare_photos(loc, photos, self._pool.map)
        ids = [photos[n][0] for n in kept]
        preds = loc.predict_prepared(ids, tensors, top_k=top_k, beam=beam)
        out: list[list[Prediction]] = [[] for _ in jobs]
        rejected: list[list[Rejected]] = [[] for _ in jobs]
        for n, p in zip(kept, preds, strict=True):
            out[owner[n]].append(p)
        for n, r in bad:
            rejected[owner[n]].append(r)
        return list(zip(out, rejected, strict=True))
