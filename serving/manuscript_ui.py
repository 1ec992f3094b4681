"""The UI's Manuscript tab: one editable text that the model fills and extends.

With memory, an author's note, undo/redo of model turns, a context budget, stories saved in the browser
and a token-probability view.

The logic lives in :mod:`serving.manuscript`; this module wires it to Gradio components. The stories are
kept in the browser's local storage (``gr.BrowserState``; Gradio encrypts the value with a key, fixed here
so that stories survive a server restart: it keeps nothing secret, the stories never leave the browser
except to be written on).
"""

from __future__ import annotations

import logging
import random
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from pydantic import ValidationError

from serving.config import ServingConfig
from serving.engine import Engine, NotReadyError
from serving.manuscript import (
    NOTE_FORMAT,
    apply_turn,
    build_context,
    chances_html,
    export_story,
    joined,
    new_story,
    redo,
    save_story,
    story_choices,
    undo,
)
from serving.planner import Chat, RequestError
from serving.schemas import prompt_safe
from serving.ui_helpers import provenance_line, readable

log = logging.getLogger(__name__)
STORAGE_KEY = "creative-writer-stories"
STORAGE_SECRET = "creative-writer-local-stories"  # not a protection: see the module docstring


def _fail(exc: Exception) -> gr.Error:
    """A readable message for the writer (a traceback in the log only for the unexpected)."""
    if isinstance(exc, ValidationError | RequestError | NotReadyError):
        message = readable(exc)
    elif isinstance(exc, ValueError):
        message = str(exc)
    else:
        log.exception("manuscript action failed")
        message = readable(exc)
    return gr.Error(message, print_exception=False)


