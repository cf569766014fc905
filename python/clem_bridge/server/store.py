"""Job directories under the data dir: ``jobs/<id>/{job.json, inputs/, out/}``.

Every file the server publishes is written atomically (temp file, fsync, ``os.replace``): a crash
or a full disk leaves the old version or the new one, never half a file.  A job's outputs are
written into ``work/`` and renamed to ``out/`` in one step once the job is done, so ``out/`` only
ever holds the complete set of a finished job's files.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..errors import InputError
from .schemas import TERMINAL, Job

log = logging.getLogger("clem_bridge.server")
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
ARTIFACT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def disk_full(exc: BaseException) -> bool:
    """True for the ``OSError`` of a full disk or exhausted quota."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def _fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write ``path`` through a temp file in the same folder, fsync'd, then ``os.replace``d."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _lock_dir(data_dir: Path):
    """Hold an exclusive lock on ``data_dir/server.lock`` for the life of the process (POSIX only)."""
    try:
        import fcntl
    except ImportError:
        return None
    handle = open(data_dir / "server.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise InputError(f"another clem-bridge server is using the data dir {data_dir}; stop it or choose "
                         "another --data-dir") from None
    return handle


class JobStore:
    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_dir(self.data_dir)

    def close(self) -> None:
        """Release the data dir (another server may use it from now on)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def dir(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id):
            raise ValueError(f"invalid job id {job_id!r}")
        return self.root / job_id

    def inputs_dir(self, job_id: str) -> Path:
        return self.dir(job_id) / "inputs"

    def out_dir(self, job_id: str) -> Path:
        """The published outputs of a finished job."""
        return self.dir(job_id) / "out"

    def work_dir(self, job_id: str) -> Path:
        """Where a running job writes its outputs (see :meth:`publish`)."""
        return self.dir(job_id) / "work"

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def create_dirs(self, job_id: str) -> None:
        self.inputs_dir(job_id).mkdir(parents=True)

    def new_work_dir(self, job_id: str) -> Path:
        work = self.work_dir(job_id)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        return work

    def publish(self, job_id: str) -> None:
        """fsync every output file, then rename ``work/`` to ``out/`` in one step."""
        work = self.work_dir(job_id)
        for p in work.rglob("*"):
            if p.is_file():
                with open(p, "rb+") as f:
                    os.fsync(f.fileno())
        os.replace(work, self.out_dir(job_id))
        _fsync_dir(self.dir(job_id))

    def discard_work(self, job_id: str) -> None:
        shutil.rmtree(self.work_dir(job_id), ignore_errors=True)

    def save(self, job: Job) -> None:
        """Write ``job.json`` atomically (a crash leaves the old or the new version, never half)."""
        write_atomic(self.dir(job.id) / "job.json", job.model_dump_json(indent=2))

    def load_all(self) -> list[Job]:
        """Every readable job, oldest first (call at start-up only: half-created job dirs and the
        half-written outputs of interrupted jobs are removed)."""
        jobs = []
        for d in self.root.iterdir():
            path = d / "job.json"
            if not JOB_ID.match(d.name):
                continue
            if not path.is_file():      # a submission cut off before it was queued
                shutil.rmtree(d, ignore_errors=True)
                continue
            shutil.rmtree(d / "work", ignore_errors=True)
            try:
                jobs.append(Job.model_validate_json(path.read_text()))
            except ValueError as e:
                log.warning("skipping unreadable %s: %s", path, e)
        return sorted(jobs, key=lambda j: j.created)

    @staticmethod
    def expired(job: Job, keep_days: float, now: datetime | None = None) -> bool:
        """A finished job older than ``keep_days`` (0 = keep forever)."""
        if keep_days <= 0 or job.status not in TERMINAL:
            return False
        ended = job.finished or job.created
        if ended.tzinfo is None:
            ended = ended.replace(tzinfo=timezone.utc)
        return (now or datetime.now(timezone.utc)) - ended > timedelta(days=keep_days)

    def artifacts(self, job_id: str) -> list[str]:
        out = self.out_dir(job_id)
        return sorted(p.name for p in out.iterdir() if p.is_file() and ARTIFACT.match(p.name)) if out.is_dir() else []

    def artifact_path(self, job_id: str, name: str) -> Path | None:
        """The artifact file, or None when ``name`` is not a plain file name of this job's outputs."""
        return self.out_dir(job_id) / name if name in self.artifacts(job_id) else None

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.dir(job_id), ignore_errors=True)
