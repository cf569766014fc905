"""``python -m clem_bridge.server [options]``: the ``clem-bridge serve`` command on its own."""
import typer

from ..cli.serve import serve_command

typer.run(serve_command)
