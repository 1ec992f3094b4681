"""OpenAI-compatible endpoints on the service's engine: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``.

Story front-ends, editor plug-ins and the ``openai`` client libraries talk to a text model through this
API. The endpoints share the engine of ``/generate`` (one model copy, the same batching and the same bearer
token, which clients send as their API key). How the fields map:

- ``prompt`` (completions) or the conversation (chat) is the writing prompt: the served model writes a piece
  for it. In a chat, the last message must be the user's; for a family with a chat template (the pretrained
  Transformer) a system message replaces the model's own and the earlier turns go through the template; the
  other families write from the last user message alone.
- ``max_tokens`` (chat also ``max_completion_tokens``), ``temperature``, ``top_p``, ``n``, ``seed`` and
  ``stop`` mean what they mean in ``/generate`` (``n`` drafts use seeds ``seed, seed + 1, …``). Temperature
  0 is greedy decoding (top-k 1).
- Extra body fields: ``form``, ``genre``, ``preset``, ``top_k``, ``min_p``, ``repetition_penalty`` and the
  DRY and XTC settings (``dry_multiplier``, ``dry_base``, ``dry_allowed_length``, ``xtc_threshold``,
  ``xtc_probability``), ``banned_phrases`` (never written: the sampler backtracks) and ``word_bias`` (logit
  bias by word, turned into the writing model's token ids).
- ``logprobs`` (completions: an integer, the alternatives per token; chat: ``logprobs: true`` with
  ``top_logprobs``), non-streamed only: each token's log-probability under the request's sampling settings
  (temperature, penalty and filters, so a token the filters cut gets OpenAI's floor of -9999) and the top
  alternatives, from :meth:`models.contract.WriterModel.token_chances` (the text read again by the model).
- ``logit_bias`` as OpenAI has it (token ids of the served model's tokenizer, as strings, with a bias from
  -100 to 100; at most 300), applied by both runtimes' samplers; an id the model does not have is a 400.
- Refused with a 400 error object naming the parameter: ``presence_penalty``/``frequency_penalty`` other
  than 0 (use ``repetition_penalty``), ``logprobs`` with ``stream``, ``echo``, ``best_of`` > 1, ``suffix``,
  tools, a response format other than text, more than one prompt, token-id prompts and unknown fields.
- ``stream: true`` sends server-sent events in OpenAI's chunk format; the chunk that ends a choice carries
  its ``finish_reason``, the last one the request's ``usage`` (with ``stream_options.include_usage`` it comes
  as a separate chunk with no choices, as OpenAI sends it), then ``data: [DONE]``.
- ``usage.prompt_tokens`` counts the prompt text (or the last user message) under the model's tokenizer, not
  the instruction the model wraps it in. ``finish_reason`` is ``length`` when a choice used its whole token
  budget, else ``stop``. Each response also carries ``seed`` (the first choice's) and ``system_fingerprint``
  (family and registry version of the model that wrote it).

Errors use OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from core.paths import REGISTERED_NAME
from models.params import MAX_STOPS, choice_fields, word_bias_field
from serving.config import Limits
from serving.engine import Engine, NotReadyError, OverloadedError, iterate_in_thread
from serving.planner import Chat, RequestError, RequestPlanner
from serving.schemas import RequestBase

MAX_LOGPROBS = 5  # alternatives per token, as OpenAI allows for completions
FLOOR_LOGPROB = -9999.0  # a token the sampler could not have drawn (OpenAI's own floor); JSON has no -inf

# the GenerateRequest field each OpenAI field becomes (and back, for error messages)
TO_GENERATE = {"max_tokens": "max_new_tokens", "max_completion_tokens": "max_new_tokens", "n": "num_drafts"}
FROM_GENERATE = {"max_new_tokens": "max_tokens", "num_drafts": "n"}
EXTRA_SAMPLING = ("top_k", "min_p", "repetition_penalty", "dry_multiplier", "dry_base", "dry_allowed_length",
                  "xtc_threshold", "xtc_probability", "wind_down")  # SamplingParams fields OpenAI has no name for
PASSED_ON = ("temperature", "top_p", "seed", "form", "genre", "preset", *EXTRA_SAMPLING, "banned_phrases",
             "word_bias", "target_words")
Count = Callable[[str, str, int], None]  # (endpoint, outcome, tokens) -> None


class OpenAIError(Exception):
    """A refusal sent as OpenAI's error object.

    Args:
        status: HTTP status.
        message: What is wrong, for people.
        param: The request parameter at fault (None for the request as a whole).
        code: A short machine-readable code.
        kind: OpenAI's error ``type``.
    """

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def response(self) -> JSONResponse:
        """The error as an HTTP response."""
        return JSONResponse(error_body(self.message, self.kind, self.param, self.code), status_code=self.status)


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class _OpenAIFields(BaseModel):
    """The fields both endpoints share, and the project's own extra fields (strict JSON types).

    The sampling fields (temperature, top_p, seed and the extras top_k, min_p, repetition_penalty) come from
    :class:`models.params.SamplingParams`; only the temperature's lower bound differs (0 is OpenAI's greedy).
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(description="The served model's id (GET /v1/models).")
    max_tokens: int | None = Field(None, ge=1, description="Upper bound on generated tokens (the server's default "
                                   "when left out; at most the server's limit).")
    n: int = Field(1, ge=1, description="How many choices to write (choice i uses seed + i; at most the server's "
                   "limit).")
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = Field(
        None, description="Token ids (the served model's tokenizer, as strings) with a bias from -100 to 100 added "
                          "to their logits: -100 bans a token, 100 all but forces it; at most 300.",
        json_schema_extra={"maxProperties": 300, "additionalProperties": {"type": "number", "minimum": -100,
                                                                          "maximum": 100}})
    user: str | None = None
    # the project's own
    form: str | None = None
    genre: str | None = None
    preset: str | None = None


