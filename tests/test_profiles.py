"""Every run profile's step settings build the configs they are meant for (typos fail here, not mid-run)."""

from __future__ import annotations

import pytest
import yaml

from corpus.cleaning import CleaningConfig
from evaluation.selection import SelectionRule
from evaluation.suite import SuiteConfig
from infra.profiles import load_profile
from models.gan import DiscriminatorConfig, GanConfig
from models.seq2seq import Seq2SeqConfig
from models.training import TrainConfig
from models.transformer import TransformerConfig
from models.transformer_training import TransformerTrainConfig
from tests.conftest import PROJECT_ROOT

SERVING_PROFILES = ("deployment.yaml", "inference.yaml", "serving.yaml")
PROFILES = sorted(p for p in (PROJECT_ROOT / "configs").glob("*.yaml") if p.name not in SERVING_PROFILES)


@pytest.mark.parametrize("path", PROFILES, ids=[p.name for p in PROFILES])
def test_profile_settings_build_their_configs(path):
    load_profile(path)
    steps = yaml.safe_load(path.read_text())["steps"]
    CleaningConfig(**steps["clean_data"]["parameters"]["config"])
    s2s = steps["train_seq2seq"]["parameters"]
    Seq2SeqConfig(vocab_size=100, pad_id=0, bos_id=1, eos_id=2, **s2s["model"])
    TrainConfig(**s2s["train_config"])
    tr = steps["train_transformer"]["parameters"]
    TransformerConfig(**tr["model"])
    TransformerTrainConfig(**tr["train_config"])
    gan = steps["train_gan"]["parameters"]
    GanConfig.from_dict(gan["gan"])
    DiscriminatorConfig(**gan.get("discriminator", {}))
    SuiteConfig(**steps["evaluate"]["parameters"]["suite"])
    SelectionRule(**steps["evaluate"]["parameters"].get("rule", {}))
    assert steps["promote"]["enable_cache"] is False  # a pipeline-level enable_cache would otherwise cache it
    assert yaml.safe_load(path.read_text())["model"]["name"] == "creative-writer"


@pytest.mark.parametrize("name", ["deployment", "inference"])
def test_deployment_and_inference_profiles_fit_their_pipelines(name):
    import inspect

    import pipelines
    from models.contract import GenerationSettings
    from run import PIPELINE_PARAMETERS

    profile = load_profile(PROJECT_ROOT / "configs" / f"{name}.yaml")
    params = profile["parameters"]
    assert set(params) <= set(PIPELINE_PARAMETERS[name])
    signature = inspect.signature(getattr(pipelines, f"{name}_pipeline").entrypoint)
    assert set(PIPELINE_PARAMETERS[name]) == set(signature.parameters)
    if name == "inference":
        GenerationSettings.from_dict(params["generation"])
    else:
        assert params["host"] == "127.0.0.1"  # loopback unless someone means to expose it


def test_serving_profile_loads():
    from serving.config import load_serving_config

    config = load_serving_config(PROJECT_ROOT / "configs" / "serving.yaml", env={})
    assert config.server.host == "127.0.0.1" and config.limits.max_drafts >= 1 and config.ui.examples
