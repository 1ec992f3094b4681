"""The UI's Manuscript tab: one editable text that the model fills and extends.

With memory, an author's note, undo/redo of model turns, a context budget, stories saved on the server
(every save a version; :mod:`serving.story_sync`) with the browser's copy as an offline cache, and a
token-probability view.

What a turn sends and how it is kept is :class:`serving.session.ManuscriptSession`'s (plain Python,
tested without a browser); this module only builds the components and wires their events to it. The
stories are kept in the browser's local storage (``gr.BrowserState``; Gradio encrypts the value with a
key, fixed here so that stories survive a server restart: it keeps nothing secret, the stories never
leave the browser except to be written on). The server's copy is the one a writer finds from another
browser; the browser's copy keeps a story while the story database is down.
"""

from __future__ import annotations

import functools
import inspect
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from pydantic import ValidationError

from models.contract import GenerationSettings
from models.params import MAX_SEED
from serving.config import ServingConfig
from serving.engine import Engine, NotReadyError
from serving.manuscript import (
    chances_html,
    export_story,
    file_stem,
    lorebook_text,
    new_story,
    save_story,
    story_choices,
)
from serving.planner import Chat
from serving.session import ManuscriptSession, Reader, Turn, TurnKind
from serving.story_sync import SAVED_DIGEST, SERVER_PREFIX, StorySync, story_digest
from serving.ui_helpers import Controls, provenance_line, shown_errors
from workspace.store import Writer
from workspace.traffic import FeedbackIn

WHO = "writer"  # the key of the writer's account in a handler's inputs (see ManuscriptTab.as_writer)
WRITING = "✍ Writing…"  # the provenance line while a turn is written (the turn's own line replaces it)
AUTOSAVE_SECONDS = 5.0  # how often the tab saves edits not yet saved (also on leaving a box and after every turn)
STORAGE_KEY = "creative-writer-stories"
STORAGE_SECRET = "creative-writer-local-stories"  # not a protection: see the module docstring
INTRO = ("One text you edit freely. **Generate** writes a piece for the prompt above (with the memory in front). "
         "**Continue** writes on from the end of the manuscript, your own edits included: the pretrained "
         "Transformer continues the text itself, with the prompt, the memory and the author's note as its "
         "instruction; the seq2seq and GAN families write a piece for the memory, the manuscript's end and the "
         "note. The line under the notes shows what fits the model's windows.")


