"""The story REST API: ``/stories`` on the service, over :class:`workspace.store.StoryStore`.

======================================================  ===================================================
``GET /stories`` (``?deleted=true``)                    the writer's stories (or the deleted ones)
``POST /stories``                                       a new story (201)
``GET /stories/{id}``                                   its newest version
``PUT /stories/{id}``                                   an edit with the ``version`` it was made on (409 if stale)
``DELETE /stories/{id}``                                soft delete (204); ``POST /stories/{id}/undelete``
``GET /stories/{id}/versions``                          every version, newest first
``GET /stories/{id}/versions/{v}``                      one version
``POST /stories/{id}/versions/{v}/restore``             that version saved again as the newest (409 if stale)
``GET /stories/{id}/export?format=md|json``             a Markdown manuscript or the JSON with provenance
``POST /feedback``                                      a writer's verdict on a draft (a preference pair)
``POST /stories/import``                                a story from its JSON export (201)
======================================================  ===================================================

Who is writing: the account whose token is the request's bearer token; with the shared token (or an open
API) the shared ``local`` writer. A writer never sees another's story: its id answers 404.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, PlainTextResponse, Response

from workspace.schemas import Restore, StoryEdit, StoryFields
from workspace.store import Invalid, StoreError, StoryStore, Unavailable, Writer
from workspace.traffic import FeedbackIn, record_feedback

EXPORT_FORMAT = "creative-writer.story/1"
_STORY_ID = {"name": "story_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64},
             "description": "The story's id (another writer's story answers 404)."}
_NUMBER = {"name": "number", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"},
           "description": "A version number (1 is the first save)."}
_ANSWERS = {
    "400": ("A field is wrong, unknown or over its cap (``detail[].loc`` names it).", "RequestProblem"),
    "404": ("The writer has no such story or version.", "RequestProblem"),
    "409": ("The edit was made on a version that is no longer the newest: ``current_version`` and ``current`` "
            "are the newest; reload and apply the edit again.", "StoryConflict"),
    "413": ("The request body is larger than the workspace's limit.", "GuardRefusal"),
    "503": ("The story database is unavailable (``error`` says why); nothing was saved.", "RequestProblem"),
}
# (method, path, summary, request body schema, success status, parameters, refusals besides 503)
_OPERATIONS = [
    ("get", "/stories", "The writer's stories (``?deleted=true``: the deleted ones)", None, "200", [], []),
    ("post", "/stories", "A new story, saved as version 1", "StoryFields", "201", [], ["400", "413"]),
    ("post", "/stories/import", "A story from its JSON export", "StoryExport", "201", [], ["400", "413"]),
    ("get", "/stories/{story_id}", "The story's newest version", None, "200", [_STORY_ID], ["404"]),
    ("put", "/stories/{story_id}", "An edit, saved as a new version if ``version`` is the newest", "StoryEdit",
     "200", [_STORY_ID], ["400", "404", "409", "413"]),
    ("delete", "/stories/{story_id}", "Soft delete (undo: POST .../undelete)", None, "204", [_STORY_ID], ["404"]),
    ("post", "/stories/{story_id}/undelete", "Brings a deleted story back", None, "200", [_STORY_ID], ["404"]),
    ("get", "/stories/{story_id}/versions", "Every version, newest first", None, "200", [_STORY_ID], ["404"]),
    ("get", "/stories/{story_id}/versions/{number}", "One version", None, "200", [_STORY_ID, _NUMBER],
     ["400", "404"]),
    ("post", "/stories/{story_id}/versions/{number}/restore", "That version saved again as the newest", "Restore",
     "200", [_STORY_ID, _NUMBER], ["400", "404", "409", "413"]),
    ("get", "/stories/{story_id}/export", "Markdown (``?format=md``) or JSON with provenance (``json``)", None,
     "200", [_STORY_ID, {"name": "format", "in": "query", "required": False,
                         "schema": {"type": "string", "enum": ["json", "md"]}}], ["400", "404"]),
    ("post", "/feedback", "A writer's verdict on a draft (thumb, kept over the others, or edited): stored with "
     "the drafts it judges, it becomes a preference pair for training", "FeedbackIn", "201", [], ["400", "413"]),
]


def _error(status: int, field: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, "detail": [{"loc": [field], "msg": message}], **extra},
                        status_code=status)


def _refusal(exc: StoreError) -> JSONResponse:
    response = _error(exc.status, exc.field, str(exc), **exc.extra)
    if exc.status == 503:
        response.headers["Retry-After"] = "5"
    return response


async def _json_object(request: Request) -> dict[str, Any]:
    """The request's body as a JSON object; :class:`Invalid` for no body, not JSON or not an object."""
    raw = await request.body()
    if not raw.strip():
        raise Invalid("send the story as a JSON object (the body is empty)", "body")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Invalid(f"the body is not JSON: {exc}", "body") from None
    if not isinstance(data, dict):
        raise Invalid("the body must be a JSON object", "body")
    return data


