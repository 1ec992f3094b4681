"""The pyfunc wrapper and the training steps against a real MLflow SQLite store in a temp dir."""

import os
import subprocess
import sys
import warnings

import mlflow
import pandas as pd
import pytest

from models.contract import GenerationSettings
from registry.mlflow_model import log_pyfunc, signature
from tests.conftest import tiny_writer


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("test", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=exp)
    yield uri
    mlflow.end_run()


def test_signature_declares_every_generation_setting():
    names = {p.name for p in signature().params.params}
    assert names == set(GenerationSettings.model_fields) - {"logit_bias"}  # a mapping has no MLflow param type


def test_pyfunc_round_trip_with_params(mlflow_store, tiny_tokenizer, tmp_path):
    writer = tiny_writer(tiny_tokenizer)
    model_dir = writer.save(tmp_path / "model")
    with mlflow.start_run(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = log_pyfunc(model_dir)
    coloured = [str(w.message) for w in caught if "\x1b[" in str(w.message)]
    assert not coloured, coloured  # MLflow's advice that does not apply (a signature is given) stays out of logs
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    params = {"max_new_tokens": 12, "seed": 5, "form": "poem"}
    expected = writer.generate(["Write a poem about rain."], GenerationSettings(**params))
    assert loaded.predict(pd.DataFrame({"prompt": ["Write a poem about rain."]}), params=params) == expected
    assert loaded.predict({"prompt": "Write a poem about rain."}, params=params) == expected
    streamed = "".join(loaded.predict_stream({"prompt": "Write a poem about rain."}, params=params))
    assert streamed == expected[0]
    with pytest.raises(Exception, match="seed"):
        loaded.predict({"prompt": "Hi"}, params={"seed": "abc"})


def test_train_seq2seq_step_logs_to_mlflow(mlflow_store, tiny_corpus, tiny_tokenizer, tmp_path):
    from models.tokenizer import save_tokenizer
    from steps import train_seq2seq

    tok_dir = save_tokenizer(tiny_tokenizer, tmp_path / "tok")
    model_dir, history, image = train_seq2seq.call_entrypoint(
        split=tiny_corpus, tokenizer=tok_dir, model={"emb_dim": 16, "hidden": 16, "attn_dim": 8},
        train_config={"epochs": 1, "batch_size": 16, "max_train_pieces": 60, "log_every": 0}, heatmap_prompts=1)
    assert (model_dir / "model.pt").is_file() and (model_dir / "manifest.json").is_file()
    assert len(history) == 1 and image.size[0] > 100
    exp_id = mlflow.get_experiment_by_name("test").experiment_id
    runs = [r for r in mlflow.search_runs([exp_id], output_format="list") if r.data.params.get("family")]
    assert len(runs) == 1 and runs[0].data.params["family"] == "seq2seq"
    assert "val_ppl_word" in runs[0].data.metrics
    logged = mlflow.search_logged_models(experiment_ids=[exp_id], output_format="list")
    assert len(logged) == 1 and logged[0].source_run_id == runs[0].info.run_id
    # the logged model carries the code it imports: it loads in a process that cannot see this checkout
    local = mlflow.artifacts.download_artifacts(f"models:/{logged[0].model_id}", dst_path=str(tmp_path / "dl"))
    check = ("import sys, mlflow.pyfunc; m = mlflow.pyfunc.load_model(sys.argv[1]); "
             "print(len(m.predict({'prompt': 'A fox.'}, params={'max_new_tokens': 4, 'seed': 1})))")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run([sys.executable, "-I", "-c", check, local], cwd=elsewhere, capture_output=True, text=True,
                         timeout=300, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "1", out.stderr[-2000:]


def test_train_transformer_step_logs_one_run_and_a_loadable_pyfunc(mlflow_store, tiny_corpus, tiny_tokenizer,
                                                                   tmp_path):
    from models.tokenizer import save_tokenizer
    from steps import train_transformer

    tok_dir = save_tokenizer(tiny_tokenizer, tmp_path / "tok")
    model_dir, base_dir, history, curves, pairs = train_transformer.call_entrypoint(
        split=tiny_corpus, tokenizer=tok_dir,
        model={"n_layer": 1, "n_embd": 32, "n_head": 2, "context": 160, "max_prompt_tokens": 40},
        train_config={"epochs": 1, "batch_size": 16, "max_train_pieces": 64, "progress_bar": False})
    assert (model_dir / "model" / "model.safetensors").is_file() and len(history) == 1 and curves.size[0] > 100
    from models.manifest import read_manifest

    base, tuned = read_manifest(base_dir), read_manifest(model_dir)
    assert base["untuned"] is True and "untuned" not in tuned and "val_ppl_word" not in base
    assert pairs.empty and "chosen" in pairs.columns  # no distillation by default
    exp_id = mlflow.get_experiment_by_name("test").experiment_id
    runs = mlflow.search_runs([exp_id], output_format="list")
    assert len(runs) == 1, "the Trainer must not open MLflow runs of its own"
    assert runs[0].data.params["family"] == "transformer" and "val_ppl_word" in runs[0].data.metrics
    logged = mlflow.search_logged_models(experiment_ids=[exp_id], output_format="list")
    assert len(logged) == 1
    loaded = mlflow.pyfunc.load_model(f"models:/{logged[0].model_id}")
    params = {"max_new_tokens": 12, "seed": 3}
    prompt = {"prompt": "A lighthouse keeper hears a song."}
    out = loaded.predict(prompt, params=params)
    assert len(out) == 1 and out[0] == "".join(loaded.predict_stream(prompt, params=params))


def test_train_gan_step_logs_comparison_and_a_loadable_gan(mlflow_store, tiny_corpus, tiny_tokenizer, tmp_path):
    from steps import train_gan

    seq2seq_dir = tiny_writer(tiny_tokenizer).save(tmp_path / "seq2seq")
    model_dir, history, comparison, plot = train_gan.call_entrypoint(
        split=tiny_corpus, tokenizer=tmp_path, seq2seq_model=seq2seq_dir,
        gan={"rounds": 2, "d_pretrain_steps": 2, "batch_size": 8, "max_len": 10, "eval_prompts": 3,
             "eval_max_new_tokens": 10, "eval_pieces": 10},
        discriminator={"emb_dim": 8, "hidden": 8}, temperatures=[0.7, 1.2], comparison_prompts=4)
    assert list(history["round"]) == [0, 1, 2] and len(comparison) == 4 and plot.size[0] > 200
    from models.manifest import read_manifest

    manifest = read_manifest(model_dir)
    assert manifest["family"] == "gan" and manifest["verdict"].startswith("Adversarial training")
    exp_id = mlflow.get_experiment_by_name("test").experiment_id
    runs = mlflow.search_runs([exp_id], output_format="list")
    assert len(runs) == 1 and runs[0].data.params["family"] == "gan"
    assert {"mean_reward", "d_acc_real", "d_acc_fake", "bleu4", "self_bleu4", "val_ppl_word"} <= set(
        runs[0].data.metrics)
    history_rounds = mlflow.MlflowClient().get_metric_history(runs[0].info.run_id, "bleu4")
    assert sorted(m.step for m in history_rounds) == [0, 1, 2]
    logged = mlflow.search_logged_models(experiment_ids=[exp_id], output_format="list")
    loaded = mlflow.pyfunc.load_model(f"models:/{logged[0].model_id}")
    assert isinstance(loaded.predict({"prompt": "A fox."}, params={"max_new_tokens": 6})[0], str)
