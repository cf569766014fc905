"""clem-bridge: automated CLEM registration (MINE engine, chromatin prediction, server, Fiji)."""
__version__ = "0.1.0"
