"""What ``run.py`` prints after a run: step statuses and where to look next."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from infra.stack import tracking_uri


def step_statuses(run_id: Any) -> dict[str, str]:
    """Maps each step of a pipeline run to its status (``completed``, ``cached``, ``failed``, ...)."""
    from zenml.client import Client

    run = Client().get_pipeline_run(run_id)
    return {name: str(step.status.value) for name, step in run.steps.items()}


_UNREACHABLE = re.compile(r"API request to (https?://[^/\s]+)/api/\S*mlflow\S* failed .*"
                          r"(Connection refused|Max retries exceeded|timed out|Name or service not known)", re.S)


def explain_failure(message: str) -> str:
    """A step's error message, with an unreachable MLflow server said in one plain sentence."""
    unreachable = _UNREACHABLE.search(message)
    if unreachable:
        return (f"the MLflow tracking server at {unreachable.group(1)} did not answer ({unreachable.group(2)}), so "
                "the step stopped there. Start it again (the team services: python -m infra.team up) and rerun: "
                "model versions it had registered are reused")
    return message


def failure_messages(pipeline_name: str) -> list[str]:
    """``step: message`` for each failed step of the pipeline's latest run."""
    from zenml.client import Client

    run = Client().get_pipeline(pipeline_name).last_run
    out = []
    for name, step in run.steps.items():
        info = getattr(step, "exception_info", None)
        if str(step.status.value) == "failed":
            out.append(f"step {name} failed: {explain_failure(info.message) if info else 'see the log above'}")
    return out


def dashboard_url(run_id: Any) -> str | None:
    """The run's dashboard URL when the client is connected to a ZenML server (``zenml login``), else None."""
    from zenml.client import Client
    from zenml.utils.dashboard_utils import get_run_url

    try:
        return get_run_url(Client().get_pipeline_run(run_id))
    except Exception:  # no server, or a dashboard-less deployment: fall back to instructions
        return None


def print_run_summary(run: Any, seconds: float, root: Path, tracking: str = "") -> None:
    """Prints the step table, the report artifacts and how to open the dashboard and the MLflow UI.

    Args:
        run: The pipeline run.
        seconds: How long ``run.py`` took.
        root: The project root (its local MLflow store).
        tracking: The stack's MLflow tracking URI; a server's is printed as the UI's address.
    """
    statuses = _print_steps(run, seconds)
    cached = sum(s == "cached" for s in statuses.values())
    print(f"  ({cached} of {len(statuses)} steps cached)")
    url = dashboard_url(run.id)
    print("\nWhere to look:")
    if url:
        print(f"  ZenML dashboard: {url}  (open the 'data_report' and 'evaluation_report' artifacts)")
    else:
        print("  ZenML dashboard: run `zenml login --local`, open the URL it prints, then Runs →"
              f" {run.name} → data_report / evaluation_report → Visualization")
    print("  Reports in Python: from zenml.client import Client; "
          "Client().get_artifact_version('evaluation_report').visualize()  (or 'data_report')")
    if "promote" in run.steps:
        print("  The champion: mlflow.pyfunc.load_model('models:/creative-writer@champion'), tracking URI below")
    if tracking.startswith(("http://", "https://")):  # the team stack: the tracking server is the UI
        print(f"  MLflow UI: {tracking}")
    else:
        print(f"  MLflow UI: mlflow ui --backend-store-uri {tracking_uri(root)} --port 5000")


def step_output(run: Any, step: str) -> Any:
    """The loaded single output of a step of ``run``."""
    from zenml.client import Client

    fresh = Client().get_pipeline_run(run.id)
    outputs = fresh.steps[step].outputs
    (versions,) = outputs.values()
    version = versions[0] if isinstance(versions, list) else versions
    return version.load()


