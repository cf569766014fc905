"""Many EM/LM pairs on Dask distributed (``clem-bridge batch``): one output folder per pair, ``summary.csv``
and ``report.html``.

**Pairs.** A CSV manifest with a header row: ``em``, ``lm`` (paths, relative to the manifest's folder),
optional ``name`` (the output folder; default the EM file's stem), ``method`` (register | correlate |
fiducials), ``extra_channels`` (LM channel files on the LM grid, separated by ``;``), ``reg_channel``
(index or channel name), ``channels`` (LM channels to write, ``0;2``) and per-row parameters: ``preset``,
``seed``, ``prepare``, ``psr`` (register), ``model`` (correlate), ``transform`` (correlate: similarity |
affine; fiducials: rigid | similarity | affine), ``bead_nm`` (fiducials), ``device``. An empty cell takes
the command-line default. Or a folder with a pairing rule ``'EM_*.tif:LM_*.czi'``: the part matched by
``*`` pairs the files. A row that can't run (missing file, unknown column, bad value) gets an ``error``
row in the summary saying why; the others run.

**Execution.** Each pair is one Dask task (:func:`run_pair`) that calls the pair's files-in/files-out
workflow. By default a ``LocalCluster`` of ``workers`` processes with one thread each, forked (Dask's
``multiprocessing-method`` ``forkserver``) from a server process that has already imported what a pair needs
(:data:`WORKER_MODULES`, with ``OMP_NUM_THREADS=MKL_NUM_THREADS=OPENBLAS_NUM_THREADS=1`` set before torch and
numpy load): the imports (torch, OpenCV, Dask, the method's workflow: seconds a worker) are paid
once per batch, not by each worker, and forked workers exit without the interpreter's slow teardown of torch
(~4 s off each batch on the shared 2-core machine). The server only imports: it runs no torch or OpenCV computation, so it
has no thread pool that a fork could break (one thread, checked in the tests). Where the platform has no
forkserver, workers are spawned as before. :class:`OneThreadPerTask` pins torch and OpenCV to one thread on
every worker, so a pair uses one core.
A pair that raises is recorded (``status=error``) and the batch goes on; the tasks of a worker that dies
are rescheduled on the others (``distributed.scheduler.allowed-failures``, 3 by default, after which the
pair's row says the worker was lost). Existing clusters, with the output folder and the input files on a
filesystem that every worker sees::

    dask scheduler --host 0.0.0.0 --port 8786                      # one machine
    OMP_NUM_THREADS=1 dask worker tcp://HOST:8786 --nworkers 8 --nthreads 1 \
        --preload clem_bridge.workflows.batch                   # each worker machine (imports before the 1st pair)
    clem-bridge batch pairs.csv --out results/ --scheduler tcp://HOST:8786

On SLURM with ``dask-jobqueue`` (``pip install dask-jobqueue``), from a login node::

    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(cores=8, processes=8, memory="64GB", walltime="04:00:00",
                           job_script_prologue=["export OMP_NUM_THREADS=1"], scheduler_options={"port": 8786},
                           worker_extra_args=["--preload", "clem_bridge.workflows.batch"])
    cluster.scale(jobs=4)          # 32 workers; then: clem-bridge batch ... --scheduler tcp://LOGIN:8786
                                   # (or a scheduler file: --scheduler /shared/scheduler.json)

**Resume.** A pair is computed in ``OUT/.partial/`` and moved into ``OUT/NAME`` by one rename after all its
files and its record ``pair.json`` are written; a folder with ``pair.json`` is complete and skipped by a
rerun (its row is read back, ``resumed=True``), so an interrupted batch continues where it stopped and no
finished pair is computed twice. Errors are not kept: those pairs run again. One batch at a time per
output folder (a run clears ``.partial/`` when it starts).
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import multiprocessing
import os
import re
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing import forkserver
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

import dask
from distributed import WorkerPlugin

from .. import io
from ..errors import InputError
from .outputs import OME_ZARR, WARPED_TIFF

RECORD_JSON = "pair.json"
SUMMARY_CSV = "summary.csv"
REPORT_HTML = "report.html"
PARTIAL = ".partial"
METHODS = ("register", "correlate", "fiducials")
FORMATS = ("tiff", "ome-zarr")


def _int(v: str) -> int:
    return int(v)


def _float_pos(v: str) -> float:
    x = float(v)
    if not x > 0:
        raise ValueError("must be a positive number")
    return x


def _bool(v: str) -> bool:
    t = v.strip().lower()
    if t in ("1", "true", "yes", "y"):
        return True
    if t in ("0", "false", "no", "n"):
        return False
    raise ValueError("must be true or false")


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(v: str) -> str:
        if v not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return v
    return parse


def _channel(v: str) -> Union[int, str]:
    return int(v) if re.fullmatch(r"-?\d+", v) else v


def _int_list(v: str) -> list[int]:
    return [int(t) for t in re.split(r"[;, ]+", v.strip()) if t]


# per-row parameters: column -> (parser, methods it applies to)
PARAMS: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "reg_channel": (_channel, METHODS), "channels": (_int_list, ("register", "correlate")),
    "device": (str, ("register", "correlate")), "preset": (_choice("fast", "thesis"), ("register",)),
    "seed": (_int, ("register",)), "prepare": (_bool, ("register",)), "psr": (_float_pos, ("register",)),
    "model": (str, ("correlate",)), "transform": (_choice("rigid", "similarity", "affine"), ("correlate", "fiducials")),
    "bead_nm": (_float_pos, ("fiducials",)),
}
COLUMNS = ("name", "em", "lm", "method", "extra_channels", *PARAMS)


@dataclass
class Pair:
    """One EM/LM pair to run: its output folder ``name``, files, ``method`` and parameters (``error``: why it can't)."""
    name: str
    em: Optional[Path]
    lm: Optional[Path]
    method: str = "register"
    extra_channels: list[Path] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    error: Optional[str] = None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tif", ".ome.tiff", ".ome.zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _make_pair(row: dict[str, str], base: Path, defaults: dict, unknown: list[str]) -> Pair:
    """A :class:`Pair` from one manifest row (cells stripped; empty = default); problems go into ``error``."""
    def path(v: str) -> Path:
        p = Path(v).expanduser()
        return (p if p.is_absolute() else base / p).resolve()

    em = path(row["em"]) if row.get("em") else None
    lm = path(row["lm"]) if row.get("lm") else None
    name = row.get("name") or (_stem(em) if em else "")
    pair = Pair(name=name, em=em, lm=lm, method=row.get("method") or defaults.get("method", "register"))
    problems = []
    if unknown:
        problems.append(f"unknown column(s) {', '.join(unknown)} (known: {', '.join(COLUMNS)})")
    if em is None or lm is None:
        problems.append("the em and lm cells must both name a file")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name or ""):
        problems.append(f"name {name!r} is not a usable folder name (letters, digits, . _ + -)")
    if pair.method not in METHODS:
        problems.append(f"method {pair.method!r} must be one of {', '.join(METHODS)}")
    pair.extra_channels = [path(t) for t in (row.get("extra_channels") or "").split(";") if t.strip()]
    for key, (parse, methods) in PARAMS.items():
        given = row.get(key)
        value = given if given else defaults.get(key)
        if value in (None, ""):
            continue
        if pair.method not in methods:
            if given and pair.method in METHODS:
                problems.append(f"{key} does not apply to method {pair.method}")
            continue
        try:
            pair.params[key] = parse(str(value)) if isinstance(value, str) else value
        except ValueError as e:
            problems.append(f"{key} {value!r}: {e}")
    for label, p in (("EM", em), ("LM", lm), *(("extra channel", p) for p in pair.extra_channels)):
        if p is not None and not p.exists():
            problems.append(f"{label} file not found: {p}")
    pair.error = "; ".join(problems) or None
    return pair


