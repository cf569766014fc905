"""Install the clem-bridge Fiji scripts into a Fiji.app (copy), and remove exactly what was installed."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from importlib import resources
from pathlib import Path

from .errors import InputError

MANIFEST = ".clem-bridge-installed.json"
SERVER_CONFIG = Path("jars") / "Lib" / "clem_bridge_server.txt"   # read by clem_bridge_http.py (Fiji scripts)
MENU = "Plugins > CLEM"
_LAUNCHERS = ("ImageJ-*", "fiji-*", "Fiji", "ImageJ", "Contents")


def scripts_dir() -> Path:
    """The Fiji scripts shipped in the package (``clem_bridge.fiji_scripts``: ``jars/`` and ``scripts/``)."""
    src = Path(str(resources.files("clem_bridge.fiji_scripts")))
    if not (src / "jars" / "Lib").is_dir() or not (src / "scripts").is_dir():
        raise InputError(f"the clem-bridge Fiji scripts were not found in {src}; reinstall clem-bridge")
    return src


def is_fiji(app: Path) -> bool:
    """A Fiji/ImageJ2 installation: a ``jars/`` folder with ImageJ in it, or a Fiji launcher next to it."""
    jars = app / "jars"
    if not jars.is_dir():
        return False
    has_ij = any(jars.glob("ij-*.jar")) or any(jars.glob("imagej-*.jar"))
    return has_ij or any(any(app.glob(p)) for p in _LAUNCHERS)


def _files(src: Path) -> list[Path]:
    """What Fiji needs: the library under ``jars/`` and the menu commands under ``scripts/``."""
    return sorted(p.relative_to(src) for top in ("jars", "scripts") for p in (src / top).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith((".pyc", "$py.class")))


def _compiled(app: Path, rel: Path) -> Path:
    """Jython's compiled cache of a module, which Fiji would otherwise keep using after an update."""
    return app / rel.parent / (rel.stem + "$py.class")


def server_command() -> list[str]:
    """How Fiji starts ``clem-bridge serve``: this environment's ``clem-bridge`` executable, else
    ``python -m clem_bridge`` with this interpreter (absolute paths, so Fiji needs no PATH)."""
    exe = Path(sys.executable).parent / ("clem-bridge.exe" if sys.platform == "win32" else "clem-bridge")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "clem_bridge"]


def _write_server_config(app: Path) -> Path:
    """``clem_bridge_server.txt``: one word of the command per line (see ``clem_bridge_http.py``)."""
    path = app / SERVER_CONFIG
    path.write_text("# written by clem-bridge install-fiji: the command that starts 'clem-bridge serve'\n"
                    + "".join(w + "\n" for w in server_command()), encoding="utf-8")
    return SERVER_CONFIG


def _checked(app) -> Path:
    app = Path(app).expanduser()
    if not app.is_dir():
        raise InputError(f"{app} is not a directory; give the path of a Fiji installation (Fiji.app)")
    if not is_fiji(app):
        raise InputError(f"{app} is not a Fiji installation (no jars/ folder with ImageJ and no Fiji launcher)")
    return app


def install(app) -> list[Path]:
    """Copy every script and the library into ``app``; idempotent; returns the installed paths."""
    app = _checked(app)
    src = scripts_dir()
    manifest = _read_manifest(app)
    created = set(manifest.get("dirs", []))
    installed = []
    for rel in _files(src):
        dst = app / rel
        for d in reversed(rel.parents[:-1]):
            if not (app / d).is_dir():
                (app / d).mkdir()
                created.add(str(d))
        shutil.copyfile(src / rel, dst)
        _compiled(app, rel).unlink(missing_ok=True)
        installed.append(rel)
    installed.append(_write_server_config(app))
    old = set(manifest.get("files", [])) - {str(r) for r in installed}
    _remove(app, [Path(p) for p in old], set())
    (app / MANIFEST).write_text(json.dumps({
        "files": [str(r) for r in installed], "dirs": sorted(created),
        "sha256": {str(r): hashlib.sha256((app / r).read_bytes()).hexdigest() for r in installed}}, indent=1))
    return [app / r for r in installed]


def _read_manifest(app: Path) -> dict:
    p = app / MANIFEST
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except ValueError:
        raise InputError(f"{p} is damaged; delete it and install again") from None


def _remove(app: Path, rels: list[Path], dirs: set[str]) -> list[Path]:
    """Delete the files (and their Jython caches), then those of ``dirs`` (created by us) left empty."""
    removed = []
    for rel in rels:
        for p in (app / rel, _compiled(app, rel)):
            if p.is_file():
                p.unlink()
                removed.append(p)
    for d in sorted(dirs, key=lambda d: -len(Path(d).parts)):
        if (app / d).is_dir() and not any((app / d).iterdir()):
            (app / d).rmdir()
    return removed


def uninstall(app) -> list[Path]:
    """Remove exactly the files listed in the install manifest (and their Jython caches)."""
    app = _checked(app)
    manifest = _read_manifest(app)
    if not manifest:
        raise InputError(f"clem-bridge is not installed in {app} (no {MANIFEST})")
    removed = _remove(app, [Path(p) for p in manifest.get("files", [])], set(manifest.get("dirs", [])))
    (app / MANIFEST).unlink()
    return removed


def menu_commands(app) -> list[str]:
    """Menu paths of the installed commands (``_`` in a file name becomes a space)."""
    root = Path(app) / "scripts"
    return sorted(" > ".join(p.relative_to(root).with_suffix("").parts).replace("_", " ")
                  for p in root.rglob("*") if p.is_file() and "_" in p.name and p.suffix in (".py", ".groovy"))
