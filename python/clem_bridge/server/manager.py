"""The job queue: a bounded queue served by one compute worker thread (GPU work serialised).

Restart policy: a job found ``running`` in its ``job.json`` when the server starts was cut off by
a crash or kill and is marked ``interrupted``; jobs found ``queued`` still have their inputs on
disk and are queued again in submission order; finished jobs older than ``keep_days`` are deleted.
A clean shutdown (Ctrl-C) cancels the running job between iterations and marks it ``interrupted`` too.

Failing safe: nothing a job does, and no ``OSError`` of the job store (a full disk), ends the
worker thread; the job fails with a one-sentence error and the worker takes the next one.  A
result holding NaN/inf (a metric that could not be computed) loses those values and gains a warning,
so the job record and ``transform.json`` always stay valid JSON that reads back.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import queue
import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Optional

from ..workflows import jobs as job_types
from ..errors import Cancelled, InputError
from ..schema import STATUSES
from .schemas import TERMINAL, ErrorBody, Job, JobState
from .store import JobStore, disk_full, write_atomic

log = logging.getLogger("clem_bridge.server")


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"the job queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


def _now() -> datetime:
    return datetime.now(timezone.utc)


def finite_only(obj: Any, where: str = "") -> tuple[Any, list[str]]:
    """``obj`` without NaN/inf floats (dropped from dicts and lists, recursively) and where they were."""
    if isinstance(obj, dict):
        items = [(k, f"{where}.{k}" if where else str(k), v) for k, v in obj.items()]
    elif isinstance(obj, (list, tuple)):
        items = [(i, f"{where}[{i}]", v) for i, v in enumerate(obj)]
    else:
        return obj, []
    kept, dropped = [], []
    for key, name, value in items:
        if isinstance(value, float) and not math.isfinite(value):
            dropped.append(name)
            continue
        value, inner = finite_only(value, name)
        kept.append((key, value))
        dropped += inner
    return (dict(kept) if isinstance(obj, dict) else [v for _, v in kept]), dropped


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]


def _storage_error(exc: OSError) -> ErrorBody:
    if disk_full(exc):
        return ErrorBody(error="insufficient_storage", detail=f"The server's disk is full ({_one_line(exc)}); "
                         "free space under its data dir and submit the job again.")
    return ErrorBody(error="storage_error", detail=f"The server could not write this job's files: {_one_line(exc)}.")


class JobManager:
    def __init__(self, store: JobStore, *, device: str, max_queue: int, keep_days: float = 30.0,
                 extra_types: Optional[Mapping[str, job_types.JobType]] = None):
        self.store = store
        self.device = device
        self.max_queue = max_queue
        self.keep_days = keep_days
        self.types = {**job_types.JOB_TYPES, **(extra_types or {})}
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
        removed = 0
        for job in self.store.load_all():
            if self.store.expired(job, self.keep_days):
                self.store.delete(job.id)
                removed += 1
                continue
            if job.status == JobState.running:
                job.status, job.finished = JobState.interrupted, _now()
                job.error = ErrorBody(error="interrupted", detail="The server stopped while this job was running; "
                                      "submit it again.")
                self.store.save(job)
            self._jobs[job.id] = job
            if job.status == JobState.queued:
                self._cancel[job.id] = threading.Event()
                self._queue.put(job.id)
        if removed:
            log.info("removed %d finished job(s) older than %g days (--keep-days)", removed, self.keep_days)

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

    @property
    def worker_alive(self) -> bool:
        return self._thread.is_alive()

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
        while (job_id := self._queue.get()) is not None:
            with self._lock:
                if self._stopping:
                    return
                job = self._jobs.get(job_id)
                if job is None or job.status != JobState.queued:
                    continue
                job.status, job.started, self._running = JobState.running, _now(), job_id
                job.timings["queue_s"] = (job.started - job.created).total_seconds()
                cancel = self._cancel[job_id]
            t0 = time.perf_counter()
            status, error, result = self._execute(job, cancel)
            self._finish(job, status, error, result, time.perf_counter() - t0)

    def _execute(self, job: Job, cancel: threading.Event) -> tuple[JobState, ErrorBody | None, dict | None]:
        """Run the job into ``work/`` and publish its outputs; never raises."""
        try:
            self.store.save(job)
            spec = self.types.get(job.type)
            if spec is None:
                return JobState.failed, ErrorBody(error="job_failed", detail=f"This server has no job type "
                                                  f"{job.type!r}."), None
            inputs = {k: self.store.inputs_dir(job.id) / v for k, v in job.inputs.items()}
            work = self.store.new_work_dir(job.id)
            out = spec.run(inputs, {**job.params, "device": self.device}, work, self._progress(job), cancel.is_set)
            result = self._checked_result(out.get("result"), work)
            self.store.publish(job.id)
            return JobState.done, None, result
        except Cancelled:
            if self._stopping:
                return JobState.interrupted, ErrorBody(error="interrupted", detail="The server was shut down "
                                                       "while this job was running."), None
            return JobState.cancelled, None, None
        except InputError as e:
            return JobState.failed, ErrorBody(error="invalid_input", detail=_one_line(e)), None
        except Exception as e:  # a job must never kill the worker
            if disk_full(e):
                log.error("job %s (%s): %s", job.id, job.type, e)
                return JobState.failed, _storage_error(e), None
            log.exception("job %s (%s) failed", job.id, job.type)
            return JobState.failed, ErrorBody(error="job_failed", detail=f"{type(e).__name__}: {_one_line(e)}"), None

    @staticmethod
    def _checked_result(result: Any, work) -> Any:
        """The result without NaN/inf; when some were dropped it gets a warning, ``ok`` becomes
        ``uncertain`` and the job's ``transform.json`` (the same record) is rewritten to match."""
        result, dropped = finite_only(result)
        if dropped and isinstance(result, dict):
            result.setdefault("warnings", []).append(
                f"non-finite values (NaN/inf) were dropped from the result: {', '.join(dropped)}")
            if result.get("status") == "ok":
                result["status"] = "uncertain"
            if (work / "transform.json").is_file():
                write_atomic(work / "transform.json", json.dumps(result, indent=2))
        return result

    def _finish(self, job: Job, status: JobState, error: ErrorBody | None, result: Any, run_s: float) -> None:
        if status != JobState.done:
            self.store.discard_work(job.id)
        with self._lock:
            job.status, job.error, job.result, job.finished = status, error, result, _now()
            outcome = result.get("status") if isinstance(result, dict) else None
            job.result_status = outcome if outcome in STATUSES else None
            job.timings["run_s"] = run_s
            if status == JobState.done:
                job.progress = 1.0
                self._durations.append(run_s)
            self._running = None
            try:
                job.artifacts = self.store.artifacts(job.id)
                self.store.save(job)
            except OSError as e:         # the record stays in memory; after a restart the job reads interrupted
                log.error("job %s: could not save its record: %s", job.id, e)
                job.status, job.error, job.result, job.result_status = JobState.failed, _storage_error(e), None, None
        log.info("job %s %s in %.2f s", job.id, job.status.value, run_s)
