"""The registration server (FastAPI): job queue, persistence, safe defaults; no image science here.

``create_app(Settings(...))`` builds the app; ``serve(settings)`` binds the socket and runs uvicorn.
Layout: ``settings`` (options + bind check), ``guard`` (token + upload limit middleware),
``errors`` (JSON error handlers), ``store`` (job dirs, atomic writes), ``manager`` (queue + worker),
``pool`` (bounded worker of ``/v1/apply``), ``submit`` (upload → prepare → enqueue), ``routers/``
(one per resource), ``schemas``.
"""
from .app import create_app
from .run import serve
from .settings import Settings

__all__ = ["Settings", "create_app", "serve"]