def _validated(model: type[Any], data: dict[str, Any], within: str = "") -> Any:
    """``data`` as ``model``; :class:`Invalid` naming the first wrong field (under ``within``, e.g. ``story``)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join([within] * bool(within) + [str(p) for p in first["loc"]]) or "body"
        raise Invalid(f"{where}: {first['msg']}", where) from None


async def _body(request: Request, model: type[Any]) -> Any:
    """The JSON body as ``model``; :class:`Invalid` naming the first wrong field."""
    return _validated(model, await _json_object(request))


def _bearer(request: Request) -> str:
    given = request.headers.get("authorization", "")
    return given[7:].strip() if given.lower().startswith("bearer ") else ""


def _writer(store: StoryStore, request: Request) -> Writer:
    """Who is writing: the account whose token the request bears, else the shared local writer."""
    return store.writer_for_token(_bearer(request)) or store.local_writer()


def _version_number(raw: str) -> int:
    if raw.isascii() and raw.isdigit() and 0 < len(raw) < 10 and int(raw) > 0:
        return int(raw)
    raise Invalid(f"version {raw!r}: a version is a positive whole number", "version")


def markdown(story: dict[str, Any]) -> str:
    """The story as a Markdown manuscript: title, text, and the memory and author's note when set."""
    parts = [f"# {story['title']}", "", story["text"].rstrip(), ""]
    if story["memory"]:
        parts += ["---", "", f"**Memory:** {story['memory']}", ""]
    if story["authors_note"]:
        parts += [f"**Author's note:** {story['authors_note']}", ""]
    return "\n".join(parts)


def openapi_parts() -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``/stories`` paths and their component schemas for the service's OpenAPI document."""
    ref = "#/components/schemas/{model}"
    schemas: dict[str, Any] = {}
    for model in (StoryFields, StoryEdit, Restore, FeedbackIn):
        schema = model.model_json_schema(ref_template=ref)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas["StoryExport"] = {"type": "object", "required": ["format", "story"], "properties": {
        "format": {"type": "string", "enum": [EXPORT_FORMAT]}, "story": {"$ref": ref.format(model="StoryFields")},
        "exported_from": {"type": "object"}}}
    schemas["StoryConflict"] = {"type": "object", "required": ["error", "detail", "current_version", "current"],
                                "properties": {"error": {"type": "string"}, "detail": {"type": "array"},
                                               "current_version": {"type": "integer"}, "current": {"type": "object"}}}
    paths: dict[str, Any] = {}
    for method, path, summary, body, ok, parameters, refusals in _OPERATIONS:
        responses: dict[str, Any] = {ok: {"description": "Done."} if ok == "204" else {
            "description": "The story (or list) as JSON; an export as Markdown or JSON."}}
        for code in [*refusals, "503"]:
            text, schema = _ANSWERS[code]
            responses[code] = {"description": text, "content": {"application/json": {"schema": {
                "$ref": ref.format(model=schema)}}}}
        operation: dict[str, Any] = {"summary": summary, "tags": ["stories"], "responses": responses,
                                     "operationId": f"{method}_{path.strip('/').replace('/', '_')}".replace(
                                         "{", "").replace("}", "")}
        if parameters:
            operation["parameters"] = parameters
        if body:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
                "$ref": ref.format(model=body)}}}}
        paths.setdefault(path, {})[method] = operation
    return paths, schemas


def add_feedback_route(app: FastAPI, store: Callable[[], StoryStore]) -> None:
    """Adds ``POST /feedback``: a writer's verdict on a draft, kept in the workspace database."""

    async def feedback(request: Request) -> Response:
        """Stores the verdict (201 with its id); 400 names a wrong field, 503 says the database is down."""
        try:
            verdict = await _body(request, FeedbackIn)
            opened = store()
            try:
                number = record_feedback(opened.engine, verdict, _writer(opened, request).name)
            except ValueError as exc:
                field = str(exc).partition(": ")[0]
                raise Invalid(str(exc), field) from None
            except SQLAlchemyError as exc:
                raise Unavailable(f"the feedback database is unavailable: {type(exc).__name__}") from None
        except StoreError as exc:
            return _refusal(exc)
        return JSONResponse({"id": number, "request_id": verdict.request_id, "kind": verdict.kind}, status_code=201)

    app.add_api_route("/feedback", feedback, methods=["POST"], summary="A writer's verdict on a draft",
                      tags=["feedback"])


