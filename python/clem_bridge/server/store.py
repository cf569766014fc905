"""Job directories under the data dir: ``jobs/<id>/{job.json, inputs/, out/}``."""
from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from pathlib import Path

from ..errors import InputError
from .schemas import Job

log = logging.getLogger("clem_bridge.server")
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
ARTIFACT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


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
        self.root = Path(data_dir) / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_dir(Path(data_dir))

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
        return self.dir(job_id) / "out"

    def create_dirs(self, job_id: str) -> None:
        self.inputs_dir(job_id).mkdir(parents=True)
        self.out_dir(job_id).mkdir()

    def save(self, job: Job) -> None:
        """Write ``job.json`` atomically (a crash leaves the old or the new version, never half)."""
        path = self.dir(job.id) / "job.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(job.model_dump_json(indent=2))
        os.replace(tmp, path)

    def load_all(self) -> list[Job]:
        """Every readable job, oldest first (call at start-up only: half-created job dirs are removed)."""
        jobs = []
        for d in self.root.iterdir():
            path = d / "job.json"
            if not JOB_ID.match(d.name):
                continue
            if not path.is_file():      # a submission cut off before it was queued
                shutil.rmtree(d, ignore_errors=True)
                continue
            try:
                jobs.append(Job.model_validate_json(path.read_text()))
            except ValueError as e:
                log.warning("skipping unreadable %s: %s", path, e)
        return sorted(jobs, key=lambda j: j.created)

    def artifacts(self, job_id: str) -> list[str]:
        out = self.out_dir(job_id)
        return sorted(p.name for p in out.iterdir() if p.is_file() and ARTIFACT.match(p.name)) if out.is_dir() else []

    def artifact_path(self, job_id: str, name: str) -> Path | None:
        """The artifact file, or None when ``name`` is not a plain file name of this job's outputs."""
        return self.out_dir(job_id) / name if name in self.artifacts(job_id) else None

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.dir(job_id), ignore_errors=True)
