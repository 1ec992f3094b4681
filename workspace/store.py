"""The story store: stories per writer, every save a new version, stale edits refused, deletes undoable.

Plain Python over SQLAlchemy Core; the HTTP layer (:mod:`serving.stories_api`) only maps its errors to
status codes. One write is one transaction: a version row and the story's head move together or not at all.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Engine, ForeignKey, Integer, MetaData, String, Table, func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from workspace.config import WorkspaceSettings
from workspace.db import connect, migrate
from workspace.schemas import StoryFields, size_problem

META = MetaData()
WRITERS = Table("writers", META, Column("id", Integer, primary_key=True), Column("name", String(80)),
                Column("token_sha256", String(64)), Column("created_at", DateTime(timezone=True)))
STORIES = Table("stories", META, Column("id", String(32), primary_key=True),
                Column("writer_id", Integer, ForeignKey("writers.id")), Column("title", String(400)),
                Column("head", Integer), Column("created_at", DateTime(timezone=True)),
                Column("updated_at", DateTime(timezone=True)), Column("deleted_at", DateTime(timezone=True)))
VERSIONS = Table("story_versions", META, Column("story_id", String(32), ForeignKey("stories.id"), primary_key=True),
                 Column("version", Integer, primary_key=True), Column("saved_at", DateTime(timezone=True)),
                 Column("origin", String(40)), Column("body", JSON))
LOCAL_WRITER = "local"  # who writes when the API is open or the shared token is used


class StoreError(Exception):
    """A refused store operation: the HTTP status, the field it concerns and one clear sentence."""

    status = 400

    def __init__(self, message: str, field: str = "", **extra: Any) -> None:
        super().__init__(message)
        self.field = field
        self.extra = extra


class Invalid(StoreError):
    """Bad input (400)."""


class NotFound(StoreError):
    """No such story for this writer (404): another writer's story is not found either."""

    status = 404


class Conflict(StoreError):
    """The edit was made on a version that is no longer the newest (409); ``extra['current']`` is the newest."""

    status = 409


class Unavailable(StoreError):
    """The database cannot be reached (503); the message says why."""

    status = 503


def _now() -> datetime:
    return datetime.now(UTC)


