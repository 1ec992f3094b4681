"""Command-line entry point: bootstrap the local stack and run a pipeline with a run profile.

Examples:
    python run.py --pipeline training
    python run.py --pipeline training --config configs/smoke.yaml --no-cache
    python run.py --pipeline training --dataset writingprompts:../shared/datasets/writingprompts
    python run.py --pipeline training --real-test tinystories:../shared/datasets/tinystories/FILE.txt?limit=400
    python run.py --pipeline deployment --port 3000
    python run.py --pipeline inference --prompts examples/prompts.txt --output outputs/generations.jsonl
    python run.py --stack team --pipeline training     # on the servers `python -m infra.team up` started
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from core.paths import REGISTERED_NAME
from infra.stack import PROJECT_ROOT, STACK_CONFIGS, quiet_defaults

PIPELINES = ("training", "deployment", "inference")
DEFAULT_CONFIGS = {"training": Path("configs/default.yaml"), "deployment": Path("configs/deployment.yaml"),
                   "inference": Path("configs/inference.yaml")}


class CleanArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2."""

    def error(self, message: str) -> None:  # noqa: D102
        sys.stderr.write(f"run.py: error: {message} (see python run.py --help)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = CleanArgumentParser(description="Run a creative-writer pipeline on the local (or the team's) ZenML stack.")
    parser.add_argument("--pipeline", choices=PIPELINES, default="training", help="which pipeline to run")
    parser.add_argument("--config", type=Path, help="run profile (YAML; default: configs/default.yaml for "
                        "training, configs/deployment.yaml, configs/inference.yaml)")
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
    parser.add_argument("--show-config", action="store_true",
                        help="print the run's settings resolved (the profile over the code's defaults) and exit")
    parser.add_argument("--stack", choices=sorted(STACK_CONFIGS), default="local",
                        help="local: SQLite files in this checkout (default); team: the ZenML and MLflow servers "
                             "of stack_configs/team.yaml (start them with python -m infra.team up)")
    parser.add_argument("--team-root", type=Path, default=PROJECT_ROOT / ".team",
                        help="--stack team: the folder `python -m infra.team up` used (default: .team)")
    return parser


def fail(message: str, code: int = 1) -> int:
    """Prints one clear error line and returns the exit code."""
    sys.stderr.write(f"run.py: error: {message}\n")
    return code


def main(argv: list[str] | None = None) -> int:
    """Parses arguments, bootstraps the stack, runs the pipeline and says where to look."""
    args = build_parser().parse_args(argv)
    config_arg = args.config or DEFAULT_CONFIGS[args.pipeline]
    config = config_arg if config_arg.is_absolute() else (Path.cwd() / config_arg)
    if not config.is_file():
        return fail(f"config file not found: {config_arg}", 2)
    if args.pipeline == "inference":
        if args.prompts is None:
            return fail("--pipeline inference needs --prompts FILE (a text or JSONL file of prompts)", 2)
        if args.output.suffix.lower() not in {".jsonl", ".csv"}:
            return fail(f"--output {args.output}: use a .jsonl or .csv file name", 2)
    if args.real_tests and args.pipeline != "training":
        return fail("--real-test is for --pipeline training (the evaluation measures the candidates on it)", 2)
    if args.port is not None and not 0 < args.port < 65536:
        return fail(f"--port {args.port}: not a port number", 2)
    from infra.team import TeamError, select_stack

    try:  # before ZenML is imported: it reads where its server is when it loads
        repository = select_stack("local" if args.show_config else args.stack, args.team_root)
    except TeamError as exc:
        return fail(str(exc))
    quiet_defaults()
    started = time.perf_counter()

    from corpus.schema import DataError
    from infra.profiles import ProfileError, load_profile, resolve_profile, write_resolved

    try:
        profile = load_profile(config)
        training = args.pipeline == "training"
        resolved = resolve_profile(profile, args.dataset, str(config_arg), args.real_tests) if training else profile
    except (ProfileError, DataError) as exc:
        return fail(str(exc), 2)
    if args.no_cache:
        resolved["enable_cache"] = False
    if args.show_config:
        return show_config(args.pipeline, resolved, str(config_arg))

    from infra.stack import StackConfigError, ensure_stack, load_stack_spec, spec_tracking_uri

    try:
        for change in ensure_stack(STACK_CONFIGS[args.stack], repository=repository):
            print(f"[stack] {change}")
        tracking = spec_tracking_uri(load_stack_spec(STACK_CONFIGS[args.stack]))
    except StackConfigError as exc:
        return fail(str(exc))
    from infra.zenml_utils import limit_eager_integrations

    limit_eager_integrations(args.pipeline)  # before the pipelines (and so ZenML's integrations) load
    if args.pipeline != "training":
        try:
            resolved = serving_parameters(args, resolved, str(config_arg))
        except ValueError as exc:
            return fail(str(exc), 2)

    from infra.stale_runs import OWNER_KEY, mark_stale_runs, owner_record

    for stale in mark_stale_runs():
        print(f"[runs] {stale.name} marked failed: {stale.reason}")

    import pipelines
    from pipelines.settings import SettingsError, resolve_settings

    chosen = getattr(pipelines, f"{args.pipeline}_pipeline")
    try:  # each typed step setting checked before ZenML runs anything: a bad one is named by its profile key
        resolve_settings(resolved, chosen, str(config_arg))
    except SettingsError as exc:
        return fail(str(exc), 2)
    if args.pipeline == "deployment":  # before building anything: is the port ours to take?
        import inspect

        from infra.bento_deployment import DeploymentError, check_port

        defaults = inspect.signature(pipelines.deployment_pipeline.entrypoint).parameters
        params = {"host": defaults["host"].default, "port": defaults["port"].default, **resolved["parameters"]}
        try:
            check_port(str(params["host"]), int(params["port"]))
        except DeploymentError as exc:
            return fail(str(exc))

    run_config = write_resolved(resolved, args.pipeline)
    from pydantic import ValidationError

    try:
        run = chosen.with_options(config_path=str(run_config), extra={OWNER_KEY: owner_record()})()
    except ValidationError as exc:  # ZenML refused the run configuration before anything ran
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return fail(f"{config_arg}: ZenML refused the run configuration: {problems}", 2)
    except RuntimeError as exc:  # ZenML's "Pipeline run has failed due to failure in step(s): ..."
        from infra.report import failure_messages

        try:
            reasons = failure_messages(chosen.name) or [str(exc)]
        except Exception:  # e.g. the run could not even be created: its own error says why
            reasons = [str(exc)]
        return fail(f"the {args.pipeline} pipeline failed: " + "; ".join(reasons))
    from infra.report import print_deployment_summary, print_inference_summary, print_run_summary

    seconds = time.perf_counter() - started
    if args.pipeline == "inference":  # the user's output file is written here, from the step's artifact
        from infra.report import step_output
        from serving.batch_inference import write_generations

        frame = step_output(run, "batch_generate")
        print_inference_summary(run, seconds, frame, write_generations(frame, args.output))
    elif args.pipeline == "deployment":
        print_deployment_summary(run, seconds)
    else:
        print_run_summary(run, seconds, PROJECT_ROOT, tracking)
    return 0


def show_config(pipeline: str, resolved: dict, where: str) -> int:
    """Prints the run's settings with every default the code holds filled in (nothing runs)."""
    import yaml

    from infra.zenml_utils import limit_eager_integrations

    limit_eager_integrations(pipeline)  # before the pipelines package (and ZenML's integrations) loads
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
    elif args.port is not None:
        params["port"] = args.port
    allowed = pipeline_parameters(args.pipeline)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown parameter(s) {unknown} for the {args.pipeline} pipeline; "
                         f"allowed: {sorted(allowed)}")
    resolved["parameters"] = params
    return resolved


if __name__ == "__main__":
    sys.exit(main())
