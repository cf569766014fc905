"""``clem-bridge batch``: manifests (bad ones and bad rows), real runs on a Dask LocalCluster and on a
scheduler + 2 workers started here, resume after a finished and after a killed run, the report in Chromium."""
import csv
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clem_bridge import transforms as T
from clem_bridge.io import read_image
from clem_bridge.synthetic import make_pair, save_pair
from clem_bridge.workflows.batch import (OneThreadPerTask, dask_client, pairs_from_glob, read_manifest,
                                         run_batch)

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
CLI = [sys.executable, "-c", "from clem_bridge.cli import main; main()"]
SIZE = (64, 64)
ZARR_OUT = "ome-zarr" if importlib.util.find_spec("bioio_ome_zarr") else None     # the optional formats extra


def cli(*args, timeout=300):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Three 64² phantom pairs ``p0..p2_em.tif`` / ``_lm.tif`` and their true matrices (phantom seeds that
    the fast preset registers at this tiny size)."""
    d = tmp_path_factory.mktemp("pairs")
    truth = {}
    for i, seed in enumerate((3, 5, 4)):
        pair = make_pair(SIZE, seed=seed)
        save_pair(pair, d, prefix=f"p{i}")
        truth[f"p{i}"] = pair.fixed_to_moving
    return d, truth


def write_manifest(path: Path, rows: list[dict]) -> Path:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


def matrices(out: Path, names) -> dict:
    return {n: np.array(json.loads((out / n / "transform.json").read_text())["fixed_to_moving"]) for n in names}


# --- manifests ----------------------------------------------------------------------

@pytest.mark.parametrize("text, says", [
    ("", "is empty"),
    ("a,b\n1,2\n", "no 'em' and 'lm' columns"),
    ("em,lm\n", "lists no pairs"),
    ('em,lm\n"x.tif,y.tif\n', "cannot parse"),
    ("em,lm,em\nx,y,z\n", "repeated column"),
])
def test_unparseable_manifest_is_error_exit_2(tmp_path, text, says):
    """In process (a subprocess per case costs seconds of imports; test_pair_glob runs the real command)."""
    from typer.testing import CliRunner

    from clem_bridge.cli import app
    m = tmp_path / "m.csv"
    m.write_text(text)
    r = CliRunner().invoke(app, ["batch", str(m), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2, r.stderr
    assert r.stderr.startswith("error: ") and says in r.stderr and "Traceback" not in r.stderr
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_bad_rows_say_why_and_the_batch_reports_them(pairs, tmp_path):
    d, _ = pairs
    m = write_manifest(tmp_path / "m.csv", [
        {"em": d / "p0_em.tif", "lm": d / "missing.tif", "name": "a", "preset": "", "colour": ""},
        {"em": d / "p0_em.tif", "lm": d / "p0_lm.tif", "name": "b", "preset": "slow", "colour": ""},
        {"em": d / "p0_em.tif", "lm": d / "p0_lm.tif", "name": "b", "preset": "", "colour": ""},
        {"em": d / "p0_em.tif", "lm": d / "p0_lm.tif", "name": "../up", "preset": "", "colour": ""},
    ])
    got = {i: p.error for i, p in enumerate(read_manifest(m))}
    assert all("unknown column(s) colour" in e for e in got.values())
    assert "LM file not found" in got[0] and "preset 'slow': must be one of fast, thesis" in got[1]
    assert "not a usable folder name" in got[3]

    ok_row = {"em": "p0_em.tif", "lm": "p0_lm.tif", "method": "correlate", "psr": "2", "seed": "x"}
    (pair,) = read_manifest(write_manifest(d / "m_method.csv", [ok_row]))
    assert "psr does not apply to method correlate" in pair.error and "seed does not apply" in pair.error
    assert pair.name == "p0_em" and pair.em == d / "p0_em.tif"          # relative to the manifest's folder

    out = tmp_path / "out"
    r = cli("batch", m, "--out", out)                   # nothing runnable: rows only, no cluster
    assert r.returncode == 3, r.stderr
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [x["status"] for x in rows] == ["error"] * 4
    assert "LM file not found" in rows[0]["error"] and "another pair already writes" in rows[2]["error"]
    assert (out / "report.html").is_file()


def test_pair_glob(pairs, tmp_path):
    d, _ = pairs
    for i in range(2):
        shutil.copy(d / f"p{i}_em.tif", tmp_path / f"EM_{i}.tif")
    shutil.copy(d / "p0_lm.tif", tmp_path / "LM_0.tif")
    shutil.copy(d / "p2_lm.tif", tmp_path / "LM_7.tif")
    got = {p.name: p for p in pairs_from_glob(tmp_path, "EM_*.tif:LM_*.tif")}
    assert got["EM_0"].lm == tmp_path / "LM_0.tif" and got["EM_0"].error is None
    assert "no LM file matches" in got["EM_1"].error and "no EM file matches" in got["7"].error
    r = cli("batch", tmp_path, "--pair-glob", "EM_.tif:LM_*.tif", "--out", tmp_path / "out")
    assert r.returncode == 2 and "error: --pair-glob must be" in r.stderr


# --- real runs ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_run(pairs, tmp_path_factory):
    """p0, p1 (and a bad row) on a LocalCluster of 2 workers, with OME-Zarr output when the formats extra is here."""
    d, _ = pairs
    m = write_manifest(d / "two.csv", [{"em": "p0_em.tif", "lm": "p0_lm.tif", "name": "", "seed": "0"},
                                       {"em": "p1_em.tif", "lm": "p1_lm.tif", "name": "one", "seed": "1"},
                                       {"em": "p2_em.tif", "lm": "nope.tif", "name": "bad", "seed": ""}])
    out = tmp_path_factory.mktemp("local") / "out"
    records = run_batch(read_manifest(m, {"device": "cpu"}), out, workers=2, output_format=ZARR_OUT or "tiff",
                        progress=False)
    return m, out, records


@pytest.mark.slow
def test_local_cluster_run(pairs, local_run):
    _, truth = pairs
    m, out, records = local_run
    assert [r["status"] for r in records] == ["ok", "ok", "error"] and "LM file not found" in records[2]["error"]
    got = matrices(out, ["p0_em", "one"])
    # 64² phantoms: the fast preset lands within ~2 LM px; a swapped pair or wrong channel is tens of px off
    assert T.tre(got["p0_em"], truth["p0"], SIZE) < 3.0 and T.tre(got["one"], truth["p1"], SIZE) < 3.0
    assert len({r["worker"] for r in records[:2]}) == 2                       # both workers took a pair
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [x["name"] for x in rows] == ["p0_em", "one", "bad"] and float(rows[0]["metric_ncc"]) != 0
    tif = read_image(out / "one" / "lm_warped.tif")
    assert tif.pixel_size.unit == "um"
    if ZARR_OUT:
        warped = read_image(out / "one" / "lm_warped.ome.zarr")              # NGFF, EM calibration
        np.testing.assert_array_equal(warped.data, tif.data)
        assert warped.pixel_size == tif.pixel_size
    assert not (out / ".partial").exists() or not any((out / ".partial").iterdir())


def _worker_state() -> dict:
    import cv2
    import torch
    return {"ppid": os.getppid(), "torch_threads": torch.get_num_threads(), "cv2_threads": cv2.getNumThreads(),
            "preloaded": [m for m in ("torch", "clem_bridge.register") if m in sys.modules]}


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_local_workers_fork_from_a_single_threaded_preloaded_server():
    """Local workers are forked from one server that imported torch and the register workflow (not spawned by
    this process, each importing them); that server never started a thread, so forking it is safe; each worker
    runs torch and OpenCV on one thread."""
    with dask_client(2, None, {"register"}) as client:
        client.register_plugin(OneThreadPerTask())
        states = list(client.run(_worker_state).values())
        server = states[0]["ppid"]
        threads = [ln.split()[1] for ln in Path(f"/proc/{server}/status").read_text().splitlines()
                   if ln.startswith("Threads:")]
    assert len(states) == 2 and {s["ppid"] for s in states} == {server} and server != os.getpid()
    assert threads == ["1"]
    assert all(s["preloaded"] == ["torch", "clem_bridge.register"] for s in states)
    assert all(s["torch_threads"] == 1 and s["cv2_threads"] == 1 for s in states)


@pytest.mark.slow
def test_resume_skips_finished_pairs(local_run):
    m, out, first = local_run
    stamps = {n: (out / n / "pair.json").stat().st_mtime_ns for n in ("p0_em", "one")}
    r = cli("batch", m, "--out", out, "--device", "cpu", "--format", ZARR_OUT or "tiff")
    assert r.returncode == 3                                                 # the bad row is still bad
    assert r.stdout.count("(done earlier)") == 2
    assert {n: (out / n / "pair.json").stat().st_mtime_ns for n in stamps} == stamps
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [x["resumed"] for x in rows] == ["True", "True", "False"]
    assert [x["run_id"] for x in rows[:2]] == [f["run_id"] for f in first[:2]]


KILL_FIRST_LOST_WORKER = """
import os, signal
from distributed.diagnostics.plugin import SchedulerPlugin


