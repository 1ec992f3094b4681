"""Evaluation: the suite with fake models whose answers are known, the selection rule, promotion on a real registry."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from evaluation.promotion import CHAMPION, PREVIOUS, current_champion, decide, register_candidates, registry_state
from evaluation.selection import SelectionRule, apply_gates, select
from evaluation.suite import (
    SuiteConfig,
    per_word_perplexity,
    prompt_ranking,
    ranking_accuracy,
    ranking_trials,
    sample_metrics,
)
from tests.conftest import frame, names


def make_test_frame(n=12):
    return frame([{"id": f"p{i}", "prompt": f"prompt number {i}", "text": f"piece {i} " * 5} for i in range(n)])


class PromptMatcher:
    """Scores a text lowest under its own prompt (the number in both), higher under any other."""

    family = "fake"

    def score(self, prompts, texts, forms=None, genres=None):
        return [(1.0 if p.split()[-1] == t.split()[1] else 5.0, len(t.split()))
                for p, t in zip(prompts, texts, strict=True)]


class PromptBlind:
    """Ignores the prompt: every prompt scores a text the same (ties count as misses)."""

    family = "fake"

    def score(self, prompts, texts, forms=None, genres=None):
        return [(2.0, len(t.split())) for t in texts]


def test_prompt_ranking_with_known_answers():
    test = make_test_frame()
    cfg = SuiteConfig(ranking_pieces=10, distractors=3)
    assert prompt_ranking(PromptMatcher(), test, cfg) == 1.0
    assert prompt_ranking(PromptBlind(), test, cfg) == 0.0
    assert ranking_accuracy([[1.0, 2.0, 3.0], [2.0, 1.0, 3.0], [1.0, 1.0, 2.0]]) == pytest.approx(1 / 3)


def test_ranking_trials_are_fixed_by_the_seed_and_exclude_the_true_prompt():
    test = make_test_frame()
    a = ranking_trials(test, 5, 3, seed=1)
    assert a == ranking_trials(test, 5, 3, seed=1) and a != ranking_trials(test, 5, 3, seed=2)
    for piece, candidates in a:
        assert candidates[0] == piece and piece not in candidates[1:] and len(set(candidates)) == 4
    with pytest.raises(ValueError, match=names("10", "test pieces")):
        ranking_trials(test.head(5), 5, 9, seed=0)


def test_per_word_perplexity_from_score():
    import math

    test = make_test_frame(3)  # each text has 10 words, NLL 2.0 each
    assert per_word_perplexity(PromptBlind(), test) == pytest.approx(math.exp(6.0 / 30))


def test_sample_metrics_by_hand():
    m = sample_metrics(["The cat sat. The cat sat.", "A dog ran"], ["The cat sat.", "A dog ran home."])
    assert m["complete_share"] == 0.5 and m["mean_words"] == pytest.approx(4.5)
    assert 0 < m["bleu4"] <= 1 and 0 <= m["self_bleu4"] <= 1
    assert m["repetition"] == pytest.approx((1 / 5) / 2)  # "the cat sat . the cat sat .": 5 4-grams, 1 repeat


def metrics_frame(**overrides):
    base = {"candidate": ["a", "b", "c"], "family": ["seq2seq", "transformer", "gan"], "ppl_word": [3.0, 2.0, 2.01],
            "ranking_acc": [0.5, 0.5, 0.5], "distinct1": [0.5] * 3, "distinct2": [0.6] * 3, "self_bleu4": [0.2] * 3,
            "repetition": [0.0] * 3, "bleu4": [0.1] * 3, "mean_words": [50.0] * 3, "complete_share": [1.0] * 3,
            "tokens_per_s": [100.0, 50.0, 80.0], "open_use": [1.0] * 3, "open_coverage": [0.5] * 3,
            "open_form": [1.0] * 3, "open_complete": [1.0] * 3, "open_repetition": [0.0] * 3,
            "open_distinct2": [0.6] * 3, "parameters": [1000, 2000, 1000]}
    base.update(overrides)
    return pd.DataFrame(base)


def test_score_is_log_perplexity_minus_weighted_open_quality():
    import math

    from evaluation.selection import open_quality, score

    row = metrics_frame().iloc[0]
    assert open_quality(row) == pytest.approx((1.0 + 0.5 + 1.0 + 1.0 + 1.0) / 5)
    assert score(row, SelectionRule(quality_weight=4.0)) == pytest.approx(math.log(3.0) - 4.0 * 0.9)
    assert score(row, SelectionRule()) == pytest.approx(math.log(3.0) - 10.0 * 0.9)
    assert score(row, SelectionRule(quality_weight=0.0)) == pytest.approx(math.log(3.0))


def test_selection_gates_then_score_and_ties_go_to_quality_not_speed():
    rule = SelectionRule(tie_tolerance=0.01)
    gated, winner, why = select(metrics_frame(), rule, chance=0.1)
    # b and c tie (ln 2.0 vs ln 2.01: 0.005 apart): same open quality, so the smaller model wins, not the faster
    assert winner == "c" and "within 0.01 of the best score" in why
    assert list(gated.sort_values("rank")["candidate"]) == ["c", "b", "a"]
    better_b = metrics_frame(open_coverage=[0.5, 0.6, 0.5])
    assert select(better_b, rule, chance=0.1)[1] == "b"  # a tie again, now won by b's open quality
    assert select(metrics_frame(tokens_per_s=[1.0, 1e6, 1.0]), rule, 0.1)[1] == "c"  # speed never decides
    gated, winner, _ = select(metrics_frame(), SelectionRule(tie_tolerance=0.0), chance=0.1)
    assert winner == "b"
    failing = metrics_frame(ranking_acc=[0.5, 0.12, 0.5], repetition=[0.0, 0.0, 0.5])
    gated, winner, _ = select(failing, rule, chance=0.1)
    assert winner == "a"
    assert list(gated["gate_ranking"]) == [True, False, True] and list(gated["gate_repetition"]) == [True, True, False]
    nan = metrics_frame(ppl_word=[float("nan"), 2.0, 2.0], ranking_acc=[0.5, 0.0, 0.0])
    gated, winner, why = select(nan, rule, chance=0.1)
    assert winner is None and "a failed finite" in why and "b failed ranking" in why
    assert not apply_gates(nan, rule, 0.1)["passed"].any()


def test_the_lower_perplexity_candidate_loses_when_it_ignores_its_prompts():
    # a memorised-template model: perplexity 1.6 on its own corpus, but its open-prompt pieces use no prompt word
    frame_ = metrics_frame(candidate=["seq2seq", "transformer", "gan"], ppl_word=[1.6, 12.0, 1.64],
                           open_use=[0.2, 0.97, 0.25], open_coverage=[0.03, 0.6, 0.04], open_complete=[0.5, 0.95, 0.5])
    gated, winner, why = select(frame_, SelectionRule(), chance=0.1)
    assert winner == "transformer"
    assert list(gated["gate_prompt_use"]) == [False, True, False] and list(gated["gate_complete"]) == [False, True,
                                                                                                        False]
    assert "seq2seq failed prompt_use, complete" in why
    # without the gates, the score alone still prefers the model that writes to its prompt
    no_gates = SelectionRule(min_prompt_use=0.0, min_complete=0.0)
    assert select(frame_, no_gates, chance=0.1)[1] == "transformer"
    # and with the quality weight at 0 the rule is the old one: lowest perplexity
    assert select(frame_, SelectionRule(min_prompt_use=0.0, min_complete=0.0, quality_weight=0.0), 0.1)[1] == "seq2seq"


def test_rule_settings_are_checked_by_name():
    with pytest.raises(ValueError, match=r"SelectionRule\.min_prompt_use"):
        SelectionRule(min_prompt_use=1.5)
    with pytest.raises(ValueError, match=r"SelectionRule\.quality_weight"):
        SelectionRule(quality_weight=-1)


# --- promotion against a real local registry -----------------------------------------------------------
@pytest.fixture
def registry(tmp_path, monkeypatch, tiny_tokenizer):
    from registry.mlflow_model import log_pyfunc
    from tests.conftest import tiny_writer

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("t", artifact_location=(tmp_path / "a").as_uri()))
    with mlflow.start_run():
        model_uri = log_pyfunc(tiny_writer(tiny_tokenizer).save(tmp_path / "m")).model_uri
    yield MlflowClient(), model_uri
    mlflow.end_run()


def _row(ppl, use=1.0):
    return {"ppl_word": ppl, "ranking_acc": 0.5, "distinct2": 0.6, "repetition": 0.0, "open_use": use,
            "open_coverage": 0.5, "open_form": 1.0, "open_complete": 1.0, "open_repetition": 0.0}


def _run(client, model_uri, ppl, winner="w", fingerprint="fp1", rescore=None, use=1.0):
    from registry.tags import metric_tags

    row = _row(ppl, use)
    versions = register_candidates("cw", {"w": model_uri, "other": model_uri},
                                   {"w": {"evaluation_fingerprint": fingerprint, **metric_tags(row)}})
    return decide(client, "cw", winner if winner else None, "selected", row, versions, fingerprint,
                  rescore or (lambda v: pytest.fail("no re-evaluation expected")), SelectionRule())


def test_promotion_first_worse_better_and_gate_failure(registry):
    client, model_uri = registry
    first = _run(client, model_uri, 3.0)
    assert first.promoted and current_champion(client, "cw").version == int(first.winner_version)
    worse = _run(client, model_uri, 3.5)
    assert not worse.promoted and "not better" in worse.reason
    assert str(current_champion(client, "cw").version) == first.winner_version
    better = _run(client, model_uri, 2.0)
    assert better.promoted and f"v{first.winner_version} is now '{PREVIOUS}'" in better.reason
    assert better.winner_score < better.champion_before_score
    assert str(client.get_model_version_by_alias("cw", PREVIOUS).version) == first.winner_version
    assert str(client.get_model_version_by_alias("cw", CHAMPION).version) == better.winner_version
    none = _run(client, model_uri, 1.0, winner=None)
    assert not none.promoted and none.reason.startswith("nothing promoted")
    assert str(client.get_model_version_by_alias("cw", CHAMPION).version) == better.winner_version
    # the aliases always point at versions that exist
    for alias in (CHAMPION, PREVIOUS):
        version = client.get_model_version_by_alias("cw", alias)
        assert client.get_model_version("cw", version.version).status == "READY"
    tags = client.get_model_version("cw", better.winner_version).tags
    assert tags["promotion"] == "promoted" and tags["evaluation_fingerprint"] == "fp1"


def test_an_equal_model_registered_again_does_not_win_on_rounding(registry):
    client, model_uri = registry
    first = _run(client, model_uri, 18.84414)  # tagged as 18.8441
    # the champion's recorded tags are rounded: the same model measured again scores a hair lower
    again = _run(client, model_uri, 18.84406)
    assert not again.promoted and "by more than the tie tolerance 0.01" in again.reason
    assert str(current_champion(client, "cw").version) == first.winner_version
    clearly = _run(client, model_uri, 18.0)  # ln(18.84 / 18.0) = 0.046 > 0.01
    assert clearly.promoted


def test_a_champion_that_ignores_its_prompts_is_replaced_even_by_a_worse_perplexity(registry):
    client, model_uri = registry
    _run(client, model_uri, 1.6, use=0.2, fingerprint="fp")  # first champion: no gate is checked against nothing
    decision = _run(client, model_uri, 12.0, fingerprint="fp")
    assert decision.promoted and "fails the gate(s) prompt_use" in decision.reason


def test_champion_from_another_evaluation_is_evaluated_again(registry):
    client, model_uri = registry
    _run(client, model_uri, 3.0, fingerprint="old")
    again = []
    decision = _run(client, model_uri, 2.5, fingerprint="new", rescore=lambda v: again.append(v) or _row(2.0))
    assert again and not decision.promoted and "evaluated again under this run's evaluation" in decision.reason
    # the re-evaluation is recorded on the champion: the next run under the same evaluation reuses it
    tags = current_champion(client, "cw").tags
    assert tags["evaluation_fingerprint"] == "new" and float(tags["metric.ppl_word"]) == 2.0
    later = _run(client, model_uri, 2.6, fingerprint="new", rescore=lambda v: again.append(v) or _row(2.0))
    assert len(again) == 1 and "its recorded metrics under this evaluation" in later.reason


def test_the_registry_state_in_promotes_cache_key_changes_with_what_a_promotion_reads(registry):
    """A cached ``promote`` must run again after any registry change, and only then."""
    client, model_uri = registry
    _run(client, model_uri, 3.0)
    settled = registry_state(client)
    assert registry_state(client) == settled
    _run(client, model_uri, 3.5)  # new versions registered -> changed
    after_worse = registry_state(client)
    assert after_worse != settled
    champion = current_champion(client, "cw")
    client.set_model_version_tag("cw", champion.version, "metric.ppl_word", champion.tags["metric.ppl_word"])
    client.set_model_version_tag("cw", champion.version, "promotion", "not promoted")  # the decision's own record
    assert registry_state(client) == after_worse
    client.set_model_version_tag("cw", champion.version, "note", "retagged by hand")
    retagged = registry_state(client)
    assert retagged != after_worse
    other = next(v.version for v in client.search_model_versions("name='cw'") if v.version != champion.version)
    client.set_registered_model_alias("cw", CHAMPION, other)  # someone moves the alias by hand
    moved = registry_state(client)
    assert moved != retagged
    client.delete_registered_model_alias("cw", CHAMPION)
    assert registry_state(client) not in {moved, retagged}


def test_the_registry_state_tells_registries_apart_even_when_empty(tmp_path):
    """Two checkouts share ZenML's cache, each with its own MLflow store; a store made again is a new one."""
    import time

    def empty_store(folder):
        uri = f"sqlite:///{folder}/mlflow.db"
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.create_experiment("training_pipeline", artifact_location=(folder / "a").as_uri())
        return client, uri

    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one, one_uri = empty_store(tmp_path / "one")
    time.sleep(0.01)
    two, two_uri = empty_store(tmp_path / "two")
    first = registry_state(one, one_uri)
    assert first == registry_state(one, one_uri) and first != registry_state(two, two_uri)
    # a store deleted and made again at the same place: the same location, its experiments made anew
    assert registry_state(one, "sqlite:///.mlflow/mlflow.db") != registry_state(two, "sqlite:///.mlflow/mlflow.db")


