"""Alembic's environment: migrations run on the connection :func:`workspace.db.migrate` passes in.

The workspace keeps its own version table, so it can share a database with MLflow (which has Alembic's
default ``alembic_version``), as on the team stack's PostgreSQL.
"""

from alembic import context

VERSION_TABLE = "workspace_alembic_version"

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite",
                  version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
