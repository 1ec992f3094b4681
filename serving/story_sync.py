"""The Manuscript tab's stories kept on the server: the UI's story ↔ the store's fields, and safe saves.

The tab keeps its story as a plain dict (:func:`serving.manuscript.new_story`) and a copy in the browser's
local storage. :class:`StorySync` saves it to the workspace's :class:`~workspace.store.StoryStore` too; the
server's copy is the one a writer finds from another browser or machine. A save never loses text:

- the first save creates the story on the server (its id and version go into the UI's story);
- a save made on an old version (another tab or device saved since) keeps both: the other save stays the
  story, this text is saved as a new story titled "… (conflicting copy)", and the writer is told;
- with the database down, the story stays in the browser (marked unsynced), the writer is told, and the
  next save sends it;
- a save that changes nothing makes no version, and each saved story carries the digest of what was saved
  (:func:`story_digest`), so the tab's autosave sends only what changed;
- a model turn that started from exactly what the server's newest version holds (an autosave saved the
  writer's edits while the turn was written) is saved on that version, not as a conflicting copy.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from workspace.schemas import StoryFields, Turn
from workspace.store import Conflict, StoreError, StoryStore, Unavailable, Writer
from workspace.traffic import FeedbackIn, record_feedback

SERVER_ID, SERVER_VERSION, UNSYNCED = "server_id", "server_version", "unsynced"
SAVED_DIGEST = "saved_digest"  # the digest of the story's fields as last saved (see story_digest)
SERVER_PREFIX = "server:"  # a dropdown value naming a story on the server


def fields_of(story: dict[str, Any]) -> StoryFields:
    """The store's fields for the UI's story (the note is the author's note; turns keep their provenance)."""
    turn_keys = set(Turn.model_fields)

    def turns(name: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in t.items() if k in turn_keys} for t in story.get(name) or [] if isinstance(t, dict)]

    return StoryFields.model_validate({
        "title": story.get("title") or "", "text": story.get("text") or "", "prompt": story.get("prompt") or "",
        "memory": story.get("memory") or "", "authors_note": story.get("note") or "", "turns": turns("turns"),
        "redo": turns("redo"), "lorebook": story.get("lorebook") or [], "note_depth": int(story.get("note_depth", 1))})


def story_digest(story: dict[str, Any]) -> str:
    """A digest of the story's saved fields: equal digests, nothing to save ('' for a story the store would refuse)."""
    try:
        return hashlib.sha256(fields_of(story).model_dump_json().encode()).hexdigest()
    except ValidationError:
        return ""


def ui_story_of(record: dict[str, Any]) -> dict[str, Any]:
    """The UI's story for a stored one (with the server's id and version, so the next save updates it)."""
    return {"id": record["id"][:12], "title": record["title"], "text": record["text"], "prompt": record["prompt"],
            "memory": record["memory"], "note": record["authors_note"], "turns": record["turns"],
            "redo": record["redo"], "lorebook": record["lorebook"], "note_depth": record["note_depth"],
            "updated": time.time(), SERVER_ID: record["id"], SERVER_VERSION: record["version"]}


@dataclass(frozen=True)
class Saved:
    """What a save did: the UI's story as it is now, and a sentence for the writer when something was off."""

    story: dict[str, Any]
    warning: str = ""


