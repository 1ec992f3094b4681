"""Bootstraps the ZenML repository, the project's stack and its MLflow store, idempotently.

``python run.py`` calls :func:`ensure_stack` before every run: the first call initialises the ZenML
repository at the project root, registers the components of ``stack_configs/local.yaml`` and the stack,
activates it, and creates the MLflow experiments with absolute artifact locations; later calls find
everything in place and change nothing. Run ``python -m infra.stack`` to do only that and print what
changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.paths import MLFLOW_DIRNAME, PROJECT_ROOT, mlflow_dir, tracking_uri  # noqa: F401 - infra.stack's API

DEFAULT_STACK_CONFIG = PROJECT_ROOT / "stack_configs" / "local.yaml"
STACK_CONFIGS = {"local": DEFAULT_STACK_CONFIG, "team": PROJECT_ROOT / "stack_configs" / "team.yaml"}
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET_REFERENCE = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\.[A-Za-z0-9_-]+\s*\}\}")

log = logging.getLogger(__name__)


class StackConfigError(ValueError):
    """The stack YAML is malformed or conflicts with what is registered."""


def quiet_defaults() -> None:
    """Environment defaults for every entry point: no analytics, no hub downloads, quiet logs.

    Only sets what the user has not set already.
    """
    os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")
    os.environ.setdefault("ZENML_ENABLE_REPO_INIT_WARNINGS", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not sys.stdout.isatty():  # colour codes only for a terminal: a log file or a pipe gets plain text
        os.environ.setdefault("ZENML_LOGGING_COLORS_DISABLED", "true")
    logging.getLogger(TRACKER_LOGGER).addFilter(_unused_autolog_frameworks)


TRACKER_LOGGER = "zenml.integrations.mlflow.experiment_trackers.mlflow_experiment_tracker"
USED_AUTOLOG = {"pytorch"}  # the one MLflow autologging integration this project's steps could trigger


def _unused_autolog_frameworks(record: logging.LogRecord) -> bool:
    """Drops ZenML's warning that autologging could not be disabled for frameworks this project never uses.

    ZenML's MLflow tracker disables autologging for eight frameworks at every step and warns about each it
    cannot import (``fastai`` here); a framework the project does use still gets the warning.
    """
    message = record.getMessage()
    if not message.startswith("Failed to disable MLflow autologging"):
        return True
    named = set(re.findall(r"'([a-z_]+)'", message))
    return bool(named & USED_AUTOLOG)


@dataclass
class StackSpec:
    """A parsed stack YAML."""

    name: str
    components: dict[str, dict[str, Any]]
    experiments: list[str] = field(default_factory=list)


def _fill_environment(value: Any, path: Path) -> Any:
    """``value`` with every ``${NAME}`` in its strings replaced by the environment variable.

    Raises:
        StackConfigError: If a variable is not set (naming it and the file).
    """
    if isinstance(value, dict):
        return {key: _fill_environment(item, path) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill_environment(item, path) for item in value]
    if not isinstance(value, str):
        return value
    missing = sorted({name for name in _ENV_REFERENCE.findall(value) if not os.environ.get(name)})
    if missing:
        raise StackConfigError(f"{path} reads {', '.join(missing)} from the environment, which is not set")
    return _ENV_REFERENCE.sub(lambda m: os.environ[m.group(1)], value)


def load_stack_spec(path: Path = DEFAULT_STACK_CONFIG, root: Path = PROJECT_ROOT) -> StackSpec:
    """Reads a stack YAML and fills in ``{mlflow_dir}`` and ``${NAME}`` (from the environment).

    ZenML secret references (``{{secret.key}}``) are left for ZenML to resolve.

    Args:
        path: The YAML file.
        root: The project root whose ``.mlflow`` folder is used.

    Returns:
        The spec.

    Raises:
        StackConfigError: If the file is missing or malformed, or names an environment variable that is
            not set; the message names the file and key or variable.
    """
    if not path.is_file():
        raise StackConfigError(f"stack config not found: {path}")
    text = path.read_text().replace("{mlflow_dir}", str(mlflow_dir(root)))
    data = _fill_environment(yaml.safe_load(text) or {}, path)
    if not isinstance(data.get("name"), str) or not isinstance(data.get("components"), dict):
        raise StackConfigError(f"{path}: needs a 'name' and a 'components' mapping")
    for role, comp in data["components"].items():
        for key in ("name", "flavor"):
            if not isinstance(comp, dict) or not comp.get(key):
                raise StackConfigError(f"{path}: component '{role}' needs a '{key}'")
        comp.setdefault("configuration", {})
    return StackSpec(name=data["name"], components=data["components"],
                     experiments=list((data.get("mlflow") or {}).get("experiments") or []))


def _spec_digest(spec: StackSpec, root: Path) -> str:
    payload = json.dumps({"spec": spec.__dict__, "root": str(root)}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def spec_tracking_uri(spec: StackSpec, root: Path = PROJECT_ROOT) -> str:
    """The MLflow tracking URI the spec's experiment tracker uses (the project's SQLite store by default)."""
    tracker = spec.components.get("experiment_tracker") or {}
    return str((tracker.get("configuration") or {}).get("tracking_uri") or tracking_uri(root))


def ensure_mlflow_store(spec: StackSpec, root: Path = PROJECT_ROOT) -> list[str]:
    """Creates the spec's MLflow experiments when missing.

    On a local store (SQLite in ``.mlflow``) they get absolute artifact locations in that folder; on a
    tracking server, its own artifact root (which proxies artifacts when it serves them).

    Returns:
        What was created (empty when everything existed).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = spec_tracking_uri(spec, root)
    remote = uri.startswith(("http://", "https://"))
    folder = mlflow_dir(root)
    if not remote:
        folder.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow.set_tracking_uri(uri)
    changes = []
    for name in spec.experiments:
        if client.get_experiment_by_name(name) is None:
            location = None if remote else (folder / "artifacts" / name).as_uri()
            client.create_experiment(name, artifact_location=location)
            changes.append(f"created MLflow experiment '{name}' on {uri}"
                           + (f" (artifacts in {location})" if location else ""))
    return changes