def _dedupe(pairs: list[Pair]) -> list[Pair]:
    seen: set[str] = set()
    for p in pairs:
        if p.name in seen:
            clash = f"another pair already writes to the folder {p.name!r}; give each row its own name"
            p.error = f"{p.error}; {clash}" if p.error else clash
        seen.add(p.name)
    return pairs


def read_manifest(path, defaults: Optional[dict] = None) -> list[Pair]:
    """Pairs of a CSV manifest; :class:`InputError` when the file can't be parsed as one at all."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"manifest not found: {p}")
    try:
        text = p.read_text(encoding="utf-8-sig")
        rows = list(csv.reader(text.splitlines(), strict=True))
    except (UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"cannot parse the manifest {p.name} as CSV ({e})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise InputError(f"the manifest {p.name} is empty; it needs a header row (em,lm,...) and one row a pair")
    header = [h.strip().lower() for h in rows[0]]
    if "em" not in header or "lm" not in header:
        raise InputError(f"the manifest {p.name} has no 'em' and 'lm' columns in its header row "
                         f"(found: {', '.join(header) or 'nothing'})")
    if len(set(header)) != len(header) or "" in header:
        raise InputError(f"the manifest {p.name} has empty or repeated column names in its header row")
    if len(rows) == 1:
        raise InputError(f"the manifest {p.name} lists no pairs (only a header row)")
    unknown = [h for h in header if h not in COLUMNS]
    pairs = []
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            pairs.append(Pair(name=f"row{i}", em=None, lm=None,
                              error=f"manifest line {i} has {len(r)} cells, the header {len(header)}"))
            continue
        pairs.append(_make_pair({h: c.strip() for h, c in zip(header, r)}, p.parent.resolve(), defaults or {},
                                unknown))
    return _dedupe(pairs)


def pairs_from_glob(folder, pattern: str, defaults: Optional[dict] = None) -> list[Pair]:
    """Pairs from ``folder`` by ``'EM_*.tif:LM_*.czi'``: files whose ``*`` parts are equal form a pair."""
    d = Path(folder)
    parts = pattern.split(":")
    if len(parts) != 2 or any(s.count("*") != 1 or "/" in s for s in parts):
        raise InputError(f"--pair-glob must be 'EM_PATTERN:LM_PATTERN' with one * in each, e.g. "
                         f"'EM_*.tif:LM_*.czi' (got {pattern!r})")

    def keyed(glob: str) -> dict[str, Path]:
        head, tail = glob.split("*")
        return {f.name[len(head): len(f.name) - len(tail)]: f for f in sorted(d.glob(glob))}

    ems, lms = keyed(parts[0]), keyed(parts[1])
    if not ems:
        raise InputError(f"no file in {d} matches {parts[0]!r}")
    pairs = []
    for key in sorted(set(ems) | set(lms)):
        row = {"em": str(ems[key]) if key in ems else "", "lm": str(lms[key]) if key in lms else "", "name": key
               if key not in ems else ""}
        pair = _make_pair(row, d.resolve(), defaults or {}, [])
        if key not in lms:
            pair.error = f"no LM file matches {parts[1]!r} for {ems[key].name}"
        elif key not in ems:
            pair.error = f"no EM file matches {parts[0]!r} for {lms[key].name}"
        pairs.append(pair)
    return _dedupe(pairs)


# --- one pair (runs on a Dask worker) ------------------------------------------------------

def _channel_index(pair: Pair, value) -> Optional[int]:
    """A channel given by index or by the LM file's channel name → index."""
    if value is None or isinstance(value, int):
        return value
    names = io.read_image(pair.lm).channel_names
    if not names:
        raise InputError(f"reg_channel {value!r} is a name but {pair.lm.name} has no channel names; give an index")
    if value not in names:
        raise InputError(f"reg_channel {value!r} is not a channel of {pair.lm.name} (channels: {', '.join(names)})")
    return names.index(value)