_Extras = create_model(
    "_Extras", __base__=_OpenAIFields, __module__=__name__, __doc__=_OpenAIFields.__doc__,
    **choice_fields(("temperature", "top_p", "seed", *EXTRA_SAMPLING, "banned_phrases", "target_words"),
                    temperature={"ge": 0, "description": "0 is greedy; otherwise as in /generate."}),
    word_bias=(word_bias_field()[0] | None, Field(None, description=word_bias_field()[1].description)))


class CompletionRequest(_Extras):  # type: ignore[valid-type, misc]
    """``POST /v1/completions``."""

    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS, description="Per-token log-probabilities with "
                                 "this many alternatives (not with stream).")
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None


class TextPart(BaseModel):
    """One part of a message's content (only text parts are understood)."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: str
    text: str = ""


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None
    name: str | None = None


class ChatRequest(_Extras):  # type: ignore[valid-type, misc]
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = Field(None, description="Per-token log-probabilities (not with stream).")
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS, description="Alternatives per token.")
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


def _refuse_unsupported(req: _Extras) -> None:
    """Raises OpenAIError (400, naming the parameter) for a parameter the server does not implement."""
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name):
            raise OpenAIError(400, f"{name} is not supported; use repetition_penalty (1 = none, 1.1-1.3 to "
                                   "discourage repeats) as an extra body field", name, "unsupported_parameter")
    unsupported: dict[str, bool] = {}
    if isinstance(req, CompletionRequest):
        unsupported = {"echo": req.echo,
                       "best_of": req.best_of not in (None, 1), "suffix": bool(req.suffix)}
    elif isinstance(req, ChatRequest):
        fmt = (req.response_format or {}).get("type", "text")
        unsupported = {"tools": bool(req.tools) or bool(req.functions),
                       "response_format": fmt != "text"}
    for name, refused in unsupported.items():
        if refused:
            raise OpenAIError(400, f"{name} is not supported by this server", name, "unsupported_parameter")
    if req.stream and _logprobs_asked(req) is not None:
        raise OpenAIError(400, "logprobs are sent with non-streamed responses only; leave out stream or logprobs",
                          "logprobs", "unsupported_parameter")
    if isinstance(req, ChatRequest) and req.top_logprobs is not None and not req.logprobs:
        raise OpenAIError(400, "top_logprobs needs logprobs: true", "top_logprobs", "invalid_value")


def _logprobs_asked(req: _Extras) -> int | None:
    """How many alternatives per token the request asks for (None: no log-probabilities)."""
    if isinstance(req, CompletionRequest):
        return req.logprobs
    if isinstance(req, ChatRequest) and req.logprobs:
        return req.top_logprobs or 0
    return None


def _logprob(p: float) -> float:
    return math.log(p) if p > 0 else FLOOR_LOGPROB


def logprobs_body(chances: list[Any], top: int, chat: bool) -> dict[str, Any]:
    """OpenAI's ``logprobs`` of one choice from the model's token report (:meth:`WriterModel.token_chances`).

    Args:
        chances: The written tokens with their probabilities and alternatives.
        top: Alternatives per token.
        chat: The chat shape (``content`` list) rather than the completions one (parallel lists).
    """
    if chat:
        return {"content": [{"token": c.text, "logprob": _logprob(c.p), "bytes": list(c.text.encode()),
                             "top_logprobs": [{"token": t, "logprob": _logprob(p), "bytes": list(t.encode())}
                                              for t, p in c.alternatives[:top]]} for c in chances]}
    offsets, at = [], 0
    for c in chances:
        offsets.append(at)
        at += len(c.text)
    return {"tokens": [c.text for c in chances], "token_logprobs": [_logprob(c.p) for c in chances],
            "top_logprobs": [{t: _logprob(p) for t, p in c.alternatives[:top]} for c in chances] if top else None,
            "text_offset": offsets}


def _prompt_text(req: CompletionRequest) -> str:
    prompt = req.prompt
    if isinstance(prompt, list):
        if not prompt or not all(isinstance(p, str) for p in prompt):
            raise OpenAIError(400, "send the prompt as text; token-id prompts are not supported", "prompt")
        if len(prompt) != 1:
            raise OpenAIError(400, f"send one prompt per request (got {len(prompt)}); use n for several "
                                   "choices", "prompt")
        prompt = prompt[0]
    return str(prompt)


def _text(content: str | list[TextPart] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    for part in content:
        if part.type != "text":
            raise OpenAIError(400, f"message content of type {part.type!r} is not supported; send text",
                              "messages")
    return "".join(part.text for part in content)


def chat_prompt(messages: list[Message], uses_chat: bool) -> tuple[str, Chat]:
    """The writing prompt (the last user message) and the conversation around it.

    Args:
        messages: The request's messages; the last must be the user's.
        uses_chat: Whether the served family reads a system message and earlier turns.

    Raises:
        OpenAIError: For a conversation that does not end with a user message, or tool messages.
    """
    if messages[-1].role != "user":
        raise OpenAIError(400, f"the last message must be the user's (it is {messages[-1].role!r}): the model "
                               "writes a reply to it", "messages")
    system, history = [], []
    for message in messages[:-1]:
        if message.role in ("tool", "function"):
            raise OpenAIError(400, f"{message.role} messages are not supported", "messages")
        text = _text(message.content)
        if message.role in ("system", "developer"):
            system.append(text)
        elif text.strip():
            history.append((message.role, text))
    prompt = _text(messages[-1].content)
    if not uses_chat:
        return prompt, Chat()
    return prompt, Chat(system="\n\n".join(s for s in system if s.strip()), history=tuple(history))


def generate_request(planner: RequestPlanner, req: _Extras, prompt: str,
                     prompt_param: str = "prompt") -> RequestBase:
    """The project's request for an OpenAI one, checked by the service's planner (errors name the OpenAI parameter).

    The profile's limits (new tokens, choices, prompt length) are the planner's; a left-out ``max_tokens`` is
    the profile's default. ``prompt_param`` names where the prompt came from in error messages (``messages``
    for a chat).

    Raises:
        OpenAIError: 400 naming the parameter that breaks a rule.
    """
    _refuse_unsupported(req)
    fields: dict[str, Any] = {"prompt": prompt, "num_drafts": req.n}
    limit = getattr(req, "max_completion_tokens", None) or req.max_tokens
    fields["max_new_tokens"] = limit if limit is not None else planner.defaults.max_new_tokens
    fields.update({k: getattr(req, k) for k in PASSED_ON if getattr(req, k) is not None})
    if req.temperature == 0:  # OpenAI's greedy decoding
        fields.update(temperature=1.0, top_k=1)
    if req.logit_bias:  # OpenAI's keys are token ids written as strings
        bad = [key for key in req.logit_bias if not key.isdigit()]
        if bad:
            raise OpenAIError(400, f"logit_bias keys must be token ids (digits), got {bad[:3]}", "logit_bias")
        fields["logit_bias"] = {int(key): bias for key, bias in req.logit_bias.items()}
    if req.stop is not None:
        fields["stop"] = [req.stop] if isinstance(req.stop, str) else list(req.stop)
        if len(fields["stop"]) > MAX_STOPS:
            raise OpenAIError(400, f"at most {MAX_STOPS} stop strings (got {len(fields['stop'])})", "stop")
    try:
        return planner.request(**fields)
    except ValidationError as exc:
        renamed = {**FROM_GENERATE, "prompt": prompt_param}
        raise validation_error(exc, lambda name: renamed.get(name, name)) from None


def validation_error(exc: ValidationError, rename: Callable[[str], str] = str) -> OpenAIError:
    """A 400 for the first problem pydantic found, naming the parameter (``rename`` maps field names)."""
    err = exc.errors(include_url=False)[0]
    loc = [str(x) for x in err.get("loc", ())]
    param = rename(loc[0]) if loc else None
    where = ".".join([param or "body", *loc[1:]]) if loc else "body"
    return OpenAIError(400, f"{where}: {err.get('msg', 'invalid').removeprefix('Value error, ')}", param,
                       "invalid_value" if loc else "invalid_request")


def _finish(tokens: int, max_tokens: int) -> str:
    return "length" if tokens >= max_tokens else "stop"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


def fingerprint_of(provenance: dict[str, Any]) -> str:
    """``system_fingerprint``: the family and registry version of the model that wrote (``transformer-v14``)."""
    return f"{provenance.get('family', '?')}-v{provenance.get('version', '?')}"


class OpenAICompat:
    """The ``/v1`` endpoints over an engine (mounted by :mod:`serving.service`).

    Args:
        get_engine: Returns the engine of the service the endpoints run in.
        count: ``count(endpoint, outcome, tokens)``: the service's request and token counters.
    """

    def __init__(self, get_engine: Callable[[], Engine], count: Count | None = None) -> None:
        self.get_engine = get_engine
        self.count: Count = count or (lambda endpoint, outcome, tokens: None)

    # --- helpers -----------------------------------------------------------------------------------------
    def model_id(self, engine: Engine) -> str:
        """The id clients name the served model by: the registered name (e.g. ``creative-writer``)."""
        return engine.loaded.provenance.registered_name or REGISTERED_NAME

    def _check_model(self, engine: Engine, name: str) -> None:
        served = self.model_id(engine)
        if name != served:
            raise OpenAIError(404, f"the model {name!r} is not served here; this server serves {served!r} "
                                   "(GET /v1/models)", "model", "model_not_found")

    async def _parse(self, request: Request, kind: type[_Extras]) -> _Extras:
        body = await request.body()
        try:
            data = json.loads(body or b"null")
        except ValueError as exc:
            raise OpenAIError(400, f"the body is not valid JSON: {exc}", None, "invalid_json") from None
        if not isinstance(data, dict):
            raise OpenAIError(400, "the body must be a JSON object", None, "invalid_request")
        try:
            return kind.model_validate(data)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            if err.get("type") == "extra_forbidden":
                name = str(err["loc"][0])
                raise OpenAIError(400, f"unknown parameter {name!r}", name, "unknown_parameter") from None
            raise validation_error(exc) from None

    # --- endpoints ---------------------------------------------------------------------------------------
    async def models(self) -> JSONResponse:
        """``GET /v1/models``: the served model, with its provenance and evaluation metrics."""
        try:
            engine = self.get_engine()
            loaded = engine.loaded
        except NotReadyError as exc:
            return OpenAIError(503, str(exc), None, "model_not_ready", "server_error").response()
        prov = loaded.provenance
        entry = {"id": self.model_id(engine), "object": "model", "created": int(loaded.loaded_at),
                 "owned_by": REGISTERED_NAME, "provenance": prov.as_dict(), "controls": loaded.controls}
        return JSONResponse({"object": "list", "data": [entry]})

    async def completions(self, request: Request) -> Any:
        """``POST /v1/completions``."""
        return await self._serve(request, chat=False)

    async def chat_completions(self, request: Request) -> Any:
        """``POST /v1/chat/completions``."""
        return await self._serve(request, chat=True)

    async def _serve(self, request: Request, chat: bool) -> Any:
        endpoint = "v1_chat" if chat else "v1_completions"
        try:
            engine = self.get_engine()
            req = await self._parse(request, ChatRequest if chat else CompletionRequest)
            loaded = engine.loaded
            self._check_model(engine, req.model)
            if chat:
                assert isinstance(req, ChatRequest)
                prompt, conversation = chat_prompt(req.messages, bool(getattr(loaded.model, "chat", False)))
            else:
                assert isinstance(req, CompletionRequest)
                prompt, conversation = _prompt_text(req), Chat()
            gen = generate_request(engine.planner, req, prompt, "messages" if chat else "prompt")
            if req.stream:
                return self._stream(engine, req, gen, conversation, chat, endpoint)
            response = await engine.generate_async(gen, conversation, endpoint=endpoint)
        except OpenAIError as exc:
            self.count(endpoint, "bad_request", 0)
            return exc.response()
        except OverloadedError as exc:
            self.count(endpoint, "overloaded", 0)
            busy = OpenAIError(503, str(exc), None, "overloaded", "server_error").response()
            busy.headers["Retry-After"] = str(exc.retry_after)
            return busy
        except NotReadyError as exc:
            self.count(endpoint, "not_ready", 0)
            return OpenAIError(503, str(exc), None, "model_not_ready", "server_error").response()
        except RequestError as exc:
            self.count(endpoint, "bad_request", 0)
            return OpenAIError(400, str(exc), FROM_GENERATE.get(exc.field, exc.field), "invalid_value").response()
        top = _logprobs_asked(req)
        reports: list[Any] = [None] * len(response.drafts)
        loaded = engine.writer_of(response.provenance)  # with a canary, the challenger may have written it
        if top is not None:  # one teacher-forced pass per choice, off the event loop
            model = loaded.model
            settings = engine.plan(gen, conversation, loaded).settings
            reports = [await asyncio.to_thread(
                model.token_chances, gen.prompt, draft.text, settings.replace(seed=draft.seed), top)
                for draft in response.drafts]
        completion = sum(d.tokens for d in response.drafts)
        self.count(endpoint, "ok", completion)
        choices = []
        for i, draft in enumerate(response.drafts):
            report = logprobs_body(reports[i], top or 0, chat) if top is not None else None
            choice: dict[str, Any] = {"index": i, "logprobs": report,
                                      "finish_reason": _finish(draft.tokens, gen.max_new_tokens)}
            choice.update({"message": {"role": "assistant", "content": draft.text}} if chat else {"text": draft.text})
            choices.append(choice)
        body = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
                "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": self.model_id(engine), "system_fingerprint": fingerprint_of(response.provenance),
                "choices": choices, "usage": _usage(loaded.model.count_tokens(prompt), completion),
                "seed": response.drafts[0].seed}
        return JSONResponse(body)

    def _stream(self, engine: Engine, req: _Extras, gen: RequestBase, conversation: Chat, chat: bool,
                endpoint: str) -> StreamingResponse:
        """Checks the request (before anything is sent), then streams the choices one after another."""
        seeds = engine.planner.seeds(gen)
        single = gen.model_copy(update={"num_drafts": 1, "seed": seeds[0]})
        _, first = engine.stream(single, conversation, endpoint)  # raises RequestError here, as a 400
        model, fingerprint = self.model_id(engine), fingerprint_of(first.provenance.as_dict())
        head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
                "object": "chat.completion.chunk" if chat else "text_completion", "created": int(time.time()),
                "model": model, "system_fingerprint": fingerprint, "seed": seeds[0]}
        separate_usage = bool((req.stream_options or {}).get("include_usage"))
        tokenizer = engine.loaded.model
        prompt_tokens = tokenizer.count_tokens(gen.prompt)
        count = self.count

        def choice(index: int, piece: str | None, finish: str | None) -> dict[str, Any]:
            if chat:
                delta = {"content": piece} if piece is not None else {}
                return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {"index": index, "text": piece or "", "logprobs": None, "finish_reason": finish}

        def pieces_for(index: int) -> Iterator[str]:
            if index == 0:
                return first
            return engine.stream(single.model_copy(update={"seed": seeds[index]}), conversation, endpoint)[1]

        async def events() -> AsyncIterator[str]:
            completion, outcome = 0, "error"
            try:
                for index in range(len(seeds)):
                    if chat:
                        yield _sse({**head, "choices": [{"index": index, "delta": {"role": "assistant", "content": ""},
                                                         "logprobs": None, "finish_reason": None}]})
                    text = []
                    async for piece in iterate_in_thread(pieces_for(index)):
                        text.append(piece)
                        yield _sse({**head, "choices": [choice(index, piece, None)]})
                    tokens = tokenizer.count_tokens("".join(text)) if text else 0
                    completion += tokens
                    last = {**head, "choices": [choice(index, None, _finish(tokens, gen.max_new_tokens))]}
                    if index == len(seeds) - 1 and not separate_usage:
                        last["usage"] = _usage(prompt_tokens, completion)
                    yield _sse(last)
                if separate_usage:
                    yield _sse({**head, "choices": [], "usage": _usage(prompt_tokens, completion)})
                yield _sse("[DONE]")
                outcome = "ok"
            finally:
                count(endpoint, outcome, completion)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Seed": str(seeds[0])})


def add_routes(app: Any, compat: OpenAICompat) -> None:
    """Adds the ``/v1`` routes to a FastAPI (or Starlette) app."""
    app.add_api_route("/v1/models", compat.models, methods=["GET"], summary="The served model (OpenAI format)")
    app.add_api_route("/v1/completions", compat.completions, methods=["POST"],
                      summary="Write a piece for a prompt (OpenAI completions format)")
    app.add_api_route("/v1/chat/completions", compat.chat_completions, methods=["POST"],
                      summary="Write a reply to a conversation (OpenAI chat format)")


ERROR_SCHEMA = {"type": "object", "required": ["error"], "description": "OpenAI's error object.", "properties": {
    "error": {"type": "object", "required": ["message", "type"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": "string", "nullable": True}, "code": {"type": "string", "nullable": True}}}}}
_ERRORS = {"400": "A parameter breaks a rule or is not supported (``error.param`` names it).",
           "401": "A token is configured and the API key is missing or wrong.",
           "404": "The request names a model this server does not serve.",
           "413": "The body is larger than the server's limit.", "415": "The body is not sent as JSON.",
           "503": "No model is loaded yet (or it failed to load: the message says why)."}
_OPERATIONS = {"/v1/completions": ("CompletionRequest", "Write a piece for a prompt (OpenAI completions)"),
               "/v1/chat/completions": ("ChatRequest", "Write a reply to a conversation (OpenAI chat completions)")}


_ACCEPTED_ONLY: dict[str, dict[str, Any]] = {
    "presence_penalty": {"type": "number", "enum": [0]}, "frequency_penalty": {"type": "number", "enum": [0]},
    "echo": {"type": "boolean", "enum": [False]}, "best_of": {"type": "integer", "enum": [1], "nullable": True},
    "suffix": {"type": "string", "maxLength": 0, "nullable": True},
    "tools": {"type": "array", "maxItems": 0, "nullable": True},
    "functions": {"type": "array", "maxItems": 0, "nullable": True},
    "response_format": {"type": "object", "nullable": True,
                        "properties": {"type": {"type": "string", "enum": ["text"]}}},
    "prompt": {"oneOf": [{"type": "string", "minLength": 1}, {"type": "array", "minItems": 1, "maxItems": 1,
                                                              "items": {"type": "string", "minLength": 1}}]},
}

def openapi_parts(model_id: str = REGISTERED_NAME, limits: Limits | None = None) -> tuple[dict[str, Any],
                                                                                          dict[str, Any]]:
    """The ``/v1`` paths and their component schemas for the service's OpenAPI document.

    Args:
        model_id: The id of the served model (the only ``model`` the endpoints accept).
        limits: The served profile's limits, documented as the maxima of ``max_tokens``,
            ``max_completion_tokens`` and ``n`` (default: the code's).
    """
    limits = limits or Limits()
    maxima = {"max_tokens": limits.max_new_tokens, "max_completion_tokens": limits.max_new_tokens,
              "n": limits.max_drafts}
    schemas: dict[str, Any] = {"OpenAIError": ERROR_SCHEMA}
    paths: dict[str, Any] = {}
    ref = "#/components/schemas/{model}"
    errors = {code: {"description": text, "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/OpenAIError"}}}} for code, text in _ERRORS.items()}
    for path, (name, summary) in _OPERATIONS.items():
        schema = (ChatRequest if name == "ChatRequest" else CompletionRequest).model_json_schema(ref_template=ref)
        schemas.update(schema.pop("$defs", {}))
        if "Message" in schemas:  # tool and function messages are refused
            schemas["Message"]["properties"]["role"]["enum"] = ["system", "developer", "user", "assistant"]
            schemas["Message"]["description"] = "One chat message; the last one must be the user's."
        schema["properties"]["model"]["enum"] = [model_id]
        for field, maximum in maxima.items():  # the profile's limits, checked when the request is planned
            if field in schema["properties"]:
                prop = schema["properties"][field]
                for option in prop.get("anyOf", [prop]):
                    if option.get("type") == "integer":
                        option["maximum"] = maximum
        for field, accepted in _ACCEPTED_ONLY.items():  # present for OpenAI clients, honoured only as documented
            if field in schema["properties"]:
                schema["properties"][field] = {**accepted, "description": "Accepted only as documented here; "
                                               "anything else is refused with 400 naming the parameter."}
        schemas[name] = schema
        paths[path] = {"post": {
            "summary": summary, "operationId": path.strip("/").replace("/", "_"),
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": {"$ref": ref.format(model=name)}}}},
            "responses": {"200": {"description": "The choices and usage (JSON), or with ``stream: true`` server-sent "
                                                 "events ending with ``data: [DONE]``.",
                                  "content": {"application/json": {"schema": {"type": "object"}},
                                              "text/event-stream": {"schema": {
                                              "type": "object", "required": ["data"], "properties": {"data": {
                                                  "type": "string", "description": "A JSON chunk, or [DONE]"}}}}}},
                          **errors}}}
    paths["/v1/models"] = {"get": {"summary": "The served model, with its provenance (OpenAI format)",
                                   "operationId": "v1_models",
                                   "responses": {"200": {"description": "A list with the served model.", "content": {
                                       "application/json": {"schema": {"type": "object"}}}},
                                       "401": errors["401"], "503": errors["503"]}}}
    return paths, schemas
