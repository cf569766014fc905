"""``clem-bridge`` command line (typer); each submodule adds its commands, all thin over the library."""
from __future__ import annotations

import typer

from . import batch, chromatin, core, fiducials, fiji, prepare, register3d, serve

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="clem-bridge: automated CLEM registration (EM = fixed, LM = moving).")
for _module in (core, prepare, serve, chromatin, fiji, batch, fiducials, register3d):
    _module.add_commands(app)


def main() -> None:
    app()