class StorySync:
    """Saves and opens the UI's stories on the server for one writer at a time.

    Args:
        store: Gives the store (it may raise :class:`~workspace.store.Unavailable` while the database is down).
    """

    def __init__(self, store: Callable[[], StoryStore]) -> None:
        self.store = store
        self._heads: dict[str, int] = {}  # per server id, the newest version this process saved or opened
        self._lock = threading.Lock()

    def _seen(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._heads[record["id"]] = max(self._heads.get(record["id"], 0), int(record["version"]))

    def stale(self, story: dict[str, Any]) -> bool:
        """Whether ``story`` is older than a version this process has saved or opened since (a UI state left behind)."""
        server_id = story.get(SERVER_ID)
        return bool(server_id) and int(story.get(SERVER_VERSION) or 0) < self._heads.get(server_id, 0)

    def writer(self, writer: Writer | None = None) -> Writer:
        """``writer``, or the shared local writer (an open server, or the shared token)."""
        return writer or self.store().local_writer()

    def writer_of(self, request: Any) -> Writer | None:
        """The writer account a UI request comes from: its token in the login cookie or the bearer header.

        None for the shared token or no token (the local writer), and while the database is down.
        """
        from serving.middleware import COOKIE

        if request is None:
            return None
        given = str(request.headers.get("authorization", "") or "")
        token = request.cookies.get(COOKIE) or (given[7:].strip() if given.lower().startswith("bearer ") else "")
        try:
            return self.store().writer_for_token(token) if token else None
        except StoreError:
            return None

    def save(self, story: dict[str, Any], origin: str = "autosave", started_from: str = "",
             writer: Writer | None = None) -> Saved:
        """Saves ``story`` on the server (see the module docstring); never raises for the database's state.

        ``started_from`` is the digest of the story a model turn started from: when the server's newest
        version holds exactly that, the turn is saved on it (the version ``story`` names was left behind).
        ``writer``: whose story (default: the shared local writer).
        """
        try:
            fields = fields_of(story)
        except ValidationError as exc:
            return Saved({**story, UNSYNCED: True}, f"not saved on the server: {exc.errors()[0]['msg']}")
        try:
            store, writer = self.store(), self.writer(writer)
            if story.get(SERVER_ID):
                try:
                    record = self._update(store, writer, story, fields, origin, started_from)
                except Conflict as exc:
                    copy = fields.model_copy(update={"title": f"{fields.title or 'Untitled'} (conflicting copy)"})
                    record = store.create(writer, copy, origin="conflicting copy")
                    self._seen(record)
                    return Saved(self._ui_story(record),
                                 f"this story was saved elsewhere meanwhile (now version {exc.extra['current_version']}"
                                 f"); your text is kept as a new story: {copy.title!r}")
            else:
                record = store.create(writer, fields, origin)
        except Unavailable as exc:
            return Saved({**story, UNSYNCED: True}, f"{exc}: the story is kept in this browser until it is back")
        except StoreError as exc:
            return Saved({**story, UNSYNCED: True}, f"not saved on the server: {exc}")
        self._seen(record)
        return Saved({**self._ui_story(record), "id": story.get("id") or record["id"][:12]})

    @staticmethod
    def _update(store: StoryStore, writer: Writer, story: dict[str, Any], fields: StoryFields, origin: str,
                started_from: str) -> dict[str, Any]:
        try:
            return store.update(writer, story[SERVER_ID], int(story.get(SERVER_VERSION) or 0), fields.model_dump(),
                                origin)
        except Conflict as exc:
            current = exc.extra["current"]
            if not started_from or story_digest(ui_story_of(current)) != started_from:
                raise
            return store.update(writer, story[SERVER_ID], int(current["version"]), fields.model_dump(), origin)

    @staticmethod
    def _ui_story(record: dict[str, Any]) -> dict[str, Any]:
        story = ui_story_of(record)
        return {**story, SAVED_DIGEST: story_digest(story)}

    def feedback(self, verdict: FeedbackIn, writer: Writer | None = None) -> str:
        """Stores the writer's verdict on a draft; returns a sentence for the writer (never raises)."""
        try:
            record_feedback(self.store().engine, verdict, self.writer(writer).name)
        except ValueError as exc:
            return f"not kept: {exc}"
        except (StoreError, SQLAlchemyError) as exc:
            return f"not kept: the database is unavailable ({type(exc).__name__})"
        return {"kept": "Kept: this draft over the others, as a preference for training.",
                "up": "Thanks: noted as a good draft.", "down": "Thanks: noted as a poor draft.",
                "edited": "Kept: your rewrite over the draft, as a preference for training."}[verdict.kind]

    def listed(self, writer: Writer | None = None) -> list[dict[str, Any]]:
        """The writer's stories on the server (``[]`` while the database is down)."""
        try:
            return self.store().list(self.writer(writer))
        except StoreError:
            return []

    def choices(self, browser: dict[str, Any] | None, writer: Writer | None = None) -> list[tuple[str, str]]:
        """The dropdown's ``(label, value)``: the server's stories, then the browser's stories not on it."""
        from serving.manuscript import story_choices

        listed = self.listed(writer)
        on_server = {s["id"] for s in listed}
        local = {k: v for k, v in (browser or {}).items()
                 if isinstance(v, dict) and (v.get(UNSYNCED) or v.get(SERVER_ID) not in on_server)}
        return ([(f"{s['title'] or '(untitled)'} · v{s['version']} · {s['updated_at'][:16].replace('T', ' ')} UTC",
                  SERVER_PREFIX + s["id"]) for s in listed]
                + [(f"{label} · this browser only", value) for label, value in story_choices(local)])

    def open(self, server_id: str, writer: Writer | None = None) -> dict[str, Any]:
        """The UI's story for a stored one.

        Raises:
            StoreError: If it cannot be read (not found, or the database is down).
        """
        record = self.store().get(self.writer(writer), server_id)
        self._seen(record)
        return self._ui_story(record)
