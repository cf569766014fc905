"""Run our Fiji scripts headless under a real JVM, the way Fiji runs them.

``run_script(app, "Register_EM-LM.py", 'em_file="/a.tif",reg_channel=0')`` parses the script's
``#@`` lines (clem_bridge.fiji), binds the values of Fiji's ``key=value,...`` argument string (or
the ``value=`` defaults), blanks the ``#@`` lines and runs the unchanged rest with Jython or Groovy
(``tests/fiji_runners``) on ImageJ 1 — with ``imagej.dir`` = the (fake) Fiji.app, so the shared
library is imported from ``<app>/jars/Lib`` as in Fiji.  The JVM's command line ends like Fiji's
headless one (``--headless --run <script> <args>``), so the scripts use exit codes; ``host=True``
leaves that out, as when a host (PyImageJ, a running Fiji) runs the script: the runner then prints
``HOST_STILL_RUNNING`` after the script, which only happens if the script did not end the JVM.
:func:`run_scripts` runs several Groovy commands that succeed in one JVM, as a host runs them.

Start-up costs are paid once per test run: the first :func:`make_fiji_app` installs a template
Fiji.app and runs one JVM in it that compiles the Jython library (``$py.class`` next to the modules, as
Fiji's Jython keeps them) and the Groovy helpers (``.class`` next to ``ClemBridgeFiji.groovy``, which the
Groovy commands' GroovyClassLoader then loads instead of compiling the same source again), and saves the
classes it loaded (Jython, Groovy, ImageJ) as a class-data-sharing archive; apps are copies of the template
(compiled files included) and every JVM maps the archive.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from clem_bridge import fiji, fiji_install

JARS = {k: Path(v) for k, v in fiji.JARS.items()}
CLASSPATH = f"{JARS['jython']}:{JARS['groovy']}:{JARS['ij']}"  # Fiji has all three; Jython uses Groovy's warp
RUNNERS = Path(__file__).parent / "fiji_runners"
FAST_START = list(fiji.FAST_START)  # the library's start-up flags (C1 only, serial GC): half the CPU time
WARM_UP = """
import sys
sys.dont_write_bytecode = False
sys.path.insert(0, %(lib)r)
import clem_bridge_fiji, clem_bridge_transforms
from groovy.lang import GroovyClassLoader
from java.io import File
from org.codehaus.groovy.control import CompilationUnit, CompilerConfiguration
from ij import IJ
from ij.process import FloatProcessor
clem_bridge_transforms.warp_processor(FloatProcessor(4, 4), [[1, 0, 0], [0, 1, 0], [0, 0, 1]], 4, 4)
conf = CompilerConfiguration()
conf.setTargetDirectory(%(lib)r)
unit = CompilationUnit(conf)
for name in ("ClemBridgeFiji.groovy", "ClemWarp.groovy"):
    unit.addSource(File(%(lib)r, name))
