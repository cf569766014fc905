"""The job queue: a bounded queue served by one compute worker thread (GPU work serialised).

Restart policy: a job found ``running`` in its ``job.json`` when the server starts was cut off by
a crash or kill and is marked ``interrupted``; jobs found ``queued`` still have their inputs on
disk and are queued again in submission order.  A clean shutdown (Ctrl-C) cancels the running job
between iterations and marks it ``interrupted`` too.
"""
from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any, Callable

from .. import jobs as job_types
from ..errors import Cancelled, InputError
from .schemas import TERMINAL, ErrorBody, Job, JobState
from .store import JobStore

log = logging.getLogger("clem_bridge.server")


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"the job queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _json_safe(obj: Any) -> Any:
    """Replace NaN/inf (not representable in JSON) by None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]


class JobManager:
    def __init__(self, store: JobStore, *, device: str, max_queue: int):
        self.store = store
        self.device = device
        self.max_queue = max_queue
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._running: str | None = None
        self._stopping = False
        self._durations: deque[float] = deque(maxlen=20)
        self._thread = threading.Thread(target=self._loop, name="clem-bridge-worker", daemon=True)
        self._recover()

    # --- lifecycle -----------------------------------------------------------------------
    def _recover(self) -> None:
        for job in self.store.load_all():
            if job.status == JobState.running:
                job.status, job.finished = JobState.interrupted, _now()
                job.error = ErrorBody(error="interrupted", detail="The server stopped while this job was running; "
                                      "submit it again.")
                self.store.save(job)
            self._jobs[job.id] = job
            if job.status == JobState.queued:
                self._cancel[job.id] = threading.Event()
                self._queue.put(job.id)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs, cancel the running one (it becomes ``interrupted``) and join the worker."""
        with self._lock:
            self._stopping = True
            if self._running:
                self._cancel[self._running].set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- queries ---------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return job.model_copy(deep=True) if job else None

    def list(self) -> list[Job]:
        with self._lock:
            return [j.model_copy(update={"result": None}, deep=True) for j in self._jobs.values()]

    def counts(self) -> tuple[int, int]:
        """(queued, running)."""
        with self._lock:
            queued = sum(j.status == JobState.queued for j in self._jobs.values())
            return queued, int(self._running is not None)

    def retry_after(self) -> int:
        """Seconds until a queue slot is likely free: mean recent run time × jobs waiting (10 s unknown)."""
        with self._lock:
            runs = list(self._durations)
        mean = sum(runs) / len(runs) if runs else 10.0
        return int(min(3600, max(1, math.ceil(mean * max(1, self.counts()[0])))))

    def check_capacity(self) -> None:
        if self.counts()[0] >= self.max_queue:
            raise QueueFull(self.retry_after())

    async def wait(self, job_id: str, timeout: float) -> Job | None:
        """The job once it is finished or ``timeout`` seconds have passed (polls; never blocks a thread)."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            job = self.get(job_id)
            if job is None or job.status in TERMINAL or time.monotonic() >= deadline:
                return job
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    # --- changes ---------------------------------------------------------------------------
    def enqueue(self, job: Job) -> Job:
        with self._lock:
            self.check_capacity()
            self.store.save(job)
            self._jobs[job.id] = job
            self._cancel[job.id] = threading.Event()
        self._queue.put(job.id)
        return job.model_copy(deep=True)

    def cancel_or_delete(self, job_id: str) -> Job | None:
        """Cancel a queued/running job; delete a finished one (returns None then)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.status == JobState.queued:
                job.status, job.finished = JobState.cancelled, _now()
                self.store.save(job)
            elif job.status == JobState.running:
                self._cancel[job_id].set()
            else:
                del self._jobs[job_id]
                self._cancel.pop(job_id, None)
                self.store.delete(job_id)
                return None
            return job.model_copy(deep=True)

    # --- the worker ------------------------------------------------------------------------
    def _progress(self, job: Job) -> Callable[[Any], None]:
        def report(p) -> None:
            mi = getattr(p, "mi", None)
            with self._lock:
                new_stage = p.stage != job.stage
                job.stage, job.iteration, job.total = p.stage, p.iteration, p.total
                job.mi = float(mi) if mi is not None and math.isfinite(mi) else None
                job.progress = min(1.0, max(0.0, float(p.fraction)))
                if new_stage:
                    self.store.save(job)
        return report

    def _loop(self) -> None:
        while True:
            job_id = self._queue.get()
            with self._lock:
                job = self._jobs.get(job_id) if job_id else None
                if job_id is None or self._stopping:
                    return
                if job is None or job.status != JobState.queued:
                    continue
                job.status, job.started, self._running = JobState.running, _now(), job_id
                job.timings["queue_s"] = (job.started - job.created).total_seconds()
                self.store.save(job)
                cancel = self._cancel[job_id]
            self._run(job, cancel)

    def _run(self, job: Job, cancel: threading.Event) -> None:
        spec = job_types.JOB_TYPES[job.type]
        inputs = {k: self.store.inputs_dir(job.id) / v for k, v in job.inputs.items()}
        params = {**job.params, "device": self.device}
        t0 = time.perf_counter()
        status, error, result = JobState.done, None, None
        try:
            result = _json_safe(spec.run(inputs, params, self.store.out_dir(job.id), self._progress(job),
                                         cancel.is_set).get("result"))
        except Cancelled:
            status = JobState.interrupted if self._stopping else JobState.cancelled
            if self._stopping:
                error = ErrorBody(error="interrupted", detail="The server was shut down while this job was running.")
        except InputError as e:
            status, error = JobState.failed, ErrorBody(error="invalid_input", detail=_one_line(e))
        except Exception as e:  # a job must never kill the worker
            log.exception("job %s (%s) failed", job.id, job.type)
            status, error = JobState.failed, ErrorBody(error="job_failed", detail=f"{type(e).__name__}: {_one_line(e)}")
        run_s = time.perf_counter() - t0
        with self._lock:
            job.status, job.error, job.result, job.finished = status, error, result, _now()
            job.timings["run_s"] = run_s
            if status == JobState.done:
                job.progress = 1.0
                self._durations.append(run_s)
            job.artifacts = self.store.artifacts(job.id)
            self._running = None
            self.store.save(job)
        log.info("job %s %s in %.2f s", job.id, status.value, run_s)
