"""The serving logic behind the HTTP API and the UI, free of BentoML so that it is tested on its own.

:class:`Engine` loads the model in the background (readiness is false until it is loaded, with the
reason), checks a request against the model (form and genre), writes drafts (through the adaptive
:class:`~serving.batching.Batcher` when enabled) and streams one draft.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from serving.batching import Batcher, BatchResult
from serving.champion import LoadedModel, NoModelError
from serving.config import ServingConfig
from serving.schemas import MAX_SEED, Draft, GenerateRequest, GenerateResponse, Timings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chat:
    """The context around a request: a system message, earlier turns, the text the piece begins with.

    ``system`` ('' keeps the model's own) replaces the system prompt; ``lead`` is written on from.
    Families with a chat layout (a pretrained Transformer with a chat template) read the system message
    and the turns; families whose ``writes_on`` is true read the lead; the others write from the prompt.
    """

    system: str = ""
    history: tuple[tuple[str, str], ...] = ()
    lead: str = ""


class NotReadyError(RuntimeError):
    """No model is loaded (yet); the message says why."""


class RequestError(ValueError):
    """A request the loaded model cannot serve; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def check_controls(controls: dict[str, list[str]], form: str, genre: str) -> None:
    """Raises RequestError (naming ``form`` or ``genre``) when the model has no control token for it.

    Args:
        controls: The model's ``{"form": [...], "genre": [...]}`` values.
        form: The requested form.
        genre: The requested genre ('' for none).
    """
    if form not in controls["form"]:
        raise RequestError("form", f"unknown form '{form}'; this model writes: {', '.join(controls['form'])}")
    if genre and genre not in controls["genre"]:
        raise RequestError("genre", f"unknown genre '{genre}'; this model knows: "
                                    f"{', '.join(g for g in controls['genre'] if g != 'none')} (or leave it empty)")


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

    def produce() -> None:
        try:
            for piece in pieces:
                if stop.is_set():
                    break
                loop.call_soon_threadsafe(queue.put_nowait, ("piece", piece))
        except Exception as exc:  # re-raised on the event loop
            loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
        loop.call_soon_threadsafe(queue.put_nowait, ("end", None))

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


class Engine:
    """Holds the served model and turns requests into drafts.

    Args:
        config: The serving profile.
        loader: ``loader(config.model) -> LoadedModel`` (default: :func:`serving.champion.load`).
    """

    def __init__(self, config: ServingConfig, loader: Callable[[Any], LoadedModel] | None = None) -> None:
        from serving import champion

        self.config = config
        self._loader = loader or champion.load
        self._loaded: LoadedModel | None = None
        self._reason = "the model is loading"
        self._lock = threading.Lock()
        self._last_attempt = 0.0
        self._loading = False
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
            from models.threads import configure_threads

            configure_threads(self.config.server.torch_threads)
            loaded = self._loader(self.config.model)
        except NoModelError as exc:
            reason = str(exc)
            log.warning("not ready: %s", reason)
        except Exception as exc:  # any load failure is reported, the server stays up
            reason = f"loading {self.config.model.describe()} failed: {type(exc).__name__}: {exc}"
            log.exception("not ready: %s", reason)
        else:
            with self._lock:
                self._loaded, self._loading = loaded, False
            return True
        with self._lock:
            self._reason, self._loading = reason, False
        return False

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
    def settings(self, request: GenerateRequest, seed: int, chat: Chat | None = None) -> Any:
        """The model's generation settings for a request (form and genre checked against the model).

        Sampling: the profile's defaults, then the request's preset, then the fields the request sets.
        ``chat`` adds a conversation's system message and earlier turns (used by chat-layout families).
        """
        from models.contract import GenerationSettings
        from models.presets import SAMPLING_FIELDS, resolve_sampling

        form, genre = request.form, request.genre or ""
        check_controls(self.loaded.controls, form, genre)
        sampling = resolve_sampling(asdict(self.config.defaults), request.preset,
                                    {k: getattr(request, k) for k in SAMPLING_FIELDS})
        chat = chat or Chat()
        return GenerationSettings(max_new_tokens=request.max_new_tokens, seed=seed, form=form, genre=genre,
                                  stop=tuple(request.stop), system=chat.system, history=chat.history, lead=chat.lead,
                                  **sampling)

    def seeds(self, request: GenerateRequest) -> list[int]:
        """The drafts' seeds: ``seed, seed + 1, ...`` (a random first seed when the request has none)."""
        first = request.seed if request.seed is not None else random.randrange(0, 2**31)
        return [(first + i) % (MAX_SEED + 1) for i in range(request.num_drafts)]

    def _run_rows(self, settings: Any, rows: list[tuple[str, int]]) -> list[str]:
        return self.loaded.model.generate_rows(rows, settings)

    def _response(self, request: GenerateRequest, settings: Any, seeds: list[int], result: BatchResult,
                  started: float) -> GenerateResponse:
        model = self.loaded.model
        drafts = [Draft(text=t, seed=s, tokens=model.count_tokens(t)) for t, s in zip(result.texts, seeds, strict=True)]
        total = time.perf_counter() - started
        tokens = sum(d.tokens for d in drafts)
        timings = Timings(queue_ms=round(result.queue_s * 1000, 2), generate_ms=round(result.generate_s * 1000, 2),
                          total_ms=round(total * 1000, 2), tokens_per_s=round(tokens / total, 1) if total > 0 else 0.0)
        return GenerateResponse(drafts=drafts, provenance=self.loaded.provenance.as_dict(),
                                settings={**asdict(settings), "num_drafts": request.num_drafts,
                                          "preset": request.preset or ""}, timings=timings)

    def _plan(self, request: GenerateRequest, chat: Chat | None = None) -> tuple[list[int], Any, list[tuple[str, int]]]:
        """The drafts' seeds, the checked settings (first seed) and the ``(prompt, seed)`` rows."""
        seeds = self.seeds(request)
        return seeds, self.settings(request, seeds[0], chat), [(request.prompt, s) for s in seeds]

    def _write(self, settings: Any, rows: list[tuple[str, int]]) -> BatchResult:
        started = time.perf_counter()
        texts = self._run_rows(settings, rows)
        return BatchResult(texts, 0.0, time.perf_counter() - started, len(rows))

    async def generate_async(self, request: GenerateRequest, chat: Chat | None = None) -> GenerateResponse:
        """Writes the request's drafts off the event loop (batched with other requests when enabled).

        ``chat`` carries a conversation's system message and earlier turns (see :meth:`settings`).
        """
        started = time.perf_counter()
        seeds, settings, rows = self._plan(request, chat)
        if self._batcher is None:
            result = await asyncio.to_thread(self._write, settings, rows)
        else:
            result = await self._batcher.submit(settings.replace(seed=0), rows)
        return self._response(request, settings, seeds, result, started)

    def stream(self, request: GenerateRequest, chat: Chat | None = None) -> tuple[Any, Iterator[str]]:
        """The settings (with the seed used) and an iterator over the text of one draft."""
        seed = self.seeds(request.model_copy(update={"num_drafts": 1}))[0]
        settings = self.settings(request, seed, chat)
        return settings, self.loaded.model.stream(request.prompt, settings)

    def describe(self) -> dict[str, Any]:
        """What is served: provenance, metrics, the forms and genres it knows, limits and defaults."""
        ready, reason = self.check_ready()
        out: dict[str, Any] = {"ready": ready, "status": reason, "source": self.config.model.describe(),
                               "limits": asdict(self.config.limits), "defaults": asdict(self.config.defaults),
                               "batching": asdict(self.config.batching)}
        if ready:
            loaded = self.loaded
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
