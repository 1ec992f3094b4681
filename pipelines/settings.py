"""A run's settings fully resolved: the profile's values over the defaults the code holds.

The profiles (``configs/*.yaml``) give only some of each step's settings; the rest are defaults in the
typed configs the steps build (``TransformerTrainConfig``, ``CleaningConfig``, ...) and in the steps' and
pipelines' signatures. :func:`resolve_settings` puts them together, validating each typed section the
way its step will (a bad value fails here, naming the profile key), and ``python run.py --show-config``
prints the result. The training steps log the same resolved values to MLflow.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Any

# step → parameter → the typed config it fills ("module:Class")
TYPED_SECTIONS: dict[str, dict[str, str]] = {
    "clean_data": {"config": "corpus.cleaning:CleaningConfig"},
    "load_real_tests": {"cleaning": "corpus.cleaning:CleaningConfig"},
    "train_seq2seq": {"model": "models.seq2seq:Seq2SeqConfig", "train_config": "training.config:TrainConfig"},
    "train_transformer": {"model": "models.transformer:TransformerConfig",
                          "train_config": "training.transformer:TransformerTrainConfig"},
    "train_gan": {"gan": "models.gan:GanConfig", "discriminator": "models.gan:DiscriminatorConfig",
                  "generator": "models.seq2seq:Seq2SeqConfig", "pretrain": "training.config:TrainConfig"},
    "evaluate": {"suite": "evaluation.suite:SuiteConfig", "rule": "evaluation.selection:SelectionRule"},
}
# sections where None means something other than "the defaults" (here: the clean_data step's rules)
NONE_KEPT = {("load_real_tests", "cleaning")}
FROM_TOKENIZER = "<from the tokenizer>"


class SettingsError(ValueError):
    """A profile value the typed config refuses; the message names the profile key."""


def _class(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def typed_settings(cls: type, given: dict[str, Any]) -> dict[str, Any]:
    """Every field of a typed config: ``given`` over the defaults, validated by building the config.

    Fields without a default (a seq2seq's vocabulary size and special ids, which the tokenizer sets)
    show as ``<from the tokenizer>`` and are filled with 1 for the check only.

    Raises:
        ValueError: What the config's own validation says (unknown field, bad value).
    """
    if hasattr(cls, "model_fields"):  # pydantic
        return cls(**given).model_dump(mode="json")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(fields)}")
    missing = [name for name, f in fields.items() if name not in given and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    built = dataclasses.asdict(cls(**{**dict.fromkeys(missing, 1), **given}))
    return {name: (FROM_TOKENIZER if name in missing else built[name]) for name in fields}


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
        SettingsError: If a typed section has an unknown field or a bad value (naming the profile key).
    """
    import steps as step_module

    resolved = {**run_config, "parameters": {**_signature_defaults(pipeline.entrypoint),
                                             **(run_config.get("parameters") or {})}}
    steps: dict[str, Any] = {}
    for name, wired in _pipeline_steps(pipeline).items():
        given = dict(((run_config.get("steps") or {}).get(name) or {}).get("parameters") or {})
        defaults = {k: v for k, v in _signature_defaults(getattr(step_module, name).entrypoint).items()
                    if k not in wired}
        params = {**defaults, **given}
        for parameter, path in TYPED_SECTIONS.get(name, {}).items():
            value = params.get(parameter)
            if value is None and (name, parameter) in NONE_KEPT:
                continue
            try:
                params[parameter] = typed_settings(_class(path), dict(value or {}))
            except (TypeError, ValueError) as exc:
                raise SettingsError(f"{where}: steps.{name}.parameters.{parameter}: {exc}") from None
        steps[name] = {**((run_config.get("steps") or {}).get(name) or {}), "parameters": params}
    resolved["steps"] = steps
    return resolved


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
