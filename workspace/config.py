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
