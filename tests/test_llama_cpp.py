"""The llama.cpp runtime against the torch runtime, on tiny Llama models the tests write.

A LoRA fine-tune of the tiny chat Llama (its adapter made non-trivial) is saved once with a GGUF
export; both runtimes load that directory and must read the same ids, agree on likelihoods and filter
the same tokens, and the llama.cpp runtime must refuse a damaged or foreign export with the file's name.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (requirements.txt pins it)")

from models.configs import TransformerConfig
from models.contract import GenerationSettings
from models.families import load_model, runtime_of
from models.llama_cpp import LlamaCppWriter, RuntimeLoadError, chain_keeps, check_gguf, llama_seed
from models.sampling import apply_logit_bias, apply_repetition_penalty, filter_logits
from models.transformer import TransformerWriter, build_transformer

PROMPTS = ["A fox finds a key under the bridge.", "The sea at night, and a lamp."]
TEXTS = ["It was a small key, and it opened the mill door at last.", "Waves came in and out, slow and grey."]


def tuned(base: str, gguf: str, seed: int = 0) -> TransformerWriter:
    """A LoRA writer on ``base`` whose adapter changes the model (B drawn at random, not zero)."""
    torch.manual_seed(seed)
    config = TransformerConfig(base_model=base, context=256, max_prompt_tokens=40, gguf=gguf, lora_r=4,
                               lora_alpha=8, lora_targets=["q_proj", "k_proj", "v_proj", "o_proj"])
    writer = build_transformer(None, config, forms=["story", "poem"], genres=[""])
    for name, weights in writer.model.named_parameters():
        if "lora_B" in name:
            weights.data.normal_(0, 0.3)
    return writer


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from weights.tiny import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("tiny-base") / "llama")


@pytest.fixture(scope="module")
def saved(tiny_base, tmp_path_factory):
    """A tuned tiny model saved with an F32 export (exact: the runtimes must agree to rounding)."""
    return tuned(str(tiny_base), "f32").save(tmp_path_factory.mktemp("saved") / "model")


@pytest.fixture(scope="module")
def runtimes(saved):
    return TransformerWriter.load(saved), LlamaCppWriter.load(saved, threads=1)


def test_the_export_is_in_the_manifest_with_its_hash(saved):
    record = json.loads((saved / "manifest.json").read_text())["gguf"]
    assert record["path"] == "gguf/model.gguf" and record["quant"] == "f32" and record["written"] > 0
    from weights.gguf import file_sha256

    assert file_sha256(saved / record["path"]) == record["sha256"]
    assert (saved / record["path"]).stat().st_size == record["bytes"]


def test_both_runtimes_read_the_same_ids_and_agree_on_likelihood(runtimes):
    torch_writer, llama_writer = runtimes
    settings = GenerationSettings(form="poem", lead="The lamp was lit.")
    assert torch_writer.request_prefix(PROMPTS[0], settings) == llama_writer.request_prefix(PROMPTS[0], settings)
    pairs = zip(torch_writer.score(PROMPTS, TEXTS), llama_writer.score(PROMPTS, TEXTS), strict=True)
    for (nll_t, words_t), (nll_l, words_l) in pairs:
        assert words_t == words_l
        assert math.isclose(nll_t, nll_l, rel_tol=1e-4), (nll_t, nll_l)
    logits_t, ids_t = torch_writer.teacher_logits(PROMPTS[1], TEXTS[1], settings)
    logits_l, ids_l = llama_writer.teacher_logits(PROMPTS[1], TEXTS[1], settings)
    assert ids_t == ids_l and float((logits_t - logits_l).abs().max()) < 1e-3


def test_a_seed_writes_the_same_text_streamed_or_not_and_the_prefix_is_read_once(runtimes):
    _, writer = runtimes
    settings = GenerationSettings(seed=11, max_new_tokens=24, temperature=1.0, top_k=0, top_p=1.0)
    first = writer.generate([PROMPTS[0]], settings)[0]
    assert first and writer.generate([PROMPTS[0]], settings)[0] == first
    assert "".join(writer.stream(PROMPTS[0], settings)) == first
    others = {writer.generate([PROMPTS[0]], settings.replace(seed=s))[0] for s in range(5)}
    assert len(others) > 1  # the seed reaches llama.cpp's draw
    prefix = writer.request_prefix(PROMPTS[0], settings)
    assert writer._rewind(prefix) == len(prefix) - 1  # the context still holds it: only the last token is read
    assert llama_seed(2**63 - 1) != llama_seed(2**63 - 2) and 0 <= llama_seed(2**63 - 1) < 0xFFFFFFFF


def test_a_stop_string_and_a_lead_work_on_llama_cpp(runtimes):
    _, writer = runtimes
    settings = GenerationSettings(seed=3, max_new_tokens=40, temperature=1.2, top_k=0, top_p=1.0)
    text = writer.generate([PROMPTS[1]], settings)[0]
    assert len(text) > 4
    stop = text[2:4]
    assert stop not in writer.generate([PROMPTS[1]], settings.replace(stop=(stop,)))[0]
    assert writer.generate([PROMPTS[1]], settings.replace(lead="Once the lamp went out,"))[0] != text


@pytest.mark.parametrize("case", [
    {"temperature": 0.7, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0},
    {"temperature": 1.0, "top_k": 5, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0},
    {"temperature": 0.8, "top_k": 0, "top_p": 0.9, "min_p": 0.0, "repetition_penalty": 1.0},
    {"temperature": 1.3, "top_k": 0, "top_p": 1.0, "min_p": 0.1, "repetition_penalty": 1.0},
    {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repetition_penalty": 1.3},
    {"temperature": 0.8, "top_k": 5, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0, "logit_bias": "likeliest"},
])
def test_llama_cpps_filters_keep_the_tokens_our_sampler_keeps(case):
    rng = np.random.default_rng(7)
    logits = (rng.standard_normal(300) * 3).astype(np.float32)
    previous = [int(i) for i in np.argsort(-logits)[:6:2]]  # some of the likeliest tokens were already written
    if case.get("logit_bias"):  # the two likeliest banned, an unlikely one raised into the top 5
        order = [int(i) for i in np.argsort(-logits)]
        case = {**case, "logit_bias": {order[0]: -100.0, order[1]: -100.0, order[200]: 30.0}}
    settings = GenerationSettings(**case)
    ours = apply_repetition_penalty(apply_logit_bias(torch.from_numpy(logits)[None], settings.logit_bias),
                                    torch.tensor([previous]), settings.repetition_penalty)
    ours = filter_logits(ours / settings.temperature, settings.top_k, settings.top_p, settings.min_p)[0]
    expected = sorted(int(i) for i in torch.nonzero(torch.isfinite(ours)).flatten())
    assert chain_keeps(settings, logits, previous) == expected


def test_load_model_picks_the_runtime_and_falls_back_to_torch_without_an_export(saved, tiny_base, tmp_path):
    assert runtime_of(load_model(saved, "llama.cpp", threads=1)) == "llama.cpp"
    assert runtime_of(load_model(saved, "torch")) == "torch"
    plain = tuned(str(tiny_base), "none").save(tmp_path / "plain")
    assert "gguf" not in json.loads((plain / "manifest.json").read_text())
    assert runtime_of(load_model(plain, "llama.cpp")) == "torch"
    with pytest.raises(ValueError, match="runtime"):
        load_model(saved, "vllm")
    with pytest.raises(RuntimeLoadError, match="no GGUF export"):
        LlamaCppWriter.load(plain)


def _copy(saved, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(saved, folder)
    return folder, folder / "gguf" / "model.gguf"


def test_a_damaged_or_foreign_export_is_refused_naming_the_file(saved, tmp_path):
    folder, path = _copy(saved, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeLoadError, match="truncated") as err:
        LlamaCppWriter.load(folder)
    assert str(path) in str(err.value)
    path.write_bytes(data[:-8] + b"\0" * 8)  # same size, other bytes
    with pytest.raises(RuntimeLoadError, match="SHA-256"):
        LlamaCppWriter.load(folder)
    path.unlink()
    with pytest.raises(RuntimeLoadError, match="does not exist"):
        LlamaCppWriter.load(folder)
    path.write_bytes(b"not a gguf file at all")
    with pytest.raises(RuntimeLoadError, match="not readable"):
        check_gguf(path)


def test_an_export_of_another_architecture_or_vocabulary_is_refused(saved, tmp_path):
    import gguf

    other = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(str(other), "gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(RuntimeLoadError, match="gpt2 architecture"):
        check_gguf(other)
    config = TransformerConfig(**json.loads((saved / "config.json").read_text()))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(saved / "tokenizer"))
    tokenizer.add_tokens([f"extra{i}" for i in range(50)])  # a tokenizer the export does not belong to
    with pytest.raises(RuntimeLoadError, match="does not belong"):
        LlamaCppWriter(saved / "gguf" / "model.gguf", tokenizer, config)


def test_keep_copies_the_base_files_untouched_tensors(tiny_base, tmp_path, monkeypatch):
    """A base that came from a GGUF file: the export copies what the adapter left alone, byte for byte."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from weights.export import export_gguf

    monkeypatch.setenv("CW_CHECKPOINT_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "base.gguf"
    export_gguf(AutoModelForCausalLM.from_pretrained(str(tiny_base)), AutoTokenizer.from_pretrained(str(tiny_base)),
                tiny_base, source, "q8_0")
    writer = tuned(f"gguf:{source}", "keep")
    folder = writer.save(tmp_path / "model")
    record = json.loads((folder / "manifest.json").read_text())["gguf"]
    assert record["written"] == 2 * 4 and record["kept"] > 0  # 2 layers x q/k/v/o written, the rest kept
    torch_writer, llama_writer = TransformerWriter.load(folder), LlamaCppWriter.load(folder, threads=1)
    for (nll_t, _), (nll_l, _) in zip(torch_writer.score(PROMPTS, TEXTS), llama_writer.score(PROMPTS, TEXTS),
                                      strict=True):
        assert math.isclose(nll_t, nll_l, rel_tol=0.02), (nll_t, nll_l)  # Q8_0 on the changed tensors only


def test_batch_inference_on_llama_cpp_writes_what_the_api_writes(runtimes):
    """Batch inference and an HTTP request plan the same settings: on one runtime a seed writes one text."""
    import asyncio

    import pandas as pd

    from serving.batch_inference import generate_for_prompts
    from serving.champion import LoadedModel, Provenance
    from serving.config import ServingConfig
    from serving.engine import Engine
    from serving.planner import BatchGeneration, RequestPlanner

    _, writer = runtimes
    provenance = Provenance(family="transformer", registered_name="cw", version="1", alias="", mlflow_run_id="r",
                            training_run_id="t", source="s", runtime="llama.cpp")
    prompts = pd.DataFrame([{"id": "a", "prompt": PROMPTS[0], "form": "story", "genre": "", "seed": 9},
                            {"id": "b", "prompt": PROMPTS[1], "form": "poem", "genre": "", "seed": -1}])
    out = generate_for_prompts(writer, prompts, BatchGeneration(max_new_tokens=12, seed=4), provenance.as_dict())
    assert list(out["runtime"]) == ["llama.cpp"] * 2 and all(out["text"])
    engine = Engine(ServingConfig(), loader=lambda source: LoadedModel(writer, provenance, 0.1))
    assert engine.load()
    for row in out.itertuples():
        request = RequestPlanner().request(prompt=row.prompt, form=row.form, max_new_tokens=12, seed=int(row.seed))
        assert asyncio.run(engine.generate_async(request)).drafts[0].text == row.text


def test_a_longer_serving_context_reads_more_of_a_manuscript_up_to_the_bases_limit(saved, runtimes):
    trained = runtimes[1]
    longer = LlamaCppWriter.load(saved, threads=1, context=1024)  # the tiny base was trained for 1,024
    assert longer.config.context == 1024 and longer.lead_window() > 2 * trained.lead_window()
    manuscript = "word " * 3000
    assert len(longer.lead_ids(manuscript)) == longer.lead_window()
    settings = GenerationSettings(max_new_tokens=4, seed=1, lead=manuscript)
    assert longer.generate(["Go on."], settings)[0] is not None  # the long prefix fits the context
    assert LlamaCppWriter.load(saved, threads=1, context=4096).config.context == 1024  # cut to the base's


@pytest.mark.parametrize(("multiplier", "base", "allowed"), [(0.8, 1.75, 2), (2.0, 1.5, 1), (0.5, 3.0, 4)])
def test_dry_penalises_what_llama_cpps_dry_penalises_by_the_same_amount(runtimes, multiplier, base, allowed):
    from models.llama_cpp import chain_logits
    from models.sampling import apply_dry

    rng = np.random.default_rng(3)
    n_vocab = runtimes[1].n_vocab
    logits = (rng.standard_normal(n_vocab) * 2).astype(np.float32)
    previous = [5, 9, 7, 5, 9, 7, 11, 5, 9, 7, 5, 9]  # "5 9 7" written three times, "5 9" again at the end
    settings = GenerationSettings(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0,
                                  dry_multiplier=multiplier, dry_base=base, dry_allowed_length=allowed)
    ours = apply_dry(torch.from_numpy(logits)[None], torch.tensor([previous]), multiplier, base, allowed)[0].numpy()
    theirs = chain_logits(settings, logits, previous, runtimes[1].llm._model.vocab)
    assert np.allclose(ours, theirs, atol=1e-4)
    assert ours[7] < logits[7] and ours[11] == logits[11]  # "7" continues the repeat; "11" followed "5 9 7" once


def test_xtc_removes_the_top_choices_but_the_least_likely_of_them():
    from models.sampling import exclude_top_choices

    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1]]))
    out = exclude_top_choices(logits, 0.15, [True, False])
    assert torch.isinf(out[0, :2]).all() and torch.isfinite(out[0, 2:]).all()  # 0.2 is the least of those ≥ 0.15
    assert torch.equal(out[1], logits[1])  # it did not fire in that row
    assert torch.equal(exclude_top_choices(logits, 0.35, [True, True]), logits)  # one token ≥ 0.35: nothing to do


