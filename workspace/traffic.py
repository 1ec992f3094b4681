"""Served traffic: the request log (written off the request path), writers' feedback, and reading both back.

:class:`RequestLog` takes a row from the serving engine in microseconds (a queue put) and a background
thread writes rows in batches to the workspace database (the one the stories live in: SQLite by default,
PostgreSQL on the team stack). When the database is down or the queue is full, rows are counted as lost
and the count is written to ``log_gaps`` once the database answers again, so the monitoring report says
how many are missing. Retention (days and rows) is enforced by the same thread.

Feedback is the writer's deliberate act, so it is written at once (:func:`record_feedback`); it names the
request it is about. :func:`read_traffic` and :func:`read_feedback` give both back as data frames for the
monitoring pipeline and the preference-pair builder.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.exc import SQLAlchemyError

from workspace.config import TrafficSettings

log = logging.getLogger(__name__)

META = MetaData()
REQUEST_LOG = Table(
    "request_log", META, Column("id", String(32), primary_key=True), Column("at", DateTime(timezone=True)),
    Column("endpoint", String(40)), Column("outcome", String(20)), Column("status", Integer),
    Column("model_version", String(40)), Column("model_alias", String(40)), Column("runtime", String(20)),
    Column("form", String(40)), Column("genre", String(40)), Column("settings", JSON),
    Column("prompt_chars", Integer), Column("output_chars", Integer), Column("drafts", Integer),
    Column("tokens", Integer), Column("latency_ms", Float), Column("first_chunk_ms", Float),
    Column("story_id", String(32)), Column("error", String(400)), Column("prompt_text", Text),
    Column("output_text", JSON))
FEEDBACK = Table(
    "feedback", META, Column("id", Integer, primary_key=True), Column("at", DateTime(timezone=True)),
    Column("request_id", String(32)), Column("writer", String(80)), Column("kind", String(20)),
    Column("draft", Integer), Column("prompt", Text), Column("form", String(40)), Column("genre", String(40)),
    Column("text", Text), Column("others", JSON), Column("edited", Text))
LOG_GAPS = Table("log_gaps", META, Column("id", Integer, primary_key=True), Column("at", DateTime(timezone=True)),
                 Column("lost", Integer), Column("reason", String(400)))
LOG_COLUMNS = tuple(c.name for c in REQUEST_LOG.columns)
Outcome = Literal["ok", "4xx", "5xx", "cancelled"]
STATUS = {"ok": 200, "4xx": 400, "5xx": 503, "cancelled": 499}


def new_request_id() -> str:
    """A fresh request id (32 hex characters: what a client sends back with its feedback)."""
    return uuid.uuid4().hex


@dataclass
class LogRow:
    """One served request, as the engine saw it (``prompt_text``/``output_text`` dropped unless opted in)."""

    id: str
    endpoint: str
    outcome: Outcome
    model_version: str = ""
    model_alias: str = ""
    runtime: str = ""
    form: str = ""
    genre: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    prompt_chars: int = 0
    output_chars: int = 0
    drafts: int = 0
    tokens: int = 0
    latency_ms: float = 0.0
    first_chunk_ms: float | None = None
    story_id: str | None = None
    error: str | None = None
    prompt_text: str | None = None
    output_text: list[str] | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def values(self, store_text: bool) -> dict[str, Any]:
        """The row's columns (text only when ``store_text``)."""
        out = {name: getattr(self, name) for name in LOG_COLUMNS if name != "status"}
        out["status"] = STATUS[self.outcome]
        out["error"] = (self.error or None) and self.error[:400]
        if not store_text:
            out["prompt_text"] = out["output_text"] = None
        return out


class RequestLog:
    """The request log's writer: :meth:`record` queues a row, a daemon thread writes them in batches.

    Args:
        engine: ``engine()`` returns the database engine (called in the writer thread; a failure counts
            the rows as lost and is tried again with the next batch).
        settings: The profile's ``traffic`` section.
    """

    def __init__(self, engine: Callable[[], Engine], settings: TrafficSettings | None = None) -> None:
        self.settings = settings or TrafficSettings()
        self._engine = engine
        self._queue: queue.Queue[LogRow | None] = queue.Queue(self.settings.queue_size)
        self.written = 0
        self.lost = 0  # rows that never reached the database (full queue, database errors)
        self._unreported = 0  # lost rows not yet written to log_gaps
        self.last_error = ""
        self._last_prune = 0.0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def record(self, row: LogRow) -> None:
        """Queues ``row`` without waiting (a full queue counts it as lost)."""
        if not self.settings.log_requests:
            return
        if self._thread is None:
            self._start()
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            with self._lock:
                self.lost += 1
                self._unreported += 1
                self.last_error = f"the log queue is full ({self.settings.queue_size} rows)"

    def flush(self, timeout: float = 10.0) -> bool:
        """Waits until every queued row is written or counted lost; returns whether that happened in time."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def stats(self) -> dict[str, Any]:
        """Rows written, lost and waiting, and the last error ('' when none)."""
        return {"written": self.written, "lost": self.lost, "queued": self._queue.qsize(),
                "last_error": self.last_error}

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < 200:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write([row for row in batch if row is not None])
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _write(self, rows: list[LogRow]) -> None:
        try:
            engine = self._engine()
            with engine.begin() as db:
                if rows:
                    db.execute(insert(REQUEST_LOG), [row.values(self.settings.store_text) for row in rows])
                with self._lock:
                    gap, reason = self._unreported, self.last_error
                if gap:
                    db.execute(insert(LOG_GAPS).values(at=datetime.now(UTC), lost=gap, reason=reason[:400]))
            with self._lock:
                self.written += len(rows)
                self._unreported -= gap
            if time.monotonic() - self._last_prune >= self.settings.prune_every_s:
                self._last_prune = time.monotonic()
                prune(engine, self.settings)
        except Exception as exc:  # any failure to write is counted, never raised into serving
            with self._lock:
                self.lost += len(rows)
                self._unreported += len(rows)
                self.last_error = f"{type(exc).__name__}: {str(getattr(exc, 'orig', exc)).splitlines()[0]}"
            log.warning("request log: %d row(s) lost: %s", len(rows), self.last_error)


def prune(engine: Engine, settings: TrafficSettings, now: datetime | None = None) -> int:
    """Deletes log rows older than ``retention_days`` and beyond the newest ``max_rows``; returns how many."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=settings.retention_days)
    with engine.begin() as db:
        gone = db.execute(delete(REQUEST_LOG).where(REQUEST_LOG.c.at < cutoff)).rowcount or 0
        total = db.execute(select(func.count()).select_from(REQUEST_LOG)).scalar_one()
        if total > settings.max_rows:
            keep_from = db.execute(select(REQUEST_LOG.c.at).order_by(REQUEST_LOG.c.at.desc())
                                   .offset(settings.max_rows - 1).limit(1)).scalar_one()
            gone += db.execute(delete(REQUEST_LOG).where(REQUEST_LOG.c.at < keep_from)).rowcount or 0
        db.execute(delete(FEEDBACK).where(FEEDBACK.c.at < cutoff))
    return gone


