"""Run our Fiji scripts headless under a real JVM, the way Fiji runs them.

``run_script(app, "Register_EM-LM.py", 'em_file="/a.tif",reg_channel=0')`` parses the script's
``#@`` lines (clem_bridge.fiji), binds the values of Fiji's ``key=value,...`` argument string (or
the ``value=`` defaults), blanks the ``#@`` lines and runs the unchanged rest with Jython or Groovy
(``tests/fiji_runners``) on ImageJ 1 — with ``imagej.dir`` = the (fake) Fiji.app, so the shared
library is imported from ``<app>/jars/Lib`` as in Fiji.  The JVM's command line ends like Fiji's
headless one (``--headless --run <script> <args>``), so the scripts use exit codes; ``host=True``
leaves that out, as when a host (PyImageJ, a running Fiji) runs the script: the runner then prints
``HOST_STILL_RUNNING`` after the script, which only happens if the script did not end the JVM.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from clem_bridge import fiji, fiji_install

JARS = {k: Path(v) for k, v in fiji.JARS.items()}
CLASSPATH = f"{JARS['jython']}:{JARS['groovy']}:{JARS['ij']}"  # Fiji has all three; Jython uses Groovy's warp
RUNNERS = Path(__file__).parent / "fiji_runners"
# Startup-only JVM flags (C1 compiler only, serial GC): a short script's JVM starts in half the CPU time.
FAST_START = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]


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
    (app / "jars").mkdir(parents=True)
    (app / "jars" / "ij-1.52i.jar").symlink_to(JARS["ij"])
    (app / "ImageJ-linux64").write_text("#!/bin/sh\n")
    fiji_install.install(app)
    return app


def run_script(app: Path, name: str | Path, args: str = "", *, timeout: float = 600, cwd: Path | None = None,
               host: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a menu command of ``app`` by file name (or any script by path) headless under a real JVM."""
    script = name if isinstance(name, Path) else app / "scripts" / "Plugins" / "CLEM" / name
    name = script.name
    text = script.read_text()
    bound = fiji.bind_inputs(fiji.script_parameters(text), fiji.parse_run_args(args))
    work = Path(cwd or app.parent) / f".run-{os.getpid()}-{name}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "bindings.json").write_text(json.dumps({k: [t, v] for k, (t, v) in bound.items()}))
    (work / name).write_text(fiji.strip_parameters(text))
    if name.endswith(".py"):
        cmd = ["java", "-cp", CLASSPATH, "org.python.util.jython", str(RUNNERS / "run_jython.py")]
    else:
        cmd = ["java", "-cp", CLASSPATH, "groovy.ui.GroovyMain", str(RUNNERS / "run_groovy.groovy")]
    cmd[1:1] = [*FAST_START, "-Djava.awt.headless=true", f"-Dimagej.dir={app}", "-Xss8m"]
    cmd += [str(work / "bindings.json")] + ([] if host else ["--headless", "--run"]) + [str(work / name), args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def run_jython(app: Path, code: str, *, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run Jython ``code`` with ImageJ 1 and ``<app>/jars/Lib`` importable (library-level tests)."""
    prelude = f"import sys\nsys.path.insert(0, {str(app / 'jars' / 'Lib')!r})\n"
    return subprocess.run(["java", *FAST_START, "-Djava.awt.headless=true", "-cp", CLASSPATH,
                           "org.python.util.jython", "-c", prelude + code], capture_output=True, text=True,
                          timeout=timeout)
