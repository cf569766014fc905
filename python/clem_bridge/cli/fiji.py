"""``install-fiji``: copy the clem-bridge menu commands and library into a Fiji.app (or remove them)."""
from __future__ import annotations

from pathlib import Path

import typer

from ..errors import InputError


def add_commands(app) -> None:
    """Register this module's commands on the typer ``app``."""

    @app.command("install-fiji")
    def install_fiji(path: Path = typer.Argument(..., help="the Fiji installation folder (Fiji.app)"),
                     uninstall: bool = typer.Option(False, "--uninstall",
                                                    help="remove exactly the files a previous install copied")):
        """Install the CLEM menu commands (Plugins > CLEM) into Fiji; idempotent."""
        from .. import fiji_install
        try:
            if uninstall:
                removed = fiji_install.uninstall(path)
                typer.echo(f"removed {len(removed)} clem-bridge files from {path}")
                return
            files = fiji_install.install(path)
            typer.echo(f"installed {len(files)} files into {path}; restart Fiji, then use {fiji_install.MENU}:")
            for cmd in fiji_install.menu_commands(path):
                typer.echo(f"  {cmd}")
        except InputError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        except OSError as e:
            typer.echo(f"error: cannot write into {path}: {e.strerror or e}", err=True)
            raise typer.Exit(2)
