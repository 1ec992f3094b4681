"""What both tabs of the writing UI share: request building from the UI's values, readable errors, provenance lines."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from serving.engine import NotReadyError
from serving.planner import RequestError, RequestPlanner
from serving.schemas import RequestBase


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
    return f"Written by {prov.get('family', '?')} · {prov.get('registered_name', '?')} v{prov.get('version', '?')}" \
           f"{at}{run}{quality}{how}"


def stop_strings(text: str) -> list[str]:
    r"""The UI's stop box: one stop string per line (empty lines ignored; ``\n`` stands for a line break)."""
    return [line.replace("\\n", "\n") for line in text.splitlines() if line.strip()]


def request_for(planner: RequestPlanner, prompt: str, form: str, genre: str, max_new: float, preset: str,
                temperature: float, top_k: float, top_p: float, min_p: float, rep: float, stop: str, drafts: float,
                seed: Any) -> RequestBase:
    """The API request for the UI's values, checked by the service's planner.

    Raises:
        pydantic.ValidationError: Naming the value that breaks a rule.
    """
    return planner.request(prompt=prompt or "", form=form or "story", genre=genre or "",
                           max_new_tokens=int(max_new), preset=preset or None, temperature=float(temperature),
                           top_k=int(top_k), top_p=float(top_p), min_p=float(min_p), repetition_penalty=float(rep),
                           stop=stop_strings(stop or ""), num_drafts=int(drafts),
                           seed=None if seed in (None, "") else int(seed))
