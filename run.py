"""Command-line entry point: bootstrap the local stack and run a pipeline with a run profile.

Examples:
    python run.py --pipeline training
    python run.py --pipeline training --config configs/smoke.yaml --no-cache
    python run.py --pipeline training --dataset writingprompts:../shared/datasets/writingprompts
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from infra.stack import PROJECT_ROOT, quiet_defaults

PIPELINES = ("training", "deployment", "inference")
LATER = {
    "deployment": "the deployment pipeline (BentoML service + Gradio UI) arrives with issue #7",
    "inference": "the batch inference pipeline arrives with issue #7",
}


class CleanArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2."""

    def error(self, message: str) -> None:  # noqa: D102
        sys.stderr.write(f"run.py: error: {message} (see python run.py --help)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = CleanArgumentParser(description="Run a creative-writer pipeline on the local ZenML stack.")
    parser.add_argument("--pipeline", choices=PIPELINES, default="training", help="which pipeline to run")
    parser.add_argument("--config", type=Path, default=Path("configs/default.yaml"), help="run profile (YAML)")
    parser.add_argument("--no-cache", action="store_true", help="re-run every step, ignoring ZenML's cache")
    parser.add_argument("--dataset", action="append", metavar="SPEC",
                        help="data source spec replacing the profile's (repeat to combine sources), "
                             "e.g. builtin?n=500, writingprompts:DIR, tinystories:FILE, text:FILE, jsonl:FILE")
    parser.add_argument("--prompts", type=Path, help="prompts file for --pipeline inference")
    return parser


def fail(message: str, code: int = 1) -> int:
    """Prints one clear error line and returns the exit code."""
    sys.stderr.write(f"run.py: error: {message}\n")
    return code


def main(argv: list[str] | None = None) -> int:
    """Parses arguments, bootstraps the stack, runs the pipeline and says where to look."""
    args = build_parser().parse_args(argv)
    config = args.config if args.config.is_absolute() else (Path.cwd() / args.config)
    if not config.is_file():
        return fail(f"config file not found: {args.config}", 2)
    if args.pipeline in LATER:
        return fail(f"--pipeline {args.pipeline} is not available yet: {LATER[args.pipeline]}", 2)
    quiet_defaults()
    started = time.perf_counter()

    from corpus.schema import DataError
    from infra.profiles import ProfileError, load_profile, resolve_profile, write_resolved
    from infra.report import print_run_summary

    try:
        resolved = resolve_profile(load_profile(config), args.dataset, str(args.config))
    except (ProfileError, DataError) as exc:
        return fail(str(exc), 2)
    if args.no_cache:
        resolved["enable_cache"] = False

    from infra.stack import StackConfigError, ensure_stack

    try:
        for change in ensure_stack():
            print(f"[stack] {change}")
    except StackConfigError as exc:
        return fail(str(exc))

    from infra.zenml_utils import limit_eager_integrations
    from pipelines import training_pipeline

    limit_eager_integrations(args.pipeline)

    run_config = write_resolved(resolved, args.pipeline)
    try:
        run = training_pipeline.with_options(config_path=str(run_config))()
    except RuntimeError as exc:  # ZenML's "Pipeline run has failed due to failure in step(s): ..."
        from infra.report import failure_messages

        reasons = failure_messages(training_pipeline.name) or [str(exc)]
        return fail(f"the {args.pipeline} pipeline failed: " + "; ".join(reasons))
    print_run_summary(run, time.perf_counter() - started, PROJECT_ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
