"""What both tabs of the writing UI share: requests from the named controls, readable errors, provenance lines."""

from __future__ import annotations

import functools
import inspect
import logging
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import gradio as gr
from pydantic import ValidationError

from models.params import SAMPLING_FIELDS, SamplingParams
from serving.engine import NotReadyError
from serving.planner import RequestError, RequestPlanner
from serving.schemas import RequestBase

log = logging.getLogger(__name__)


def readable(exc: Exception) -> str:
    """A one-line message for people from a validation or serving error (never a traceback)."""
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors(include_url=False):
            field = ".".join(str(x) for x in err.get("loc", ())) or "input"
            parts.append(f"{field}: {err.get('msg', 'invalid').removeprefix('Value error, ')}")
        return "; ".join(parts)
    if isinstance(exc, RequestError | NotReadyError):
        return str(exc)
    return f"something went wrong ({type(exc).__name__}); the server log has the details"


def provenance_line(prov: dict[str, Any], settings: dict[str, Any] | None = None) -> str:
    """``Written by gan · creative-writer v3 @champion · run 1a2b3c4d · seed 7 · T 0.8``."""
    if not prov:
        return ""
    at = f" @{prov['alias']}" if prov.get("alias") else ""
    run = f" · training run {prov['training_run_id'][:8]}" if prov.get("training_run_id") else ""
    ppl = prov.get("metrics", {}).get("ppl_word")
    quality = f" · test perplexity/word {ppl:.2f}" if isinstance(ppl, float) else ""
    how = ""
    if settings:
        how = f" · seed {settings.get('seed')} · temperature {settings.get('temperature')}"
    runtime = f" · on {prov['runtime']}" if prov.get("runtime") else ""
    return f"Written by {prov.get('family', '?')} · {prov.get('registered_name', '?')} v{prov.get('version', '?')}" \
           f"{at}{run}{quality}{runtime}{how}"


def phrase_lines(text: str) -> list[str]:
    """The UI's banned-phrases box: one phrase per line (empty lines ignored, spaces around a phrase dropped)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def word_bias_lines(text: str) -> dict[str, float]:
    """The UI's word-bias box: one ``word bias`` per line (``suddenly -100``, ``dragon: 3``, ``moon=2``).

    Raises:
        ValueError: Naming the line that is not a word followed by a number.
    """
    out: dict[str, float] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.replace(":", " ").replace("=", " ").split()
        try:
            if len(parts) != 2:
                raise ValueError
            out[parts[0]] = float(parts[1])
        except ValueError:
            raise ValueError(f"word bias, line {number} ('{line.strip()}'): write one word and a number from "
                             "-100 to 100, e.g. 'suddenly -100'") from None
    return out


def stop_strings(text: str) -> list[str]:
    r"""The UI's stop box: one stop string per line (empty lines ignored; ``\n`` stands for a line break)."""
    return [line.replace("\\n", "\n") for line in text.splitlines() if line.strip()]


CONTROLS = ("prompt", "form", "genre", "max_new_tokens", "target_words", "preset", *SAMPLING_FIELDS, "stop",
            "banned_phrases", "word_bias", "num_drafts")
TEXT_CONTROLS = ("prompt", "form", "genre", "preset", "stop", "banned_phrases", "word_bias")  # boxes, not sliders
"""The shared controls above the UI's tabs, by the request field each one sets."""


def _cast(name: str, value: Any) -> Any:
    """A control's value as its request field takes it (sliders give floats; ints stay ints)."""
    kind = SamplingParams.model_fields[name].annotation if name in SamplingParams.model_fields else None
    if name == "num_drafts" or kind is int:
        return int(value)
    return float(value) if kind is float else value


def request_for(planner: RequestPlanner, values: Mapping[str, Any], seed: Any) -> RequestBase:
    """The API request for the UI's control values (keyed as in :data:`CONTROLS`), checked by the service's planner.

    Raises:
        pydantic.ValidationError: Naming the value that breaks a rule.
        KeyError: If a control in :data:`CONTROLS` has no value.
    """
    fields = {name: _cast(name, values[name]) for name in CONTROLS if name not in TEXT_CONTROLS}
    return planner.request(prompt=values["prompt"] or "", form=values["form"] or "story", genre=values["genre"] or "",
                           preset=values["preset"] or None, stop=stop_strings(values["stop"] or ""),
                           banned_phrases=phrase_lines(values.get("banned_phrases") or ""),
                           word_bias=word_bias_lines(values.get("word_bias") or ""),
                           seed=None if seed in (None, "") else int(seed), **fields)


def ui_error(exc: Exception) -> gr.Error:
    """The message a writer sees for ``exc`` (the traceback goes to the server log, only for the unexpected)."""
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, ValidationError | RequestError | NotReadyError):
        message = readable(exc)
    elif isinstance(exc, ValueError):  # the session's own refusals ("write a prompt above first")
        message = str(exc)
    else:
        log.exception("UI action failed")
        message = readable(exc)
    return gr.Error(message, print_exception=False)


def shown_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a UI event handler, plain or a generator) with every failure shown as :func:`ui_error`."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def streamed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                raise ui_error(exc) from None

        return streamed

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise ui_error(exc) from None

    return plain


@dataclass(frozen=True)
class Controls:
    """The shared controls above the tabs: the request's fields by name, the seed and "reuse seed".

    Event handlers take their inputs as a set, so Gradio hands them one ``{component: value}`` dict;
    :meth:`values` names those values as :data:`CONTROLS` does (no positional argument lists).
    """

    fields: dict[str, Any]
    seed: Any
    reuse: Any

    @property
    def inputs(self) -> set[Any]:
        """Every shared control (for an event's ``inputs``)."""
        return {*self.fields.values(), self.seed, self.reuse}

    def values(self, given: Mapping[Any, Any]) -> dict[str, Any]:
        """The controls' values by field name."""
        return {name: given[component] for name, component in self.fields.items()}

    def seed_for(self, given: Mapping[Any, Any]) -> int | None:
        """The seed box's value when "reuse seed" is ticked, else a fresh random seed."""
        return given[self.seed] if given[self.reuse] else random.randrange(0, 2**31)

    def request(self, planner: RequestPlanner, given: Mapping[Any, Any], **changes: Any) -> RequestBase:
        """The request for the controls' values (with ``changes``, e.g. another prompt) and the seed to use."""
        return request_for(planner, {**self.values(given), **changes}, self.seed_for(given))
