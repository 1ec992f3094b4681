"""The BentoML service: the champion behind an HTTP API, with the Gradio writing UI at ``/ui``.

Run it from the checkout with ``bentoml serve serving.service:CreativeWriter`` (it serves
``models:/creative-writer@champion`` from the project's MLflow registry), or deploy it with
``python run.py --pipeline deployment`` (a Bento with the champion imported into BentoML's model store).

Endpoints: ``POST /generate`` (drafts + provenance + timings), ``POST /stream`` (one draft as plain-text
chunks), ``GET /model`` (what is served and its evaluation metrics), ``/ui`` (the writing UI), BentoML's
``/livez``, ``/readyz`` (503 with the reason until a model is loaded), ``/metrics`` (Prometheus, with
``creative_writer_requests_total`` and ``creative_writer_tokens_total``) and ``/docs`` (OpenAPI); and the
OpenAI-compatible ``GET /v1/models``, ``POST /v1/completions`` and ``POST /v1/chat/completions``
(:mod:`serving.openai_compat`); and the writer's stories, kept with every version in the workspace
database: ``/stories`` (:mod:`serving.stories_api`).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import AsyncGenerator
from typing import Any

import bentoml
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, StreamingResponse

from serving.config import DEPLOYMENT_ID_ENV, load_serving_config
from serving.engine import Engine, NotReadyError, OverloadedError, iterate_in_thread
from serving.middleware import GuardMiddleware, UiGuardMiddleware
from serving.openai_compat import OpenAICompat, add_routes
from serving.openapi import ApiDocsMiddleware
from serving.planner import RequestError, RequestPlanner
from serving.schemas import GenerateResponse
from serving.stories_api import add_feedback_route, add_story_routes
from serving.story_sync import StorySync
from serving.ui import build_ui, prepare_for_mount
from workspace.db import database_url
from workspace.store import StoreError, StoryStore
from workspace.traffic import RequestLog

log = logging.getLogger("creative_writer.service")

# The serving profile, read once as the service starts (`bentoml serve` imports this module to start it, and
# BentoML takes the port, the timeout and the request schema from the class definition below). Every part
# of the service gets it from here: the engine, the UI, the guard and the request class its planner builds.
CONFIG = load_serving_config()
Request = RequestPlanner.for_config(CONFIG).request_model  # the profile's limits; /docs documents the same

REQUESTS = bentoml.metrics.Counter(name="creative_writer_requests_total",
                                   documentation="Requests by endpoint and outcome",
                                   labelnames=["endpoint", "outcome"])
TOKENS = bentoml.metrics.Counter(name="creative_writer_tokens_total", documentation="Generated tokens by endpoint",
                                 labelnames=["endpoint"])

info_app = FastAPI(title="creative-writer info")


def count(endpoint: str, outcome: str, tokens: int = 0) -> None:
    """Counts a request by endpoint and outcome, and the tokens it wrote (the Prometheus counters)."""
    REQUESTS.labels(endpoint=endpoint, outcome=outcome).inc()
    if tokens:
        TOKENS.labels(endpoint=endpoint).inc(tokens)


@info_app.get("/model")
def model_info() -> JSONResponse:
    """What is served: provenance, evaluation metrics, known forms and genres, limits, and the deployment.

    ``deployment`` is the id of the deployment that started this server ('' when started by hand): a
    deployment checks it to know that the process answering on its port is the one it started.
    """
    service = bentoml.get_current_service()
    return JSONResponse({**service.engine.describe(), "deployment": os.environ.get(DEPLOYMENT_ID_ENV, ""),
                         "request_log": REQUEST_LOG.stats()})


def _error(status: int, field: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "detail": [{"loc": [field], "msg": message}]}, status_code=status)


def _current_engine() -> Engine:
    return bentoml.get_current_service().engine


add_routes(info_app, OpenAICompat(_current_engine, count))  # /v1: the same engine, batching and guard


@functools.cache
def story_store() -> StoryStore:
    """The workspace's story store, opened (and migrated) on first use; a failed open is retried next time."""
    return StoryStore(database_url(CONFIG.workspace.database_url), CONFIG.workspace)


