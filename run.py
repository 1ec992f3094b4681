"""Command-line entry point: bootstrap the local stack and run a pipeline with a run profile.

Examples:
    python run.py --pipeline training
    python run.py --pipeline training --config configs/smoke.yaml --no-cache
    python run.py --pipeline training --dataset writingprompts:../shared/datasets/writingprompts
    python run.py --pipeline training --real-test tinystories:../shared/datasets/tinystories/FILE.txt?limit=400
    python run.py --pipeline deployment --port 3000
    python run.py --pipeline inference --prompts examples/prompts.txt --output outputs/generations.jsonl
    python run.py --pipeline monitoring --since 24h     # the served traffic and writers' feedback, reported
    python run.py --stack team --pipeline training     # on the servers `python -m infra.team up` started
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from core.paths import REGISTERED_NAME, project_version  # these two load nothing that registers exit handlers
from infra.stack import PROJECT_ROOT, STACK_CONFIGS, quiet_defaults

_FINISHED: list[int] = []  # the exit status, once main() returned under ``python run.py``


def _exit_without_teardown() -> None:
    """Ends the process once every other exit handler has run, skipping the interpreter's module teardown.

    Registered before ZenML or any library is imported, so it runs last (exit handlers run in reverse order):
    ZenML's, MLflow's and OpenTelemetry's own handlers, and the temporary folders' finalizers, have all run
    by then. What is left is Python freeing the ~4,000 modules ZenML, MLflow and BentoML load, one object at
    a time: 1.7 s of a 10 s cached rerun here, for nothing the run needs. Only after ``main()`` returned;
    an unexpected error still exits the ordinary way.
    """
    if _FINISHED:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_FINISHED[0])


atexit.register(_exit_without_teardown)

PIPELINES = ("training", "deployment", "inference", "monitoring")
DEFAULT_CONFIGS = {"training": Path("configs/default.yaml"), "deployment": Path("configs/deployment.yaml"),
                   "inference": Path("configs/inference.yaml"), "monitoring": Path("configs/monitoring.yaml")}


class CleanArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2."""

    def error(self, message: str) -> None:  # noqa: D102
        sys.stderr.write(f"run.py: error: {message} (see python run.py --help)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = CleanArgumentParser(description="Run a creative-writer pipeline on the local (or the team's) ZenML stack.")
    parser.add_argument("--version", action="version", version=f"creative-writer {project_version()}")
    parser.add_argument("--pipeline", choices=PIPELINES, default="training", help="which pipeline to run")
    parser.add_argument("--config", type=Path, help="run profile (YAML; default: configs/default.yaml for "
                        "training, configs/deployment.yaml, configs/inference.yaml, configs/monitoring.yaml)")
    parser.add_argument("--no-cache", action="store_true", help="re-run every step, ignoring ZenML's cache")
    parser.add_argument("--dataset", action="append", metavar="SPEC",
                        help="data source spec replacing the profile's (repeat to combine sources), "
                             "e.g. builtin?n=500, writingprompts:DIR, tinystories:FILE, text:FILE, jsonl:FILE")
    parser.add_argument("--real-test", action="append", metavar="SPEC", dest="real_tests",
                        help="training: a held-out real test set replacing the profile's parameters.real_tests "
                             "(repeat for several); measured for every candidate, never trained on")
    parser.add_argument("--prompts", type=Path, help="inference: a text (one prompt per line) or JSONL prompts file")
    parser.add_argument("--output", type=Path, default=Path("outputs/generations.jsonl"),
                        help="inference: where to write the generations (.jsonl or .csv)")
    parser.add_argument("--model-version", help="deployment/inference: a registry version instead of the alias")
    parser.add_argument("--port", type=int, help="deployment: the port to serve on (default from the profile)")
    parser.add_argument("--since", help="monitoring: the window read: 30m, 24h, 7d, 2w or an ISO date "
                        "(default from configs/monitoring.yaml)")
    parser.add_argument("--show-config", action="store_true",
                        help="print the run's settings resolved (the profile over the code's defaults) and exit")
    parser.add_argument("--stack", choices=sorted(STACK_CONFIGS), default="local",
                        help="local: SQLite files in this checkout (default); team: the ZenML and MLflow servers "
                             "of stack_configs/team.yaml (start them with python -m infra.team up)")
    parser.add_argument("--team-root", type=Path, default=PROJECT_ROOT / ".team",
                        help="--stack team: the folder `python -m infra.team up` used (default: .team)")
    return parser


class Refused(Exception):
    """A run that cannot start or did not finish: one line for the user and the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 1) -> int:
    """Prints one clear error line and returns the exit code."""
    sys.stderr.write(f"run.py: error: {message}\n")
    return code


def main(argv: list[str] | None = None) -> int:
    """Parses arguments, bootstraps the stack, runs the pipeline and says where to look."""
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        config_arg = check_arguments(args)
        resolved = read_profile(args, config_arg)
        tracking = bootstrap(args)
        if args.show_config:
            return show_config(args.pipeline, resolved, str(config_arg))
        chosen, resolved = prepare_run(args, resolved, str(config_arg))
        run = execute(args.pipeline, chosen, resolved, str(config_arg))
    except Refused as exc:
        return fail(str(exc), exc.code)
    report(args, run, time.perf_counter() - started, tracking)
    return 0


def check_arguments(args: argparse.Namespace) -> Path:
    """The run profile's path as given, after checking the flags that need no file read.

    Raises:
        Refused: (exit 2) For a missing profile or a flag that does not fit the pipeline.
    """
    config_arg = args.config or DEFAULT_CONFIGS[args.pipeline]
    config = config_arg if config_arg.is_absolute() else (Path.cwd() / config_arg)
    if not config.is_file():
        raise Refused(f"config file not found: {config_arg}", 2)
    if args.pipeline == "inference":
        if args.prompts is None:
            raise Refused("--pipeline inference needs --prompts FILE (a text or JSONL file of prompts)", 2)
        if args.output.suffix.lower() not in {".jsonl", ".csv"}:
            raise Refused(f"--output {args.output}: use a .jsonl or .csv file name", 2)
    if args.real_tests and args.pipeline != "training":
        raise Refused("--real-test is for --pipeline training (the evaluation measures the candidates on it)", 2)
    if args.port is not None and not 0 < args.port < 65536:
        raise Refused(f"--port {args.port}: not a port number", 2)
    if args.since is not None:
        if args.pipeline != "monitoring":
            raise Refused("--since is for --pipeline monitoring (the window of served traffic it reads)", 2)
        from monitoring.config import parse_since

        try:
            parse_since(args.since)
        except ValueError as exc:
            raise Refused(str(exc), 2) from None
    return config_arg


def read_profile(args: argparse.Namespace, config_arg: Path) -> dict:
    """The run profile, with the command line's data sources and real test sets (nothing of ZenML is loaded).

    Raises:
        Refused: (exit 2) For a profile or data spec that is wrong (named).
    """
    from corpus.schema import DataError
    from infra.profiles import ProfileError, load_profile, resolve_profile

    config = config_arg if config_arg.is_absolute() else (Path.cwd() / config_arg)
    try:
        profile = load_profile(config)
        if args.pipeline == "training":
            profile = resolve_profile(profile, args.dataset, str(config_arg), args.real_tests)
    except (ProfileError, DataError) as exc:
        raise Refused(str(exc), 2) from None
    if args.no_cache:
        profile["enable_cache"] = False
    if args.since is not None:
        profile.setdefault("parameters", {})["since"] = args.since
    return profile


def bootstrap(args: argparse.Namespace) -> str:
    """The ordered set-up before the pipelines (and ZenML's integrations) load; returns the tracking URI.

    1. the stack's servers are chosen (ZenML reads where its server is when it is imported);
    2. library defaults are quietened (logging, telemetry);
    3. the stack is registered or checked (not for ``--show-config``, which runs nothing);
    4. ZenML's eager integrations are limited to what the pipeline uses, and its MLflow tracker switches
       autologging off only where it could be on.

    Raises:
        Refused: If the team servers or the stack cannot be set up.
    """
    from infra.team import TeamError, select_stack

    stack = "local" if args.show_config else args.stack
    try:
        repository = select_stack(stack, args.team_root)
    except TeamError as exc:
        raise Refused(str(exc)) from None
    quiet_defaults()
    tracking = ""
    if not args.show_config:
        from infra.stack import StackConfigError, ensure_stack, load_stack_spec, spec_tracking_uri

        try:
            for change in ensure_stack(STACK_CONFIGS[stack], repository=repository):
                print(f"[stack] {change}")
            tracking = spec_tracking_uri(load_stack_spec(STACK_CONFIGS[stack]))
        except StackConfigError as exc:
            raise Refused(str(exc)) from None
    from infra.zenml_utils import disable_only_active_autologging, limit_eager_integrations

    limit_eager_integrations(args.pipeline)
    if not args.show_config:
        disable_only_active_autologging()
    return tracking


def prepare_run(args: argparse.Namespace, resolved: dict, where: str) -> tuple[Any, dict]:
    """The pipeline and its run configuration, every setting checked before anything runs.

    Raises:
        Refused: For a missing champion or prompts file, a setting a typed config refuses, a checkpoint that
            cannot be resolved (exit 2, each named by its profile key) or a port already taken.
    """
    if args.pipeline in ("deployment", "inference"):
        try:
            resolved = serving_parameters(args, resolved, where)
        except ValueError as exc:
            raise Refused(str(exc), 2) from None
    from infra.stale_runs import mark_stale_runs

    for stale in mark_stale_runs():
        print(f"[runs] {stale.name} marked failed: {stale.reason}")
    import pipelines
    from pipelines.settings import SettingsError, checkpoint_settings, resolve_settings

    chosen = getattr(pipelines, f"{args.pipeline}_pipeline")
    try:  # each typed step setting checked before ZenML runs anything: a bad one is named by its profile key
        full = resolve_settings(resolved, chosen, where)
    except SettingsError as exc:
        raise Refused(str(exc), 2) from None
    check_checkpoints(checkpoint_settings(full, chosen), where)
    if args.pipeline == "deployment":  # before building anything: is the port ours to take?
        check_deployment_port(chosen, resolved)
    return chosen, resolved


def check_checkpoints(named: list[tuple[str, str]], where: str) -> None:
    """Resolves every checkpoint the run names (fetching or writing it on first use, as its step would).

    Raises:
        Refused: (exit 2) Naming the profile key of the first checkpoint that cannot be resolved.
    """
    from weights.checkpoints import resolve_checkpoint
    from weights.spec import CheckpointError

    for key, spec in named:
        try:
            resolve_checkpoint(spec)
        except CheckpointError as exc:
            raise Refused(f"{where}: {key}: {exc}", 2) from None


def check_deployment_port(chosen: Any, resolved: dict) -> None:
    """Raises Refused when the deployment's host and port cannot be bound."""
    import inspect

    from infra.bento_deployment import DeploymentError, check_port

    defaults = inspect.signature(chosen.entrypoint).parameters
    params = {"host": defaults["host"].default, "port": defaults["port"].default, **resolved["parameters"]}
    try:
        check_port(str(params["host"]), int(params["port"]))
    except DeploymentError as exc:
        raise Refused(str(exc)) from None


def execute(pipeline: str, chosen: Any, resolved: dict, where: str) -> Any:
    """Runs the pipeline with its resolved configuration; returns the ZenML run.

    Raises:
        Refused: If ZenML refuses the configuration (exit 2) or a step fails (its own messages).
    """
    from pydantic import ValidationError

    from infra.profiles import write_resolved
    from infra.stale_runs import OWNER_KEY, owner_record

    run_config = write_resolved(resolved, pipeline)
    try:
        return chosen.with_options(config_path=str(run_config), extra={OWNER_KEY: owner_record()})()
    except ValidationError as exc:  # ZenML refused the run configuration before anything ran
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise Refused(f"{where}: ZenML refused the run configuration: {problems}", 2) from None
    except RuntimeError as exc:  # ZenML's "Pipeline run has failed due to failure in step(s): ..."
        from infra.report import failure_messages

        try:
            reasons = failure_messages(chosen.name) or [str(exc)]
        except Exception:  # e.g. the run could not even be created: its own error says why
            reasons = [str(exc)]
        raise Refused(f"the {pipeline} pipeline failed: " + "; ".join(reasons)) from None


def report(args: argparse.Namespace, run: Any, seconds: float, tracking: str) -> None:
    """Prints where to look after a run (and writes batch inference's output file)."""
    from infra.report import (
        print_deployment_summary,
        print_inference_summary,
        print_monitoring_summary,
        print_run_summary,
    )

    if args.pipeline == "inference":  # the user's output file is written here, from the step's artifact
        from infra.report import step_output
        from serving.batch_inference import write_generations

        frame = step_output(run, "batch_generate")
        print_inference_summary(run, seconds, frame, write_generations(frame, args.output))
    elif args.pipeline == "deployment":
        print_deployment_summary(run, seconds)
    elif args.pipeline == "monitoring":
        print_monitoring_summary(run, seconds)
    else:
        print_run_summary(run, seconds, PROJECT_ROOT, tracking)


def show_config(pipeline: str, resolved: dict, where: str) -> int:
    """Prints the run's settings with every default the code holds filled in (nothing runs)."""
    import yaml

    import pipelines
    from pipelines.settings import SettingsError, resolve_settings

    try:
        full = resolve_settings(resolved, getattr(pipelines, f"{pipeline}_pipeline"), where)
    except SettingsError as exc:
        return fail(str(exc), 2)
    print(f"# the {pipeline} pipeline with {where}: the profile's values over the code's defaults")
    print(yaml.safe_dump(full, sort_keys=False, allow_unicode=True), end="")
    return 0


def pipeline_parameters(pipeline: str) -> list[str]:
    """The parameters the pipeline itself declares (read from its signature)."""
    import inspect

    import pipelines

    return list(inspect.signature(getattr(pipelines, f"{pipeline}_pipeline").entrypoint).parameters)


def serving_parameters(args: argparse.Namespace, profile: dict, where: str) -> dict:
    """The deployment/inference profile with the champion resolved to a version (and the prompts' hash).

    Raises:
        ValueError: If there is no model to use, or the prompts file is unusable (named, with what to do).
    """
    from dataclasses import replace

    from serving.batch_inference import PromptFileError, file_fingerprint, read_prompts
    from serving.champion import NoModelError, resolve_registry
    from serving.config import ModelSource

    resolved = dict(profile)
    params = dict(resolved.get("parameters") or {})
    source = ModelSource(registered_name=params.get("registered_name", REGISTERED_NAME),
                         alias=params.get("alias", "champion"), version=args.model_version or "")
    try:
        provenance = resolve_registry(source)
    except NoModelError as exc:
        raise ValueError(str(exc)) from None
    print(f"[model] {source.describe()} is {provenance.short()}")
    params["model_version"] = provenance.version
    if args.pipeline == "inference":
        prompts = args.prompts.resolve()
        try:
            count = len(read_prompts(prompts, int(params.get("max_prompt_chars", 1000))))
        except PromptFileError as exc:
            raise ValueError(str(exc)) from None
        print(f"[prompts] {count} prompts in {args.prompts}")
        params.update(prompts_path=str(prompts), prompts_sha256=file_fingerprint(prompts))
    else:
        if args.port is not None:
            params["port"] = args.port
        if float(params.get("challenger_share") or 0) > 0:  # the challenger served beside it: resolved now too
            challenger = replace(source, alias="challenger", version="")
            try:
                found = resolve_registry(challenger)
            except NoModelError as exc:
                raise ValueError(f"{where}: challenger_share is {params['challenger_share']} but {exc} (set one with "
                                 "python -m serving.aliases set challenger VERSION, or set challenger_share: 0)") \
                    from None
            print(f"[model] {challenger.describe()} is {found.short()}, writing {params['challenger_share']} of "
                  "the stories")
            params["challenger_version"] = found.version
    allowed = pipeline_parameters(args.pipeline)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown parameter(s) {unknown} for the {args.pipeline} pipeline; "
                         f"allowed: {sorted(allowed)}")
    resolved["parameters"] = params
    return resolved


if __name__ == "__main__":
    _FINISHED.append(main())
    sys.exit(_FINISHED[0])
