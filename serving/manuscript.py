"""The manuscript behind the UI's Manuscript tab: context building, model turns with undo/redo, saved stories.

Plain functions over plain data (the UI keeps a story as a dict, and the browser keeps the stories in its
local storage), so that everything here is tested without a browser:

- :func:`build_context` turns memory, the manuscript and the author's note into the prompt the model is
  given, within the model's prompt window: the memory first, then as much of the manuscript's end as
  fits, with the author's note placed before its last paragraph.
- :func:`active_lore` picks the lorebook entries a turn needs: the pinned ones and those whose key is in
  the recent text; :func:`parse_lorebook` / :func:`lorebook_text` read and write the UI's one-entry-a-line
  form (``Wren, fox: Wren is a fox who keeps secrets.``; a leading ``*`` pins an entry).
- :func:`apply_turn`, :func:`undo` and :func:`redo` keep the model's turns undoable; an undo removes the
  turn's text even after the writer edited what came before it.
- :func:`save_story` and :func:`story_choices` keep the list of saved stories; :func:`export_story`
  writes one with the provenance of every model turn.
- :func:`chances_html` renders the last turn's token probabilities so a writer sees where the model was
  unsure.
"""

from __future__ import annotations

import html
import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_STORIES = 50  # kept in the browser; the oldest are dropped beyond this
NOTE_FORMAT = "[Author's note: {}]"
LORE_FORMAT = "[{}]"  # an active lorebook entry in the instruction
RECENT_CHARS = 2000  # how far back a lorebook key is looked for


