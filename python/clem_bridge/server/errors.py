"""JSON error responses ``{"error": code, "detail": sentence}``; no traceback ever leaves the server."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import InputError
from .store import disk_full

log = logging.getLogger("clem_bridge.server")

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 413: "payload_too_large", 422: "invalid_input", 429: "queue_full",
         500: "internal_error", 507: "insufficient_storage"}


class ApiError(HTTPException):
    """An error with an explicit code, e.g. ``ApiError(404, "no job abc")``."""

    def __init__(self, status: int, detail: str, code: str | None = None, headers: dict | None = None):
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.code = code or CODES.get(status, "error")


def error_response(status: int, detail: str, code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": code or CODES.get(status, "error"), "detail": detail}, status_code=status,
                        headers=headers)


def _sentence(text: str) -> str:
    text = " ".join(str(text).split())
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"there is no route {request.method} {request.url.path}"
    return error_response(exc.status_code, _sentence(detail), getattr(exc, "code", None),
                          getattr(exc, "headers", None))


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body",)) or "request"
    return error_response(422, _sentence(f"Request field '{where}': {first.get('msg', 'invalid value')}"),
                          "invalid_request")


def _input_error(request: Request, exc: InputError) -> JSONResponse:
    return error_response(422, _sentence(str(exc)), "invalid_input")


def disk_full_response(free_bytes: int, min_free_bytes: int) -> JSONResponse:
    return error_response(507, f"The server's disk is nearly full ({free_bytes / 2**20:.0f} MB free, it keeps "
                          f"{min_free_bytes / 2**20:.0f} MB free: --min-free-mb); free space under its data dir "
                          "and try again.")


def _os_error(request: Request, exc: OSError) -> JSONResponse:
    if disk_full(exc):
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return error_response(507, _sentence(f"The server's disk is full ({exc.strerror or exc}); free space "
                                             "under its data dir and try again"))
    return _unexpected(request, exc)


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return error_response(500, "The server hit an unexpected error; see its log for details.")


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(Exception, _unexpected)