def add_story_routes(app: FastAPI, store: Callable[[], StoryStore]) -> None:
    """Adds the ``/stories`` routes to ``app``; ``store()`` gives the store (opened on first use)."""
    router = APIRouter(prefix="/stories", tags=["stories"])

    def writer(request: Request) -> Writer:
        return _writer(store(), request)

    def handled(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)  # FastAPI reads the path parameters from fn's signature
        async def run(request: Request, **params: Any) -> Response:
            try:
                return await fn(request, **params)
            except StoreError as exc:
                return _refusal(exc)
        return run

    @handled
    async def list_stories(request: Request) -> Response:
        """The writer's stories, newest first (``?deleted=true``: the deleted ones)."""
        deleted = request.query_params.get("deleted", "false").lower() in ("1", "true", "yes")
        return JSONResponse({"stories": store().list(writer(request), deleted)})

    @handled
    async def create(request: Request) -> Response:
        """Saves a new story as version 1."""
        fields = await _body(request, StoryFields)
        return JSONResponse(store().create(writer(request), fields), status_code=201)

    @handled
    async def read(request: Request, story_id: str) -> Response:
        """The story's newest version."""
        return JSONResponse(store().get(writer(request), story_id))

    @handled
    async def edit(request: Request, story_id: str) -> Response:
        """Saves an edit as a new version if ``version`` is the newest; else 409 with the newest."""
        body = await _body(request, StoryEdit)
        changes = body.model_dump(exclude_unset=True, exclude={"version"})
        origin = request.headers.get("x-save-origin", "edit")[:40]
        return JSONResponse(store().update(writer(request), story_id, body.version, changes, origin))

    @handled
    async def delete(request: Request, story_id: str) -> Response:
        """Soft-deletes the story (``POST /stories/{id}/undelete`` brings it back)."""
        store().delete(writer(request), story_id)
        return Response(status_code=204)

    @handled
    async def undelete(request: Request, story_id: str) -> Response:
        """Brings a deleted story back."""
        return JSONResponse(store().undelete(writer(request), story_id))

    @handled
    async def versions(request: Request, story_id: str) -> Response:
        """Every version of the story, newest first."""
        return JSONResponse({"versions": store().versions(writer(request), story_id)})

    @handled
    async def version(request: Request, story_id: str, number: str) -> Response:
        """One version of the story."""
        return JSONResponse(store().get(writer(request), story_id, _version_number(number)))

    @handled
    async def restore(request: Request, story_id: str, number: str) -> Response:
        """Saves version ``number`` again as the newest; the body's ``version`` is the newest the writer saw."""
        body = await _body(request, Restore)
        return JSONResponse(store().restore_version(writer(request), story_id, _version_number(number),
                                                    body.version))

    @handled
    async def export(request: Request, story_id: str) -> Response:
        """The story as Markdown (``?format=md``) or as JSON with every turn's provenance (``json``)."""
        kind = request.query_params.get("format", "json")
        story = store().get(writer(request), story_id)
        if kind == "md":
            return PlainTextResponse(markdown(story), media_type="text/markdown; charset=utf-8")
        if kind != "json":
            raise Invalid(f"format {kind!r}: use md or json", "format")
        fields = {k: story[k] for k in StoryFields.model_fields}
        return JSONResponse({"format": EXPORT_FORMAT, "exported_from": {"id": story["id"], "version":
                             story["version"], "saved_at": story["saved_at"]}, "story": fields})

    @handled
    async def import_story(request: Request) -> Response:
        """A new story from a JSON export (its ``story`` object)."""
        data = await _json_object(request)
        if data.get("format") != EXPORT_FORMAT or not isinstance(data.get("story"), dict):
            raise Invalid(f"not a story export: expected {{'format': '{EXPORT_FORMAT}', 'story': {{...}}}}",
                          "format")
        unknown = set(data) - {"format", "story", "exported_from"}
        if unknown or not isinstance(data.get("exported_from", {}), dict):
            field = sorted(unknown)[0] if unknown else "exported_from"
            raise Invalid(f"{field}: an export has format, story and exported_from (an object)", field)
        fields = _validated(StoryFields, data["story"], within="story")
        return JSONResponse(store().create(writer(request), fields, origin="import"), status_code=201)

    # one route per path, whatever its methods: a method a path does not take gets 405 with all it does take
    async def collection(request: Request) -> Response:
        return await (list_stories if request.method == "GET" else create)(request)

    async def item(request: Request, story_id: str) -> Response:
        handler = {"GET": read, "PUT": edit, "DELETE": delete}[request.method]
        return await handler(request, story_id=story_id)

    router.add_api_route("", collection, methods=["GET", "POST"])
    router.add_api_route("/import", import_story, methods=["POST"])
    router.add_api_route("/{story_id}", item, methods=["GET", "PUT", "DELETE"])
    router.add_api_route("/{story_id}/undelete", undelete, methods=["POST"])
    router.add_api_route("/{story_id}/versions", versions, methods=["GET"])
    router.add_api_route("/{story_id}/versions/{number}", version, methods=["GET"])
    router.add_api_route("/{story_id}/versions/{number}/restore", restore, methods=["POST"])
    router.add_api_route("/{story_id}/export", export, methods=["GET"])
    app.include_router(router)

    async def not_found(request: Request, exc: Exception) -> Response:
        """A 404 under /stories in the API's error body (a path no route pattern matches: a line break in it)."""
        if request.url.path.startswith("/stories") and getattr(exc, "status_code", 0) == 404:
            return _error(404, "path", "no such story route (see /docs.json)")
        return await http_exception_handler(request, exc)  # type: ignore[arg-type]

    app.add_exception_handler(StarletteHTTPException, not_found)
