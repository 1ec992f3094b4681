"""The workspace's settings: where its database is and how large a story may be (one home for defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from core.validation import STRICT

Count = Annotated[int, Field(ge=1)]


@dataclass(frozen=True)
class WorkspaceSettings:
    """The ``workspace`` section of the serving profile.

    ``database_url`` is an SQLAlchemy URL ('' = SQLite in ``.state/workspace.db`` of the checkout);
    ``$CW_DATABASE_URL`` wins over it. The caps bound one story's fields; a request over a cap is refused
    with a 400 naming the field.
    """

    __pydantic_config__ = STRICT  # unknown keys are refused by name

    database_url: str = ""
    max_title_chars: Count = 200
    max_text_chars: Count = 400_000
    max_note_chars: Count = 8_000
    max_lorebook_entries: Count = 100
    max_entry_chars: Count = 2_000
    max_turns: Count = 2_000
    max_body_bytes: Count = 2 * 1024 * 1024
    max_versions_listed: Count = 500


@dataclass(frozen=True)
class TrafficSettings:
    """The ``traffic`` section of the serving profile: the request log and writers' feedback.

    Every generation request (the HTTP API, ``/v1`` and the UI) is logged with its model, settings, sizes,
    timings and outcome; the prompt and output **text** only when ``store_text`` is true (off by default).
    Rows older than ``retention_days`` and beyond the newest ``max_rows`` are deleted every ``prune_every_s``.
    The log is written by a background thread from a queue of ``queue_size`` rows, so a slow or absent
    database never holds up a writer's request; rows it cannot write are counted (``log_gaps``) and reported.
    Feedback (``POST /feedback``) stores the drafts it judges: a preference pair is made of them.
    """

    __pydantic_config__ = STRICT

    log_requests: bool = True
    store_text: bool = False
    retention_days: Count = 30
    max_rows: Count = 100_000
    queue_size: Count = 10_000
    prune_every_s: Count = 600
    max_feedback_chars: Count = 20_000
