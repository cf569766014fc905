"""``python -m clem_bridge``: the ``clem-bridge`` command line."""
from .cli import main

main()
