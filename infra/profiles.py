"""Run profiles (``configs/*.yaml``): reading, overriding and writing the resolved ZenML run config."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from core.yaml_files import read_mapping
from corpus.loaders import LOCAL_SCHEMES, parse_spec, source_fingerprint
from corpus.schema import DataError
from infra.stack import PROJECT_ROOT

# Top-level keys ZenML accepts in a run configuration that our profiles use.
ALLOWED_KEYS = {"enable_cache", "parameters", "steps", "settings", "model", "run_name", "extra", "tags",
                "enable_artifact_metadata", "enable_step_logs", "enable_artifact_visualization"}


class ProfileError(ValueError):
    """A profile is missing or malformed; the message names the file and the key."""


def load_profile(path: Path) -> dict[str, Any]:
    """Reads and checks a run profile.

    Args:
        path: The YAML file.

    Returns:
        The profile as a dict.

    Raises:
        ProfileError: If the file is missing, not YAML, or has unknown top-level keys or no dataset.
    """
    data = read_mapping(path, ProfileError)
    parent = data.pop("extends", None)
    if parent is not None:  # a profile that adds to another: its keys over the other's, mapping by mapping
        if not isinstance(parent, str) or not parent.endswith(".yaml"):
            raise ProfileError(f"{path}: extends must name another profile file, e.g. extends: default.yaml")
        base = path.parent / parent
        if base.resolve() == path.resolve() or not base.is_file():
            raise ProfileError(f"{path}: extends: {parent} is not another profile beside it")
        data = merged(load_profile(base), data)
    unknown = sorted(set(data) - ALLOWED_KEYS)
    if unknown:
        raise ProfileError(f"{path}: unknown top-level key(s) {unknown}; allowed: {sorted(ALLOWED_KEYS)}")
    steps = data.get("steps") or {}
    if not isinstance(steps, dict):
        raise ProfileError(f"{path}: steps must be a mapping of step names to their settings")
    for name, settings in steps.items():
        if not isinstance(settings, dict):
            raise ProfileError(f"{path}: steps.{name} is empty or not a mapping; give it settings "
                               "(e.g. parameters:) or remove it")
    return data


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings are merged key by key, any other value (a list too) replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _check_specs(specs: list[str], what: str) -> None:
    """Fails here, with the spec named, rather than inside the pipeline."""
    for raw in specs:
        spec = parse_spec(raw)
        if spec.scheme in LOCAL_SCHEMES and not Path(spec.target).exists():
            raise DataError(f"{what} '{raw}': {spec.target} does not exist")


def resolve_profile(profile: dict[str, Any], datasets: list[str] | None, where: str,
                    real_tests: list[str] | None = None) -> dict[str, Any]:
    """Applies command-line overrides and adds the data fingerprints.

    Real test sets (``parameters.real_tests``) get the ``clean_data`` step's cleaning rules as the
    ``load_real_tests`` step's ``cleaning`` unless the profile sets that step's own.

    Args:
        profile: A loaded profile.
        datasets: ``--dataset`` values, replacing ``parameters.dataset`` when given.
        where: The profile's path, named in errors.
        real_tests: ``--real-test`` values, replacing ``parameters.real_tests`` when given.

    Returns:
        A new dict, ready to write as the ZenML run configuration.

    Raises:
        ProfileError: If no dataset is configured or ``real_tests`` is not a list of specs.
        corpus.schema.DataError: If a dataset or real-test spec is malformed or names a missing file.
    """
    resolved = yaml.safe_load(yaml.safe_dump(profile))  # deep copy
    params = resolved.setdefault("parameters", {})
    if datasets:
        params["dataset"] = list(datasets)
    specs = params.get("dataset")
    if isinstance(specs, str):
        specs = params["dataset"] = [specs]
    if not specs:
        raise ProfileError(f"{where}: no dataset: set parameters.dataset or pass --dataset SPEC")
    _check_specs(specs, "dataset")
    params["source_fingerprint"] = source_fingerprint(specs)
    from training.preferences import feedback_state

    params["feedback_state"] = feedback_state()  # writers' new feedback trains again; the same is a cache hit
    if real_tests:
        params["real_tests"] = list(real_tests)
    tests = params.get("real_tests") or []
    if isinstance(tests, str):
        tests = params["real_tests"] = [tests]
    if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
        raise ProfileError(f"{where}: parameters.real_tests must be a list of source specs, got {tests!r}")
    if tests:
        _check_specs(tests, "real test")
        params["real_tests_fingerprint"] = source_fingerprint(tests)
        steps = resolved.setdefault("steps", {})
        cleaning = ((steps.get("clean_data") or {}).get("parameters") or {}).get("config")
        loader = steps.setdefault("load_real_tests", {}).setdefault("parameters", {})
        if cleaning is not None:
            loader.setdefault("cleaning", cleaning)
    else:
        params.pop("real_tests", None)
    return resolved


def write_resolved(resolved: dict[str, Any], name: str, root: Path = PROJECT_ROOT) -> Path:
    """Writes the resolved run configuration under ``.runs/`` (git-ignored) and returns its path."""
    text = yaml.safe_dump(resolved, sort_keys=False)
    folder = root / ".runs"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:10]}.yaml"
    path.write_text(text)
    return path