def token_digest(token: str) -> str:
    """The SHA-256 of a writer's token: only this is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Writer:
    """An account: its id and name."""

    id: int
    name: str


class StoryStore:
    """Stories on a database (see the module docstring).

    Args:
        url: The SQLAlchemy URL (:func:`workspace.db.database_url` gives the default).
        limits: The size caps.
    """

    def __init__(self, url: str, limits: WorkspaceSettings | None = None) -> None:
        self.url = url
        self.limits = limits or WorkspaceSettings()
        self.engine: Engine = connect(url)
        try:
            migrate(self.engine)
        except OperationalError as exc:
            raise Unavailable(f"the story database is unavailable: {_reason(exc)}") from None

    # writers -------------------------------------------------------------------------------------------------
    def add_writer(self, name: str) -> str:
        """Creates the account ``name``; returns its token (shown once; only its digest is kept).

        Raises:
            Invalid: If the name is empty, too long or taken.
        """
        name = name.strip()
        if not name or len(name) > 80 or name == LOCAL_WRITER:
            raise Invalid(f"a writer's name is 1-80 characters and not {LOCAL_WRITER!r}", "name")
        token = secrets.token_urlsafe(32)
        try:
            with self._write() as db:
                db.execute(WRITERS.insert().values(name=name, token_sha256=token_digest(token), created_at=_now()))
        except IntegrityError:
            raise Invalid(f"a writer named {name!r} exists", "name") from None
        return token

    def writers(self) -> list[Writer]:
        """Every account (the shared local writer included once it has written)."""
        with self._read() as db:
            return [Writer(r.id, r.name) for r in db.execute(select(WRITERS.c.id, WRITERS.c.name).order_by("id"))]

    def has_accounts(self) -> bool:
        """Whether any writer has a token of their own."""
        with self._read() as db:
            return db.execute(select(func.count()).where(WRITERS.c.token_sha256.is_not(None))).scalar_one() > 0

    def writer_for_token(self, token: str) -> Writer | None:
        """The account whose token this is, or None."""
        if not token:
            return None
        with self._read() as db:
            row = db.execute(select(WRITERS.c.id, WRITERS.c.name).where(
                WRITERS.c.token_sha256 == token_digest(token))).first()
        return Writer(row.id, row.name) if row else None

    def local_writer(self) -> Writer:
        """The shared writer of an open API (made on first use)."""
        with self._read() as db:
            row = db.execute(select(WRITERS.c.id).where(WRITERS.c.name == LOCAL_WRITER)).first()
        if row:
            return Writer(row.id, LOCAL_WRITER)
        try:
            with self._write() as db:
                db.execute(WRITERS.insert().values(name=LOCAL_WRITER, token_sha256=None, created_at=_now()))
        except IntegrityError:
            pass  # made meanwhile by another request
        return self.local_writer()

    # stories -------------------------------------------------------------------------------------------------
    def create(self, writer: Writer, fields: StoryFields, origin: str = "create") -> dict[str, Any]:
        """Saves a new story as its version 1; returns it."""
        self._check(fields)
        story_id, now = uuid.uuid4().hex, _now()
        with self._write() as db:
            db.execute(STORIES.insert().values(id=story_id, writer_id=writer.id, title=fields.title, head=1,
                                               created_at=now, updated_at=now, deleted_at=None))
            db.execute(VERSIONS.insert().values(story_id=story_id, version=1, saved_at=now, origin=origin,
                                                body=fields.model_dump()))
        return self.get(writer, story_id)

    def list(self, writer: Writer, deleted: bool = False) -> list[dict[str, Any]]:
        """The writer's stories, newest first (``deleted``: the deleted ones instead)."""
        where = STORIES.c.deleted_at.is_not(None) if deleted else STORIES.c.deleted_at.is_(None)
        with self._read() as db:
            rows = db.execute(select(STORIES).where(STORIES.c.writer_id == writer.id, where)
                              .order_by(STORIES.c.updated_at.desc())).all()
        return [_summary(r) for r in rows]

    def get(self, writer: Writer, story_id: str, version: int | None = None) -> dict[str, Any]:
        """The story's newest version (or ``version``) with its fields.

        Raises:
            NotFound: If the writer has no such story (or version).
        """
        with self._read() as db:
            story = self._story(db, writer, story_id, deleted_too=True)
            row = self._version(db, story_id, version or story.head)
        if row is None:
            raise NotFound(f"story {story_id} has no version {version}", "version")
        return _record(story, row)

    def update(self, writer: Writer, story_id: str, edited_version: int, changes: dict[str, Any],
               origin: str = "edit") -> dict[str, Any]:
        """Saves the edit as a new version, if it was made on the newest one (an edit that changes nothing makes none).

        Args:
            writer: Whose story.
            story_id: Which.
            edited_version: The version the edit was made on.
            changes: The fields changed (the others keep their values).
            origin: What made the save (``edit``, ``autosave``, ``turn``, ``restore``, ...).

        Raises:
            NotFound: No such story, or it is deleted.
            Conflict: ``edited_version`` is not the newest; ``extra['current']`` is the newest story.
            Invalid: A field is wrong or over its cap.
        """
        with self._write() as db:
            story = self._story(db, writer, story_id)
            if edited_version != story.head:
                current = _record(story, self._version(db, story_id, story.head))
                raise Conflict(f"story {story_id} is at version {story.head}; this edit was made on version "
                               f"{edited_version}: reload it and apply the edit again", "version",
                               current_version=story.head, current=current)
            head = self._version(db, story_id, story.head).body
            try:
                fields = StoryFields.model_validate({**head, **changes})
            except ValueError as exc:
                raise Invalid(str(exc).splitlines()[0]) from None
            self._check(fields)
            if fields.model_dump() == StoryFields.model_validate(head).model_dump():  # nothing changed: no version
                return _record(story, self._version(db, story_id, story.head))
            now, version = _now(), story.head + 1
            db.execute(VERSIONS.insert().values(story_id=story_id, version=version, saved_at=now, origin=origin,
                                                body=fields.model_dump()))
            db.execute(STORIES.update().where(STORIES.c.id == story_id).values(head=version, title=fields.title,
                                                                               updated_at=now))
        return self.get(writer, story_id)

    def versions(self, writer: Writer, story_id: str) -> list[dict[str, Any]]:
        """The story's versions, newest first: number, time, origin, title and words."""
        with self._read() as db:
            self._story(db, writer, story_id, deleted_too=True)
            rows = db.execute(select(VERSIONS).where(VERSIONS.c.story_id == story_id)
                              .order_by(VERSIONS.c.version.desc()).limit(self.limits.max_versions_listed)).all()
        return [{"version": r.version, "saved_at": _iso(r.saved_at), "origin": r.origin, "title": r.body["title"],
                 "words": len(r.body["text"].split())} for r in rows]

    def restore_version(self, writer: Writer, story_id: str, old: int, current: int) -> dict[str, Any]:
        """Saves version ``old``'s fields as a new version (nothing is overwritten); ``current`` as in update."""
        body = self.get(writer, story_id, old)
        fields = {k: body[k] for k in StoryFields.model_fields}
        return self.update(writer, story_id, current, fields, origin=f"restore of v{old}")

    def delete(self, writer: Writer, story_id: str) -> None:
        """Marks the story deleted (its versions stay; :meth:`undelete` brings it back)."""
        with self._write() as db:
            self._story(db, writer, story_id)
            db.execute(STORIES.update().where(STORIES.c.id == story_id).values(deleted_at=_now()))

    def undelete(self, writer: Writer, story_id: str) -> dict[str, Any]:
        """Brings a deleted story back."""
        with self._write() as db:
            self._story(db, writer, story_id, deleted_too=True)
            db.execute(STORIES.update().where(STORIES.c.id == story_id).values(deleted_at=None))
        return self.get(writer, story_id)

    # internals -----------------------------------------------------------------------------------------------
    def _check(self, fields: StoryFields) -> None:
        problem = size_problem(fields, self.limits)
        if problem:
            raise Invalid(problem[1], problem[0])

    def _story(self, db: Any, writer: Writer, story_id: str, deleted_too: bool = False) -> Any:
        row = db.execute(select(STORIES).where(STORIES.c.id == story_id, STORIES.c.writer_id == writer.id)).first()
        if row is None or (row.deleted_at is not None and not deleted_too):
            raise NotFound(f"no story {story_id!r}" + (" (it is deleted: restore it first)" if row else ""), "id")
        return row

    def _version(self, db: Any, story_id: str, number: int) -> Any:
        return db.execute(select(VERSIONS).where(VERSIONS.c.story_id == story_id,
                                                 VERSIONS.c.version == number)).first()

    def _read(self) -> Any:
        return _Guarded(self.engine.connect)

    def _write(self) -> Any:
        return _Guarded(self.engine.begin)