def _run_register(pair: Pair, out: Path):
    from .register import register_files

    kw = {k: pair.params[k] for k in ("channels", "device", "preset", "seed", "prepare", "psr") if k in pair.params}
    return register_files(pair.em, pair.lm, out, reg_channel=_channel_index(pair, pair.params.get("reg_channel")) or 0,
                          extra_channel_paths=pair.extra_channels, **kw)


def _run_correlate(pair: Pair, out: Path):
    from ..insilico.correlate import SearchParams
    from .correlate import correlate_files

    kw = {k: pair.params[k] for k in ("channels", "device", "model") if k in pair.params}
    if pair.params.get("transform") == "rigid":
        raise InputError("transform rigid is not available for correlate (similarity or affine)")
    return correlate_files(pair.em, pair.lm, out, extra_channel_paths=pair.extra_channels,
                           chromatin_channel_index=_channel_index(pair, pair.params.get("reg_channel")),
                           params=SearchParams(model=pair.params.get("transform", "similarity")), **kw)


def _run_fiducials(pair: Pair, out: Path):
    from .fiducials import fiducials_files

    if pair.extra_channels:
        raise InputError("method fiducials takes the LM channels of one file; drop extra_channels")
    kw = {"bead_nm": pair.params["bead_nm"]} if "bead_nm" in pair.params else {}
    return fiducials_files(pair.em, pair.lm, out, lm_channel=_channel_index(pair, pair.params.get("reg_channel")) or 0,
                           model=pair.params.get("transform"), **kw)