class FeedbackIn(BaseModel):
    """A writer's verdict on a draft: ``up``/``down``, ``kept`` (this draft over ``others``) or ``edited``.

    The drafts are sent with the verdict because a preference pair is made of their text; the request id
    links it to the log row (which model wrote it).
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    request_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="The request_id of the response judged.")
    kind: Literal["up", "down", "kept", "edited"] = Field(
        description="up/down: a thumb on one draft; kept: this draft chosen over `others`; edited: the writer "
                    "rewrote this draft as `edited`.")
    draft: int = Field(0, ge=0, le=64, description="Which draft of the response (0 = the first).")
    prompt: str = Field(min_length=1, max_length=4000, description="The prompt the drafts answered.")
    form: str = Field("story", max_length=40)
    genre: str = Field("", max_length=40)
    text: str = Field(min_length=1, max_length=20_000, description="The judged draft's text.")
    others: list[Annotated[str, Field(max_length=20_000)]] = Field(
        default_factory=list, max_length=16, description="kept: the drafts not chosen (each becomes a rejected side).")
    edited: str | None = Field(None, max_length=20_000, description="edited: the writer's version of the draft.")


def record_feedback(engine: Engine, feedback: FeedbackIn, writer: str) -> int:
    """Stores a verdict; returns its id.

    Raises:
        ValueError: When the verdict lacks what its kind needs (``others`` for kept, ``edited`` for edited).
        sqlalchemy.exc.SQLAlchemyError: When the database fails.
    """
    if feedback.kind == "kept" and not [o for o in feedback.others if o.strip() and o != feedback.text]:
        raise ValueError("others: a 'kept' verdict names the drafts that were not kept")
    if feedback.kind == "edited" and not (feedback.edited or "").strip():
        raise ValueError("edited: an 'edited' verdict carries the writer's version of the draft")
    with engine.begin() as db:
        return int(db.execute(insert(FEEDBACK).values(
            at=datetime.now(UTC), writer=writer, **feedback.model_dump())).inserted_primary_key[0])


def _frame(engine: Engine, table: Table, since: datetime | None) -> pd.DataFrame:
    query = select(table).order_by(table.c.at)
    if since is not None:
        query = query.where(table.c.at >= since)
    try:
        with engine.connect() as db:
            rows = db.execute(query).mappings().all()
    except SQLAlchemyError as exc:
        raise LookupError(f"the traffic database cannot be read: {str(getattr(exc, 'orig', exc)).splitlines()[0]}") \
            from None
    frame = pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in table.columns])
    if len(frame):
        frame["at"] = pd.to_datetime(frame["at"], utc=True)
    return frame


def read_traffic(engine: Engine, since: datetime | None = None) -> pd.DataFrame:
    """The request log (oldest first), from ``since`` on."""
    return _frame(engine, REQUEST_LOG, since)


def read_feedback(engine: Engine, since: datetime | None = None) -> pd.DataFrame:
    """Writers' feedback with the model version of the request it judges ('' when its log row is gone)."""
    feedback = _frame(engine, FEEDBACK, since)
    if feedback.empty:
        return feedback.assign(model_version=pd.Series(dtype=str))
    with engine.connect() as db:
        versions = dict(db.execute(select(REQUEST_LOG.c.id, REQUEST_LOG.c.model_version).where(
            REQUEST_LOG.c.id.in_(list(feedback["request_id"].unique())))).all())
    return feedback.assign(model_version=feedback["request_id"].map(versions).fillna(""))


def read_gaps(engine: Engine, since: datetime | None = None) -> int:
    """Log rows counted lost since ``since``."""
    query = select(func.coalesce(func.sum(LOG_GAPS.c.lost), 0))
    if since is not None:
        query = query.where(LOG_GAPS.c.at >= since)
    with engine.connect() as db:
        return int(db.execute(query).scalar_one())


def feedback_fingerprint(engine: Engine) -> str:
    """A cheap fingerprint of the feedback table (count and newest id): changes when feedback is added."""
    try:
        with engine.connect() as db:
            count, newest = db.execute(select(func.count(), func.max(FEEDBACK.c.id))).one()
    except SQLAlchemyError:
        return "unavailable"
    return hashlib.sha256(f"{count}:{newest}".encode()).hexdigest()[:16]