class _Guarded:
    """A connection context whose database errors become :class:`Unavailable` with the reason."""

    def __init__(self, opener: Any) -> None:
        self.opener = opener

    def __enter__(self) -> Any:
        try:
            self.context = self.opener()
            return self.context.__enter__()
        except OperationalError as exc:
            raise Unavailable(f"the story database is unavailable: {_reason(exc)}") from None

    def __exit__(self, *exc_info: Any) -> bool:
        try:
            self.context.__exit__(*exc_info)
        except OperationalError as exc:
            raise Unavailable(f"the story database is unavailable: {_reason(exc)}") from None
        if exc_info[0] is not None and issubclass(exc_info[0], OperationalError):
            raise Unavailable(f"the story database is unavailable: {_reason(exc_info[1])}") from None
        return False


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "orig", exc)).splitlines()[0]


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat(timespec="milliseconds")


def _record(story: Any, row: Any) -> dict[str, Any]:
    """A story's summary with one version's fields, number, time and origin."""
    return {**_summary(story), **row.body, "version": row.version, "saved_at": _iso(row.saved_at),
            "origin": row.origin}


def _summary(row: Any) -> dict[str, Any]:
    return {"id": row.id, "title": row.title, "version": row.head, "created_at": _iso(row.created_at),
            "updated_at": _iso(row.updated_at), "deleted": row.deleted_at is not None}
