"""The serving logic behind the HTTP API and the UI, free of BentoML so that it is tested on its own.

:class:`Engine` loads the model in the background (readiness is false until it is loaded, with the
reason), plans a request against the loaded model through the profile's
:class:`~serving.planner.RequestPlanner` (form and genre, seeds, sampling), writes drafts (through the
adaptive :class:`~serving.batching.Batcher` when enabled) and streams one draft.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict
from typing import Any

from serving.batching import Batcher, BatchResult
from serving.champion import LoadedModel, NoModelError
from serving.config import ServingConfig
from serving.planner import Chat, Plan, RequestError, RequestPlanner
from serving.schemas import Draft, GenerateResponse, RequestBase, Timings
from workspace.traffic import LogRow, new_request_id

Observer = Callable[[LogRow], None]

log = logging.getLogger(__name__)


class NotReadyError(RuntimeError):
    """No model is loaded (yet); the message says why."""


class OverloadedError(NotReadyError):
    """More requests are being written and waiting than ``limits.max_in_flight`` allows (answered 503 at once).

    Attributes:
        retry_after: Seconds after which the queue has likely drained (the ``Retry-After`` header).
    """

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Admission:
    """Admission control: at most ``limit`` generation requests in flight (written or waiting for the model).

    llama.cpp writes one request at a time, so a request beyond what the queue can serve in reasonable
    time is refused at once with a ``Retry-After`` estimate instead of timing out after minutes.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.refused = 0
        self._seconds = 1.0  # a running mean of how long a request holds its place
        self._lock = threading.Lock()

    def enter(self) -> float:
        """Takes a place; returns when it was taken.

        Raises:
            OverloadedError: When every place is taken (0 places means no limit).
        """
        with self._lock:
            if self.limit and self.in_flight >= self.limit:
                self.refused += 1
                wait = max(1, round(self._seconds * self.in_flight))
                raise OverloadedError(f"the model is busy: {self.in_flight} requests are being written or waiting "
                                      f"(limits.max_in_flight {self.limit}); try again in about {wait} s", wait)
            self.in_flight += 1
        return time.monotonic()

    def leave(self, entered: float) -> None:
        """Gives a place back and learns how long it was held."""
        with self._lock:
            self.in_flight -= 1
            self._seconds = 0.8 * self._seconds + 0.2 * (time.monotonic() - entered)

    def held(self, pieces: Iterator[str]) -> Held:
        """``pieces`` holding a place taken now until they end or are closed (a client that goes away frees it).

        Raises:
            OverloadedError: When every place is taken (before anything is sent).
        """
        return Held(self, pieces, self.enter())


class Held:
    """An iterator over a draft's pieces that holds an admission place until it ends, fails or is closed."""

    def __init__(self, admission: Admission, pieces: Iterator[str], entered: float) -> None:
        self._admission, self._pieces, self._entered = admission, pieces, entered
        self._open = True

    def __iter__(self) -> Held:
        return self

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except BaseException:  # the end, an error, or the consumer's close: the place is given back
            self.close()
            raise

    def close(self) -> None:
        """Stops the pieces and gives the place back (once)."""
        if self._open:
            self._open = False
            close = getattr(self._pieces, "close", None)
            if close is not None:
                close()
            self._admission.leave(self._entered)

    def __del__(self) -> None:
        self.close()