def _print_steps(run: Any, seconds: float) -> dict[str, str]:
    """Prints the run's step table and returns the statuses."""
    statuses = step_statuses(run.id)
    width = max(map(len, statuses)) if statuses else 10
    print(f"\nRun '{run.name}' finished in {seconds:.1f} s:")
    for name, status in statuses.items():
        print(f"  {name:<{width}}  {status}")
    return statuses


def print_inference_summary(run: Any, seconds: float, frame: Any, path: Path) -> None:
    """Prints the steps and where the generations (``frame``, written to ``path`` by the caller) went."""
    _print_steps(run, seconds)
    first = frame.iloc[0]
    print(f"\n{len(frame)} generations ({int(frame['tokens'].sum())} tokens) by {first['family']} "
          f"{first['registered_name']} v{first['version']} @{first['alias']} → {path}")
    print(f"  first: {first['prompt'][:70]!r} → {first['text'][:160]!r}")
    url = dashboard_url(run.id)
    print(f"  dashboard: {url or 'run `zenml login --local`'} (the 'generations' table and 'generations_report')")


def print_deployment_summary(run: Any, seconds: float) -> None:
    """Prints the steps and where the deployed service answers."""
    _print_steps(run, seconds)
    info = step_output(run, "deploy_bento")
    prov = info["provenance"]
    print(f"\nServing {prov['family']} {prov['registered_name']} v{prov['version']} @{prov['alias']} "
          f"(Bento {info['bento_tag']}):")
    for key in ("generate", "stream", "openapi", "ui", "model", "metrics"):
        print(f"  {key:<9} {info[key]}")
    print(f"  try it:   curl -s -X POST {info['generate']} -H 'content-type: application/json' "
          "-d '{\"prompt\": \"A fox finds a key.\"}'")
    print("  manage:   zenml model-deployer models list; python -m infra.bento_deployment stop"
          "  (a new run replaces it)")


def print_monitoring_summary(run: Any, seconds: float) -> None:
    """Prints the steps and the monitoring report's headline figures (or that there was no traffic)."""
    from zenml.client import Client

    _print_steps(run, seconds)
    outputs = Client().get_pipeline_run(run.id).steps["monitoring_report"].outputs
    found = outputs["monitoring_summary"]
    summary = (found[0] if isinstance(found, list) else found).load()
    view = summary["overview"]
    url = dashboard_url(run.id)
    where = f"  report: {url or 'run `zenml login --local`'} (the 'monitoring_dashboard' artifact; figures in MLflow)"
    if not view["requests"]:
        print("\nNo served traffic in this window: deploy the champion (python run.py --pipeline deployment), "
              "send requests, then run this again (or widen --since).")
        print(where)
        return
    print(f"\n{view['requests']} requests ({', '.join(f'{k} {v}' for k, v in view['outcomes'].items())}); "
          f"latency p50 {view['latency_p50_ms']} ms, p95 {view['latency_p95_ms']} ms; "
          f"{view['tokens_per_s_median']} tokens/s; {view['log_rows_lost']} log rows lost")
    feedback = summary["feedback"]
    print(f"  feedback: {feedback['verdicts']} verdicts from {feedback['writers']} writer(s) {feedback['kinds']}")
    for model in summary["models"]:
        print(f"  v{model['model_version']} {model['alias'] or ''}: {model['requests']} requests, positive rate "
              f"{model['positive_rate']} {model['positive_ci']} over {model['verdicts']} verdicts")
    if summary["comparison"]:
        print(f"  challenger vs champion: {summary['comparison']['ahead']}")
    moved = summary["drift"]
    if moved.get("measured"):
        print(f"  drift vs training prompts: length KS {moved['length_ks']}, form shift {moved['form_shift']}, "
              f"vocabulary JS {moved.get('vocabulary_js')}")
    print(f"  breaches: {'; '.join(summary['breaches']) or 'none'}" if summary["judged"] else
          f"  thresholds not judged: fewer than {summary['thresholds']['min_requests']} requests")
    print(where)
