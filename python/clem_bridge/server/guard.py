"""ASGI middleware run before any body is read: Host check, bearer token, upload size and free disk."""
from __future__ import annotations

import hmac
import re
from typing import Callable, Optional

from .errors import ApiError, disk_full_response, error_response

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_HOST = re.compile(r"^(\[[0-9a-f:.]+\]|[^:\[\]]+)(?::(\d{1,5}))?$")


def loopback_host(header: bytes) -> bool:
    """True when a ``Host`` header names the loopback interface (``127.0.0.1``, ``localhost`` or
    ``[::1]``, any port): what a browser sends to a local server, unlike a DNS-rebinding page."""
    m = _HOST.match(header.decode("latin-1").strip().lower())
    return bool(m) and m.group(1).rstrip(".") in LOOPBACK_NAMES


class Guard:
    """Checks every HTTP request in this order, answering with a JSON error:

    * 403 when the server has no token and the ``Host`` header is not a loopback name (a web page
      that rebinds its own domain to 127.0.0.1 must not read jobs or artifacts);
    * 401 for ``/v1`` routes (health exempt) without the token, when there is one;
    * 413 for bodies over ``max_body``;
    * 507 for uploads when ``free_bytes()`` minus the body would leave less than ``min_free``.
    """

    def __init__(self, app, *, token: Optional[str], max_body: int, free_bytes: Callable[[], int], min_free: int):
        self.app = app
        self.token = token.encode() if token else None
        self.max_body = max_body
        self.free_bytes = free_bytes
        self.min_free = min_free

    def _authorised(self, scope, headers: dict) -> bool:
        path = scope["path"]
        if self.token is None or not path.startswith("/v1/") or path == "/v1/health":
            return True
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.token is None and not loopback_host(headers.get(b"host", b"")):
            given = headers.get(b"host", b"").decode("latin-1")[:100]
            return await error_response(403, f"This server answers only requests addressed to 127.0.0.1, "
                                        f"localhost or [::1] (the Host header was {given!r}); start it with "
                                        "--token to use other names.", "forbidden_host")(scope, receive, send)
        if not self._authorised(scope, headers):
            return await error_response(401, "This server requires a token: send the header "
                                        "'Authorization: Bearer <token>'.",
                                        headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
        too_big = (f"The upload is larger than this server's limit of {self.max_body / 2**20:g} MB "
                   "(--max-upload-mb).")
        length = headers.get(b"content-length")
        length = int(length) if length is not None and length.isdigit() else None
        if length is not None and length > self.max_body:
            return await error_response(413, too_big)(scope, receive, send)
        if scope["method"] in ("POST", "PUT") and self.min_free:
            free = self.free_bytes()
            if free - (length or 0) < self.min_free:
                return await disk_full_response(free, self.min_free)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise ApiError(413, too_big)
            return message

        await self.app(scope, counted, send)
