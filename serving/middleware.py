"""ASGI guards in front of the service: an optional bearer token, a cap on request bodies, and the UI's routes.

- With a token configured, every path except the health and metrics probes needs
  ``Authorization: Bearer <token>``; a browser opens the UI once as ``/ui/?token=<token>``, which sets an
  HTTP-only cookie and redirects to the clean address. Wrong or missing token: 401 with a JSON message (a
  browser asking for the UI gets a sign-in form instead).
- With writer accounts (:mod:`workspace`), a writer's own token passes the guard too (``writer_token``
  says whether a token is one); the story routes then know who is writing, and a writer who opens
  ``/ui/?token=<their token>`` is signed in to the UI as themselves (the cookie holds their token).
- A body over ``max_body_bytes`` (``/stories`` and ``/feedback``: ``story_body_bytes``, a manuscript or a
  verdict's drafts are longer than a prompt)
  gets 413 before the application sees it (by ``Content-Length``, or by counting when the body is chunked).
- :class:`UiGuardMiddleware`: the mounted Gradio app answers malformed requests to its internal routes
  with 500s (a fuzzer found a dozen: undecodable query strings, unknown API names, a zero icon size). The
  guard serves only the routes the writing UI's page uses, 404 for Gradio's other routes (its REST API,
  proxy, file, login, monitoring and editing routes), and 400 for a query string that is not UTF-8.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics")
JSON_ONLY = ("/generate", "/stream", "/v1/completions", "/v1/chat/completions")  # JSON bodies only
STORIES_PREFIX = "/stories"
WORKSPACE_PREFIXES = (STORIES_PREFIX, "/feedback")  # bodies that carry manuscripts or drafts: the workspace's cap
OPENAI_PREFIX = "/v1/"  # refusals on these paths use OpenAI's error object (its clients read it)
OPENAI_CODES = {401: "invalid_api_key", 404: "not_found", 413: "request_too_large", 415: "unsupported_media_type"}
COOKIE = "cw_token"


async def _json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = (),
                path: str = "") -> None:
    """Sends a JSON answer; on an OpenAI path, an error body ``{"error": "..."}`` becomes OpenAI's error object."""
    if path.startswith(OPENAI_PREFIX) and isinstance(body.get("error"), str):
        body = {"error": {"message": body["error"], "type": "invalid_request_error", "param": None,
                          "code": OPENAI_CODES.get(status)}}
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
        story_body_bytes: Largest accepted body on ``/stories`` and ``/feedback`` (default: ``max_body_bytes``).
        writer_token: Whether a bearer token is a writer account's (those pass the guard too).
    """

    def __init__(self, app: Any, token: str = "", max_body_bytes: int = 65536, story_body_bytes: int = 0,
                 writer_token: Callable[[str], bool] | None = None) -> None:
        self.app = app
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.story_body_bytes = story_body_bytes or max_body_bytes
        self.writer_token = writer_token

    def _authorised(self, scope: Scope) -> bool:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("authorization", "")
        bearer = given[7:].strip() if given.lower().startswith("bearer ") else ""
        if bearer and hmac.compare_digest(bearer, self.token):
            return True
        if bearer and self.writer_token is not None and self.writer_token(bearer):
            return True
        cookie = SimpleCookie(headers.get("cookie", ""))
        return COOKIE in cookie and self._known(cookie[COOKIE].value)

    def _known(self, token: str) -> bool:
        """Whether ``token`` is the shared token or a writer account's."""
        if not token:
            return False
        if hmac.compare_digest(token, self.token):
            return True
        return self.writer_token is not None and self.writer_token(token)

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
            given = query.pop("token", "")
            if path.startswith("/ui") and self._known(given):  # the shared token, or a writer's own: signed in
                clean = path + (f"?{urlencode(query)}" if query else "")
                cookie = f"{COOKIE}={given}; Path=/; HttpOnly; SameSite=Strict".encode()
                await send({"type": "http.response.start", "status": 303,
                            "headers": [(b"location", clean.encode()), (b"set-cookie", cookie),
                                        (b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})
                return
            if path.startswith("/ui") and b"text/html" in dict(scope.get("headers", [])).get(b"accept", b""):
                await _sign_in_page(send, wrong=bool(given))
                return
            await _json(send, 401, {"error": "missing or wrong bearer token: send 'Authorization: Bearer <token>' "
                                             "(OpenAI clients: the token is the API key; the UI: open "
                                             "/ui/?token=<token> once)"},
                        [(b"www-authenticate", b"Bearer")], path)
            return
        if path.startswith(STORIES_PREFIX) and any(ord(c) < 32 for c in path):
            # no route pattern matches a line break, and the server's own 404 would be plain text
            await _json(send, 404, {"error": "no such story: a story id has no control characters",
                                    "detail": [{"loc": ["id"], "msg": "no such story"}]}, path=path)
            return
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        cap = self.story_body_bytes if path.startswith(WORKSPACE_PREFIXES) else self.max_body_bytes
        if length is not None and length.isdigit() and int(length) > cap:
            await self._too_large(send, path, cap)
            return
        kind = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        if scope.get("method") == "POST" and path in JSON_ONLY and kind != b"application/json":
            await _json(send, 415, {"error": f"send the request as JSON (Content-Type: application/json), not "
                                             f"{kind.decode('latin-1')!r}"}, path=path)
            return
        if scope.get("method") in {"POST", "PUT", "PATCH"} and length is None:
            receive = await self._buffered(receive, send, path, cap)
            if receive is None:
                return
        await self.app(scope, receive, send)

    async def _too_large(self, send: Send, path: str, cap: int) -> None:
        what = "the story" if path.startswith(STORIES_PREFIX) else "the drafts" if path.startswith(
            WORKSPACE_PREFIXES) else "the prompt"
        await _json(send, 413, {"error": f"request body larger than {cap} bytes; shorten {what} (see limits in "
                                         "GET /model)"}, path=path)

    async def _buffered(self, receive: Receive, send: Send, path: str, cap: int) -> Receive | None:
        """Reads a body of unknown length up to the cap; None (after a 413) when it is larger."""
        body, replay = await _read_body(receive, cap)
        if body is None:
            await self._too_large(send, path, cap)
            return None
        return replay


SIGN_IN = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in · Creative writer</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>body{font-family:system-ui,sans-serif;
max-width:28rem;margin:4rem auto;padding:0 1rem}input{width:100%;padding:.5rem;margin:.5rem 0;box-sizing:border-box}
button{padding:.5rem 1rem}.wrong{color:#b00020}</style></head><body><h1>Creative writer</h1>
<p>This server asks for a token. Paste your writer token (or the server's shared token) to open your stories.</p>
{wrong}<form method="get" action="/ui/"><label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button></form></body></html>"""


async def _sign_in_page(send: Send, wrong: bool) -> None:
    """The 401 a browser gets on the UI without a token: a form that signs in with one (``/ui/?token=…``)."""
    note = '<p class="wrong" id="wrong-token">That token is not known here.</p>' if wrong else ""
    data = SIGN_IN.replace("{wrong}", note).encode()
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"text/html; charset=utf-8"),
                            (b"content-length", str(len(data)).encode()), (b"www-authenticate", b"Bearer"),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": data})


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that hands over ``body`` once (as the whole request body), then the connection's messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


UI_PREFIX = "/ui"
# Gradio routes the UI page never calls: its REST API for scripts (the page talks through queue/join + data),
# the Spaces proxy, file serving (the UI has no file components), login, monitoring, vibe editing, dev reload.
UI_UNUSED = re.compile(
    r"^/ui/(login|logout|monitoring|pwa_icon|manifest\.json|gradio_api/(call|run|api|proxy=|file=|file/|stream/|"
    r"upload|process_recording|component_server|login_check|token|user|dev/|vibe|undo-vibe|run-history|"
    r"custom_component|openapi\.json|mcp))")


def query_is_text(query: bytes) -> bool:
    """Whether a raw query string decodes (after percent-decoding) as UTF-8."""
    from urllib.parse import unquote_to_bytes

    try:
        for part in query.replace(b"+", b" ").split(b"&"):
            unquote_to_bytes(part).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class UiGuardMiddleware:
    """Lets only the writing UI's own routes and well-formed requests reach the mounted Gradio app.

    Args:
        app: The wrapped ASGI app.
        blocks: The mounted ``gradio.Blocks`` (its pages and event handlers are what a request may name);
            None checks only routes and query strings.
    """

    def __init__(self, app: Any, blocks: Any = None) -> None:
        self.app = app
        self.blocks = blocks

    def _pages(self) -> set[str]:
        return {str(page[0]) for page in getattr(self.blocks, "pages", None) or [("",)]}

    def _triggers(self, fn: Any) -> set[int]:
        """The block ids that trigger ``fn`` (page-load events name the Blocks itself)."""
        targets = {t[0] for t in getattr(fn, "targets", None) or [] if t and isinstance(t[0], int)}
        return targets or set(self.blocks.blocks)

    def _event_problem(self, body: bytes) -> str:
        """What is wrong with a ``queue/join`` body ('' when nothing this guard can see)."""
        try:
            event = json.loads(body)
        except ValueError:
            return ""  # Gradio answers malformed JSON with 422 itself
        if not isinstance(event, dict) or self.blocks is None:
            return ""
        fns = self.blocks.fns
        index, data, trigger = event.get("fn_index"), event.get("data"), event.get("trigger_id")
        if not isinstance(index, int) or isinstance(index, bool) or index not in fns:
            return f"fn_index {index!r} is not an event handler of this UI"
        if trigger is not None and (not isinstance(trigger, int) or isinstance(trigger, bool)
                                    or trigger not in self._triggers(fns[index])):
            return f"trigger_id {trigger!r} is not a component that triggers event handler {index}"
        if not isinstance(data, list) or len(data) != len(fns[index].inputs):
            return f"event handler {index} takes {len(fns[index].inputs)} input value(s)"
        return ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """404 for unused UI routes and unknown pages, 400/422 for bad queries and events; the rest passes."""
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not (path == UI_PREFIX or path.startswith(UI_PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        if UI_UNUSED.match(path):
            await _json(send, 404, {"error": f"not found: {path} is an internal route of the UI that this "
                                             "server does not offer; the API is /generate, /stream, /model"})
            return
        query = scope.get("query_string", b"")
        if not query_is_text(query):
            await _json(send, 400, {"error": "the query string is not valid UTF-8"})
            return
        page = dict(parse_qsl(query.decode("utf-8", "replace"))).get("page")
        if page is not None and page not in self._pages():
            await _json(send, 404, {"error": f"the UI has no page {page!r}"})
            return
        if path.endswith("/gradio_api/queue/join") and scope.get("method") == "POST":
            body, receive = await _read_body(receive)  # GuardMiddleware has capped it already
            problem = self._event_problem(body or b"")
            if problem:
                await _json(send, 422, {"error": problem})
                return
        await self.app(scope, receive, send)


async def _read_body(receive: Receive, limit: int | None = None) -> tuple[bytes | None, Receive]:
    """The whole request body and a receive that replays it; the body is None once it passes ``limit`` bytes."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if limit is not None and size > limit:
            return None, receive
        more = message.get("more_body", False)
    body = b"".join(chunks)
    return body, _replaying(body, receive)
