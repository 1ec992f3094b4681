"""One writer's manuscript session, in plain Python: what the Manuscript tab shows and what the model is given.

:class:`ManuscriptSession` holds a story (its text, memory, author's note, title, prompt and model turns)
and decides everything the tab used to decide inline: which context a turn sends (memory, prompt,
manuscript end and note, within the model's windows), how the written text joins the manuscript, the
budget line under the notes, undo and redo, whether a story is worth saving, and what the
token-probability view reads again. :class:`Reader` is the little it needs of the served model (token
counts and windows), so the session is tested with a stand-in and the Gradio tab only wires components
to it (:mod:`serving.manuscript_ui`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from serving.manuscript import (
    LORE_FORMAT,
    NOTE_FORMAT,
    Context,
    active_lore,
    added_text,
    apply_turn,
    build_context,
    joined,
    new_story,
    parse_lorebook,
    redo,
    undo,
)
from serving.schemas import prompt_safe

TurnKind = Literal["generate", "continue"]
WRITE_ON = "Write on from where the piece stops."  # the instruction when a Continue has no prompt


@dataclass(frozen=True)
class Reader:
    """What a manuscript needs of the served model: token counts and its windows.

    Attributes:
        count: Tokens of a text under the model's tokenizer.
        window: Tokens of a prompt the model reads.
        writes_on: Whether the model continues a given text (a causal LM) rather than writing a piece for a prompt.
        lead_window: Tokens of the manuscript's end a Continue reads (0 when ``writes_on`` is false).
        lead_span: ``(tokens, characters)`` of a text's end that a Continue reads.
    """

    count: Callable[[str], int]
    window: int
    writes_on: bool = False
    lead_window: int = 0
    lead_span: Callable[[str], tuple[int, int]] = lambda _text: (0, 0)

    @classmethod
    def of(cls, model: Any, max_prompt_chars: int) -> Reader:
        """The reader of a loaded :class:`models.contract.WriterModel` (``max_prompt_chars`` when it has no window)."""
        window = model.prompt_window() or max_prompt_chars
        if not getattr(model, "writes_on", False):
            return cls(count=model.count_tokens, window=window)

        def lead_span(text: str) -> tuple[int, int]:
            ids = model.lead_ids(text)
            return len(ids), len(model.tokenizer.decode(ids)) if ids else 0

        return cls(count=model.count_tokens, window=window, writes_on=True, lead_window=model.lead_window(),
                   lead_span=lead_span)


@dataclass(frozen=True)
class Turn:
    """A model turn about to be written.

    Attributes:
        kind: ``generate`` (a piece for the prompt, replacing the text) or ``continue`` (written on from the text).
        story_prompt: The story's prompt (kept with the story).
        context: What the model is given as its prompt.
        before: The manuscript before the turn.
        lead: The manuscript's end the model writes on from (None when it writes a piece for the context).
    """

    kind: TurnKind
    story_prompt: str
    context: Context
    before: str
    lead: str | None = None

    @property
    def wrote_on(self) -> bool:
        """Whether the model continues the manuscript's own text."""
        return self.lead is not None

    def grown(self, written: str) -> str:
        """The manuscript once ``written`` (so far) is in it."""
        return grown_text(self.kind, self.before, written, self.wrote_on)


def grown_text(kind: str, before: str, written: str, wrote_on: bool) -> str:
    """The manuscript ``before`` once a turn of ``kind`` put ``written`` in it (Generate replaces the text)."""
    if kind == "generate":
        return written.strip()
    return before.rstrip() + written if wrote_on else joined(before, written.lstrip())


MAX_ALTERNATIVES = 16  # drafts a turn keeps to swipe between (the story schema's limit)