unit.compile()
loader = GroovyClassLoader(IJ.getClassLoader())
loader.addClasspath(%(lib)r)
loader.loadClass("ClemBridgeFiji")
"""
_session: dict[str, Path] = {}


def jvm_missing() -> str | None:
    """Why JVM tests cannot run here (None when they can)."""
    if shutil.which("java") is None:
        return "java is not installed (the CI installs Debian's imagej, jython and groovy)"
    for name, p in JARS.items():
        if not p.is_file():
            return f"{p} is missing (Debian package {'imagej' if name == 'ij' else name})"
    return None


def make_fiji_app(root: Path) -> Path:
    """A minimal Fiji.app (ImageJ jar in jars/, a launcher name) with clem-bridge installed into it."""
    app = root / "Fiji.app"
    shutil.copytree(_template_app(), app, symlinks=True)  # keeps the modules' times, so their $py.class stay valid
    return app


def fiji_app_and_server(root: Path, request) -> tuple[Path, str]:
    """``make_fiji_app(root)`` and the URL of conftest's shared server (``server_url``), the first build of the
    template Fiji.app running while the server starts: ``(app, url)``."""
    with ThreadPoolExecutor(1) as pool:
        app = pool.submit(make_fiji_app, root)
        url = request.getfixturevalue("server_url")
        return app.result(), url


def _template_app() -> Path:
    """The installed Fiji.app with the Jython library and Groovy helpers compiled, and the JVMs' class archive:
    built once in ``$CLEM_TEST_FIJI_CACHE`` (conftest: one folder for all xdist workers of a run), else in a
    temporary folder of this process."""
    if "app" not in _session:
        import fcntl
        shared = os.environ.get("CLEM_TEST_FIJI_CACHE")
        work = Path(shared) if shared else Path(tempfile.mkdtemp(prefix="clem-bridge-fiji-"))
        if not shared:
            atexit.register(shutil.rmtree, work, True)
        work.mkdir(parents=True, exist_ok=True)
        app, archive = work / "Fiji.app", work / "jvm-classes.jsa"
        with open(work / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)           # another worker may be building it
            if not (work / "ready").is_file():
                _build_template(app, archive)
                (work / "ready").write_text("")
        if archive.is_file():
            _session["archive"] = archive
        _session["app"] = app
    return _session["app"]


def _build_template(app: Path, archive: Path) -> None:
    shutil.rmtree(app, ignore_errors=True)
    (app / "jars").mkdir(parents=True)
    (app / "jars" / "ij-1.52i.jar").symlink_to(JARS["ij"])
    (app / "ImageJ-linux64").write_text("#!/bin/sh\n")
    fiji_install.install(app)
    code = WARM_UP % {"lib": str(app / "jars" / "Lib")}
    r = subprocess.run(["java", *FAST_START, f"-XX:ArchiveClassesAtExit={archive}", "-Djava.awt.headless=true",
                        "-cp", CLASSPATH, "org.python.util.jython", "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def _java(*args: str) -> list[str]:
    """``java`` with the start-up flags (and the class archive once there is one)."""
    shared = [f"-XX:SharedArchiveFile={_session['archive']}"] if "archive" in _session else []
    return ["java", *FAST_START, *shared, "-Djava.awt.headless=true", *args]


def _bind(app: Path, name: str | Path, args: str, work: Path) -> tuple[Path, Path]:
    """The script (a menu command of ``app`` by file name, or any script by path) without its ``#@`` lines
    and its bound inputs, written into ``work``: ``(bindings.json, script)``."""
    script = name if isinstance(name, Path) else app / "scripts" / "Plugins" / "CLEM" / name
    text = script.read_text()
    bound = fiji.bind_inputs(fiji.script_parameters(text), fiji.parse_run_args(args))
    work.mkdir(parents=True, exist_ok=True)
    (work / "bindings.json").write_text(json.dumps({k: [t, v] for k, (t, v) in bound.items()}))
    (work / script.name).write_text(fiji.strip_parameters(text))
    return work / "bindings.json", work / script.name


def _groovy_or_jython(app: Path, name: str) -> list[str]:
    main = (["org.python.util.jython", str(RUNNERS / "run_jython.py")] if name.endswith(".py") else
            ["groovy.ui.GroovyMain", str(RUNNERS / "run_groovy.groovy")])
    return _java(f"-Dimagej.dir={app}", "-Xss8m", "-cp", CLASSPATH, *main)


def run_script(app: Path, name: str | Path, args: str = "", *, timeout: float = 600, cwd: Path | None = None,
               host: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a menu command of ``app`` by file name (or any script by path) headless under a real JVM."""
    bindings, script = _bind(app, name, args, Path(cwd or app.parent) / f".run-{os.getpid()}-{Path(name).name}")
    cmd = _groovy_or_jython(app, script.name)
    cmd += [str(bindings)] + ([] if host else ["--headless", "--run"]) + [str(script), args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def run_scripts(app: Path, runs: list[tuple[str, str]], *, timeout: float = 600) -> list[subprocess.CompletedProcess]:
    """Groovy menu commands ``[(name, args), ...]`` one after another in ONE JVM, as a running Fiji runs them
    (so without exit codes: for commands that succeed; a JVM start each costs about a second): the result
    of each, with its own stdout and stderr and the JVM's exit code."""
    assert all(name.endswith(".groovy") for name, _ in runs)
    work = Path(tempfile.mkdtemp(prefix=".runs-", dir=app.parent))
    pairs = [[str(p) for p in _bind(app, name, args, work / str(i))] for i, (name, args) in enumerate(runs)]
    (work / "runs.json").write_text(json.dumps(pairs))
    cmd = _groovy_or_jython(app, runs[0][0]) + ["--each", str(work / "runs.json")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    outs, errs = (text.split("END_OF_SCRIPT\n") for text in (r.stdout, r.stderr))
    assert r.returncode == 0 and len(outs) == len(errs) == len(runs) + 1, r.stdout + r.stderr
    return [subprocess.CompletedProcess(cmd, r.returncode, out, err) for out, err in zip(outs, errs)]


def run_jython(app: Path, code: str, *, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run Jython ``code`` with ImageJ 1 and ``<app>/jars/Lib`` importable (library-level tests)."""
    prelude = f"import sys\nsys.dont_write_bytecode = False\nsys.path.insert(0, {str(app / 'jars' / 'Lib')!r})\n"
    return subprocess.run(_java("-cp", CLASSPATH, "org.python.util.jython", "-c", prelude + code),
                          capture_output=True, text=True, timeout=timeout)


def run_jython_each(app: Path, programs: list[str], *, timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """:func:`run_jython` of several programs one after another in ONE JVM, each in a namespace of its own:
    the result of each, with its own stdout and stderr and the JVM's exit code."""
    code = f"""
from java.lang import System
for code in {programs!r}:
    exec(compile(code, "<program>", "exec"), {{"__name__": "__main__"}})
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
        stream.write("END_OF_SCRIPT\\n")
        stream.flush()
    System.err.flush()
"""
    r = run_jython(app, code, timeout=timeout)
    outs, errs = (text.split("END_OF_SCRIPT\n") for text in (r.stdout, r.stderr))
    assert r.returncode == 0 and len(outs) == len(errs) == len(programs) + 1, r.stdout + r.stderr
    return [subprocess.CompletedProcess(r.args, r.returncode, out, err) for out, err in zip(outs, errs)]
