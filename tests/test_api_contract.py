"""The API contract: a valid OpenAPI 3.0 document, the UI guard, and schema-driven fuzzing of a real server."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from typing import ClassVar

import httpx
import pytest

from serving.middleware import UI_UNUSED, GuardMiddleware, UiGuardMiddleware, query_is_text
from serving.openapi import ERROR_SCHEMAS, api_document, to_openapi30


def test_json_schema_2020_becomes_openapi_30():
    assert to_openapi30({"type": "number", "exclusiveMinimum": 0, "maximum": 5}) == {
        "type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 5}
    assert to_openapi30({"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}], "default": None}) == {
        "type": "integer", "minimum": 0, "default": None, "nullable": True}
    assert to_openapi30({"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}) == {
        "anyOf": [{"type": "string"}, {"type": "integer"}], "nullable": True}
    assert to_openapi30({"type": "string", "const": "a", "examples": ["x", "y"]}) == {
        "type": "string", "enum": ["a"], "example": "x"}
    assert to_openapi30({"anyOf": [{"type": "string", "enum": ["steady", "wild"]}, {"type": "null"}]}) == {
        "type": "string", "enum": ["steady", "wild", None], "nullable": True}  # 3.0.3: null must be listed
    nested = to_openapi30({"properties": {"t": {"type": "number", "exclusiveMaximum": 1.5}}})
    assert nested == {"properties": {"t": {"type": "number", "maximum": 1.5, "exclusiveMaximum": True}}}
    assert to_openapi30({"type": "boolean", "exclusiveMinimum": True}) == {"type": "boolean", "exclusiveMinimum": True}


def bento_like_document() -> dict:
    body = {"type": "object", "properties": {"prompt": {"type": "string", "description": "The prompt."},
                                             "temperature": {"type": "number", "exclusiveMinimum": 0}}}
    post = {"requestBody": {"content": {"application/json": {"schema": body}}},
            "responses": {"400": {"content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/InvalidArgument"}}}}}}
    return {"openapi": "3.0.2", "info": {"title": "t"}, "paths": {
        "/generate": {"post": post}, "/model": {"get": {"responses": {"200": {"description": "ok"}}}},
        "/ui/": {"get": {"responses": {"200": {"description": "page"}}}},
        "/ui/gradio_api/queue/join": {"post": {"requestBody": {"content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/PredictBody"}}}}}}},
        "components": {"schemas": {"InvalidArgument": {"type": "object"}, "PredictBody": {
            "type": "object", "properties": {"data": {"$ref": "#/components/schemas/Inner"}}},
            "Inner": {"type": "object"}}}}


def test_api_document_leaves_out_the_ui_and_documents_the_real_error_bodies():
    raw = bento_like_document()
    doc = api_document(raw)
    v1 = {"/v1/models", "/v1/completions", "/v1/chat/completions"}
    stories = {p for p in doc["paths"] if p.startswith("/stories")}
    assert len(stories) == 8  # documented from the store's own models (tests/test_workspace.py drives them)
    assert set(doc["paths"]) == {"/generate", "/model", "/feedback"} | v1 | stories
    assert raw["paths"]["/ui/"]  # the input is unchanged
    v1_schemas = {"OpenAIError", "CompletionRequest", "ChatRequest", "Message", "TextPart"}
    story_schemas = {"StoryFields", "StoryEdit", "Restore", "StoryExport", "StoryConflict", "LoreEntry", "Turn",
                     "FeedbackIn"}
    assert set(doc["components"]["schemas"]) == set(ERROR_SCHEMAS) | v1_schemas | story_schemas  # UI bodies go
    chat = doc["components"]["schemas"]["ChatRequest"]["properties"]
    assert chat["model"]["enum"] == ["creative-writer"] and chat["presence_penalty"]["enum"] == [0]
    responses = doc["paths"]["/generate"]["post"]["responses"]
    assert {"400", "401", "413", "415", "503"} <= set(responses)
    assert responses["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/RequestProblem"}
    assert ERROR_SCHEMAS["RequestProblem"]["properties"]["detail"]["type"] == "array"  # the server sends a list
    props = doc["paths"]["/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert props["temperature"] == {"type": "number", "minimum": 0, "exclusiveMinimum": True}
    assert "control character" in props["prompt"]["description"]
    with_ui = api_document(raw, include_ui=True)
    assert "/ui/" in with_ui["paths"] and {"PredictBody", "Inner"} <= set(with_ui["components"]["schemas"])


def test_query_strings_must_be_utf8():
    assert query_is_text(b"page=&x=%C3%A9+b") and query_is_text(b"")
    assert query_is_text(b"page=P%C3%A8%F2%BB%85%A9K")  # U+BB169: unassigned, but UTF-8
    assert not query_is_text(b"page=%ED%A0%80") and not query_is_text(b"a=%FF")  # a surrogate; a stray byte


class FakeFn:
    def __init__(self, inputs: int, targets: tuple = ()) -> None:
        self.inputs = [object()] * inputs
        self.targets = list(targets)


class FakeBlocks:
    _id = 0  # the Blocks itself: page-load events name it as their trigger
    fns: ClassVar = {0: FakeFn(1), 1: FakeFn(0, [(0, "load")]), 2: FakeFn(1, [(7, "click")])}
    blocks: ClassVar = {7: object()}
    pages: ClassVar = [("", "Home", True)]


def call(app, method: str, path: str, query: bytes = b"", body: bytes = b"", headers=()) -> tuple[int, bytes, bytes]:
    """Runs one request through an ASGI app; returns (status, body, the body the inner app received)."""
    sent: list[dict] = []
    seen = {"body": b""}

    async def inner(scope, receive, send):
        message = await receive()
        seen["body"] = message.get("body", b"")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"inner"})

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": query, "headers": list(headers)}
    asyncio.run(app(inner)(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"), seen["body"]


def ui_guard(inner):
    return UiGuardMiddleware(inner, blocks=FakeBlocks())


def test_ui_guard_passes_the_pages_own_traffic_and_refuses_the_rest():
    assert call(ui_guard, "GET", "/ui/")[0] == 200
    assert call(ui_guard, "GET", "/ui/config", b"page=")[0] == 200
    assert call(ui_guard, "GET", "/generate", b"a=%FF")[0] == 200  # outside /ui: not this guard's business
    status, body, _ = call(ui_guard, "GET", "/ui/gradio_api/call/v2/x/y")
    assert status == 404 and b"internal route of the UI" in body
    for path in ("/ui/pwa_icon/0", "/ui/gradio_api/proxy=abc", "/ui/gradio_api/run/predict", "/ui/login"):
        assert UI_UNUSED.match(path) and call(ui_guard, "GET", path)[0] == 404
    assert call(ui_guard, "GET", "/ui/", b"page=%F3%80%91")[0] == 400  # cut short
    status, body, _ = call(ui_guard, "HEAD", "/ui/", b"page=then")
    assert status == 404 and b"no page 'then'" in body


@pytest.mark.parametrize(("event", "problem"), [
    ({"fn_index": 0, "data": [], "trigger_id": 7}, b"event handler 0 takes 1 input value(s)"),
    ({"fn_index": 536870911, "data": []}, b"fn_index 536870911 is not an event handler"),
    ({"fn_index": True, "data": ["x"]}, b"fn_index True is not an event handler"),
    ({"fn_index": 0, "data": ["x"], "trigger_id": 99}, b"trigger_id 99 is not a component"),
    ({"fn_index": 2, "data": ["x"], "trigger_id": 0}, b"trigger_id 0 is not a component that triggers"),
])
def test_ui_guard_refuses_events_the_ui_cannot_run(event, problem):
    status, body, _ = call(ui_guard, "POST", "/ui/gradio_api/queue/join", body=json.dumps(event).encode())
    assert status == 422 and problem in body


def test_ui_guard_lets_page_load_events_through():
    event = json.dumps({"fn_index": 1, "data": [], "trigger_id": 0}).encode()  # found dropped by the browser test
    assert call(ui_guard, "POST", "/ui/gradio_api/queue/join", body=event)[0] == 200


def test_ui_guard_hands_a_good_event_on_with_its_body():
    event = json.dumps({"fn_index": 0, "data": ["a prompt"], "trigger_id": 7}).encode()
    assert call(ui_guard, "POST", "/ui/gradio_api/queue/join", body=event) == (200, b"inner", event)
    assert call(ui_guard, "POST", "/ui/gradio_api/queue/join", body=b"{not json")[0] == 200  # Gradio's 422


def test_api_operations_take_json_only():
    guard = lambda inner: GuardMiddleware(inner)  # noqa: E731
    status, body, _ = call(guard, "POST", "/generate", headers=[(b"content-type", b"multipart/form-data")])
    assert status == 415 and b"Content-Type: application/json" in body
    ok = [(b"content-type", b"application/json; charset=utf-8"), (b"content-length", b"2")]
    assert call(guard, "POST", "/stream", body=b"{}", headers=ok)[0] == 200
    assert call(guard, "POST", "/ui/gradio_api/upload", headers=[(b"content-type", b"multipart/form-data"),
                                                                 (b"content-length", b"0")])[0] == 200


def schemathesis(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("schemathesis") or shutil.which("st")
    command = [exe] if exe else [sys.executable, "-m", "schemathesis.cli"]
    return subprocess.run([*command, "run", *args, "--seed", "1", "-w", "1", "--no-color"], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.serving
def test_the_served_document_is_openapi_30_and_the_api_survives_fuzzing(served):
    pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency (requirements-dev.txt)")
    doc = httpx.get(served.url + "/docs.json", timeout=10).json()
    assert doc["openapi"].startswith("3.0") and not any(p.startswith("/ui") for p in doc["paths"])
    stories = {"/stories", "/stories/import", "/stories/{story_id}", "/stories/{story_id}/undelete",
               "/stories/{story_id}/versions", "/stories/{story_id}/versions/{number}",
               "/stories/{story_id}/versions/{number}/restore", "/stories/{story_id}/export"}
    assert set(doc["paths"]) == {"/generate", "/stream", "/model", "/healthz", "/livez", "/readyz", "/metrics",
                                 "/v1/models", "/v1/completions", "/v1/chat/completions", "/feedback", *stories}
    assert doc["paths"]["/stories/{story_id}"]["put"]["responses"]["409"]
    assert doc["paths"]["/v1/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert '"exclusiveMinimum": 0' not in json.dumps(doc)
    # every check but "schema-valid requests are accepted": a prompt's Unicode rules (no control characters,
    # no emoji) are in its description, not expressible in the 3.0 schema, so the fuzzer's valid prompts
    # may be refused with 400 as documented
    # and no "validation mismatch" warning: a chat must end with the user's message, which a 3.0 schema cannot
    # say, so most fuzzed conversations are refused with the documented 400
    api = schemathesis(served.url + "/docs.json", "--checks", "all", "--exclude-checks", "positive_data_acceptance",
                       "--max-examples", "30", "--warnings", "missing_auth,missing_test_data")
    assert api.returncode == 0, api.stdout[-4000:]
    # one warning may remain: a fuzzer cannot guess a story's id, so the /stories/{story_id} operations answer
    # 404 (as documented) to its made-up ids; every other operation must reach the API's logic
    unreached = re.findall(r"^\s+- (?:GET|PUT|POST|DELETE) (\S+)$", api.stdout, re.M)
    assert "No issues found" in api.stdout or (
        "Missing test data" in api.stdout and unreached and all(p.startswith("/stories/{story_id}") for p in unreached)
    ), api.stdout[-4000:]


@pytest.mark.serving
def test_the_mounted_ui_answers_fuzzed_requests_without_server_errors(served):
    pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency (requirements-dev.txt)")
    assert httpx.get(served.url + "/ui/gradio_api/call/v2/x/y", timeout=10).status_code == 404
    # the UI's own routes, from the UI-inclusive document; left out: the routes the guard answers 404
    # (tested above) and the two server-sent-event streams a fuzzer cannot read to their end
    unused = UI_UNUSED.pattern.lstrip("^")
    ui = schemathesis(served.url + "/docs.json?ui=1", "--checks", "not_a_server_error", "--max-examples", "25",
                      "--phases", "examples,coverage,fuzzing", "--include-path-regex", "^/ui",
                      "--exclude-path-regex", f"queue/data|heartbeat|^{unused}")
    assert ui.returncode == 0, ui.stdout[-4000:]
    assert int(re.search(r"Selected: (\d+)/", ui.stdout).group(1)) >= 15  # 22 UI operations with Gradio 6.31
