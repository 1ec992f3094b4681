"""The serving profile (``configs/serving.yaml``) and its environment overrides.

The YAML holds the defaults a deployment shares (pydantic validates it against the dataclasses below); the
environment holds what differs per deployment (read and validated by pydantic-settings: :class:`EnvOverrides`):

========================  ===============================================================
``CW_SERVING_CONFIG``     another profile file
``CW_MODEL_ALIAS``        serve this registry alias (default ``champion``)
``CW_MODEL_VERSION``      pin a registry version instead of the alias
``CW_BENTO_MODEL``        load this BentoML model tag (set inside a Bento by the deployment)
``CW_BATCHING``           ``on`` / ``off``: adaptive batching of ``/generate``
``CW_RUNTIME``            ``llama.cpp`` / ``torch``: what runs the Transformer family (``model.runtime``)
``CW_CHALLENGER_SHARE``   the share of stories the challenger writes (``canary.share``, 0 to 1)
``CW_CHALLENGER_VERSION`` pin the challenger's registry version (``canary.version``)
``CW_CHALLENGER_BENTO_MODEL`` load the challenger from this BentoML model (set inside a Bento by the deployment)
``CW_HOST``, ``CW_PORT``  where ``python -m serving`` binds
``CW_API_TOKEN``          the bearer token (the variable's name is ``server.token_env``)
``CW_DATABASE_URL``       the story database (``workspace.database_url``; default SQLite in ``.state/``)
``CW_DEPLOYMENT_ID``      set by the deployment for its server; ``GET /model`` reports it
``CW_DEPLOYMENT_ROOT``    set by the deployment: the checkout whose deployment this process is
========================  ===============================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from core.paths import PROJECT_ROOT, REGISTERED_NAME
from core.validation import STRICT, refusal
from core.yaml_files import read_mapping
from models.configs import RUNTIMES
from models.params import SAMPLING_FIELDS, choice_fields
from workspace.config import TrafficSettings, WorkspaceSettings

DEFAULT_PROFILE = PROJECT_ROOT / "configs" / "serving.yaml"
DEPLOYMENT_ID_ENV = "CW_DEPLOYMENT_ID"  # which deployment started this server (its processes inherit it)
DEPLOYMENT_ROOT_ENV = "CW_DEPLOYMENT_ROOT"  # whose deployment it is: the checkout that started it
# glibc gives each thread that allocates its own malloc arena (up to 8 per core); the server's request
# threads then grow its memory for minutes under load (soak: +117 MiB in 60 s; with 2 arenas +41 MiB).
# Read when a process starts, so the launchers set it (unless the environment already does).
PROCESS_ENV = {"MALLOC_ARENA_MAX": "2"}


class ServingConfigError(ValueError):
    """The serving profile is missing or malformed; the message names the file and the key."""


# The profile's value types: a YAML key left empty is "", and no count, size or time may be negative.
Text = Annotated[str, BeforeValidator(lambda v: "" if v is None else v)]
Runtime = Literal[RUNTIMES]  # "llama.cpp" or "torch"
Count = Annotated[int, Field(ge=0)]
Amount = Annotated[float, Field(ge=0)]


@dataclass(frozen=True)
class ModelSource:
    """Which model is served.

    Attributes:
        registered_name: The MLflow registered model.
        alias: The registry alias served when no version is pinned.
        version: A pinned registry version (empty: follow the alias).
        bento_model: A BentoML model-store tag; when set it is loaded instead of asking the registry.
        retry_s: With no model yet, how often readiness checks look again (seconds).
        runtime: ``llama.cpp`` (the default) serves a Transformer-family model from its GGUF export;
            ``torch`` serves it with PyTorch. The seq2seq and GAN families, and a model saved without a GGUF
            export, always run on torch (see :func:`models.families.load_model`).
        context: The llama.cpp runtime's context in tokens (0: the one the model was trained with). A Continue
            reads the manuscript's end up to about two thirds of it (2,144 tokens of 3,072), and llama.cpp
            keeps the prefix a Continue shares with the one before, so it is not read again. At most what the
            base was trained for (SmolLM2: 8,192); memory grows with it (the KV cache).
    """

    __pydantic_config__ = STRICT  # unknown keys are refused by name

    registered_name: Text = REGISTERED_NAME
    alias: Text = "champion"
    version: Text = ""
    bento_model: Text = ""
    retry_s: Amount = 30.0
    runtime: Runtime = "llama.cpp"
    context: Count = 3072

    def describe(self) -> str:
        """Where the model comes from, in words."""
        if self.bento_model:
            return f"BentoML model '{self.bento_model}'"
        if self.version:
            return f"models:/{self.registered_name}/{self.version}"
        return f"models:/{self.registered_name}@{self.alias}"


Share = Annotated[float, Field(ge=0, le=1)]


@dataclass(frozen=True)
class Canary:
    """A challenger served beside the champion (the profile's ``canary``; ``share`` 0, the default, is off).

    The registry's ``@alias`` (or a pinned ``version``, or a BentoML model inside a Bento) writes for a
    ``share`` of stories: a request's ``story_id`` (else its own id) is hashed into [0, 1), so one story stays
    with one model. Every draft's provenance names the model that wrote it, and the request log keeps it, so
    the monitoring report compares the two on writers' feedback and latency.
    """

    __pydantic_config__ = STRICT

    share: Share = 0.0
    alias: Text = "challenger"
    version: Text = ""
    bento_model: Text = ""


@dataclass(frozen=True)
class ServerSettings:
    """Where and how the HTTP server listens, and how many torch threads its model uses.

    ``torch_threads`` 0 means every core; ``$CW_TORCH_THREADS`` wins (see :mod:`core.threads`).
    """

    __pydantic_config__ = STRICT  # unknown keys are refused by name

    host: Text = "127.0.0.1"
    port: Count = 3000
    token_env: Text = "CW_API_TOKEN"
    timeout_s: Count = 120
    torch_threads: Count = 0


@dataclass(frozen=True)
class Limits:
    """Caps on what one request may ask for, and on how many may be in flight.

    ``max_in_flight`` requests may be written or wait for the model at once (0: no limit); one more is
    answered 503 with ``Retry-After`` at once (:class:`serving.engine.Admission`).
    """

    __pydantic_config__ = STRICT  # unknown keys are refused by name

    max_prompt_chars: Count = 1000
    max_body_bytes: Count = 65536
    max_new_tokens: Count = 512
    max_drafts: Count = 4
    reject_emoji: bool = True
    max_in_flight: Count = 8


@dataclass(frozen=True)
class Batching:
    """Adaptive batching of ``/generate`` drafts (see :mod:`serving.batching`)."""

    __pydantic_config__ = STRICT  # unknown keys are refused by name

    enabled: bool = True
    max_batch_size: Count = 16
    max_latency_ms: Amount = 15.0


class _ProfileSection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")  # unknown keys are refused by name


Defaults = create_model(  # the sampling fields' bounds and code defaults are models.params.SamplingParams'
    "Defaults", __base__=_ProfileSection, __module__=__name__,
    __doc__="Generation settings a request may leave out (a serving profile's ``defaults``).",
    **choice_fields(("max_new_tokens", *SAMPLING_FIELDS), optional=False, max_new_tokens={"default": 128}))


@dataclass(frozen=True)
class UiSettings:
    """The Gradio page's example prompts: ``[prompt, form, genre]`` rows."""

    __pydantic_config__ = STRICT  # unknown keys are refused by name

    examples: tuple[tuple[str, str, str], ...] = (
        ("A lighthouse keeper finds a message in a bottle written in her own handwriting.", "story", "mystery"),
        ("A tortoise who wants to fly asks the eagle for lessons.", "fable", ""),
        ("A colony ship wakes its crew a hundred years too early.", "story", "science fiction"),
        ("The last dragon in the mountains at the end of winter.", "poem", "fantasy"),
    )


@dataclass(frozen=True)
class ServingConfig:
    """The whole serving profile."""

    __pydantic_config__ = STRICT  # unknown keys are refused by name

    model: ModelSource = field(default_factory=ModelSource)
    server: ServerSettings = field(default_factory=ServerSettings)
    limits: Limits = field(default_factory=Limits)
    batching: Batching = field(default_factory=Batching)
    defaults: Defaults = field(default_factory=Defaults)
    ui: UiSettings = field(default_factory=UiSettings)
    workspace: WorkspaceSettings = field(default_factory=WorkspaceSettings)
    traffic: TrafficSettings = field(default_factory=TrafficSettings)
    canary: Canary = field(default_factory=Canary)

    def challenger_source(self) -> ModelSource:
        """Where the challenger comes from: the champion's source with the canary's alias, version or Bento model."""
        return replace(self.model, alias=self.canary.alias, version=self.canary.version,
                       bento_model=self.canary.bento_model)

    @property
    def token(self) -> str:
        """The bearer token from the environment ('' when the API is open)."""
        return os.environ.get(self.server.token_env, "").strip()

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain data (the token is never included)."""
        return {**asdict(self), "defaults": self.defaults.model_dump()}


class EnvOverrides(BaseSettings):
    """What the environment overrides per deployment (pydantic-settings reads and validates the variables).

    Each field's alias is its variable; an empty variable counts as unset.
    """

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", populate_by_name=False)

    profile: str = Field("", validation_alias=AliasChoices("CW_SERVING_CONFIG"))
    alias: str = Field("", validation_alias=AliasChoices("CW_MODEL_ALIAS"))
    version: str = Field("", validation_alias=AliasChoices("CW_MODEL_VERSION"))
    bento_model: str = Field("", validation_alias=AliasChoices("CW_BENTO_MODEL"))
    host: str = Field("", validation_alias=AliasChoices("CW_HOST"))
    port: int | None = Field(None, ge=1, le=65535, validation_alias=AliasChoices("CW_PORT"))
    batching: bool | None = Field(None, validation_alias=AliasChoices("CW_BATCHING"))
    runtime: Runtime | None = Field(None, validation_alias=AliasChoices("CW_RUNTIME"))
    challenger_share: float | None = Field(None, ge=0, le=1, validation_alias=AliasChoices("CW_CHALLENGER_SHARE"))
    challenger_version: str = Field("", validation_alias=AliasChoices("CW_CHALLENGER_VERSION"))
    challenger_bento_model: str = Field("", validation_alias=AliasChoices("CW_CHALLENGER_BENTO_MODEL"))

    @classmethod
    def read(cls, env: Mapping[str, str]) -> EnvOverrides:
        """The overrides in ``env`` (``os.environ``, or a test's own mapping).

        Raises:
            ServingConfigError: If a variable's value is wrong, naming the variable.
        """
        class FromMapping(EnvSettingsSource):
            def _load_env_vars(self) -> Mapping[str, str | None]:
                return parse_env_vars(env, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)

        class Reader(cls):  # type: ignore[valid-type, misc]
            @classmethod
            def settings_customise_sources(
                cls, settings_cls: type[BaseSettings], **sources: PydanticBaseSettingsSource
            ) -> tuple[PydanticBaseSettingsSource, ...]:
                return (FromMapping(settings_cls),)  # the mapping given, not os.environ

        try:
            return Reader()
        except ValidationError as exc:
            raise ServingConfigError(refusal(exc, "variable")) from None

    def apply(self, config: ServingConfig) -> ServingConfig:
        """``config`` with these overrides (an alias unpins the version; a version pins it)."""
        model, server, batching = config.model, config.server, config.batching
        if self.alias:
            model = replace(model, alias=self.alias, version="")
        if self.version:
            model = replace(model, version=self.version)
        if self.bento_model:
            model = replace(model, bento_model=self.bento_model)
        if self.runtime:
            model = replace(model, runtime=self.runtime)
        if self.host:
            server = replace(server, host=self.host)
        if self.port is not None:
            server = replace(server, port=self.port)
        if self.batching is not None:
            batching = replace(batching, enabled=self.batching)
        canary = config.canary
        if self.challenger_share is not None:
            canary = replace(canary, share=self.challenger_share)
        if self.challenger_version:
            canary = replace(canary, version=self.challenger_version)
        if self.challenger_bento_model:
            canary = replace(canary, bento_model=self.challenger_bento_model)
        return replace(config, model=model, server=server, batching=batching, canary=canary)


def bento_envs(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """The environment a Bento was built with, when this code runs from inside one (else empty).

    A Bento keeps the code in ``src/`` beside its ``bento.yaml``; ``bentoml serve <bento>`` run locally does
    not apply the Bento's ``envs``, so the service reads them here (the real environment still wins).
    """
    manifest = root.parent / "bento.yaml"
    if root.name != "src" or not manifest.is_file():
        return {}
    data = yaml.safe_load(manifest.read_text()) or {}
    return {str(e["name"]): str(e.get("value", "")) for e in data.get("envs") or [] if isinstance(e, dict)}


def load_serving_config(path: Path | None = None, env: dict[str, str] | None = None) -> ServingConfig:
    """Reads the serving profile and applies the environment overrides.

    Args:
        path: The YAML file (default: ``$CW_SERVING_CONFIG`` or ``configs/serving.yaml``; an installed
            package without that file uses the built-in defaults, which the file restates).
        env: The environment to read overrides from (default: ``os.environ``).

    Raises:
        ServingConfigError: If the file is missing or not YAML, or a key or value is wrong (named).
    """
    env = {**bento_envs(), **os.environ} if env is None else env
    overrides = EnvOverrides.read(env)
    named = path or overrides.profile
    path = Path(named or DEFAULT_PROFILE)
    if not named and not path.exists():  # installed without the checkout's configs/: the built-in defaults
        data: dict[str, Any] = {}
    else:
        data = read_mapping(path, ServingConfigError, "serving config")
    try:
        config = TypeAdapter(ServingConfig).validate_python(data)
    except ValidationError as exc:
        raise ServingConfigError(f"{path}: {refusal(exc, 'key')}") from None
    if config.defaults.max_new_tokens > config.limits.max_new_tokens:
        raise ServingConfigError(f"{path}: defaults.max_new_tokens {config.defaults.max_new_tokens} exceeds "
                                 f"limits.max_new_tokens {config.limits.max_new_tokens}")
    return overrides.apply(config)