def manuscript_tab(get_engine: Callable[[], Engine], config: ServingConfig, settings_inputs: list[Any], seed: Any,
                   reuse: Any, request_for: Callable[..., Any]) -> tuple[gr.BrowserState, gr.Dropdown]:
    """Builds the tab inside the current ``gr.Blocks``; returns the stories' browser state and their dropdown.

    Args:
        get_engine: Returns the engine of the service the UI is mounted on.
        config: The serving profile.
        settings_inputs: The shared prompt, form, genre and sampling components (in ``request_for``'s order,
            the number of drafts last).
        seed: The seed component.
        reuse: The "reuse seed" checkbox.
        request_for: Builds a ``GenerateRequest`` from the values of ``settings_inputs`` and a seed.
    """
    limits = config.limits
    gr.Markdown("One text you edit freely. **Generate** writes a piece for the prompt above (with the memory in "
                "front). **Continue** writes on from the end of the manuscript, your own edits included: the "
                "pretrained Transformer continues the text itself, with the prompt, the memory and the author's "
                "note as its instruction; the seq2seq and GAN families write a piece for the memory, the "
                "manuscript's end and the note. The line under the notes shows what fits the model's windows.")
    story = gr.State(new_story())
    stories = gr.BrowserState({}, storage_key=STORAGE_KEY, secret=STORAGE_SECRET)
    with gr.Row():
        title = gr.Textbox(label="Title", elem_id="story-title", scale=2)
        saved = gr.Dropdown(choices=[], label="Saved stories (in this browser)", elem_id="stories", scale=2)
        open_story = gr.Button("Open", elem_id="open-story", scale=0)
        fresh_story = gr.Button("New story", elem_id="new-story", scale=0)
    with gr.Row():
        with gr.Column(scale=3):
            text = gr.Textbox(label="Manuscript (edit freely)", lines=16, interactive=True, elem_id="manuscript")
        with gr.Column(scale=2):
            memory = gr.Textbox(label="Memory (always placed before the prompt)", lines=4, elem_id="memory")
            note = gr.Textbox(label="Author's note (a short steering line near the end)", lines=2,
                              elem_id="authors-note")
            budget = gr.Markdown(elem_id="budget")
    with gr.Row():
        write = gr.Button("Generate", variant="primary", elem_id="ms-generate")
        cont = gr.Button("Continue", elem_id="ms-continue")
        back = gr.Button("Undo", elem_id="ms-undo")
        forth = gr.Button("Redo", elem_id="ms-redo")
    provenance = gr.Markdown(elem_id="ms-provenance")
    show = gr.Checkbox(False, label="Show token probabilities of the last passage", elem_id="show-probs")
    probs = gr.HTML(visible=False, elem_id="probs")
    with gr.Row():
        fmt = gr.Radio(["md", "json"], value="md", label="Export as", elem_id="ms-format")
        download = gr.DownloadButton("Export story", elem_id="ms-download")

    def window(engine: Engine) -> int:
        return engine.loaded.model.prompt_window() or limits.max_prompt_chars

    def context_for(engine: Engine, memory_text: str, body: str, note_text: str) -> Any:
        """The context within the model's window, without characters a prompt may not hold (e.g. pasted emoji)."""
        model = engine.loaded.model
        memory_text, body, note_text = (prompt_safe(t, limits.reject_emoji) for t in (memory_text, body, note_text))
        return build_context(memory_text, body, note_text, window(engine), model.count_tokens, limits.max_prompt_chars)

    def writes_on(engine: Engine) -> bool:
        return bool(getattr(engine.loaded.model, "writes_on", False))

    def instruction_for(engine: Engine, memory_text: str, prompt_text: str, note_text: str) -> Any:
        """The instruction for a family that writes on: memory, prompt, then the author's note (last)."""
        note_text = prompt_safe(note_text, limits.reject_emoji).strip()
        body = (prompt_text or "").strip() or "Write on from where the piece stops."
        if note_text:
            body += "\n\n" + NOTE_FORMAT.format(note_text)
        return context_for(engine, memory_text, body, "")

    def budget_line(engine: Engine, body: str, memory_text: str, note_text: str, prompt_text: str) -> str:
        """What the next Continue gives the model, against its windows."""
        if not writes_on(engine):
            return context_for(engine, memory_text, body, note_text).describe()
        model = engine.loaded.model
        instruction = instruction_for(engine, memory_text, prompt_text, note_text)
        lead = model.lead_ids(prompt_safe(body, limits.reject_emoji))
        covered = len(model.tokenizer.decode(lead)) if lead else 0
        beyond = max(0, len(body.strip()) - covered)
        rest = f"; the first {beyond:,} characters are beyond its window" if beyond else ""
        return (f"Instruction: **{instruction.tokens} of {instruction.budget} tokens** (memory "
                f"{instruction.memory_tokens} · the prompt and the author's note) · Manuscript: Continue writes on "
                f"from its last **{len(lead)} of {model.lead_window()} tokens** ({covered:,} characters){rest}")

    def show_budget(body: str, memory_text: str, note_text: str, prompt_text: str) -> str:
        try:
            return budget_line(get_engine(), body or "", memory_text or "", note_text or "", prompt_text or "")
        except NotReadyError as exc:
            return f"⚠ {exc}"

    def chances_for(current: dict[str, Any], shown: bool) -> Any:
        if not shown:
            return gr.update(visible=False)
        turns = current.get("turns", [])
        if not turns:
            return gr.update(value=chances_html([]), visible=True)
        from models.contract import GenerationSettings

        last = turns[-1]
        lead = prompt_safe(last["before"], limits.reject_emoji) if last.get("wrote_on") else ""
        settings = GenerationSettings.from_dict({**last["settings"], "lead": lead})
        chances = get_engine().loaded.model.token_chances(last["prompt"], last["written"], settings)
        return gr.update(value=chances_html(chances), visible=True)

    def take_turn(kind: str, *args: Any) -> Iterator[tuple[Any, ...]]:
        *values, seed_value, reuse_value, body, memory_text, note_text, title_text, current, kept, shown = args
        body, memory_text, note_text = body or "", memory_text or "", note_text or ""
        try:
            engine = get_engine()
            if kind == "continue" and not body.strip():
                raise ValueError("the manuscript is empty: Generate first, or write its opening yourself")
            if kind == "generate" and not (values[0] or "").strip():
                raise ValueError("write a prompt above first")
            prompt_text = values[0] or current.get("prompt", "")
            wrote_on = kind == "continue" and writes_on(engine)
            if wrote_on:  # the model reads the manuscript's end as the start of its own piece and writes on
                context = instruction_for(engine, memory_text, prompt_text, note_text)
                chat = Chat(lead=prompt_safe(body, limits.reject_emoji))
            else:
                source = values[0] if kind == "generate" else body
                context = context_for(engine, memory_text, source, note_text if kind == "continue" else "")
                chat = None
            values[0], values[-1] = context.prompt, 1
            request = request_for(*values, seed_value if reuse_value else random.randrange(0, 2**31))
            settings, pieces = engine.stream(request, chat)
            written = ""
            before = body

            def grown(new: str) -> str:
                if kind == "generate":
                    return new.strip()
                return before.rstrip() + new if wrote_on else joined(before, new.lstrip())

            for piece in pieces:
                written += piece
                yield grown(written), gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
            after = grown(written)
            prov = engine.loaded.provenance.as_dict()
            settings_dict = {k: v for k, v in settings.model_dump().items() if k != "lead"}  # the lead is `before`
            meta = {"kind": kind, "seed": settings.seed, "settings": settings_dict, "provenance": prov,
                    "provenance_line": provenance_line(prov, settings_dict), "prompt": context.prompt,
                    "written": written if wrote_on else written.strip(), "wrote_on": wrote_on,
                    "story_prompt": prompt_text}
            updated = apply_turn({**current, "title": title_text or "", "memory": memory_text, "note": note_text,
                                  "prompt": prompt_text}, before, after, meta)
            kept = save_story(kept, updated)
            yield (after, updated, kept, gr.update(choices=story_choices(kept), value=updated["id"]),
                   meta["provenance_line"], budget_line(engine, after, memory_text, note_text, prompt_text),
                   chances_for(updated, shown))
        except Exception as exc:
            raise _fail(exc) from None

    def take_back(body: str, current: dict[str, Any], kept: dict[str, Any], shown: bool, memory_text: str,
                  note_text: str, prompt_text: str, forward: bool) -> tuple[Any, ...]:
        try:
            updated = (redo if forward else undo)(current, body or "")
            kept = save_story(kept, updated)
            return (updated["text"], updated, kept, gr.update(choices=story_choices(kept), value=updated["id"]),
                    show_budget(updated["text"], memory_text, note_text, prompt_text), chances_for(updated, shown))
        except Exception as exc:
            raise _fail(exc) from None

    def keep_edits(body: str, memory_text: str, note_text: str, title_text: str, current: dict[str, Any],
                   kept: dict[str, Any]) -> tuple[Any, ...]:
        if not (body or "").strip() and not current.get("turns"):
            return current, kept, gr.update()  # an untouched new story is not saved
        updated = {**current, "text": body or "", "memory": memory_text or "", "note": note_text or "",
                   "title": title_text or ""}
        kept = save_story(kept, updated)
        return updated, kept, gr.update(choices=story_choices(kept), value=updated["id"])

    def reopen(story_id: str, kept: dict[str, Any], shown: bool) -> tuple[Any, ...]:
        chosen = (kept or {}).get(story_id or "")
        if not chosen:
            raise gr.Error("choose a saved story first", print_exception=False)
        last = chosen["turns"][-1]["provenance_line"] if chosen.get("turns") else ""
        return (chosen, chosen.get("text", ""), chosen.get("memory", ""), chosen.get("note", ""),
                chosen.get("title", ""), show_budget(chosen.get("text", ""), chosen.get("memory", ""),
                                                     chosen.get("note", ""), chosen.get("prompt", "")), last,
                chances_for(chosen, shown), gr.update(value=chosen["prompt"]) if chosen.get("prompt") else gr.update())

    def start_new() -> tuple[Any, ...]:
        return new_story(), "", "", "", "", "", "", gr.update(visible=False)

    def exported(current: dict[str, Any], kind: str) -> str | None:
        try:
            return str(export_story(current, kind, Path(tempfile.mkdtemp(prefix="cw-story-"))))
        except ValueError:
            return None

    turn_inputs = [*settings_inputs, seed, reuse, text, memory, note, title, story, stories, show]
    turn_outputs = [text, story, stories, saved, provenance, budget, probs]

    def generate_turn(*args: Any) -> Iterator[tuple[Any, ...]]:
        yield from take_turn("generate", *args)

    def continue_turn(*args: Any) -> Iterator[tuple[Any, ...]]:
        yield from take_turn("continue", *args)

    def undo_turn(*args: Any) -> tuple[Any, ...]:
        return take_back(*args, forward=False)

    def redo_turn(*args: Any) -> tuple[Any, ...]:
        return take_back(*args, forward=True)

    write.click(generate_turn, turn_inputs, turn_outputs, concurrency_limit=4)
    cont.click(continue_turn, turn_inputs, turn_outputs, concurrency_limit=4)
    prompt = settings_inputs[0]
    back_inputs = [text, story, stories, show, memory, note, prompt]
    back_outputs = [text, story, stories, saved, budget, probs]
    back.click(undo_turn, back_inputs, back_outputs)
    forth.click(redo_turn, back_inputs, back_outputs)
    for box in (text, memory, note, prompt):
        box.change(show_budget, [text, memory, note, prompt], budget, trigger_mode="always_last",
                   show_progress="hidden")
    for box in (text, memory, note, title):
        box.blur(keep_edits, [text, memory, note, title, story, stories], [story, stories, saved])
    open_story.click(reopen, [saved, stories, show],
                     [story, text, memory, note, title, budget, provenance, probs, prompt])
    fresh_story.click(start_new, None, [story, text, memory, note, title, budget, provenance, probs])
    show.change(chances_for, [story, show], probs)
    story.change(exported, [story, fmt], download)
    fmt.change(exported, [story, fmt], download)
    return stories, saved


def list_saved(kept: dict[str, Any] | None) -> Any:
    """The saved stories for the dropdown (on page load)."""
    return gr.update(choices=story_choices(kept or {}))