def parse_lorebook(text: str) -> list[dict[str, Any]]:
    """Lorebook entries from the UI's lines ``keys: text`` (``*`` first pins one; a line without keys is pinned).

    Raises:
        ValueError: For a line with keys but no text, naming the line.
    """
    entries = []
    for number, line in enumerate((text or "").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        pinned = line.startswith("*")
        line = line.lstrip("*").strip()
        keys, sep, content = line.partition(":")
        if not sep:
            keys, content, pinned = "", line, True
        if not content.strip():
            raise ValueError(f"lorebook line {number}: write the entry's text after the colon ({line!r})")
        entries.append({"keys": [k.strip() for k in keys.split(",") if k.strip()], "content": content.strip(),
                        "pinned": pinned})
    return entries


def lorebook_text(entries: Sequence[dict[str, Any]]) -> str:
    """The UI's lines for lorebook entries (the inverse of :func:`parse_lorebook`)."""
    lines = []
    for e in entries or []:
        keys = ", ".join(e.get("keys") or [])
        lines.append(("* " if e.get("pinned") and keys else "") + (f"{keys}: " if keys else "") + e["content"])
    return "\n".join(lines)


def active_lore(entries: Sequence[dict[str, Any]], recent: str) -> list[dict[str, Any]]:
    """The entries a turn includes: pinned ones, and those with a key (whole word, any case) in ``recent``."""
    recent = recent[-RECENT_CHARS:]
    return [e for e in entries or [] if e.get("pinned") or any(
        re.search(rf"(?<!\w){re.escape(k)}(?!\w)", recent, re.IGNORECASE) for k in e.get("keys") or [] if k)]


@dataclass(frozen=True)
class Context:
    """The prompt built for a model turn and what went into it.

    Attributes:
        prompt: The text sent to the model as its prompt.
        tokens: Its length in the model's tokens.
        budget: The model's prompt window in tokens.
        memory_tokens: Tokens of the memory part.
        note_tokens: Tokens of the author's note part.
        manuscript_chars: Characters of the manuscript's end that fit.
        left_out_chars: Characters of the manuscript that did not fit.
    """

    prompt: str
    tokens: int
    budget: int
    memory_tokens: int
    note_tokens: int
    manuscript_chars: int
    left_out_chars: int

    def describe(self) -> str:
        """One line for the writer: what fits the model's window."""
        over = " — over the window: the model will cut it" if self.tokens > self.budget else ""
        left = (f"; the first {self.left_out_chars:,} characters do not fit and the model will not see them"
                if self.left_out_chars else "")
        return (f"Context: **{self.tokens} of {self.budget} tokens**{over} · memory {self.memory_tokens} · "
                f"author's note {self.note_tokens} · the last {self.manuscript_chars:,} characters of the "
                f"manuscript{left}")


def _place_note(text: str, note: str, depth: int = 1) -> str:
    """``text`` with the note ``depth`` paragraphs from its end (1: before the last paragraph; 0: after it).

    With fewer paragraphs than ``depth`` the note goes first; in a single paragraph, before its last sentence.
    """
    if not note:
        return text
    marker = NOTE_FORMAT.format(note)
    if depth <= 0:
        return f"{text.rstrip()}\n{marker}" if text else marker
    breaks = [m.start() for m in re.finditer(r"\n\n", text)]
    cut = breaks[-depth] if len(breaks) >= depth else (0 if breaks else -1)
    if cut < 0:
        ends = [m.end() for m in re.finditer(r"[.!?][\"')\]]*\s+", text)]
        cut = ends[-1] if ends and ends[-1] < len(text) else 0
    if cut <= 0:
        return f"{marker}\n{text}" if text else marker
    return f"{text[:cut].rstrip()}\n{marker}\n{text[cut:].lstrip()}"


def build_context(memory: str, manuscript: str, note: str, budget: int, count: Callable[[str], int],
                  max_chars: int, note_depth: int = 1) -> Context:
    """The prompt for a model turn: memory, then the end of the manuscript that fits, the note near the end.

    Args:
        memory: Text always placed first ('' for none).
        manuscript: The whole manuscript.
        note: A short steering line placed before the manuscript's last paragraph ('' for none).
        budget: The model's prompt window, in tokens.
        count: Counts tokens under the model's tokenizer.
        max_chars: The server's prompt limit in characters.
        note_depth: How many paragraphs from the end the note goes (see :func:`_place_note`).
    """
    memory, note, manuscript = memory.strip(), note.strip(), manuscript.strip()
    memory_tokens = count(memory) if memory else 0
    note_tokens = count(NOTE_FORMAT.format(note)) if note else 0

    def assemble(tail: str) -> str:
        return "\n\n".join(part for part in (memory, _place_note(tail, note, note_depth)) if part)

    # the longest end of the manuscript (cut at a word start) that fits both limits: binary search on words
    starts = [0] + [m.end() for m in re.finditer(r"\s+", manuscript)]
    low, high = 0, len(starts)  # starts[low:] are candidate cut points; find the earliest that fits
    while low < high:
        mid = (low + high) // 2
        prompt = assemble(manuscript[starts[mid]:])
        if count(prompt) <= budget and len(prompt) <= max_chars:
            high = mid
        else:
            low = mid + 1
    tail = manuscript[starts[low]:] if low < len(starts) else ""
    prompt = assemble(tail)
    return Context(prompt=prompt, tokens=count(prompt) if prompt else 0, budget=budget, memory_tokens=memory_tokens,
                   note_tokens=note_tokens, manuscript_chars=len(tail), left_out_chars=len(manuscript) - len(tail))


def new_story(title: str = "") -> dict[str, Any]:
    """An empty story."""
    return {"id": uuid.uuid4().hex[:12], "title": title, "text": "", "memory": "", "note": "", "prompt": "",
            "turns": [], "redo": [], "updated": time.time()}


def joined(text: str, added: str) -> str:
    """``added`` after ``text``, with one space (or the paragraph break it starts with) between them."""
    if not text.strip():
        return added.lstrip()
    if added.startswith(("\n", " ")):
        return text.rstrip(" ") + added
    return text.rstrip() + " " + added


def added_text(before: str, after: str) -> str | None:
    """What a turn appended (with its separating space), or None when it replaced the text."""
    base = before.rstrip()
    return after[len(base):] if base and after.startswith(base) else None


def apply_turn(story: dict[str, Any], before: str, after: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The story after a model turn that changed the text from ``before`` to ``after`` (redo history cleared).

    ``meta`` records how the turn was written (kind, seed, settings, provenance, the prompt it was given).
    """
    turn = {**meta, "before": before, "after": after, "added": added_text(before, after), "at": time.time()}
    return {**story, "text": after, "turns": [*story.get("turns", []), turn], "redo": [], "updated": time.time()}


def undo(story: dict[str, Any], current: str) -> dict[str, Any]:
    """The story with its last model turn taken back.

    A turn that appended text: when the manuscript still ends with it, only that is removed (the writer's
    edits before it stay). Otherwise (a turn that replaced the text, or the appended text was edited) the
    manuscript goes back to what it was before the turn.

    Raises:
        ValueError: If there is no model turn to undo.
    """
    turns = list(story.get("turns", []))
    if not turns:
        raise ValueError("nothing to undo: the model has not written in this story yet")
    turn = turns.pop()
    added = turn.get("added")
    text = current[: len(current) - len(added)] if added and current.endswith(added) else turn["before"]
    return {**story, "text": text, "turns": turns, "redo": [*story.get("redo", []), turn], "updated": time.time()}


def redo(story: dict[str, Any], current: str) -> dict[str, Any]:
    """The story with the last undone model turn put back (appended to ``current``, or its text restored).

    Raises:
        ValueError: If nothing was undone.
    """
    undone = list(story.get("redo", []))
    if not undone:
        raise ValueError("nothing to redo: no model turn was undone")
    turn = undone.pop()
    added = turn.get("added")
    text = current.rstrip() + added if added and current.strip() else turn["after"]
    redone = {**turn, "before": current, "after": text, "added": added_text(current, text)}
    return {**story, "text": text, "turns": [*story.get("turns", []), redone], "redo": undone,
            "updated": time.time()}


def save_story(stories: dict[str, Any] | None, story: dict[str, Any]) -> dict[str, Any]:
    """The saved stories with ``story`` saved (newest first; at most :data:`MAX_STORIES`)."""
    kept = {k: v for k, v in (stories or {}).items() if isinstance(v, dict) and k != story["id"]}
    kept[story["id"]] = {**story, "updated": time.time()}
    newest = sorted(kept.values(), key=lambda s: s.get("updated", 0), reverse=True)[:MAX_STORIES]
    return {s["id"]: s for s in newest}


def story_title(story: dict[str, Any]) -> str:
    """The title, or the text's first words."""
    if story.get("title", "").strip():
        return story["title"].strip()
    words = story.get("text", "").split()
    return " ".join(words[:6]) + ("…" if len(words) > 6 else "") if words else "(untitled)"


def story_choices(stories: dict[str, Any] | None) -> list[tuple[str, str]]:
    """``(label, id)`` of the saved stories, newest first."""
    ordered = sorted((s for s in (stories or {}).values() if isinstance(s, dict)),
                     key=lambda s: s.get("updated", 0), reverse=True)
    return [(f"{story_title(s)} · {time.strftime('%Y-%m-%d %H:%M', time.localtime(s.get('updated', 0)))}", s["id"])
            for s in ordered]


def file_stem(text: str) -> str:
    """``text`` as a safe file or folder name: letters, digits, ``_`` and ``-`` (at most 40; 'story' if none)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:40] or "story"


def export_story(story: dict[str, Any], fmt: str, folder: Path) -> Path:
    """Writes the story as Markdown (text, then every model turn's provenance) or JSON (everything).

    Raises:
        ValueError: For an unknown format or an empty story.
    """
    if not story.get("text", "").strip():
        raise ValueError("the manuscript is empty: nothing to export")
    name = file_stem(story_title(story))
    folder.mkdir(parents=True, exist_ok=True)
    turns = [{k: v for k, v in t.items() if k not in ("before", "after")} for t in story.get("turns", [])]
    if fmt == "json":
        path = folder / f"{name}.json"
        data = {"title": story_title(story), "text": story["text"], "memory": story.get("memory", ""),
                "authors_note": story.get("note", ""), "turns": turns}
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False))
        return path
    if fmt != "md":
        raise ValueError(f"unknown export format '{fmt}'; choose md or json")
    lines = [f"- {t.get('kind', 'turn')} · seed {t.get('seed')} · {t.get('provenance_line', '')}" for t in turns]
    path = folder / f"{name}.md"
    path.write_text(f"# {story_title(story)}\n\n{story['text'].strip()}\n\n---\n\n"
                    f"_Model turns ({len(turns)}), oldest first:_\n\n" + "\n".join(lines) + "\n")
    return path


def chances_html(chances: Sequence[Any], unsure_below: float = 0.3) -> str:
    """The tokens of a passage as spans shaded by probability, each with its top alternatives as a tooltip.

    Tokens the sampler found less likely than ``unsure_below`` are underlined, so the unsure places stand out.
    """
    if not chances:
        return "<p class='probs-empty'>Nothing written yet in this story.</p>"
    spans = []
    for c in chances:
        alternatives = ", ".join(f"{a!r} {p:.0%}" for a, p in c.alternatives)
        hue = int(120 * c.p)  # red (unsure) to green (sure)
        unsure = " unsure" if c.p < unsure_below else ""
        tip = html.escape(f"{c.p:.0%} · {alternatives}", quote=True)
        spans.append(f"<span class='tok{unsure}' data-p='{c.p:.4f}' title='{tip}' "
                     f"style='background: hsla({hue}, 70%, 50%, 0.25)'>{html.escape(c.text)}</span>")
    unsure_count = sum(1 for c in chances if c.p < unsure_below)
    return (f"<div id='probs-legend'>{len(chances)} tokens · {unsure_count} below {unsure_below:.0%} (underlined) · "
            "hover a token for its probability and the alternatives</div><div class='probs-text'>" + "".join(spans)
            + "</div>")