class ManuscriptTab:
    """The tab's components (built inside the current ``gr.Blocks``) and its event handlers.

    Args:
        get_engine: Returns the engine of the service the UI is mounted on.
        config: The serving profile.
        controls: The shared prompt, form, genre, sampling, seed and "reuse seed" controls.
        sync: Keeps the stories on the server too (None: in the browser only).
    """

    def __init__(self, get_engine: Callable[[], Engine], config: ServingConfig, controls: Controls,
                 sync: StorySync | None = None) -> None:
        self.get_engine, self.limits, self.controls, self.sync = get_engine, config.limits, controls, sync
        # one folder for the tab's downloads, a subfolder per story rewritten in place (a folder per change
        # filled /tmp), removed with the tab or at exit; Gradio serves its own copy of each file
        self.exports = Path(tempfile.mkdtemp(prefix="cw-exports-"))
        weakref.finalize(self, shutil.rmtree, self.exports, True)
        self._writing: dict[str, threading.Lock] = {}  # per story: held while a turn is written or autosaved
        self.prompt = controls.fields["prompt"]
        gr.Markdown(INTRO)
        self.story = gr.State(new_story())
        self.stories = gr.BrowserState({}, storage_key=STORAGE_KEY, secret=STORAGE_SECRET)
        with gr.Row():
            self.title = gr.Textbox(label="Title", elem_id="story-title", scale=2)
            self.saved = gr.Dropdown(choices=[], label="Saved stories", elem_id="stories", scale=2)
            self.open_story = gr.Button("Open", elem_id="open-story", scale=0)
            self.fresh_story = gr.Button("New story", elem_id="new-story", scale=0)
        with gr.Row():
            with gr.Column(scale=3):
                self.text = gr.Textbox(label="Manuscript (edit freely)", lines=16, interactive=True,
                                       elem_id="manuscript")
            with gr.Column(scale=2):
                self.memory = gr.Textbox(label="Memory (always placed before the prompt)", lines=4, elem_id="memory")
                self.note = gr.Textbox(label="Author's note (a short steering line near the end)", lines=2,
                                       elem_id="authors-note")
                self.depth = gr.Slider(0, 10, value=1, step=1, elem_id="note-depth",
                                       label="Note depth: paragraphs from the end (a model given the manuscript)")
                self.lore = gr.Textbox(label="Lorebook: one entry a line, 'keys: text' (in when a key is in the "
                                       "recent text; * pins one)", lines=3, elem_id="lorebook",
                                       placeholder="Wren, fox: Wren is a fox who keeps secrets.")
                self.budget = gr.Markdown(elem_id="budget")
        with gr.Row():
            self.write = gr.Button("Generate", variant="primary", elem_id="ms-generate")
            self.cont = gr.Button("Continue", elem_id="ms-continue")
            self.back = gr.Button("Undo", elem_id="ms-undo")
            self.forth = gr.Button("Redo", elem_id="ms-redo")
            self.retry = gr.Button("Retry", elem_id="ms-retry")
            self.earlier = gr.Button("◀", elem_id="ms-previous-draft", scale=0, min_width=48)
            self.later = gr.Button("▶", elem_id="ms-next-draft", scale=0, min_width=48)
        self.drafts = gr.Markdown(elem_id="ms-drafts")
        self.provenance = gr.Markdown(elem_id="ms-provenance")
        self.show = gr.Checkbox(False, label="Show token probabilities of the last passage", elem_id="show-probs")
        self.probs = gr.HTML(visible=False, elem_id="probs")
        with gr.Row():
            self.fmt = gr.Radio(["md", "json"], value="md", label="Export as", elem_id="ms-format")
            self.download = gr.DownloadButton("Export story", elem_id="ms-download")
        self.autosaver = gr.Timer(AUTOSAVE_SECONDS)
        self.wire()

    def session(self, given: dict[Any, Any]) -> ManuscriptSession:
        """The session on the current story with the writer's edits in the boxes."""
        session = ManuscriptSession.for_limits(given[self.story], self.limits)
        return session.edit(text=given.get(self.text), memory=given.get(self.memory), note=given.get(self.note),
                            title=given.get(self.title), lorebook=given.get(self.lore),
                            note_depth=given.get(self.depth))

    def reader(self, engine: Engine) -> Reader:
        """The served model's windows."""
        return Reader.of(engine.loaded.model, self.limits.max_prompt_chars)

    def budget_line(self, session: ManuscriptSession, prompt: str) -> str:
        """The budget line, or why there is none (no model loaded yet)."""
        try:
            return session.budget_line(self.reader(self.get_engine()), prompt or "")
        except NotReadyError as exc:
            return f"⚠ {exc}"

    def chances(self, session: ManuscriptSession, shown: bool) -> Any:
        """The token-probability view of the last passage (hidden unless asked for)."""
        if not shown:
            return gr.update(visible=False)
        passage = session.last_passage()
        if passage is None:
            return gr.update(value=chances_html([]), visible=True)
        prompt, written, settings = passage
        found = self.get_engine().loaded.model.token_chances(prompt, written, GenerationSettings.from_dict(settings))
        return gr.update(value=chances_html(found), visible=True)

    def kept(self, given: dict[Any, Any], session: ManuscriptSession, origin: str = "autosave",
             started_from: str = "") -> dict[Any, Any]:
        """The outputs that save ``session``'s story (on the server and in the browser) and choose it.

        ``started_from``: the digest of the story a model turn started from (see :meth:`StorySync.save`).
        """
        story = session.story
        if self.sync is not None:
            saved = self.sync.save(story, origin, started_from, given.get(WHO))
            story = saved.story
            if saved.warning:
                gr.Warning(saved.warning)
        story = {**story, SAVED_DIGEST: story_digest(story)}  # what was saved (or tried): autosave skips it
        stories = save_story(given[self.stories], story)
        chosen = SERVER_PREFIX + story["server_id"] if story.get("server_id") and not story.get("unsynced") \
            else story["id"]
        return {self.story: story, self.stories: stories,
                self.saved: gr.update(choices=self.choices(stories, given.get(WHO)), value=chosen)}

    def choices(self, stories: dict[str, Any] | None, writer: Writer | None = None) -> list[tuple[str, str]]:
        """The saved stories for the dropdown: the (signed-in) writer's on the server, and the browser's."""
        return self.sync.choices(stories, writer) if self.sync is not None else story_choices(stories or {})

    def list_saved(self, stories: dict[str, Any] | None, request: gr.Request = None) -> Any:  # type: ignore[assignment]
        """The saved stories for the dropdown (on page load and when the tab is opened), under the writer's name."""
        writer = self.sync.writer_of(request) if self.sync is not None else None
        label = f"Saved stories · {writer.name}" if writer is not None else "Saved stories"
        return gr.update(choices=self.choices(stories, writer), label=label)

    def as_writer(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` (a handler of a dict of inputs) told which writer account the request comes from (``given[WHO]``).

        Gradio hands the request to a handler that asks for a ``gr.Request``; a writer signed in with their own
        token (``/ui/?token=…``) saves, opens and rates their own stories, the others those of the shared writer.
        """
        def who(request: Any) -> Writer | None:
            return self.sync.writer_of(request) if self.sync is not None else None

        if inspect.isgeneratorfunction(fn):
            def streamed(given: dict[Any, Any], request: gr.Request) -> Iterator[Any]:
                yield from fn({**given, WHO: who(request)})

            streamed.__name__ = getattr(fn, "__name__", "handler")
            return streamed

        def plain(given: dict[Any, Any], request: gr.Request) -> Any:
            return fn({**given, WHO: who(request)})

        plain.__name__ = getattr(fn, "__name__", "handler")
        return plain

    def take_turn(self, kind: TurnKind, given: dict[Any, Any]) -> Iterator[dict[Any, Any]]:
        """Writes one model turn into the manuscript, streaming it in; then saves the story."""
        engine, session = self.get_engine(), self.session(given)
        reader = self.reader(engine)
        if kind == "continue":  # the writer goes on with the draft in the manuscript: it was the one kept
            self.send_verdict(session.kept_draft(going_on=True), session.mark_kept, given.get(WHO))
        yield from self.write_turn(engine, session, reader, session.start_turn(kind, given[self.prompt], reader),
                                   given)

    def retry_turn(self, given: dict[Any, Any]) -> Iterator[dict[Any, Any]]:
        """Retry: the last model turn written again with the next seed; its drafts stay to swipe between."""
        engine, session = self.get_engine(), self.session(given)
        reader = self.reader(engine)
        turn, replaced = session.retry_turn(reader)
        tried = len(replaced.get("alternatives") or [replaced])
        seed = (int(replaced.get("seed") or 0) + tried) % (MAX_SEED + 1)  # a new seed even with "reuse seed" on
        yield from self.write_turn(engine, session, reader, turn, given, seed=seed, replaces=replaced)

    def swipe(self, given: dict[Any, Any], step: int) -> dict[Any, Any]:
        """Shows the last turn's previous (``step`` -1) or next (1) draft in its place."""
        session = self.session(given).swipe(step)
        return {self.text: session.text, **self.kept(given, session), self.drafts: session.drafts_line(),
                self.budget: self.budget_line(session, given[self.prompt]),
                self.probs: self.chances(session, given[self.show])}

    def write_turn(self, engine: Engine, session: ManuscriptSession, reader: Reader, turn: Turn,
                   given: dict[Any, Any], seed: int | None = None,
                   replaces: dict[str, Any] | None = None) -> Iterator[dict[Any, Any]]:
        """Streams ``turn`` into the manuscript (``seed`` in place of the controls' one), then saves the story.

        The story's lock is held meanwhile, so an autosave never saves it under the turn (see :meth:`autosave`).
        """
        lock = self.writing_lock(given[self.story])
        lock.acquire()
        try:
            yield from self._write_turn(engine, session, reader, turn, given, seed, replaces)
        finally:
            lock.release()

    def _write_turn(self, engine: Engine, session: ManuscriptSession, reader: Reader, turn: Turn,
                    given: dict[Any, Any], seed: int | None,
                    replaces: dict[str, Any] | None) -> Iterator[dict[Any, Any]]:
        started_from = story_digest(self.session(given).story)  # what the writer had when the turn was asked for
        request = self.controls.request(engine.planner, given, prompt=turn.context.prompt, num_drafts=1)
        if seed is not None:
            request = request.model_copy(update={"seed": seed})
        story_key = str(session.story.get("server_id") or session.story.get("id") or "")
        settings, pieces = engine.stream(request, Chat(lead=turn.lead) if turn.wrote_on else None, "ui_manuscript",
                                         story_id=story_key or None)  # one story stays with one model (canary)
        written = ""
        yield {self.provenance: WRITING}  # not the last turn's line while this one is written
        for piece in pieces:
            written += piece
            yield {self.text: turn.grown(written)}
        prov = pieces.provenance.as_dict()
        dumped = settings.model_dump()
        session.finish_turn(turn, written, dumped, prov, provenance_line(prov, dumped), pieces.request_id, replaces)
        yield {self.text: session.text, **self.kept(given, session, "turn", started_from),
               self.provenance: session.last_provenance,
               self.budget: session.budget_line(reader, turn.story_prompt), self.drafts: session.drafts_line(),
               self.probs: self.chances(session, given[self.show])}

    def generate_turn(self, given: dict[Any, Any]) -> Iterator[dict[Any, Any]]:
        """Generate: a piece for the prompt above replaces the manuscript."""
        yield from self.take_turn("generate", given)

    def continue_turn(self, given: dict[Any, Any]) -> Iterator[dict[Any, Any]]:
        """Continue: the model writes on from the manuscript's end."""
        yield from self.take_turn("continue", given)

    def undo(self, given: dict[Any, Any]) -> dict[Any, Any]:
        """Undo the last model turn."""
        return self.take_back(given, forward=False)

    def redo(self, given: dict[Any, Any]) -> dict[Any, Any]:
        """Redo the last undone model turn."""
        return self.take_back(given, forward=True)

    def show_budget(self, given: dict[Any, Any]) -> str:
        """The budget line for what is in the boxes now (or what is wrong with the lorebook)."""
        try:
            session = self.session(given)
        except ValueError as exc:
            return f"⚠ {exc}"
        return self.budget_line(session, given[self.prompt])

    def show_chances(self, given: dict[Any, Any]) -> Any:
        """The token-probability view, shown or hidden as the checkbox says."""
        return self.chances(ManuscriptSession.for_limits(given[self.story], self.limits), given[self.show])

    def take_back(self, given: dict[Any, Any], forward: bool) -> dict[Any, Any]:
        """Undo (or redo) the last model turn."""
        session = self.session(given)
        session = session.redo() if forward else session.undo()
        return {self.text: session.text, **self.kept(given, session), self.drafts: session.drafts_line(),
                self.budget: self.budget_line(session, given[self.prompt]),
                self.probs: self.chances(session, given[self.show])}

    def keep_edits(self, given: dict[Any, Any]) -> dict[Any, Any]:
        """Saves the writer's edits (an untouched new story is not saved).

        When the edit rewrote the last Generate turn, the rewrite is also sent, once, as ``edited`` feedback
        (the rewrite preferred over the piece as written) for preference training; when the writer wrote on
        after one of that turn's drafts (Retry made several), that draft is sent, once, as ``kept`` over the others.
        """
        session = self.session(given)
        if not session.worth_saving():
            return {}
        self.send_verdict(session.edited_turn(), session.mark_edited, given.get(WHO))
        self.send_verdict(session.kept_draft(), session.mark_kept, given.get(WHO))
        return self.kept(given, session)

    def writing_lock(self, story: dict[str, Any] | None) -> threading.Lock:
        """The lock of the story (by its id in the tab) that a turn holds while it is written."""
        return self._writing.setdefault(str((story or {}).get("id") or ""), threading.Lock())

    def autosave(self, given: dict[Any, Any]) -> dict[Any, Any]:
        """The timer's and a left box's save: the writer's edits, when they changed since the last save.

        Skipped while a model turn is written on this story (the turn saves it at its end), when the UI's
        state is older than a version this server saved since (the next tick has the new one), and when
        nothing changed; otherwise as :meth:`keep_edits`.
        """
        lock = self.writing_lock(given[self.story])
        if not lock.acquire(blocking=False):
            return {}
        try:
            session = self.session(given)
            if (not session.worth_saving() or (self.sync is not None and self.sync.stale(session.story))
                    or story_digest(session.story) == session.story.get(SAVED_DIGEST)):
                return {}
            return self.keep_edits(given)
        finally:
            lock.release()

    def send_verdict(self, fields: dict[str, Any] | None, mark: Callable[[], None],
                     writer: Writer | None = None) -> None:
        """Stores a verdict the writer's actions gave (``fields`` for ``/feedback``), then ``mark``s it as sent.

        Nothing is sent without one, or while the stories are kept in the browser only.
        """
        if fields is None or self.sync is None:
            return
        try:
            said = self.sync.feedback(FeedbackIn(**fields), writer)
        except ValidationError:  # a draft the feedback cannot hold (e.g. only control characters)
            said = "not kept"
        if not said.startswith("not kept"):
            mark()
            gr.Info(said)

    def reopen(self, given: dict[Any, Any]) -> dict[Any, Any]:
        """Opens the saved story chosen in the dropdown."""
        value = given[self.saved] or ""
        if value.startswith(SERVER_PREFIX) and self.sync is not None:
            chosen: dict[str, Any] | None = self.sync.open(value.removeprefix(SERVER_PREFIX), given.get(WHO))
        else:
            chosen = (given[self.stories] or {}).get(value)
        if not chosen:
            raise gr.Error("choose a saved story first", print_exception=False)
        session = ManuscriptSession.for_limits(chosen, self.limits)
        return {self.story: session.story, self.text: session.text, self.memory: session.memory,
                self.drafts: session.drafts_line(),
                self.note: session.note, self.title: session.story.get("title", ""),
                self.lore: lorebook_text(session.lorebook), self.depth: session.note_depth,
                self.budget: self.budget_line(session, session.prompt), self.provenance: session.last_provenance,
                self.probs: self.chances(session, given[self.show]),
                self.prompt: gr.update(value=session.prompt) if session.prompt else gr.update()}

    def start_new(self) -> dict[Any, Any]:
        """An empty story in the boxes."""
        return {self.story: new_story(), self.text: "", self.memory: "", self.note: "", self.title: "", self.lore: "",
                self.drafts: "",
                self.depth: 1, self.budget: "", self.provenance: "", self.probs: gr.update(visible=False)}

    def exported(self, given: dict[Any, Any]) -> str | None:
        """The story as a file to download (None while it is empty)."""
        try:
            story = given[self.story]
            return str(export_story(story, given[self.fmt], self.exports / file_stem(str(story.get("id") or ""))))
        except ValueError:
            return None

    def wire(self) -> None:
        """Connects the components' events to the handlers."""
        turn_in = {*self.controls.inputs, self.text, self.memory, self.note, self.title, self.story, self.stories,
                   self.show, self.lore, self.depth}
        turn_out = [self.text, self.story, self.stories, self.saved, self.provenance, self.budget, self.drafts,
                    self.probs]
        self.write.click(shown_errors(self.as_writer(self.generate_turn)), turn_in, turn_out, concurrency_limit=4)
        self.cont.click(shown_errors(self.as_writer(self.continue_turn)), turn_in, turn_out, concurrency_limit=4)
        self.retry.click(shown_errors(self.as_writer(self.retry_turn)), turn_in, turn_out, concurrency_limit=4)
        back_in = {self.text, self.memory, self.note, self.title, self.story, self.stories, self.show, self.prompt,
                   self.lore, self.depth}
        back_out = [self.text, self.story, self.stories, self.saved, self.budget, self.drafts, self.probs]
        self.back.click(shown_errors(self.as_writer(self.undo)), back_in, back_out)
        self.forth.click(shown_errors(self.as_writer(self.redo)), back_in, back_out)
        for button, step in ((self.earlier, -1), (self.later, 1)):
            button.click(shown_errors(self.as_writer(functools.partial(self.swipe, step=step))), back_in, back_out)
        budget_in = {self.text, self.memory, self.note, self.story, self.prompt, self.lore, self.depth}
        for box in (self.text, self.memory, self.note, self.prompt, self.lore, self.depth):
            box.change(self.show_budget, budget_in, self.budget, trigger_mode="always_last", show_progress="hidden")
        edits_in = {self.text, self.memory, self.note, self.title, self.story, self.stories, self.lore, self.depth}
        for box in (self.text, self.memory, self.note, self.title, self.lore):
            box.blur(shown_errors(self.as_writer(self.autosave)), edits_in, [self.story, self.stories, self.saved])
        self.autosaver.tick(shown_errors(self.as_writer(self.autosave)), edits_in,
                            [self.story, self.stories, self.saved], show_progress="hidden")
        self.open_story.click(shown_errors(self.as_writer(self.reopen)), {self.saved, self.stories, self.show},
                              [self.story, self.text, self.memory, self.note, self.title, self.lore, self.depth,
                               self.budget, self.provenance, self.probs, self.prompt, self.drafts])
        self.fresh_story.click(self.start_new, None, [self.story, self.text, self.memory, self.note, self.title,
                                                      self.lore, self.depth, self.budget, self.provenance,
                                                      self.probs, self.drafts])
        self.show.change(shown_errors(self.show_chances), {self.story, self.show}, self.probs)
        for trigger in (self.story, self.fmt):
            trigger.change(self.exported, {self.story, self.fmt}, self.download)