class KillFirstLostWorker(SchedulerPlugin):
    \"\"\"SIGKILL the worker that the first pair named lost* is sent to (once), and note its pid.\"\"\"
    def __init__(self, scheduler):
        self.scheduler, self.done = scheduler, False

    def transition(self, key, start, finish, *args, **kwargs):
        if not self.done and finish == "processing" and str(key).startswith("clem-pair-lost"):
            self.done = True
            ws = self.scheduler.tasks[key].processing_on
            open(MARK, "w").write(str(ws.pid))
            os.kill(ws.pid, signal.SIGKILL)


def dask_setup(scheduler):
    scheduler.add_plugin(KillFirstLostWorker(scheduler))
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1, the pair modules preloaded as in the
    README, shared by the tests below (one start-up of three processes that import torch).  The scheduler
    SIGKILLs the worker that gets the first pair named ``lost*``, once; without a nanny it stays gone, so
    test_real_cluster_gives_the_local_results runs first.  Yields ``(scheduler file, file with the killed pid)``."""
    folder = tmp_path_factory.mktemp("cluster")
    sched_file, mark, preload = folder / "scheduler.json", folder / "killed_pid", folder / "kill_first_lost_worker.py"
    preload.write_text(KILL_FIRST_LOST_WORKER.replace("MARK", repr(str(mark))))
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--no-dashboard", "--scheduler-file", sched_file, "--preload", preload],
                              env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        procs += [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                                    sched_file, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1",
                                    "--no-nanny", "--preload", "clem_bridge.workflows.batch"],
                                   env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                  for _ in range(2)]
        from distributed import Client
        with Client(scheduler_file=str(sched_file), timeout="120s") as c:   # waits for the file and the scheduler
            c.wait_for_workers(2, timeout=120)
        yield str(sched_file), mark
    finally:
        # workers first, then the scheduler: a worker whose scheduler is gone can take 30 s to give up on it
        for p in [*procs[1:], *procs[:1]]:
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:        # a worker busy in a task may ignore SIGTERM: stop it hard
                p.kill()
                p.wait(timeout=30)


@pytest.mark.slow
def test_real_cluster_gives_the_local_results(local_run, cluster, tmp_path):
    """A scheduler and two workers as separate processes on 127.0.0.1, reached through a scheduler file; the
    workers are spawned (not forked) and import the pair modules at start-up through the documented preload."""
    m, local_out, _ = local_run
    out = tmp_path / "out"
    from distributed import Client
    with Client(scheduler_file=cluster[0]) as c:
        preloaded = c.run(lambda: "clem_bridge.workflows.register" in sys.modules)
    assert list(preloaded.values()) == [True, True]
    records = run_batch(read_manifest(m, {"device": "cpu"}), out, scheduler=cluster[0], progress=False)
    assert [r["status"] for r in records] == ["ok", "ok", "error"]
    assert len({r["worker"] for r in records[:2]}) == 2
    names = ["p0_em", "one"]
    for n, mat in matrices(out, names).items():
        np.testing.assert_array_equal(mat, matrices(local_out, names)[n])


@pytest.mark.slow
def test_lost_worker_pair_is_rerun_on_another_worker(pairs, cluster, tmp_path):
    """The worker that got the first pair is SIGKILLed by the scheduler: the pair is rerun, not lost."""
    d, _ = pairs
    m = write_manifest(tmp_path / "two.csv", [{"em": d / f"p{i}_em.tif", "lm": d / f"p{i}_lm.tif", "name": f"lost{i}"}
                                              for i in (0, 1)])
    records = run_batch(read_manifest(m, {"device": "cpu"}), tmp_path / "out", scheduler=cluster[0], progress=False)
    killed = cluster[1].read_text()
    assert [r["status"] in ("ok", "uncertain") and not r["error"] for r in records] == [True, True]
    assert all(not r["worker"].endswith(f":{killed}") for r in records)       # both ran on the survivor


@pytest.mark.slow
def test_killed_batch_completes_on_rerun_without_recomputing(pairs, tmp_path):
    d, _ = pairs
    m = write_manifest(tmp_path / "three.csv", [{"em": d / f"p{i}_em.tif", "lm": d / f"p{i}_lm.tif"}
                                                for i in range(3)])
    out = tmp_path / "out"
    first = subprocess.Popen([*CLI, "batch", str(m), "--out", str(out), "--workers", "1", "--device", "cpu"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV,
                             start_new_session=True)
    done_first = []
    for line in first.stdout:                     # blocks until the first pair is reported finished
        if line.split()[0] in ("ok", "uncertain", "failed"):       # a pair finished (not a bad row)
            done_first.append(line.split()[1])
            break
    os.killpg(first.pid, signal.SIGKILL)          # the batch, its cluster and its worker, mid-way
    first.wait(timeout=60)
    assert done_first and not (out / "summary.csv").exists()
    run_a = json.loads((out / done_first[0] / "pair.json").read_text())["run_id"]

    # the rerun in process (a command's second start would import torch and start a preloaded forkserver again)
    from typer.testing import CliRunner

    from clem_bridge.cli import app
    r = CliRunner().invoke(app, ["batch", str(m), "--out", str(out), "--workers", "1", "--device", "cpu"])
    assert r.exit_code == 0, r.stderr[-2000:]
    rows = {x["name"]: x for x in csv.DictReader(open(out / "summary.csv"))}
    assert set(rows) == {"p0_em", "p1_em", "p2_em"}
    assert all(x["status"] in ("ok", "uncertain") and not x["error"] for x in rows.values())
    assert rows[done_first[0]]["resumed"] == "True" and rows[done_first[0]]["run_id"] == run_a
    recomputed = [n for n, x in rows.items() if x["resumed"] == "False"]
    assert recomputed and all(rows[n]["run_id"] != run_a for n in recomputed)
    assert r.stdout.count("(done earlier)") == 3 - len(recomputed)


@pytest.mark.slow
def test_report_opens_in_headless_chromium_with_every_thumbnail(local_run, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    _, out, _ = local_run
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
             "--disable-extensions", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
             "--allow-file-access-from-files", "--virtual-time-budget=10000"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", (out / "report.html").as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    assert '<body data-thumbnails-shown="2">' in dom                 # both overlays decoded by the browser
    assert dom.count('<img class="thumb"') == 2 and "LM file not found" in dom   # (a broken one is replaced)