def test_promote_is_cached_only_through_the_registry_cache_function():
    """No profile switches the promote step's cache off, and its cache key holds the registry's state."""
    import yaml

    from steps.promote import promote
    from tests.conftest import PROJECT_ROOT

    policy = promote.configuration.cache_policy
    assert policy.cache_func is not None and policy.cache_func.import_path == "steps.promote.registry_cache_key"
    for profile in (PROJECT_ROOT / "configs").glob("*.yaml"):
        steps = (yaml.safe_load(profile.read_text()) or {}).get("steps") or {}
        assert (steps.get("promote") or {}).get("enable_cache") is not False, profile.name


def test_the_registry_cache_key_is_fresh_when_the_registry_cannot_be_read(monkeypatch):
    import importlib

    from zenml.client import Client

    promote_step = importlib.import_module("steps.promote")  # the module: ``steps`` exports the step by that name

    def unreadable(self):
        raise ConnectionError("no registry")

    monkeypatch.setattr(Client, "active_stack", property(unreadable))
    first, second = promote_step.registry_cache_key(), promote_step.registry_cache_key()
    assert first != second and len(first) == 32


def test_promote_candidates_loads_the_champion_and_generates_for_the_report(registry, tiny_corpus, tmp_path,
                                                                          tiny_tokenizer):
    from evaluation.candidates import evaluate_candidates
    from evaluation.champion import promote_candidates
    from tests.conftest import tiny_writer

    dirs = {"seq2seq": tiny_writer(tiny_tokenizer).save(tmp_path / "s")}
    suite = SuiteConfig(ranking_pieces=5, distractors=3, sample_prompts=2, max_new_tokens=8, open_limit=3,
                        open_max_new_tokens=8)
    rule = SelectionRule(min_ranking_margin=-1, min_distinct2=0, max_repetition=1, min_prompt_use=0, min_complete=0)
    result = evaluate_candidates(dirs, tiny_corpus, suite, rule)
    metrics, samples, open_samples, selection = result.metrics, result.samples, result.open_samples, result.selection
    assert result.real_metrics.empty and selection["real_tests"] == {}
    assert selection["winner"] == "seq2seq" and list(samples.columns[-1:]) == ["seq2seq"]
    assert len(open_samples) == 3 and {"seq2seq", "seq2seq_matched"} <= set(open_samples.columns)
    assert selection["sizes"]["open_prompts"] == 3 and selection["evaluation_fingerprint"]
    client = MlflowClient()
    with mlflow.start_run():
        first, before = promote_candidates(dirs, metrics, selection, tiny_corpus, "run-1", name="writer")
        second, champion_samples = promote_candidates(dirs, metrics, selection, tiny_corpus, "run-2", name="writer",
                                                      samples=samples, open_samples=open_samples)
    assert first.promoted and before == {"test": [], "open": []}
    # the same model again (a cached rerun): nothing logged or registered, the version reused, champion unchanged
    assert second.versions == first.versions and len(client.search_model_versions("name='writer'")) == 1
    assert not second.promoted and "already the champion" in second.reason
    assert champion_samples == {"test": list(samples["seq2seq"]), "open": list(open_samples["seq2seq"])}
    tags = client.get_model_version("writer", first.winner_version).tags
    assert len(tags["content_fingerprint"]) == 20 and tags["evaluation_fingerprint"] == selection[
        "evaluation_fingerprint"]
    # a different model (one weight changed) is a new version
    other = tiny_writer(tiny_tokenizer)
    with torch.no_grad():
        next(other.net.parameters()).add_(0.01)
    dirs2 = {"seq2seq": other.save(tmp_path / "s2")}
    with mlflow.start_run():
        third, _ = promote_candidates(dirs2, metrics, selection, tiny_corpus, "run-3", name="writer")
    assert third.versions["seq2seq"] != first.versions["seq2seq"]
    assert len(client.search_model_versions("name='writer'")) == 2
    # a pipeline hands models over as artifacts: the first time as this artifact its content is read (and
    # the version found by it gets the artifact's id); from then on the directory is never unpacked
    from evaluation.champion import ARTIFACT_TAG, StoredModel

    opened = []
    artifact = StoredModel("art-1", lambda: opened.append(1) or dirs2["seq2seq"])
    with mlflow.start_run():
        fourth, _ = promote_candidates({"seq2seq": artifact}, metrics, selection, tiny_corpus, "run-4", name="writer")
    assert fourth.versions == third.versions and opened == [1]
    assert client.get_model_version("writer", third.versions["seq2seq"]).tags[ARTIFACT_TAG] == "art-1"

    def unpacked():
        raise AssertionError("a model the registry holds as this artifact is unpacked")

    with mlflow.start_run():
        fifth, _ = promote_candidates({"seq2seq": StoredModel("art-1", unpacked)}, metrics, selection, tiny_corpus,
                                      "run-5", name="writer")
    assert fifth.versions == third.versions and len(client.search_model_versions("name='writer'")) == 2
    loaded = mlflow.pyfunc.load_model("models:/writer@champion")
    assert isinstance(loaded.predict({"prompt": "A fox."}, params={"max_new_tokens": 5})[0], str)


