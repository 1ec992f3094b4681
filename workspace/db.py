"""The workspace database: the URL, the engine (durable SQLite settings) and the Alembic migrations."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event

from core.paths import PROJECT_ROOT

DATABASE_ENV = "CW_DATABASE_URL"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def database_url(configured: str = "", root: Path = PROJECT_ROOT) -> str:
    """``$CW_DATABASE_URL``, else ``configured``, else the SQLite file ``ROOT/.state/workspace.db``."""
    return os.environ.get(DATABASE_ENV, "").strip() or configured or f"sqlite:///{root / '.state' / 'workspace.db'}"


def connect(url: str) -> Engine:
    """An engine for ``url``; for SQLite the file's folder is made and every write is made durable.

    SQLite runs in WAL mode with ``synchronous=FULL`` (a commit is on disk before it returns, so a killed
    server keeps every save it acknowledged), foreign keys on, and write transactions that take the write
    lock at ``BEGIN`` (``BEGIN IMMEDIATE``), so two writers of one story are serialised, not interleaved.
    """
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 15, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(connection, _record) -> None:  # noqa: ANN001
            connection.isolation_level = None  # the driver's own transaction handling off; BEGIN below
            cursor = connection.cursor()
            for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=15000"):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection) -> None:  # noqa: ANN001
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Brings the database's schema to the newest migration (Alembic ``upgrade head``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
