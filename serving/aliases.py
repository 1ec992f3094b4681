"""The registry's aliases by hand: see which version has which, set or remove ``@challenger``.

    python -m serving.aliases                       # every version of creative-writer with its aliases
    python -m serving.aliases set challenger 8      # version 8 is served beside the champion (canary.share)
    python -m serving.aliases unset challenger

``@champion`` is moved only by the training pipeline's promotion (by the rule, after the evaluation), so it
is refused here.
"""

from __future__ import annotations

import argparse
import sys

from core.paths import REGISTERED_NAME

PROTECTED = {"champion"}


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code."""
    parser = argparse.ArgumentParser(description="List, set or remove registry aliases (not @champion).")
    parser.add_argument("action", nargs="?", choices=("list", "set", "unset"), default="list")
    parser.add_argument("alias", nargs="?")
    parser.add_argument("version", nargs="?")
    parser.add_argument("--model", default=REGISTERED_NAME, help="the registered model")
    args = parser.parse_args(argv)
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from serving.champion import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    try:
        if args.action == "list":
            versions = client.search_model_versions(f"name='{args.model}'")
            named = client.get_registered_model(args.model).aliases  # {alias: version}
            for version in sorted(versions, key=lambda v: int(v.version)):
                aliases = " ".join(f"@{a}" for a, v in sorted(named.items()) if str(v) == str(version.version))
                print(f"v{version.version:<4} {version.tags.get('family', ''):<12} {aliases}")
            return 0
        if not args.alias or args.alias in PROTECTED:
            sys.stderr.write("aliases: error: name an alias other than @champion (the promotion moves that one)\n")
            return 2
        if args.action == "set":
            if not args.version:
                sys.stderr.write("aliases: error: set needs a version, e.g. set challenger 8\n")
                return 2
            client.get_model_version(args.model, args.version)
            client.set_registered_model_alias(args.model, args.alias, args.version)
            print(f"@{args.alias} is now {args.model} v{args.version}")
        else:
            client.delete_registered_model_alias(args.model, args.alias)
            print(f"@{args.alias} removed from {args.model}")
    except MlflowException as exc:
        sys.stderr.write(f"aliases: error: {str(exc).splitlines()[0]}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
