"""A run's settings fully resolved: the profile's values over the defaults the code holds.

The profiles (``configs/*.yaml``) give only some of each step's settings. The rest are defaults in the
settings classes the steps take as typed parameters (``TransformerTrainConfig``, ``CleaningConfig``, ...;
the steps' signatures say which) and in the steps' and pipelines' plain signature defaults.
:func:`resolve_settings` puts them together, validating each typed section the way ZenML will validate
the step's parameter (a bad value fails here, naming the profile key); ``python run.py --show-config``
prints the result, and ``run.py`` checks it before every run. The training steps log the same resolved
values to MLflow.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from types import UnionType
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from core.validation import refusal
from weights.spec import CHECKPOINT_FIELD

# sections where None means something other than "the defaults" (here: the clean_data step's rules)
NONE_KEPT = {("load_real_tests", "cleaning")}


class SettingsError(ValueError):
    """A profile value the typed config refuses; the message names the profile key."""


def typed_sections(step: Any) -> dict[str, type]:
    """The parameters of a step (or pipeline) typed by a settings class (dataclass or pydantic model), by signature.

    ``model: TransformerConfig | None = None`` gives ``{"model": TransformerConfig}``: ZenML validates the
    profile's dict against that type, and :func:`resolve_settings` fills in its defaults.
    """
    found = {}
    for name, hint in typing.get_type_hints(step.entrypoint).items():
        options = typing.get_args(hint) if isinstance(hint, UnionType) or typing.get_origin(hint) is typing.Union \
            else (hint,)
        for option in options:
            if option.__module__.startswith("zenml."):  # an artifact handed over (UnmaterializedArtifact), not settings
                continue
            if isinstance(option, type) and (dataclasses.is_dataclass(option) or issubclass(option, BaseModel)):
                found[name] = option
    return found


def typed_settings(cls: type, given: dict[str, Any]) -> dict[str, Any]:
    """Every field of a settings class: ``given`` over its defaults, validated as ZenML will validate it.

    Raises:
        ValueError: What the validation says (an unknown key, a bad value), in one line.
    """
    adapter = TypeAdapter(cls)
    try:
        value = adapter.validate_python(given)
    except ValidationError as exc:
        said = refusal(exc)
        if "unknown setting" in said:
            known = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) \
                else list(cls.model_fields)  # type: ignore[attr-defined]
            said += f"; a {cls.__name__} has {', '.join(known)}"
        raise ValueError(said) from None
    return adapter.dump_python(value, mode="json")


def _signature_defaults(function: Any) -> dict[str, Any]:
    """A step's or pipeline's parameters that have defaults, with them (artifacts have none)."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def resolve_settings(run_config: dict[str, Any], pipeline: Any, where: str) -> dict[str, Any]:
    """The run configuration with every step's and the pipeline's settings complete.

    Args:
        run_config: The resolved profile (what ``run.py`` writes for ZenML).
        pipeline: The ZenML pipeline it runs (its signature and its steps' give the plain defaults).
        where: The profile's path, named in errors.

    Returns:
        A new dict: ``parameters`` and each step's ``parameters`` with the defaults filled in.

    Raises:
        SettingsError: If a typed section has an unknown key or a bad value (naming the profile key).
    """
    import steps as step_module

    parameters = {**_signature_defaults(pipeline.entrypoint), **(run_config.get("parameters") or {})}
    resolved = {**run_config, "parameters": _typed(parameters, pipeline, f"{where}: parameters")}
    steps: dict[str, Any] = {}
    for name, wired in _pipeline_steps(pipeline).items():
        given = dict(((run_config.get("steps") or {}).get(name) or {}).get("parameters") or {})
        defaults = {k: v for k, v in _signature_defaults(getattr(step_module, name).entrypoint).items()
                    if k not in wired}
        params = _typed({**defaults, **given}, getattr(step_module, name), f"{where}: steps.{name}.parameters",
                        {p for (s, p) in NONE_KEPT if s == name})
        steps[name] = {**((run_config.get("steps") or {}).get(name) or {}), "parameters": params}
    resolved["steps"] = steps
    return resolved


def _typed(params: dict[str, Any], function: Any, where: str, none_kept: set[str] | frozenset[str] = frozenset()
           ) -> dict[str, Any]:
    """``params`` with each typed section of ``function`` (a step or pipeline) complete and validated.

    A section given as None gets its class's defaults, unless its name is in ``none_kept``.

    Raises:
        SettingsError: Naming ``where.section`` and what is wrong.
    """
    params = dict(params)
    for parameter, cls in typed_sections(function).items():
        if parameter not in params:  # wired by the pipeline: it comes from there
            continue
        value = params[parameter]
        if value is None and parameter in none_kept:
            continue
        try:
            params[parameter] = typed_settings(cls, dict(value or {}))
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{where}.{parameter}: {exc}") from None
    return params


def _pipeline_steps(pipeline: Any) -> dict[str, set[str]]:
    """The steps a pipeline calls, in the order its source calls them (read, not run).

    Each comes with the parameters the pipeline passes it by name: those come from the pipeline, not
    from the step's defaults.
    """
    import ast
    import textwrap

    import steps as step_module

    tree = ast.parse(textwrap.dedent(inspect.getsource(pipeline.entrypoint)))
    calls = sorted((node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)),
                   key=lambda c: (c.lineno, c.col_offset))
    found: dict[str, set[str]] = {}
    for call in calls:
        name = call.func.id  # type: ignore[attr-defined]
        if hasattr(getattr(step_module, name, None), "entrypoint"):
            found.setdefault(name, set()).update(k.arg for k in call.keywords if k.arg)
    return found


def checkpoint_settings(full: dict[str, Any], pipeline: Any) -> list[tuple[str, str]]:
    """The checkpoint specs a run names, each with its profile key (``steps.train_transformer.model.base_model``).

    Args:
        full: The settings :func:`resolve_settings` returned.
        pipeline: The ZenML pipeline they are for.

    Returns:
        ``(key, spec)`` for every non-empty field typed :data:`weights.spec.CheckpointRef` in a typed section.
    """
    import steps as step_module

    found = []
    for name in _pipeline_steps(pipeline):
        params = full["steps"].get(name, {}).get("parameters") or {}
        for parameter, cls in typed_sections(getattr(step_module, name)).items():
            values = params.get(parameter) or {}
            for field, hint in typing.get_type_hints(cls, include_extras=True).items():
                if CHECKPOINT_FIELD in getattr(hint, "__metadata__", ()) and values.get(field):
                    found.append((f"steps.{name}.parameters.{parameter}.{field}", str(values[field])))
    return found
