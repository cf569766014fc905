"""CLI commands (placeholder until its issue lands)."""


def add_commands(app) -> None:
    """Register this module's commands on the typer ``app``."""
