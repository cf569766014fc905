"""Registration engines: MINE (``register_mine``) with a global initial search."""
from ..progress import Progress
from .mine import MineParams, register_mine

__all__ = ["MineParams", "Progress", "register_mine"]
