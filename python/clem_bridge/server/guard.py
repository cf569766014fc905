"""ASGI middleware run before any body is read: bearer-token check and upload size limit."""
from __future__ import annotations

import hmac

from .errors import ApiError, error_response


class Guard:
    """Rejects ``/v1`` requests without the token (401, health exempt) and bodies over ``max_body`` (413)."""

    def __init__(self, app, *, token: str | None, max_body: int):
        self.app = app
        self.token = token.encode() if token else None
        self.max_body = max_body

    def _authorised(self, scope) -> bool:
        path = scope["path"]
        if self.token is None or not path.startswith("/v1/") or path == "/v1/health":
            return True
        auth = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, given = auth.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if not self._authorised(scope):
            return await error_response(401, "This server requires a token: send the header "
                                        "'Authorization: Bearer <token>'.",
                                        headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
        too_big = (f"The upload is larger than this server's limit of {self.max_body / 2**20:g} MB "
                   "(--max-upload-mb).")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return await error_response(413, too_big)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise ApiError(413, too_big)
            return message

        await self.app(scope, counted, send)
