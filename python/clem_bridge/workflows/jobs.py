"""The server's job types: one ``prepare`` and one ``run`` function per type (usable anywhere).

* ``prepare(uploads, params, inputs_dir, max_pixels) -> dict[str, Path]`` runs when the job is
  submitted: it validates the uploaded files (``uploads`` maps a form-field name to the saved
  files), writes the job's inputs into ``inputs_dir`` and returns them by name.  It raises
  :class:`~clem_bridge.errors.InputError` for bad input, which the server answers with a 4xx
  before anything is queued.
* ``run(inputs, params, out_dir, progress, cancelled) -> dict`` does the work on the compute
  worker.  ``params`` is the validated JSON params plus ``"device"`` (set by the worker),
  ``progress`` takes :class:`~clem_bridge.progress.Progress` reports and ``cancelled()`` is the
  engine's cancellation hook.  Every file written into ``out_dir`` becomes a downloadable artifact;
  the returned dict's ``"result"`` (JSON-able) is what ``GET /v1/jobs/{id}/result`` returns.

Adding a job type is: write ``prepare`` and ``run`` in its workflow module, add one entry to
:data:`JOB_TYPES`, and one route in ``server/routers/`` that validates the params with a pydantic
model and calls ``submit_job(request, "<type>", params, uploads)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..progress import CancelFn, ProgressFn
from .correlate import prepare_correlate, run_correlate
from .fiducials import prepare_fiducials, run_fiducials
from .predict import loaded_models, prepare_predict, run_predict
from .register import apply_transform, prepare_register, run_register
from .register3d import prepare_register3d, run_register3d

PrepareFn = Callable[[dict[str, list[Path]], dict, Path, int], dict[str, Path]]
RunFn = Callable[[dict[str, Path], dict, Path, ProgressFn, CancelFn], dict]


@dataclass(frozen=True)
class JobType:
    prepare: PrepareFn
    run: RunFn


JOB_TYPES: dict[str, JobType] = {
    "register": JobType(prepare=prepare_register, run=run_register),
    "predict_chromatin": JobType(prepare=prepare_predict, run=run_predict),
    "correlate": JobType(prepare=prepare_correlate, run=run_correlate),
    "fiducials": JobType(prepare=prepare_fiducials, run=run_fiducials),
    "register3d": JobType(prepare=prepare_register3d, run=run_register3d),
}

__all__ = ["JOB_TYPES", "JobType", "apply_transform", "loaded_models"]