def test_xtc_changes_the_text_on_both_runtimes_dry_runs_on_both_and_off_they_change_nothing(runtimes):
    plain = GenerationSettings(max_new_tokens=24, seed=4, temperature=1.0, repetition_penalty=1.0)
    for writer in runtimes:
        base = writer.generate([PROMPTS[0]], plain)[0]
        assert writer.generate([PROMPTS[0]], plain.replace(dry_multiplier=0.0, xtc_probability=0.0))[0] == base
        assert writer.generate([PROMPTS[0]], plain.replace(xtc_probability=1.0, xtc_threshold=0.01))[0] != base
        dry = writer.generate([PROMPTS[0]], plain.replace(dry_multiplier=5.0, dry_allowed_length=1, dry_base=4.0))
        assert isinstance(dry[0], str)  # the llama.cpp chain gets the model's vocabulary (DRY needs it)


def test_a_fables_moral_is_the_same_streamed_or_not_on_llama_cpp(runtimes, monkeypatch):
    from models.layout import PromptLayout

    _, writer = runtimes
    settings = GenerationSettings(seed=6, max_new_tokens=16, form="fable")
    monkeypatch.setattr(PromptLayout, "moral_missing", lambda *a: False)
    as_written = writer.generate([PROMPTS[0]], settings)[0]
    monkeypatch.setattr(PromptLayout, "moral_missing", lambda self, form, text, settings: form == "fable"
                        and not settings.lead and bool(text.strip()))  # the tiny model rarely ends a sentence
    text = writer.generate([PROMPTS[0]], settings)[0]
    assert text == as_written + writer.moral_for(PROMPTS[0], as_written, settings)
    assert "".join(writer.stream(PROMPTS[0], settings)) == text
    assert writer.generate_requests([(PROMPTS[1], "story", ""), (PROMPTS[0], "fable", "")], settings)[1] == text