_RUNNERS = {"register": _run_register, "correlate": _run_correlate, "fiducials": _run_fiducials}


def is_complete(folder: Path) -> bool:
    """A pair folder is complete when its record was published with it (see :func:`run_pair`)."""
    return (folder / RECORD_JSON).is_file()


def base_record(pair: Pair) -> dict:
    """A pair's summary record before it runs (``status`` error when the pair can't run)."""
    return {"name": pair.name, "status": "error" if pair.error else "pending", "method": pair.method,
            "em": str(pair.em or ""), "lm": str(pair.lm or ""), "folder": "", "resumed": False, "warnings": [],
            "error": pair.error or "", "metrics": {}, "timings": {}, "wall_s": 0.0, "worker": "", "run_id": ""}


def load_record(folder: Path) -> dict:
    """The record of a complete pair folder, marked as done by an earlier run."""
    rec = json.loads((folder / RECORD_JSON).read_text())
    rec["resumed"] = True
    return rec


def _write_json_synced(path: Path, data: dict) -> None:
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())


def _warped_names(pair: Pair, reg) -> Optional[list[str]]:
    """The LM file's names of the warped channels (``write_ome_zarr`` keeps them only if they match the stack)."""
    names = io.read_image(pair.lm).channel_names
    picked = reg.params.get("channels")
    if names and picked is not None and max(picked, default=-1) < len(names):
        return [names[i] for i in picked]
    return names


