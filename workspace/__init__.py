"""The writer's workspace: stories kept on the server in a database, with every save a new version.

SQLite (a file under the checkout's ``.state/``) by default; PostgreSQL on the team stack through the same
SQLAlchemy code (``CW_DATABASE_URL`` or the serving profile's ``workspace.database_url``). The schema is
created and upgraded by Alembic migrations (``workspace/migrations``) when the store opens.
"""