@dataclass
class ManuscriptSession:
    """A story being written, with the rules of what the model is given and how its turns are kept.

    Args:
        story: The story (see :func:`serving.manuscript.new_story`); a copy is kept, never the caller's dict.
        max_prompt_chars: The server's prompt limit in characters.
        reject_emoji: Whether prompts may not hold emoji (they are left out of what the model is given).
    """

    story: dict[str, Any] = field(default_factory=new_story)
    max_prompt_chars: int = 1000
    reject_emoji: bool = True

    def __post_init__(self) -> None:
        self.story = {**new_story(), **(self.story or {})}

    @classmethod
    def for_limits(cls, story: Mapping[str, Any] | None, limits: Any) -> ManuscriptSession:
        """A session on ``story`` under a serving profile's :class:`serving.config.Limits`."""
        return cls(dict(story or {}), limits.max_prompt_chars, limits.reject_emoji)

    @property
    def text(self) -> str:
        """The manuscript."""
        return self.story.get("text", "")

    @property
    def memory(self) -> str:
        """Text always placed first."""
        return self.story.get("memory", "")

    @property
    def note(self) -> str:
        """The author's note: a short steering line near the end."""
        return self.story.get("note", "")

    @property
    def prompt(self) -> str:
        """The story's prompt (the last one a turn was written for)."""
        return self.story.get("prompt", "")

    @property
    def lorebook(self) -> list[dict[str, Any]]:
        """The lorebook's entries (``keys``, ``content``, ``pinned``)."""
        return list(self.story.get("lorebook") or [])

    @property
    def note_depth(self) -> int:
        """How many paragraphs from the manuscript's end the author's note goes (for a model given the text)."""
        return int(self.story.get("note_depth", 1))

    def memory_with_lore(self, recent: str) -> tuple[str, int]:
        """The memory with the lorebook entries ``recent`` calls for after it; and how many were included."""
        active = active_lore(self.lorebook, recent)
        lore = "\n".join(LORE_FORMAT.format(e["content"]) for e in active)
        return "\n".join(part for part in (self.memory.strip(), lore) if part), len(active)

    @property
    def last_provenance(self) -> str:
        """The provenance line of the last model turn ('' before any)."""
        turns = self.story.get("turns") or []
        return turns[-1].get("provenance_line", "") if turns else ""

    def edit(self, *, text: str | None = None, memory: str | None = None, note: str | None = None,
             title: str | None = None, lorebook: str | None = None, note_depth: int | None = None
             ) -> ManuscriptSession:
        """Takes the writer's edits (None leaves a part as it is); returns the session.

        ``lorebook`` is the UI's one-entry-a-line text (:func:`serving.manuscript.parse_lorebook`).

        Raises:
            ValueError: For a lorebook line that is not an entry (naming the line).
        """
        changes = {"text": text, "memory": memory, "note": note, "title": title}
        self.story = {**self.story, **{k: v or "" for k, v in changes.items() if v is not None}}
        if lorebook is not None:
            self.story["lorebook"] = parse_lorebook(lorebook)
        if note_depth is not None:
            self.story["note_depth"] = max(0, int(note_depth))
        return self

    def worth_saving(self) -> bool:
        """Whether the story holds anything (an untouched new story is not saved)."""
        return bool(self.text.strip() or self.story.get("turns"))

    def _safe(self, text: str) -> str:
        return prompt_safe(text, self.reject_emoji)

    def context(self, reader: Reader, body: str, note: str = "") -> Context:
        """Memory (with the lorebook entries the text calls for), ``body`` and ``note`` within the model's window.

        Characters a prompt may not hold are left out.
        """
        memory, _ = self.memory_with_lore(f"{self.prompt}\n{body}\n{self.text}")
        return build_context(self._safe(memory), self._safe(body), self._safe(note), reader.window,
                             reader.count, self.max_prompt_chars, self.note_depth)

    def instruction(self, reader: Reader, prompt: str) -> Context:
        """The instruction of a model that writes on: memory, the prompt, then the author's note (last)."""
        body = (prompt or "").strip() or WRITE_ON
        note = self._safe(self.note).strip()
        if note:
            body += "\n\n" + NOTE_FORMAT.format(note)
        return self.context(reader, body)

    def lore_line(self, prompt: str) -> str:
        """`` · lorebook: N of M entries`` for the budget line ('' without a lorebook)."""
        if not self.lorebook:
            return ""
        _, active = self.memory_with_lore(f"{prompt}\n{self.text}")
        return f" · lorebook: {active} of {len(self.lorebook)} entries in the memory part"

    def budget_line(self, reader: Reader, prompt: str) -> str:
        """What the next Continue gives the model, against its windows (one line for the writer)."""
        if not reader.writes_on:
            return self.context(reader, self.text, self.note).describe() + self.lore_line(prompt)
        instruction = self.instruction(reader, prompt)
        tokens, covered = reader.lead_span(self._safe(self.text))
        beyond = max(0, len(self.text.strip()) - covered)
        rest = f"; the first {beyond:,} characters are beyond its window" if beyond else ""
        return (f"Instruction: **{instruction.tokens} of {instruction.budget} tokens** (memory "
                f"{instruction.memory_tokens} · the prompt and the author's note) · Manuscript: Continue writes on "
                f"from its last **{tokens} of {reader.lead_window} tokens** ({covered:,} characters){rest}"
                + self.lore_line(prompt))

    def start_turn(self, kind: TurnKind, prompt: str, reader: Reader) -> Turn:
        """The turn for ``kind`` with the prompt above the tabs ('' keeps the story's own).

        Raises:
            ValueError: For a Continue on an empty manuscript or a Generate without a prompt.
        """
        prompt = (prompt or "").strip()
        if kind == "continue" and not self.text.strip():
            raise ValueError("the manuscript is empty: Generate first, or write its opening yourself")
        if kind == "generate" and not prompt:
            raise ValueError("write a prompt above first")
        story_prompt = prompt or self.prompt
        if kind == "continue" and reader.writes_on:  # the model reads the manuscript's end as its own piece's start
            return Turn(kind, story_prompt, self.instruction(reader, story_prompt), self.text,
                        lead=self._safe(self.text))
        if kind == "generate":
            return Turn(kind, story_prompt, self.context(reader, prompt), self.text)
        return Turn(kind, story_prompt, self.context(reader, self.text, self.note), self.text)

    def finish_turn(self, turn: Turn, written: str, settings: Mapping[str, Any], provenance: Mapping[str, Any],
                    provenance_line: str, request_id: str = "", replaces: Mapping[str, Any] | None = None
                    ) -> dict[str, Any]:
        """Puts the written text into the story as an undoable turn; returns the turn's record.

        Args:
            turn: The turn from :meth:`start_turn`.
            written: What the model wrote.
            settings: The settings it was written with (the seed in them); the lead is the turn's ``before``.
            provenance: What wrote it (the served model's provenance).
            provenance_line: The provenance as one line for the writer.
            request_id: The request log's id of the generation ('' when unknown), for the writer's feedback.
            replaces: The turn a Retry wrote this one in place of (:meth:`retry_turn`): its drafts stay as
                ``alternatives`` to swipe between (:meth:`swipe`), this one last and ``kept``.
        """
        kept = {k: v for k, v in settings.items() if k != "lead"}
        meta = {"kind": turn.kind, "seed": kept.get("seed"), "settings": kept, "provenance": dict(provenance),
                "provenance_line": provenance_line, "prompt": turn.context.prompt,
                "written": written if turn.wrote_on else written.strip(), "wrote_on": turn.wrote_on,
                "story_prompt": turn.story_prompt, "request_id": request_id}
        if replaces is not None:
            drafts = [*(replaces.get("alternatives") or [replaces.get("written", "")]), meta["written"]]
            earlier = list(replaces.get("request_ids") or ([] if replaces.get("alternatives") else
                                                            [str(replaces.get("request_id") or "")]))
            earlier = earlier if len(earlier) == len(drafts) - 1 else [""] * (len(drafts) - 1)  # from older stories
            meta.update(alternatives=drafts[-MAX_ALTERNATIVES:], kept=min(len(drafts), MAX_ALTERNATIVES) - 1,
                        request_ids=[*earlier, request_id][-MAX_ALTERNATIVES:])
        # the text is grown from the draft as kept, so a swipe back to it gives the very same text
        self.story = apply_turn({**self.story, "prompt": turn.story_prompt}, turn.before, turn.grown(meta["written"]),
                                meta)
        return meta

    def retry_turn(self, reader: Reader) -> tuple[Turn, dict[str, Any]]:
        """Takes the last model turn out to write it again (Retry); returns the new turn and the one it replaces.

        The turn's text leaves the manuscript as an undo takes it (the writer's edits before it stay) but is
        not put on the redo list: :meth:`finish_turn` keeps it, and every earlier draft, as ``alternatives``.

        Raises:
            ValueError: If there is no model turn to write again.
        """
        turns = self.story.get("turns") or []
        if not turns:
            raise ValueError("nothing to retry: write a model turn first (Generate or Continue)")
        last = dict(turns[-1])
        undone = undo(self.story, self.text)
        self.story = {**undone, "redo": list(self.story.get("redo") or [])}
        return self.start_turn(last.get("kind", "continue"), last.get("story_prompt") or self.prompt, reader), last

    def drafts_line(self) -> str:
        """"Draft 2 of 3" for the last turn when it has drafts to swipe between; '' otherwise."""
        turns = self.story.get("turns") or []
        drafts = (turns[-1].get("alternatives") or []) if turns else []
        if len(drafts) < 2:
            return ""
        return f"Draft {int(turns[-1].get('kept', len(drafts) - 1)) + 1} of {len(drafts)} of the last turn"

    def swipe(self, step: int) -> ManuscriptSession:
        """Puts the last turn's next (``step`` 1) or previous (-1) draft in the manuscript in place of this one.

        Raises:
            ValueError: If the last turn has one draft, or the manuscript changed after it (a swipe would lose
                the writer's edits).
        """
        turns = list(self.story.get("turns") or [])
        drafts = (turns[-1].get("alternatives") or []) if turns else []
        if len(drafts) < 2:
            raise ValueError("the last turn has no other draft: Retry writes one")
        last = turns[-1]
        if self.text.rstrip() != str(last.get("after", "")).rstrip():
            raise ValueError("the manuscript changed after the last turn: a swipe would lose your edits (Undo the "
                             "turn, or keep editing)")
        kept = (int(last.get("kept", len(drafts) - 1)) + step) % len(drafts)
        before = str(last.get("before", ""))
        text = grown_text(last.get("kind", "continue"), before, drafts[kept], bool(last.get("wrote_on")))
        ids = list(last.get("request_ids") or [])
        request_id = ids[kept] if len(ids) == len(drafts) else ""  # a feedback verdict names the draft's own row
        turns[-1] = {**last, "written": drafts[kept], "after": text, "added": added_text(before, text), "kept": kept,
                     "request_id": request_id}
        self.story = {**self.story, "text": text, "turns": turns}
        return self

    def edited_turn(self) -> dict[str, Any] | None:
        """The writer's rewrite of the last Generate turn, as ``/feedback`` fields, once; None when there is none.

        A Generate turn wrote a whole piece for the story's prompt. When the manuscript is no longer that piece
        and is not that piece with more written after it, the writer rewrote it: the manuscript (what the writer
        made of it) is preferred over the piece as written, a pair for preference training. A Continue turn
        wrote on from the writer's text, not for the prompt, so it makes no pair. A turn already judged, or
        written before the request log gave ids, is skipped; :meth:`mark_edited` records that it was sent.
        """
        turns = self.story.get("turns") or []
        if not turns:
            return None
        last = turns[-1]
        written, now = str(last.get("written") or "").strip(), self.text.strip()
        if (last.get("kind") != "generate" or not last.get("request_id") or last.get("edited") or not written
                or not now or now == written or now.startswith(written)):
            return None
        return self._verdict(last, "edited", written, edited=now[:20_000])

    def _verdict(self, turn: dict[str, Any], kind: str, text: str, **more: Any) -> dict[str, Any]:
        """The ``/feedback`` fields of a ``kind`` verdict on ``text``, a draft of the Generate ``turn``."""
        settings = turn.get("settings") or {}
        return {"request_id": str(turn["request_id"]), "kind": kind, "draft": 0,
                "prompt": str(turn.get("story_prompt") or self.prompt)[:4000],
                "form": str(settings.get("form") or "story"), "genre": str(settings.get("genre") or ""),
                "text": text[:20_000], **more}

    def _mark_last(self, flag: str) -> None:
        """Sets ``flag`` on the last turn: its verdict was stored as feedback (each is sent once)."""
        turns = list(self.story.get("turns") or [])
        if turns:
            turns[-1] = {**turns[-1], flag: True}
            self.story = {**self.story, "turns": turns}

    def kept_draft(self, going_on: bool = False) -> dict[str, Any] | None:
        """The draft the writer moved on with, of the last Generate turn's drafts, as ``/feedback`` fields, once.

        After Retry wrote a Generate turn again, the writer swipes between its drafts; the one in the
        manuscript when the writer goes on (Continue, or words of their own saved after it) is the one kept,
        preferred over every other draft (a ``kept`` verdict, as the Drafts tab's "Keep"). A Continue turn's
        drafts write on from the writer's text, not for the prompt, so they make no pair. None when there is
        nothing to send: one draft, no request id for the kept one, or a verdict already sent (:meth:`mark_kept`).

        Args:
            going_on: Whether the writer is taking the next turn now (else the manuscript must hold words of
                the writer's own after the draft).
        """
        turns = self.story.get("turns") or []
        if not turns:
            return None
        last = turns[-1]
        drafts = [str(d) for d in last.get("alternatives") or []]
        kept = int(last.get("kept", len(drafts) - 1))
        if last.get("kind") != "generate" or last.get("kept_sent") or len(drafts) < 2 or not last.get("request_id"):
            return None
        text = drafts[kept].strip()
        now = self.text.strip()
        if not now.startswith(text) or (now == text and not going_on):  # a rewrite is an edited verdict
            return None
        others = list(dict.fromkeys(d.strip() for i, d in enumerate(drafts) if i != kept and d.strip()
                                    and d.strip() != text))
        if not text or not others:
            return None
        return self._verdict(last, "kept", text, others=[o[:20_000] for o in others])

    def mark_kept(self) -> None:
        """Records on the last turn that its kept draft was sent as feedback (it is sent once)."""
        self._mark_last("kept_sent")

    def mark_edited(self) -> None:
        """Records on the last turn that the writer's rewrite of it was stored as feedback (it is sent once)."""
        self._mark_last("edited")

    def undo(self) -> ManuscriptSession:
        """Takes the last model turn back (see :func:`serving.manuscript.undo`)."""
        self.story = undo(self.story, self.text)
        return self

    def redo(self) -> ManuscriptSession:
        """Puts the last undone model turn back (see :func:`serving.manuscript.redo`)."""
        self.story = redo(self.story, self.text)
        return self

    def last_passage(self) -> tuple[str, str, dict[str, Any]] | None:
        """``(prompt, written, settings)`` of the last model turn, for reading its token probabilities again."""
        turns = self.story.get("turns") or []
        if not turns:
            return None
        last = turns[-1]
        lead = self._safe(last["before"]) if last.get("wrote_on") else ""
        return last["prompt"], last["written"], {**last["settings"], "lead": lead}