def run_pair(pair: Pair, out_root, output_format: str = "tiff", run_id: str = "") -> dict:
    """Run one pair into ``out_root/.partial/`` and publish it as ``out_root/NAME`` by one rename; returns its
    record (also written as ``NAME/pair.json``).  Errors are returned in the record, never raised."""
    out_root = Path(out_root)
    final = out_root / pair.name
    if is_complete(final):
        return load_record(final)
    rec = base_record(pair)
    rec.update(run_id=run_id, worker=socket.gethostname() + f":{os.getpid()}")
    t0 = time.perf_counter()
    tmp = out_root / PARTIAL / f"{pair.name}.{uuid.uuid4().hex[:8]}"
    try:
        if pair.error:
            raise InputError(pair.error)
        reg = _RUNNERS[pair.method](pair, tmp)
        if output_format == "ome-zarr" and (tmp / WARPED_TIFF).is_file():
            warped = io.read_image(tmp / WARPED_TIFF)
            io.write_ome_zarr(tmp / OME_ZARR, warped.data, warped.pixel_size, _warped_names(pair, reg))
        rec.update(status=reg.outcome, warnings=list(reg.warnings), metrics=_finite(reg.metrics),
                   timings=_finite(reg.timings))
    except Exception as e:  # a pair's failure is its row, never the batch's
        shutil.rmtree(tmp, ignore_errors=True)
        msg = str(e) if isinstance(e, InputError) else f"{type(e).__name__}: {e}"
        rec.update(status="error", error=msg, wall_s=time.perf_counter() - t0)
        return rec
    rec.update(folder=pair.name, wall_s=time.perf_counter() - t0, files=sorted(f.name for f in tmp.iterdir()))
    _write_json_synced(tmp / RECORD_JSON, rec)
    if is_complete(final):                   # another copy of this task finished first (a worker was lost)
        shutil.rmtree(tmp)
        return load_record(final)
    if final.exists():                       # left over from an interrupted run (no record: incomplete)
        shutil.rmtree(final)
    os.replace(tmp, final)
    return rec


def _finite(d: dict) -> dict:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and v == v and abs(v) != float("inf")}


# --- the batch (runs in the client) ---------------------------------------------------------

# What a worker imports before its first pair: Dask, the batch task, OpenCV, torch, then the modules of each
# method in the batch (fiducials brings matplotlib for its figures).
# Only what the pairs import: anything more lengthens every batch's start (the forkserver imports before the
# first worker forks).  A name that a later version drops is skipped (the forkserver ignores ImportError).
WORKER_MODULES = ("distributed", "cv2", "torch", "clem_bridge.workflows.batch")
RUNNER_MODULES = {"register": ("clem_bridge.workflows.register", "clem_bridge.register"),
                  "correlate": ("clem_bridge.workflows.correlate",), "fiducials": ("clem_bridge.workflows.fiducials",)}
# one thread per library in a worker; read by OpenMP, MKL and OpenBLAS when they load, so set before the imports
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def worker_modules(methods: Iterable[str]) -> list[str]:
    """The modules a worker running pairs of ``methods`` imports before its first pair."""
    return [*WORKER_MODULES, *(name for m in sorted(set(methods)) for name in RUNNER_MODULES.get(m, ()))]


def start_forkserver(methods: Iterable[str]) -> bool:
    """Start this process's forkserver (if not yet running) with :func:`worker_modules` imported and
    :data:`WORKER_ENV` set, as Dask's nanny sets its ``pre-spawn-environ`` for spawned workers (in this process's
    environment too, as the nanny does).  Returns immediately: the server imports while the cluster starts; a
    worker fork waits for it.  False where the platform has no forkserver."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    spawn_env = dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {}
    os.environ.update({**{k: str(v) for k, v in spawn_env.items()}, **WORKER_ENV})
    # "__main__": the server imports the main script once (spawned workers each import it again)
    multiprocessing.get_context("forkserver").set_forkserver_preload(["__main__", *worker_modules(methods)])
    forkserver.ensure_running()
    return True


def dask_setup(worker) -> None:
    """Dask preload hook (``dask worker --preload clem_bridge.workflows.batch``): set :data:`WORKER_ENV` and import
    every method's modules when the worker starts rather than in its first pair."""
    import importlib

    os.environ.update(WORKER_ENV)              # before torch loads (Dask's nanny sets it too; --no-nanny does not)
    for name in worker_modules(METHODS):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


class OneThreadPerTask(WorkerPlugin):
    """Dask worker plugin: torch and OpenCV run one thread per task (``OMP_NUM_THREADS`` covers torch's
    intra-op pool only when set before torch starts; OpenCV keeps its own pool)."""
    name = "clem-bridge-one-thread-per-task"

    def setup(self, worker) -> None:
        import cv2
        import torch

        torch.set_num_threads(1)
        cv2.setNumThreads(1)


