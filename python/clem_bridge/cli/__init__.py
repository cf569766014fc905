"""``clem-bridge`` command line (typer); each submodule adds its commands, all thin over the library."""
from __future__ import annotations

import typer

from . import chromatin, core, fiducials, fiji, prepare, serve

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="clem-bridge: automated CLEM registration (EM = fixed, LM = moving).")
for _module in (core, prepare, serve, chromatin, fiji, fiducials):
    _module.add_commands(app)


def main() -> None:
    app()
