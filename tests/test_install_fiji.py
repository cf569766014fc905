"""``clem-bridge install-fiji``: copies into a Fiji.app, idempotent, refuses non-Fiji folders, exact uninstall
(the wheel install is tested in test_wheel.py)."""
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clem_bridge import fiji_install
from clem_bridge.cli import app as app_cli


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
    shipped = [p.relative_to(src) for top in ("jars", "scripts") for p in (src / top).rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith((".pyc", "$py.class"))]
    assert any(p.suffix == ".groovy" for p in shipped) and any(p.name == "Register_EM-LM.py" for p in shipped)
    for rel in shipped:
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


def test_install_records_the_server_command_for_fiji(tmp_path):
    """The Fiji scripts start ``clem-bridge serve`` themselves from the command recorded at install time."""
    import subprocess
    app = fake_fiji(tmp_path)
    assert cli("install-fiji", app).returncode == 0
    lines = (app / fiji_install.SERVER_CONFIG).read_text(encoding="utf-8").splitlines()
    command = [w for w in lines if w and not w.startswith("#")]
    assert Path(command[0]).is_absolute() and Path(command[0]).is_file()
    r = subprocess.run(command + ["serve", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--port" in r.stdout