@contextlib.contextmanager
def dask_client(workers: int, scheduler: Optional[str] = None, methods: Iterable[str] = METHODS) -> Iterator:
    """A Dask client on an existing scheduler (address or scheduler file) or on a new ``LocalCluster`` of
    ``workers`` processes, one thread each, forked from the preloaded forkserver (:func:`start_forkserver`) for
    pairs of ``methods``; the local cluster is closed on exit."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = (Client(scheduler_file=scheduler, timeout="30s") if Path(scheduler).is_file()
                      else Client(scheduler, timeout="30s"))
        except (OSError, TimeoutError, ValueError) as e:
            raise InputError(f"cannot reach the Dask scheduler {scheduler} ({e})") from None
        with client:
            yield client
        return
    forked = start_forkserver(methods)
    # kept while the cluster lives: a nanny restarting a lost worker forks it from the same server
    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"} if forked else {}), \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address="127.0.0.1:0",           # any free port: batches may run side by side
                         env=WORKER_ENV, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client


def run_batch(pairs: list[Pair], out_dir, *, workers: int = 1, scheduler: Optional[str] = None,
              output_format: str = "tiff", on_done: Optional[Callable[[dict], None]] = None,
              progress: bool = True) -> list[dict]:
    """Run every pair not yet complete in ``out_dir`` on Dask; write ``summary.csv`` and ``report.html``.

    Returns one record per pair in ``pairs`` order; ``on_done`` is called with each record as it arrives
    (skipped and bad pairs first).  No cluster is started when nothing is left to compute."""
    from .report import write_report, write_summary

    if output_format not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)} (got {output_format!r})")
    if workers < 1:
        raise InputError(f"--workers must be at least 1 (got {workers})")
    out = io.output_dir(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / PARTIAL, ignore_errors=True)          # pieces of an interrupted run
    records: dict[int, dict] = {}                            # by position: names of bad rows may repeat
    todo = {}
    for i, p in enumerate(pairs):
        if not p.error and is_complete(out / p.name):
            records[i] = load_record(out / p.name)
        elif p.error:
            records[i] = base_record(p)
        else:
            todo[i] = p
            continue
        if on_done:
            on_done(records[i])
    try:
        if todo:
            _compute(todo, out, workers, scheduler, output_format, records, on_done, progress)
    finally:
        ordered = [records.get(i) or {**base_record(p), "status": "error", "error": "not run (interrupted)"}
                   for i, p in enumerate(pairs)]
        write_summary(out / SUMMARY_CSV, ordered)
        write_report(out / REPORT_HTML, ordered)
    return ordered


def _compute(todo: dict[int, Pair], out: Path, workers: int, scheduler: Optional[str], output_format: str,
             records: dict, on_done, progress: bool) -> None:
    from distributed import as_completed
    from tqdm import tqdm

    run_id = uuid.uuid4().hex[:12]
    with dask_client(min(workers, len(todo)), scheduler, {p.method for p in todo.values()}) as client:
        client.register_plugin(OneThreadPerTask())                   # also on workers that join later
        futures = {client.submit(run_pair, p, str(out), output_format, run_id, pure=False,
                                 key=f"clem-pair-{p.name}-{run_id}"): i for i, p in todo.items()}
        with tqdm(total=len(futures), unit="pair", disable=not progress, dynamic_ncols=True) as bar:
            for fut in as_completed(futures):
                i = futures[fut]
                pair = todo[i]
                try:
                    rec = fut.result()
                except Exception as e:  # KilledWorker after allowed-failures, a lost scheduler, ...
                    rec = {**base_record(pair), "status": "error", "run_id": run_id,
                           "error": f"the Dask worker running this pair was lost ({type(e).__name__}: {e})"}
                records[i] = rec
                bar.update(1)
                if on_done:
                    on_done(rec)