async def iterate_in_thread(pieces: Iterator[str]) -> AsyncIterator[str]:
    """Drives a blocking iterator in a worker thread (one copied contextvars context) and yields its items.

    The event loop stays free while the model computes; when the consumer stops early, the worker ends
    after its current item.
    """
    import contextvars

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    stop = threading.Event()
    context = contextvars.copy_context()

    def send(kind: str, value: Any) -> bool:
        """Hands an item to the event loop; False when the loop is gone (the consumer has stopped)."""
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        except RuntimeError:  # "Event loop is closed": nobody is listening any more
            return False
        return True

    def produce() -> None:
        try:
            for piece in pieces:
                if stop.is_set() or not send("piece", piece):
                    break
        except Exception as exc:  # re-raised on the event loop
            send("error", exc)
        finally:  # a client that went away: the model stops now and gives back what it holds (its admission place)
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
        send("end", None)

    worker = threading.Thread(target=context.run, args=(produce,), name="stream", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()  # the client went away: let the worker finish its current step and end


def logged_settings(settings: Any) -> dict[str, Any]:
    """A request's settings as the request log keeps them: flat values (``logit_bias`` as its number of tokens).

    The log's rows become a table (the monitoring pipeline's Parquet artifact), where a mapping per row has no
    column type: an empty ``logit_bias`` could not be written at all.
    """
    if settings is None:
        return {}
    dumped = settings.model_dump()
    if "logit_bias" in dumped:
        dumped["logit_bias"] = len(dumped["logit_bias"] or {})
    return dumped


def outcome_of(exc: BaseException) -> str:
    """The request log's outcome for a failure: a request the planner refused is 4xx, a cancel is cancelled."""
    if isinstance(exc, RequestError):
        return "4xx"
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    return "5xx"


class Logged:
    """A draft's pieces that report the request to the log when they end, fail or are closed (once).

    Attributes:
        request_id: The id the log row has (what a client sends back with feedback).
        provenance: The model that writes it (the champion, or the challenger for this story).
    """

    def __init__(self, pieces: Iterator[str], finish: Callable[[str, str, float | None, str], None],
                 request_id: str, provenance: Any = None) -> None:
        self._pieces, self._finish, self.request_id, self.provenance = pieces, finish, request_id, provenance
        self._started = time.perf_counter()
        self._first: float | None = None
        self._text: list[str] = []
        self._done = False

    def __iter__(self) -> Logged:
        return self

    def __next__(self) -> str:
        try:
            piece = next(self._pieces)
        except StopIteration:
            self._end("ok")
            raise
        except BaseException as exc:
            self._end(outcome_of(exc), f"{type(exc).__name__}: {exc}")
            raise
        if self._first is None:
            self._first = (time.perf_counter() - self._started) * 1000
        self._text.append(piece)
        return piece

    def close(self) -> None:
        """Stops the pieces; a draft closed before its end is logged as cancelled."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()
        self._end("cancelled")

    def _end(self, outcome: str, error: str = "") -> None:
        if not self._done:
            self._done = True
            self._finish(outcome, "".join(self._text), self._first, error)

    def __del__(self) -> None:
        self.close()


class Engine:
    """Holds the served model and turns requests into drafts.

    Args:
        config: The serving profile.
        loader: ``loader(config.model) -> LoadedModel`` (default: :func:`serving.champion.load`).
        observer: Called with a :class:`~workspace.traffic.LogRow` for every request, served or refused (the
            request log's :meth:`~workspace.traffic.RequestLog.record`; it must not block).
    """

    def __init__(self, config: ServingConfig, loader: Callable[[Any], LoadedModel] | None = None,
                 observer: Observer | None = None) -> None:
        from serving import champion

        self.config = config
        self.observer = observer
        self.planner = RequestPlanner.for_config(config)
        self._loader = loader or functools.partial(champion.load, threads=config.server.torch_threads)
        self._loaded: LoadedModel | None = None
        self._challenger: LoadedModel | None = None
        self.challenger_status = "off (canary.share is 0)"
        self._reason = "the model is loading"
        self._lock = threading.Lock()
        self._last_attempt = 0.0
        self._loading = False
        self.admission = Admission(config.limits.max_in_flight)
        self._batcher = Batcher(self._run_rows, config.batching.max_batch_size, config.batching.max_latency_ms) \
            if config.batching.enabled else None

    # --- loading and readiness -------------------------------------------------------------------------
    def load(self) -> bool:
        """Loads the model now (blocking); returns whether it is loaded. Failures become the not-ready reason."""
        with self._lock:
            if self._loaded is not None:
                return True
            self._loading, self._last_attempt = True, time.monotonic()
        try:
            from core.threads import configure_threads

            configure_threads(self.config.server.torch_threads)
            loaded = self._loader(self.config.model)
        except NoModelError as exc:
            reason = str(exc)
            log.warning("not ready: %s", reason)
        except Exception as exc:  # any load failure is reported, the server stays up
            reason = f"loading {self.config.model.describe()} failed: {type(exc).__name__}: {exc}"
            log.exception("not ready: %s", reason)
        else:
            challenger = self._load_challenger()
            with self._lock:
                self._loaded, self._challenger, self._loading = loaded, challenger, False
            return True
        with self._lock:
            self._reason, self._loading = reason, False
        return False

    def _load_challenger(self) -> LoadedModel | None:
        """The canary's challenger, when ``canary.share`` > 0 (a failure is said in ``/model``, never fatal)."""
        canary = self.config.canary
        if not canary.share:
            return None
        source = self.config.challenger_source()
        try:
            challenger = self._loader(source)
        except Exception as exc:  # the champion serves every story; /model says why there is no challenger
            self.challenger_status = f"not served: loading {source.describe()} failed: {exc}"
            log.warning("canary: %s", self.challenger_status)
            return None
        self.challenger_status = f"writes {canary.share:.0%} of stories: {challenger.provenance.short()}"
        log.info("canary: the challenger %s", self.challenger_status)
        return challenger

    def writer_of(self, provenance: dict[str, Any]) -> LoadedModel:
        """The loaded model that wrote a response with ``provenance`` (the challenger's version, else the champion).

        Raises:
            NotReadyError: If no model is loaded.
        """
        champion, challenger = self.loaded, self._challenger
        if challenger is not None and str(provenance.get("version")) == str(challenger.provenance.version) \
                and provenance.get("alias") == challenger.provenance.alias:
            return challenger
        return champion

    def route(self, key: str) -> LoadedModel:
        """The model that writes for ``key`` (a story id, else the request's id).

        The challenger for a stable ``canary.share`` of keys (a hash of the key), else the champion.

        Raises:
            NotReadyError: If no model is loaded.
        """
        champion = self.loaded
        challenger, share = self._challenger, self.config.canary.share
        if challenger is None or not share:
            return champion
        bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0x100000000
        return challenger if bucket < share else champion

    def start(self) -> threading.Thread:
        """Loads the model in a background thread (the server answers health checks meanwhile)."""
        thread = threading.Thread(target=self.load, name="model-loader", daemon=True)
        thread.start()
        return thread

    def check_ready(self) -> tuple[bool, str]:
        """Whether a model is loaded, and why not; with none, tries again after ``retry_s``."""
        with self._lock:
            if self._loaded is not None:
                return True, f"serving {self._loaded.provenance.short()}"
            retry = not self._loading and time.monotonic() - self._last_attempt >= self.config.model.retry_s
        if retry:
            self.start()
        return False, self._reason

    @property
    def loaded(self) -> LoadedModel:
        """The loaded model; raises NotReadyError with the reason when there is none."""
        if self._loaded is None:
            raise NotReadyError(f"no model is being served: {self._reason}")
        return self._loaded

    # --- requests --------------------------------------------------------------------------------------
    def plan(self, request: RequestBase, chat: Chat | None = None, loaded: LoadedModel | None = None) -> Plan:
        """The request planned against ``loaded`` (default: the champion; see :meth:`RequestPlanner.plan`).

        Raises:
            NotReadyError: If no model is loaded.
            RequestError: If the model does not know the request's form or genre.
        """
        model = loaded or self.loaded
        return self.planner.plan(request, model.controls, chat, vocab_size=model.vocab_size,
                                 words=model.model.word_token_ids)

    def _run_rows(self, settings: Any, rows: list[tuple[str, int]]) -> list[str]:
        return self.loaded.model.generate_rows(rows, settings)

    def _observe(self, request_id: str, endpoint: str, request: RequestBase, outcome: str, started: float,
                 settings: Any = None, texts: tuple[str, ...] | list[str] = (), first_chunk_ms: float | None = None,
                 error: str = "", story_id: str | None = None, tokens: int | None = None,
                 loaded: LoadedModel | None = None) -> None:
        """Reports one request to the observer (never raises into the request); ``tokens`` None: counted here."""
        if self.observer is None:
            return
        try:
            loaded = loaded or self._loaded
            prov = loaded.provenance if loaded is not None else None
            if tokens is None:
                tokens = sum(loaded.model.count_tokens(t) for t in texts if t) if loaded is not None else 0
            self.observer(LogRow(
                id=request_id, endpoint=endpoint, outcome=outcome,  # type: ignore[arg-type]
                model_version=prov.version if prov else "", model_alias=prov.alias if prov else "",
                runtime=self.config.model.runtime, form=getattr(request, "form", ""),
                genre=getattr(request, "genre", ""), settings=logged_settings(settings),
                prompt_chars=len(getattr(request, "prompt", "")), output_chars=sum(len(t) for t in texts),
                drafts=len(texts), tokens=tokens, latency_ms=round((time.perf_counter() - started) * 1000, 3),
                first_chunk_ms=first_chunk_ms, story_id=story_id, error=error or None,
                prompt_text=getattr(request, "prompt", None), output_text=list(texts)))
        except Exception:  # the log must never fail a request
            log.exception("the request could not be reported to the request log")

    def _response(self, request: RequestBase, settings: Any, seeds: list[int], result: BatchResult,
                  started: float, loaded: LoadedModel) -> GenerateResponse:
        model = loaded.model
        drafts = [Draft(text=t, seed=s, tokens=model.count_tokens(t)) for t, s in zip(result.texts, seeds, strict=True)]
        total = time.perf_counter() - started
        tokens = sum(d.tokens for d in drafts)
        timings = Timings(queue_ms=round(result.queue_s * 1000, 2), generate_ms=round(result.generate_s * 1000, 2),
                          total_ms=round(total * 1000, 2), tokens_per_s=round(tokens / total, 1) if total > 0 else 0.0)
        return GenerateResponse(drafts=drafts, provenance=loaded.provenance.as_dict(),
                                settings={**settings.model_dump(), "num_drafts": request.num_drafts,
                                          "preset": request.preset or ""}, timings=timings)

    def _write(self, settings: Any, rows: list[tuple[str, int]], loaded: LoadedModel) -> BatchResult:
        started = time.perf_counter()
        texts = loaded.model.generate_rows(rows, settings)
        return BatchResult(texts, 0.0, time.perf_counter() - started, len(rows))

    async def generate_async(self, request: RequestBase, chat: Chat | None = None, endpoint: str = "generate",
                             story_id: str | None = None) -> GenerateResponse:
        """Writes the request's drafts off the event loop (batched with other requests when enabled).

        ``chat`` carries a conversation's system message and earlier turns (see :class:`~serving.planner.Chat`).
        The request is logged (as ``endpoint``) whatever its outcome; the response carries its ``request_id``.
        """
        started, request_id, settings, chosen = time.perf_counter(), new_request_id(), None, None
        story_id = story_id or getattr(request, "story_id", "") or None
        try:
            chosen = self.route(story_id or request_id)
            plan = self.plan(request, chat, chosen)
            settings = plan.settings
            entered = self.admission.enter()
            try:
                if self._batcher is None or chosen is not self._loaded:  # the batcher batches the champion's rows
                    result = await asyncio.to_thread(self._write, plan.settings, plan.rows, chosen)
                else:
                    result = await self._batcher.submit(plan.settings.replace(seed=0), plan.rows)
            finally:
                self.admission.leave(entered)
        except BaseException as exc:
            self._observe(request_id, endpoint, request, outcome_of(exc), started, settings,
                          error=f"{type(exc).__name__}: {exc}", story_id=story_id, loaded=chosen)
            raise
        response = self._response(request, plan.settings, plan.seeds, result, started, chosen)
        self._observe(request_id, endpoint, request, "ok", started, settings, result.texts, story_id=story_id,
                      tokens=sum(d.tokens for d in response.drafts), loaded=chosen)
        return response.model_copy(update={"request_id": request_id})

    def stream(self, request: RequestBase, chat: Chat | None = None, endpoint: str = "stream",
               story_id: str | None = None) -> tuple[Any, Logged]:
        """The settings (with the seed used) and an iterator over the text of one draft.

        The iterator's ``request_id`` names its request-log row, written when the draft ends or is closed.

        Raises:
            OverloadedError: When ``limits.max_in_flight`` requests are already in flight (checked now,
                before anything is sent; the place is held until the iterator ends or is closed).
        """
        started, request_id, settings, chosen = time.perf_counter(), new_request_id(), None, None
        story_id = story_id or getattr(request, "story_id", "") or None
        try:
            chosen = self.route(story_id or request_id)
            settings = self.plan(request.model_copy(update={"num_drafts": 1}), chat, chosen).settings
            held = self.admission.held(chosen.model.stream(request.prompt, settings))
        except BaseException as exc:
            self._observe(request_id, endpoint, request, outcome_of(exc), started, settings,
                          error=f"{type(exc).__name__}: {exc}", story_id=story_id, loaded=chosen)
            raise

        def finish(outcome: str, text: str, first_ms: float | None, error: str) -> None:
            self._observe(request_id, endpoint, request, outcome, started, settings, [text], first_ms, error, story_id,
                          loaded=chosen)

        return settings, Logged(held, finish, request_id, chosen.provenance)

    def describe(self) -> dict[str, Any]:
        """What is served: provenance, metrics, the forms and genres it knows, limits and defaults."""
        ready, reason = self.check_ready()
        out: dict[str, Any] = {"ready": ready, "status": reason, "source": self.config.model.describe(),
                               "runtime": self.config.model.runtime,
                               "load": {"in_flight": self.admission.in_flight, "refused": self.admission.refused},
                               "limits": asdict(self.config.limits), "defaults": self.config.defaults.model_dump(),
                               "batching": asdict(self.config.batching)}
        if ready:
            loaded = self.loaded
            challenger = self._challenger
            out["canary"] = {"share": self.config.canary.share, "status": self.challenger_status,
                             "challenger": challenger.provenance.as_dict() if challenger else None}
            out.update(provenance=loaded.provenance.as_dict(), metrics=loaded.provenance.metrics,
                       controls=loaded.controls, load_seconds=round(loaded.load_seconds, 2),
                       attention_map=hasattr(loaded.model, "attention_map"))
        return out

    async def close(self) -> None:
        """Stops the batcher."""
        if self._batcher is not None:
            await self._batcher.close()

    @property
    def batch_sizes(self) -> list[int]:
        """Rows per batch run so far (empty without batching)."""
        return self._batcher.batch_sizes if self._batcher is not None else []
