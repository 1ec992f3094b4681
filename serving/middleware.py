"""ASGI guard in front of the service: an optional bearer token and a cap on request bodies.

- With a token configured, every path except the health and metrics probes needs
  ``Authorization: Bearer <token>``; a browser opens the UI once as ``/ui/?token=<token>``, which sets an
  HTTP-only cookie and redirects to the clean address. Wrong or missing token: 401 with a JSON message.
- A body over ``max_body_bytes`` gets 413 before the application sees it (by ``Content-Length``, or by
  counting when the body is chunked).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics")
COOKIE = "cw_token"


async def _json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


class GuardMiddleware:
    """Token check and body-size cap (see the module docstring).

    Args:
        app: The wrapped ASGI app.
        token: The bearer token ('' leaves the API open).
        max_body_bytes: Largest accepted request body.
    """

    def __init__(self, app: Any, token: str = "", max_body_bytes: int = 65536) -> None:
        self.app = app
        self.token = token
        self.max_body_bytes = max_body_bytes

    def _authorised(self, scope: Scope) -> bool:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("authorization", "")
        if given.lower().startswith("bearer ") and hmac.compare_digest(given[7:].strip(), self.token):
            return True
        cookie = SimpleCookie(headers.get("cookie", ""))
        return COOKIE in cookie and hmac.compare_digest(cookie[COOKIE].value, self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Checks the token and the body size, then hands over to the app."""
        if scope["type"] != "http":
            if scope["type"] == "websocket" and self.token and not self._authorised(scope):
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if self.token and not path.startswith(OPEN_PATHS) and not self._authorised(scope):
            query = dict(parse_qsl(scope.get("query_string", b"").decode()))
            if path.startswith("/ui") and hmac.compare_digest(query.pop("token", ""), self.token):
                clean = path + (f"?{urlencode(query)}" if query else "")
                cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode()
                await send({"type": "http.response.start", "status": 303,
                            "headers": [(b"location", clean.encode()), (b"set-cookie", cookie),
                                        (b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})
                return
            await _json(send, 401, {"error": "missing or wrong bearer token: send 'Authorization: Bearer <token>' "
                                             "(the UI: open /ui/?token=<token> once)"},
                        [(b"www-authenticate", b"Bearer")])
            return
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await self._too_large(send)
            return
        if scope.get("method") in {"POST", "PUT", "PATCH"} and length is None:
            receive = await self._buffered(receive, send)
            if receive is None:
                return
        await self.app(scope, receive, send)

    async def _too_large(self, send: Send) -> None:
        await _json(send, 413, {"error": f"request body larger than {self.max_body_bytes} bytes; "
                                         "shorten the prompt (see limits in GET /model)"})

    async def _buffered(self, receive: Receive, send: Send) -> Receive | None:
        """Reads a body of unknown length up to the cap; None (after a 413) when it is larger."""
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                await self._too_large(send)
                return None
            more = message.get("more_body", False)
        body, sent = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay
