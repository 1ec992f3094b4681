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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.paths import MLFLOW_DIRNAME, PROJECT_ROOT, mlflow_dir, tracking_uri  # noqa: F401 - infra.stack's API

DEFAULT_STACK_CONFIG = PROJECT_ROOT / "stack_configs" / "local.yaml"

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


@dataclass
class StackSpec:
    """A parsed stack YAML."""

    name: str
    components: dict[str, dict[str, Any]]
    experiments: list[str] = field(default_factory=list)


def load_stack_spec(path: Path = DEFAULT_STACK_CONFIG, root: Path = PROJECT_ROOT) -> StackSpec:
    """Reads a stack YAML and fills in ``{mlflow_dir}``.

    Args:
        path: The YAML file.
        root: The project root whose ``.mlflow`` folder is used.

    Returns:
        The spec.

    Raises:
        StackConfigError: If the file is missing or malformed; the message names the file and key.
    """
    if not path.is_file():
        raise StackConfigError(f"stack config not found: {path}")
    text = path.read_text().replace("{mlflow_dir}", str(mlflow_dir(root)))
    data = yaml.safe_load(text) or {}
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


def ensure_mlflow_store(spec: StackSpec, root: Path = PROJECT_ROOT) -> list[str]:
    """Creates the MLflow folder and the spec's experiments with absolute artifact locations.

    Returns:
        What was created (empty when everything existed).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    folder = mlflow_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=tracking_uri(root), registry_uri=tracking_uri(root))
    mlflow.set_tracking_uri(tracking_uri(root))
    changes = []
    for name in spec.experiments:
        if client.get_experiment_by_name(name) is None:
            location = (folder / "artifacts" / name).as_uri()
            client.create_experiment(name, artifact_location=location)
            changes.append(f"created MLflow experiment '{name}' (artifacts in {location})")
    return changes


def ensure_stack(
    config_path: Path = DEFAULT_STACK_CONFIG, root: Path = PROJECT_ROOT, activate: bool = True
) -> list[str]:
    """Initialises the ZenML repository, registers the stack, activates it and prepares MLflow.

    Idempotent: a component whose flavor and configuration already match is left alone; one whose
    configuration differs (e.g. the project moved) is updated; the stack's component set is corrected.

    Args:
        config_path: The stack YAML.
        root: The project root (ZenML repository and ``.mlflow`` folder).
        activate: Whether to make the stack the active one.

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
    if not Client.is_repository_directory(root):
        Client.initialize(root)
        changes.append(f"initialised the ZenML repository at {root}")
    client = Client()
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
    # MLflow's first connection creates its tables (seconds); skip it when this spec was prepared before.
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