def test_wind_down_ends_a_piece_soon_after_the_asked_length_on_both_runtimes(runtimes):
    from models.layout import TOKENS_PER_WORD

    torch_writer, _ = runtimes
    plain = GenerationSettings(max_new_tokens=60, seed=2, temperature=1.0, repetition_penalty=1.0, target_words=6)
    asked = round(6 * TOKENS_PER_WORD)
    assert torch_writer.end_boost(plain, 100) == 0.0  # off by default
    on = plain.replace(wind_down=2.0)
    assert [on.wind_down * max(0, n - asked) for n in (asked, asked + 4)] == [torch_writer.end_boost(on, n)
                                                                              for n in (asked, asked + 4)]
    assert torch_writer.end_boost(on.replace(target_words=0), 100) == 0.0  # no length asked: nothing to wind down
    for writer in runtimes:
        runs_on = writer.count_tokens(writer.generate([PROMPTS[0]], plain)[0])
        wound = writer.generate([PROMPTS[0]], on)[0]
        assert writer.count_tokens(wound) <= asked + 12 < runs_on  # +2 a token past the length: the end comes soon
        assert "".join(writer.stream(PROMPTS[0], on)) == wound
        assert writer.generate([PROMPTS[0]], on.replace(banned_phrases=("zzqx",)))[0] == wound  # the backtracking path