def test_report_names_the_winner_the_gates_and_shows_samples_side_by_side():
    from evaluation.report import build_report

    gated, winner, why = select(metrics_frame(), SelectionRule(), chance=0.1)
    samples = pd.DataFrame({"prompt": ["A fox <b>"], "form": ["fable"], "genre": [""], "reference": ["ref"],
                            "a": ["text a"], "b": ["text b"], "c": ["text c"]})
    decision = {"promoted": True, "winner": winner, "reason": "c wins", "versions": {"a": "1", "b": "2", "c": "3"},
                "champion_before": "0", "champion_after": "3"}
    open_samples = pd.DataFrame({"id": ["s1"], "form": ["story"], "genre": [""],
                                 "prompt": ["A glassblower named Odile finds a bottle."],
                                 "a": ["Odile held the bottles."], "a_matched": ["bottle, odile"],
                                 "b": ["Nothing here."], "b_matched": [""], "c": ["x"], "c_matched": [""]})
    selection = {"winner": winner, "why": why, "rule": SelectionRule().describe(0.1),
                 "reference_model": {"spec": "pypi:judge==1#m.gguf", "license": "apache-2.0"},
                 "sizes": {"open_prompts": 1}}
    page = build_report(gated, samples, selection, decision, ["old champion text"], open_samples,
                        ["Odile is here."])
    assert "<b>c</b> is the new champion" in page and "A fox &lt;b&gt;" in page
    assert page.count("class='pair'") == 5 + 4  # test prompts: 3 + champion + reference; open: 3 + champion
    assert "gate_ranking" in page and "champion before this run (v0)" in page and "data:image/png;base64" in page
    assert "<mark>Odile</mark> held the <mark>bottles</mark>." in page and "gate_prompt_use" in page
    assert "pypi:judge==1#m.gguf" in page and "open prompts 1" in page


