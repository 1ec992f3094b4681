"""The API's OpenAPI document as it really is: valid OpenAPI 3.0, the error bodies the server sends, no UI internals.

BentoML 1.4 labels its document 3.0.2 but embeds pydantic v2 (JSON Schema 2020-12) schemas, which 3.0
validators and schema fuzzers refuse (numeric ``exclusiveMinimum``, ``null`` defaults, ``examples``
arrays), documents a 400 body whose ``detail`` is a string (the server sends a list), and lists the
mounted Gradio app's ~80 internal routes beside the API's. :class:`ApiDocsMiddleware` rewrites the
``GET /docs.json`` answer with :func:`api_document`; ``/docs.json?ui=1`` keeps the UI's routes (the
contract tests fuzz them too).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from core.paths import REGISTERED_NAME
from serving.config import Limits
from serving.middleware import Message, Receive, Scope, Send

DOCS_PATH = "/docs.json"
UI_PREFIX = "/ui"
API_OPERATIONS = ("/generate", "/stream")

_DETAIL = {"type": "object", "required": ["loc", "msg"], "properties": {
    "loc": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            "description": "Where the problem is: the request field's name (empty for the body as a whole)."},
    "msg": {"type": "string", "description": "What is wrong, in words."},
    "type": {"type": "string", "description": "Pydantic's error type, when the request model refused it."},
    "url": {"type": "string", "description": "Pydantic's page about that error type."}}}
ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
    "RequestProblem": {"type": "object", "required": ["error", "detail"], "description": (
        "A request the server refused, or could not serve: ``error`` sums it up, ``detail`` lists each problem."),
        "properties": {"error": {"type": "string"}, "detail": {"type": "array", "items": _DETAIL}}},
    "GuardRefusal": {"type": "object", "required": ["error"], "description": "Refused before the API saw it.",
                     "properties": {"error": {"type": "string"}}},
}
PROMPT_RULES = (" Rejected with 400 when it is only whitespace, contains a control character other than a line "
                "break or tab, or (unless the server allows them) an emoji; GET /model lists the limits.")


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_body(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


ERROR_RESPONSES = {
    "400": _json_body("The request is malformed or a field breaks its rule (``detail[].loc`` names it; the form "
                      "and genre must be ones the served model knows).", "RequestProblem"),
    "401": _json_body("A bearer token is configured and the request lacks it or has another.", "GuardRefusal"),
    "413": _json_body("The request body is larger than the server's limit.", "GuardRefusal"),
    "415": _json_body("The body is not sent as application/json.", "GuardRefusal"),
    "503": _json_body("No model is loaded yet (or it failed to load: ``error`` says why).", "RequestProblem"),
}


def to_openapi30(node: Any) -> Any:
    """A JSON-Schema 2020-12 flavoured schema tree rewritten into OpenAPI 3.0's dialect.

    Numeric ``exclusiveMinimum``/``exclusiveMaximum`` become ``minimum``/``maximum`` plus the boolean;
    ``anyOf`` with a ``null`` branch becomes ``nullable``; a ``null`` default makes the schema nullable;
    ``const`` becomes a one-value ``enum`` (a nullable ``enum`` lists ``null``); an ``examples`` list becomes
    ``example``.
    """
    if isinstance(node, list):
        return [to_openapi30(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: to_openapi30(value) for key, value in node.items()}
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), int | float) and not isinstance(out.get(bound), bool):
            out[plain] = out[bound]
            out[bound] = True
    branches = out.get("anyOf")
    if isinstance(branches, list) and {"type": "null"} in branches:
        rest = [b for b in branches if b != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1:
            out = {**rest[0], **out}
        elif rest:
            out["anyOf"] = rest
        out["nullable"] = True
    if "default" in out and out["default"] is None and "type" in out:
        out["nullable"] = True
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if out.get("nullable") and isinstance(out.get("enum"), list) and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]  # OpenAPI 3.0.3: a nullable enum accepts null only if it lists it
    if isinstance(out.get("examples"), list) and "type" in out:
        examples = out.pop("examples")
        if examples:
            out["example"] = examples[0]
    return out


def _referenced(root: Any, schemas: dict[str, Any]) -> set[str]:
    """Names of the component schemas ``root`` refers to, directly or through other schemas."""
    found: set[str] = set()
    todo = [root]
    while todo:
        text = json.dumps(todo.pop())
        for name in schemas:
            if name not in found and f'"#/components/schemas/{name}"' in text:
                found.add(name)
                todo.append(schemas[name])
    return found


def api_document(document: dict[str, Any], include_ui: bool = False, model_id: str = REGISTERED_NAME,
                 limits: Limits | None = None) -> dict[str, Any]:
    """The served OpenAPI document: 3.0-valid, honest error bodies, the UI's routes left out unless asked for.

    Args:
        document: BentoML's document (as served at ``/docs.json``).
        include_ui: Keep the mounted UI's internal routes (``/ui/...``).
        model_id: The served model's id (the ``model`` the ``/v1`` endpoints accept).
        limits: The served profile's limits (the ``/v1`` maxima; default: the code's).

    Returns:
        A new document; ``document`` is not changed.
    """
    out = copy.deepcopy(document)
    out["paths"] = {path: item for path, item in out.get("paths", {}).items()
                    if include_ui or not path.startswith(UI_PREFIX)}
    schemas = out.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(copy.deepcopy(ERROR_SCHEMAS))
    for path in API_OPERATIONS:
        operation = out["paths"].get(path, {}).get("post")
        if operation is None:
            continue
        responses = operation.setdefault("responses", {})
        responses.update(copy.deepcopy(ERROR_RESPONSES))
        body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
        prompt = body.get("properties", {}).get("prompt")
        if prompt is not None and PROMPT_RULES not in prompt.get("description", ""):
            prompt["description"] = prompt.get("description", "") + PROMPT_RULES
    from serving.openai_compat import openapi_parts

    # FastAPI documents them without bodies: replaced by their own
    v1_paths, v1_schemas = openapi_parts(model_id, limits)
    out["paths"] = {**{p: item for p, item in out["paths"].items() if not p.startswith("/v1/")}, **v1_paths}
    schemas.update(copy.deepcopy(v1_schemas))
    from serving.stories_api import openapi_parts as story_parts

    story_paths, story_schemas = story_parts()  # documented from the store's own models, as /v1's
    out["paths"] = {**{p: item for p, item in out["paths"].items() if not p.startswith("/stories")}, **story_paths}
    schemas.update(copy.deepcopy(story_schemas))
    keep = _referenced(out["paths"], schemas)  # the UI's request bodies go with its routes
    out["components"]["schemas"] = {name: schema for name, schema in schemas.items() if name in keep}
    if not include_ui:
        out.setdefault("info", {})["description"] = (
            "The creative-writer API: POST /generate (drafts with provenance and timings), POST /stream (one draft "
            "as plain-text chunks), GET /model (what is served), and the OpenAI-compatible /v1/models, "
            "/v1/completions and /v1/chat/completions, and the writer's stories under /stories (every save a "
            "version; a stale edit is refused with 409). The writing UI is at /ui/ (its internal routes "
            "are left out of this document; /docs.json?ui=1 includes them).")
    return to_openapi30(out)


class ApiDocsMiddleware:
    """Serves :func:`api_document` of the app's own ``GET /docs.json`` answer (``?ui=1`` keeps the UI routes).

    Args:
        app: The wrapped ASGI app.
        model_id: The served model's id (documented as the ``model`` of the ``/v1`` endpoints).
        limits: The served profile's limits (documented as the ``/v1`` maxima).
    """

    def __init__(self, app: Any, model_id: str = REGISTERED_NAME, limits: Limits | None = None) -> None:
        self.app = app
        self.model_id = model_id
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Passes everything through except ``GET /docs.json``, whose JSON body it rewrites."""
        if scope["type"] != "http" or scope.get("path") != DOCS_PATH or scope.get("method") not in {"GET", "HEAD"}:
            await self.app(scope, receive, send)
            return
        start: Message = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        body = b"".join(chunks)
        if start.get("status") == 200:
            include_ui = b"ui=1" in scope.get("query_string", b"").split(b"&")
            body = json.dumps(api_document(json.loads(body), include_ui, self.model_id, self.limits)).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": start.get("status", 500), "headers": headers})
        await send({"type": "http.response.body", "body": body if scope.get("method") == "GET" else b""})
