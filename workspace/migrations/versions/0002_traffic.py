"""Served traffic: the request log, writers' feedback on drafts, and log rows that could not be written.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    """Creates the request log, the feedback and the log-gap tables."""
    op.create_table(
        "request_log",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("endpoint", sa.String(40), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("model_version", sa.String(40), nullable=False),
        sa.Column("model_alias", sa.String(40), nullable=False),
        sa.Column("runtime", sa.String(20), nullable=False),
        sa.Column("form", sa.String(40), nullable=False),
        sa.Column("genre", sa.String(40), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("prompt_chars", sa.Integer, nullable=False),
        sa.Column("output_chars", sa.Integer, nullable=False),
        sa.Column("drafts", sa.Integer, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("first_chunk_ms", sa.Float),
        sa.Column("story_id", sa.String(32)),
        sa.Column("error", sa.String(400)),
        sa.Column("prompt_text", sa.Text),
        sa.Column("output_text", sa.JSON),
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("request_id", sa.String(32), nullable=False, index=True),
        sa.Column("writer", sa.String(80), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("draft", sa.Integer, nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("form", sa.String(40), nullable=False),
        sa.Column("genre", sa.String(40), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("others", sa.JSON, nullable=False),
        sa.Column("edited", sa.Text),
    )
    op.create_table(
        "log_gaps",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lost", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(400), nullable=False),
    )


def downgrade() -> None:
    """Drops them."""
    op.drop_table("log_gaps")
    op.drop_table("feedback")
    op.drop_table("request_log")