def test_update_tags_writes_only_what_changed():
    from types import SimpleNamespace

    from evaluation.promotion import update_tags

    writes = []
    client = SimpleNamespace(set_model_version_tag=lambda _name, version, key, value: writes.append(
        (version, key, value)))
    version = SimpleNamespace(version=7, tags={"metric.ppl_word": "12.5", "passed_gates": "True"})
    assert update_tags(client, "cw", version, {"metric.ppl_word": "12.5", "passed_gates": "True"}) == 0
    assert writes == []  # a cached rerun: the same values, no registry round trip
    assert update_tags(client, "cw", version, {"metric.ppl_word": "11.0", "passed_gates": "True", "new": "x"}) == 2
    assert writes == [("7", "metric.ppl_word", "11.0"), ("7", "new", "x")]


def test_a_champion_from_another_run_is_sampled_once_per_version_and_evaluation(tmp_path, monkeypatch):
    from evaluation.champion import cached_samples

    monkeypatch.setenv("CW_CHECKPOINT_CACHE", str(tmp_path / "checkpoints"))
    made = []

    def sample() -> dict:
        made.append(1)
        return {"test": ["a piece"], "open": [f"an open piece {len(made)}"]}

    selection = {"evaluation_fingerprint": "e1", "test_fingerprint": "t1", "suite": {"seed": 0}}
    first = cached_samples("writer", "3", selection, sample)
    assert cached_samples("writer", "3", selection, sample) == first and made == [1]  # read again, not written
    assert cached_samples("writer", "4", selection, sample)["open"] == ["an open piece 2"]  # another version
    assert cached_samples("writer", "3", {**selection, "evaluation_fingerprint": "e2"}, sample) != first  # changed
    assert len(list((tmp_path / "champion-samples").glob("*.json"))) == 3 and not list(tmp_path.rglob("*.part"))
