"""What a story is, as the API reads and writes it (pydantic; unknown fields are refused by name)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from workspace.config import WorkspaceSettings

FORBID = ConfigDict(extra="forbid", strict=True)


class LoreEntry(BaseModel):
    """A lorebook (world info) entry: its text goes into the instruction when a key is in the recent text."""

    model_config = FORBID

    keys: list[str] = Field(default_factory=list, max_length=20)
    content: str = ""
    pinned: bool = False  # always included, keys or not


RequestId = Annotated[str, Field(pattern="^([0-9a-f]{32}|)$")]  # a request log row's id, or '' when unknown


class Turn(BaseModel):
    """One model turn: what was written, with what, and what the writer did with it.

    ``alternatives`` are the drafts a Regenerate made (``kept`` is the one in the text); ``feedback`` is
    ``up``/``down``/'' and ``edited`` whether the writer's rewrite of the turn's text was sent as feedback,
    ``kept_sent`` whether the draft the writer moved on with was.
    """

    model_config = FORBID

    text: str = ""
    kind: str = Field("", max_length=20)  # generate / continue
    prompt: str = ""  # what the model was given
    seed: int | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)
    alternatives: list[str] = Field(default_factory=list, max_length=16)
    kept: int = 0
    # the request log's row of each alternative ('' when unknown), and whether the kept one was sent as feedback
    request_ids: list[RequestId] = Field(default_factory=list, max_length=16)
    kept_sent: bool = False
    feedback: str = Field("", pattern="^(up|down|)$")
    edited: bool = False
    before: str = ""  # the manuscript before and after the turn (what undo and redo restore)
    after: str = ""
    added: str | None = None  # what the turn appended, when it did
    at: float = 0.0  # when (seconds since the epoch)
    written: str = ""  # the model's own words (the token-probability view reads them again)
    wrote_on: bool = False  # whether it continued the manuscript's text
    story_prompt: str = ""
    provenance_line: str = ""
    request_id: RequestId = ""  # the request log's row (feedback names it)


class StoryFields(BaseModel):
    """The fields a writer saves; in a PUT, a field left out keeps its current value."""

    model_config = FORBID

    title: str = "Untitled"
    text: str = ""
    prompt: str = ""
    memory: str = ""
    authors_note: str = ""
    note_depth: int = Field(1, ge=0, le=100)  # how many paragraphs from the end the author's note goes
    lorebook: list[LoreEntry] = Field(default_factory=list)
    turns: list[Turn] = Field(default_factory=list)
    redo: list[Turn] = Field(default_factory=list)  # the turns undone (redo puts them back)


class StoryEdit(StoryFields):
    """A PUT: the version the edit was made on (a stale one is refused with 409), and the fields."""

    version: int = Field(ge=1)


class Restore(BaseModel):
    """Restoring an old version: the current version the writer saw (a stale one is refused with 409)."""

    model_config = FORBID

    version: int = Field(ge=1)


def size_problem(fields: StoryFields, limits: WorkspaceSettings) -> tuple[str, str] | None:
    """``(field, message)`` for the first field over its cap in ``limits``, or None."""
    caps = [("title", len(fields.title), limits.max_title_chars), ("text", len(fields.text), limits.max_text_chars),
            ("memory", len(fields.memory), limits.max_note_chars),
            ("authors_note", len(fields.authors_note), limits.max_note_chars),
            ("lorebook", len(fields.lorebook), limits.max_lorebook_entries),
            ("turns", len(fields.turns), limits.max_turns), ("redo", len(fields.redo), limits.max_turns)]
    caps += [(f"lorebook.{i}.content", len(e.content), limits.max_entry_chars) for i, e in enumerate(fields.lorebook)]
    for name, size, cap in caps:
        if size > cap:
            unit = "entries" if name in ("lorebook", "turns", "redo") else "characters"
            return name, f"{name} has {size} {unit}; at most {cap} are accepted"
    return None
