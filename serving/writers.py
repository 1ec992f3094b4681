"""Writer accounts on the command line: ``python -m serving.writers add-writer NAME`` prints the token once.

``python -m serving.writers writers`` lists the accounts. The database is the server's (``$CW_DATABASE_URL`` or
the serving profile's ``workspace.database_url``; default SQLite in ``.state/workspace.db``).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit code (2 with one clear line for a refused request)."""
    parser = argparse.ArgumentParser(prog="python -m serving.writers", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add-writer", help="create a writer account and print its token (shown once)")
    add.add_argument("name")
    commands.add_parser("writers", help="list the writer accounts")
    args = parser.parse_args(argv)

    from serving.config import load_serving_config
    from workspace.db import database_url
    from workspace.store import StoreError, StoryStore

    settings = load_serving_config().workspace
    try:
        store = StoryStore(database_url(settings.database_url), settings)
        if args.command == "add-writer":
            token = store.add_writer(args.name)
            print(f"writer {args.name!r} added; their token (shown only now, stored hashed):\n{token}")
        else:
            for writer in store.writers():
                print(f"{writer.id}\t{writer.name}")
    except StoreError as exc:
        print(f"python -m serving.writers: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
