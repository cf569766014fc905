"""Registration engines: MINE (``register_mine``) with a global initial search."""
from .mine import MineParams, Progress, register_mine

__all__ = ["MineParams", "Progress", "register_mine"]
