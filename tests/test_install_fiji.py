"""``clem-bridge install-fiji``: copies into a Fiji.app, idempotent, refuses non-Fiji folders, exact uninstall,
and the scripts are found from a regular (wheel) install too."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clem_bridge import fiji_install
from clem_bridge.cli import app as app_cli

REPO = Path(__file__).resolve().parents[1]


def cli(*args):
    r = CliRunner().invoke(app_cli, [str(a) for a in args])
    r.returncode = r.exit_code
    return r


def fake_fiji(root: Path) -> Path:
    app = root / "Fiji.app"
    (app / "jars" / "Lib").mkdir(parents=True)
    (app / "jars" / "ij-1.54f.jar").write_bytes(b"PK")
    (app / "jars" / "Lib" / "users_module.py").write_text("x = 1\n")  # the user's own files must survive
    (app / "scripts" / "Plugins").mkdir(parents=True)
    return app


def tree(p: Path) -> dict:
    return {str(f.relative_to(p)): f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()}


def test_install_is_idempotent_prints_menu_and_uninstall_is_exact(tmp_path):
    app = fake_fiji(tmp_path)
    before = tree(app)
    dirs_before = {d for d in app.rglob("*") if d.is_dir()}
    r = cli("install-fiji", app)
    assert r.returncode == 0, r.stderr
    assert "Plugins > CLEM > Register EM-LM" in r.stdout and "Plugins > CLEM > Apply CLEM Transform" in r.stdout
    src = fiji_install.scripts_dir()
    for rel in ["jars/Lib/clem_bridge_fiji.py", "jars/Lib/ClemBridgeFiji.groovy",
                "scripts/Plugins/CLEM/Register_EM-LM.py", "scripts/Plugins/CLEM/Batch_Register_Folder.py"]:
        assert (app / rel).read_bytes() == (src / rel).read_bytes()
    first = tree(app)
    (app / "jars" / "Lib" / "clem_bridge_fiji$py.class").write_bytes(b"stale")  # Jython's compiled cache
    assert cli("install-fiji", app).returncode == 0
    assert tree(app) == first  # same files, stale cache gone
    manifest = json.loads((app / fiji_install.MANIFEST).read_text())
    assert set(manifest["files"]) == {k for k in first if k not in before and k != fiji_install.MANIFEST}
    r = cli("install-fiji", app, "--uninstall")
    assert r.returncode == 0, r.stderr
    assert tree(app) == before
    assert {d for d in app.rglob("*") if d.is_dir()} == dirs_before


@pytest.mark.parametrize("make", ["empty", "file", "missing", "jars_only"])
def test_refuses_what_is_not_fiji(tmp_path, make):
    target = tmp_path / "x"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("")
    elif make == "jars_only":
        (target / "jars").mkdir(parents=True)
    r = cli("install-fiji", target)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (target.is_dir() and any(p.name == fiji_install.MANIFEST for p in target.iterdir()))


def test_uninstall_without_install(tmp_path):
    r = cli("install-fiji", fake_fiji(tmp_path), "--uninstall")
    assert r.returncode == 2 and "not installed" in r.stderr


def test_regular_install_finds_the_scripts(tmp_path):
    """Build the wheel, install it into a fresh venv: fiji_scripts land in <prefix>/share/clem-bridge."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "whl"), str(REPO)], check=True, env=env, capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(tmp_path / "venv")], check=True,
                   timeout=120)
    py = tmp_path / "venv" / "bin" / "python"
    wheel = next((tmp_path / "whl").glob("clem_bridge-*.whl"))
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   env=env, capture_output=True, timeout=300)
    app = fake_fiji(tmp_path)
    r = subprocess.run([str(py), "-c", "import clem_bridge.fiji_install as f, sys; print(f.scripts_dir()); "
                        f"f.install({str(app)!r})"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == tmp_path / "venv" / "share" / "clem-bridge" / "fiji_scripts"
    assert (app / "scripts" / "Plugins" / "CLEM" / "Register_EM-LM.py").read_bytes() == \
        (REPO / "fiji_scripts" / "scripts" / "Plugins" / "CLEM" / "Register_EM-LM.py").read_bytes()