def is_writer_token(token: str) -> bool:
    """Whether ``token`` is a writer account's (False when the database cannot say)."""
    try:
        return story_store().writer_for_token(token) is not None
    except StoreError:
        return False


add_story_routes(info_app, story_store)
add_feedback_route(info_app, story_store)
# every generation request, served or refused, logged off the request path into the same database
REQUEST_LOG = RequestLog(lambda: story_store().engine, CONFIG.traffic)
# mounted at /ui; its guard checks events against it; the Manuscript tab keeps its stories in the same store
UI = prepare_for_mount(build_ui(_current_engine, CONFIG, StorySync(story_store)))



@bentoml.service(name="creative_writer", http={"host": CONFIG.server.host, "port": CONFIG.server.port},
                 traffic={"timeout": CONFIG.server.timeout_s}, workers=1)
@bentoml.asgi_app(info_app, path="/")
@bentoml.gradio.mount_gradio_app(UI, path="/ui")
class CreativeWriter:
    """Serves the registry's champion (or the Bento's imported model) to writers."""

    def __init__(self) -> None:
        self.engine = Engine(CONFIG, observer=REQUEST_LOG.record)
        self.engine.start()

    def __is_ready__(self) -> bool:
        """Ready once the model is loaded; otherwise a 503 whose body says why."""
        ready, reason = self.engine.check_ready()
        if not ready:
            raise HTTPException(status_code=503, detail=f"not ready: {reason}")
        return True

    def _refuse(self, endpoint: str, exc: Exception) -> JSONResponse:
        if isinstance(exc, OverloadedError):
            count(endpoint, "overloaded")
            response = _error(503, "model", str(exc))
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        if isinstance(exc, NotReadyError):
            count(endpoint, "not_ready")
            return _error(503, "model", str(exc))
        assert isinstance(exc, RequestError)
        count(endpoint, "bad_request")
        return _error(400, exc.field, str(exc))

    @bentoml.api(input_spec=Request)
    async def generate(self, **fields: Any) -> GenerateResponse:
        """Writes ``num_drafts`` drafts for a prompt; returns them with provenance and timings."""
        request = Request.model_construct(**fields)
        try:
            response = await self.engine.generate_async(request)
        except (NotReadyError, RequestError) as exc:
            return self._refuse("generate", exc)  # type: ignore[return-value]
        count("generate", "ok", sum(d.tokens for d in response.drafts))
        return response

    @bentoml.api(input_spec=Request)
    async def stream(self, **fields: Any) -> AsyncGenerator[str, None]:
        """Streams one draft as plain-text chunks (``X-Seed`` and ``X-Model-*`` headers say what wrote it)."""
        request = Request.model_construct(**fields)
        try:
            settings, pieces = self.engine.stream(request)  # checks the request before anything is sent
        except (NotReadyError, RequestError) as exc:
            return self._refuse("stream", exc)  # type: ignore[return-value]
        provenance = pieces.provenance  # the champion, or the challenger for this story
        engine = self.engine

        async def body() -> AsyncGenerator[str, None]:
            text, outcome = [], "error"
            try:
                async for piece in iterate_in_thread(pieces):
                    text.append(piece)
                    yield piece
                outcome = "ok"
            finally:
                count("stream", outcome, engine.loaded.model.count_tokens("".join(text)) if text else 0)

        headers = {"X-Seed": str(settings.seed), "X-Request-Id": pieces.request_id, "X-Model-Family": provenance.family,
                   "X-Model-Version": provenance.version, "X-Model-Alias": provenance.alias,
                   "Cache-Control": "no-store"}
        return StreamingResponse(body(), media_type="text/plain; charset=utf-8", headers=headers)  # type: ignore[return-value]


CreativeWriter.add_asgi_middleware(ApiDocsMiddleware, model_id=CONFIG.model.registered_name, limits=CONFIG.limits)
CreativeWriter.add_asgi_middleware(UiGuardMiddleware, blocks=UI)
CreativeWriter.add_asgi_middleware(GuardMiddleware, token=CONFIG.token, max_body_bytes=CONFIG.limits.max_body_bytes,
                                   story_body_bytes=CONFIG.workspace.max_body_bytes, writer_token=is_writer_token)

