"""``clem-bridge serve``: the registration server (see :mod:`clem_bridge.server`)."""


def add_commands(app) -> None:
    """Register ``serve`` on the typer ``app`` (the server is imported only when the command runs)."""
    from ..server.run import serve_command
    app.command("serve")(serve_command)
