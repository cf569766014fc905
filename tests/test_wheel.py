"""The wheel is complete: built from this checkout, installed into a fresh venv and run from another folder,
it predicts chromatin with the shipped model and installs the Fiji scripts (package data, no checkout paths)."""
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from setuptools import find_packages

REPO = Path(__file__).resolve().parents[1]
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": "1",
       "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def test_pyproject_lists_every_package():
    """``packages`` is explicit (the models and Fiji scripts are mapped in); a new subpackage must be listed."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert set(find_packages(REPO / "python")) <= listed


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp / "whl"), str(REPO)], check=True, env=ENV, capture_output=True, timeout=600)
    wheel = next((tmp / "whl").glob("clem_bridge-*.whl"))
    # dependencies come from this interpreter's site-packages; the package itself only from the wheel, installed
    # by this pip into the venv (``--python``: no pip of its own to set up, a few seconds less)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(tmp / "venv")],
                   check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(tmp / "venv" / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, env=ENV, capture_output=True, timeout=300)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return wheel, tmp / "venv", elsewhere


def test_wheel_holds_models_and_fiji_scripts(wheel_venv):
    names = zipfile.ZipFile(wheel_venv[0]).namelist()
    assert "clem_bridge/models/chromatin-v2/weights.pt" in names
    assert "clem_bridge/models/chromatin-v2/model.yaml" in names
    assert "clem_bridge/fiji_scripts/scripts/Plugins/CLEM/Register_EM-LM.py" in names
    assert any(n.startswith("clem_bridge/fiji_scripts/jars/Lib/") and n.endswith(".py") for n in names)


def run(venv: Path, cwd: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / a) if i == 0 else str(a) for i, a in enumerate(args)],
                          cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


def test_installed_wheel_predicts_and_installs_fiji(wheel_venv):
    import tifffile
    _, venv, cwd = wheel_venv
    where = run(venv, cwd, "python", "-c", "import clem_bridge; print(clem_bridge.__file__)")
    assert where.returncode == 0 and Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr
    sample = REPO / "models" / "chromatin-v2" / "sample_em.png"
    r = run(venv, cwd, "clem-bridge", "predict-chromatin", sample, "--out", "pred.tif")
    assert r.returncode == 0, r.stderr
    pred = tifffile.imread(cwd / "pred.tif")
    assert pred.ndim == 2 and pred.std() > 0

    app = cwd / "Fiji.app"
    (app / "jars").mkdir(parents=True)
    (app / "jars" / "ij-1.54f.jar").write_bytes(b"PK")
    r = run(venv, cwd, "clem-bridge", "install-fiji", app)
    assert r.returncode == 0, r.stderr
    installed = app / "scripts" / "Plugins" / "CLEM" / "Register_EM-LM.py"
    assert installed.read_bytes() == (REPO / "fiji_scripts" / "scripts" / "Plugins" / "CLEM" /
                                      "Register_EM-LM.py").read_bytes()
    recorded = (app / "jars" / "Lib" / "clem_bridge_server.txt").read_text().splitlines()
    assert str(venv / "bin" / "clem-bridge") in recorded      # Fiji starts the server of this install