def check_secrets(spec: StackSpec, client: Any, config_path: Path) -> None:
    """Fails early when a component reads a ZenML secret that the connected store does not have.

    Raises:
        StackConfigError: Naming the component, the secret and how to create it.
    """
    for role, comp in spec.components.items():
        for value in comp["configuration"].values():
            for secret in _SECRET_REFERENCE.findall(str(value)):
                try:
                    client.get_secret(secret)
                except KeyError:
                    raise StackConfigError(
                        f"{config_path}: the {role} '{comp['name']}' reads the ZenML secret '{secret}', which "
                        f"is not registered on {client.zen_store.url}; create it (`zenml secret create {secret} "
                        "--token=...`; `python -m infra.team up` does it for the servers it starts)") from None


def ensure_stack(
    config_path: Path = DEFAULT_STACK_CONFIG, root: Path = PROJECT_ROOT, activate: bool = True,
    repository: Path | None = None,
) -> list[str]:
    """Initialises the ZenML repository, registers the stack, activates it and prepares MLflow.

    Idempotent: a component whose flavor and configuration already match is left alone; one whose
    configuration differs (e.g. the project moved) is updated; the stack's component set is corrected.

    Args:
        config_path: The stack YAML.
        root: The project root (ZenML repository and ``.mlflow`` folder).
        activate: Whether to make the stack the active one.
        repository: The ZenML repository folder when it is not ``root`` (the team stack keeps its own,
            ``$ZENML_REPOSITORY_PATH``, so that team runs leave the local stack's state alone).

    Returns:
        A list of human-readable changes; empty when nothing changed.

    Raises:
        StackConfigError: If a registered component of the same name has another flavor.
    """
    quiet_defaults()
    from zenml.client import Client
    from zenml.enums import StackComponentType
    from zenml.exceptions import EntityExistsError

    spec = load_stack_spec(config_path, root)
    changes: list[str] = []
    repo = repository or root
    if not Client.is_repository_directory(repo):
        repo.mkdir(parents=True, exist_ok=True)
        Client.initialize(repo)
        changes.append(f"initialised the ZenML repository at {repo}")
    client = Client()
    check_secrets(spec, client, config_path)
    ids: dict[StackComponentType, Any] = {}
    for role, comp in spec.components.items():
        ctype = StackComponentType(role)
        try:
            existing = client.get_stack_component(ctype, comp["name"], allow_name_prefix_match=False)
        except KeyError:
            existing = None
        if existing is None:
            try:
                created = client.create_stack_component(comp["name"], comp["flavor"], ctype, comp["configuration"])
            except EntityExistsError:  # created concurrently by another run
                created = client.get_stack_component(ctype, comp["name"], allow_name_prefix_match=False)
            ids[ctype] = created.id
            changes.append(f"registered {role} '{comp['name']}' ({comp['flavor']})")
            continue
        if existing.flavor_name != comp["flavor"]:
            raise StackConfigError(
                f"a {role} named '{comp['name']}' is registered with flavor '{existing.flavor_name}', but "
                f"{config_path} asks for '{comp['flavor']}'; rename one of them"
            )
        current = {k: existing.configuration.get(k) for k in comp["configuration"]}
        if current != comp["configuration"]:
            client.update_stack_component(existing.id, ctype, configuration=comp["configuration"])
            changes.append(f"updated {role} '{comp['name']}' configuration to {comp['configuration']}")
        ids[ctype] = existing.id
    try:
        stack = client.get_stack(spec.name, allow_name_prefix_match=False)
    except KeyError:
        stack = None
    if stack is None:
        client.create_stack(spec.name, components={t: i for t, i in ids.items()})
        changes.append(f"registered stack '{spec.name}'")
    else:
        have = {t: [c.id for c in cs] for t, cs in stack.components.items()}
        if any(have.get(t) != [i] for t, i in ids.items()):
            client.update_stack(stack.id, component_updates={t: [i] for t, i in ids.items()})
            changes.append(f"updated the components of stack '{spec.name}'")
    if activate and client.active_stack_model.name != spec.name:
        client.activate_stack(spec.name)
        changes.append(f"activated stack '{spec.name}'")
    if spec_tracking_uri(spec, root).startswith(("http://", "https://")):
        return changes + ensure_mlflow_store(spec, root)  # a server: three quick look-ups
    # MLflow's first connection creates its SQLite tables (seconds); skip it when this spec was prepared.
    marker = mlflow_dir(root) / ".prepared"
    digest = _spec_digest(spec, root)
    if not (marker.is_file() and marker.read_text() == digest):
        changes += ensure_mlflow_store(spec, root)
        marker.write_text(digest)
    return changes


def main(argv: list[str] | None = None) -> int:
    """CLI: register (or check) the stack and print what changed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_STACK_CONFIG, help="stack YAML")
    parser.add_argument("--no-activate", action="store_true", help="register without activating")
    args = parser.parse_args(argv)
    changes = ensure_stack(args.config, activate=not args.no_activate)
    print("\n".join(changes) if changes else "stack already in place; nothing changed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
