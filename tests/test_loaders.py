import json
import os
import time

import pandas as pd
import pytest

from corpus import loaders
from corpus.loaders import load_one, load_sources, parse_spec, source_fingerprint
from corpus.schema import COLUMNS, DataError
from tests.conftest import names


def write(path, text, encoding="utf-8"):
    path.write_text(text, encoding=encoding)
    return path


@pytest.fixture
def wp_dir(tmp_path):
    d = tmp_path / "wp"
    d.mkdir()
    write(d / "train.wp_source", "[ WP ] A dragon ca n't fly .\n[ IP ] Two robots fall in love .\n")
    write(d / "train.wp_target", "The dragon sat . <newline> <newline> `` Why ? '' he asked .\nBeep . Boop .\n")
    return d


def test_parse_spec_scheme_target_and_options():
    spec = parse_spec("csv:data/x.csv?prompt=title&text=body&limit=5")
    assert (spec.scheme, spec.target) == ("csv", "data/x.csv")
    assert spec.options == {"prompt": "title", "text": "body", "limit": "5"}
    assert parse_spec("builtin").scheme == "builtin"


@pytest.mark.parametrize(("raw", "message"), [
    ("nosuch:thing", names("'nosuch'")),
    ("csv", "needs a target"),
])
def test_bad_specs_are_named(raw, message):
    with pytest.raises(DataError, match=message):
        parse_spec(raw)


def test_builtin_loader_options():
    df = load_one("builtin?n=12&seed=2")
    assert len(df) == 12 and list(df.columns) == list(COLUMNS)
    assert len(load_one("builtin?n=12&limit=5")) == 5
    with pytest.raises(DataError, match=names("'n'")):
        load_one("builtin?n=many")


def test_writingprompts_pairs_lines_and_keeps_raw_text(wp_dir):
    df = load_one(f"writingprompts:{wp_dir}")
    assert len(df) == 2
    assert df.loc[0, "prompt"].startswith("[ WP ]")  # cleaning, not loading, removes artefacts
    assert "<newline>" in df.loc[0, "text"]
    assert set(df["source"]) == {"writingprompts"} and set(df["form"]) == {"story"}


def test_writingprompts_line_count_mismatch_names_both_files(wp_dir):
    write(wp_dir / "train.wp_target", "only one story\n")
    with pytest.raises(DataError, match=names("train.wp_source", "2", "train.wp_target", "1")):
        load_one(f"writingprompts:{wp_dir}")


def test_missing_files_and_dirs_are_named(tmp_path):
    with pytest.raises(DataError, match="directory not found"):
        load_one(f"writingprompts:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match="file not found"):
        load_one(f"tinystories:{tmp_path / 'nope.txt'}")


def test_undecodable_bytes_name_the_file_and_offset(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"Once upon a time.\xff\xfe The end.")
    with pytest.raises(DataError, match=names("bad.txt", "UTF-8", "0xff", "17")):
        load_one(f"tinystories:{bad}")


def test_tinystories_first_sentence_is_the_prompt_and_truncated_tail_dropped(tmp_path):
    f = write(tmp_path / "ts.txt", 'Lily found a cat. She gave it milk. "Thank you," said Mom.\n<|endoftext|>\n'
              "Tom had a red ball! He threw it high.\n<|endoftext|>\nOnly one sentence.\n<|endoftext|>\n"
              "The last story was cut o")
    df = load_one(f"tinystories:{f}")
    assert df["prompt"].tolist() == ["Lily found a cat.", "Tom had a red ball!"]
    assert df["text"].tolist()[0] == 'She gave it milk. "Thank you," said Mom.'


GUTENBERG_BOOK = """The Project Gutenberg eBook of Fables
*** START OF THE PROJECT GUTENBERG EBOOK FABLES ***


The Fox And The Grapes

A hungry Fox saw some fine bunches of grapes hanging from a vine. He tried
and tried to reach them, but could not.

"They are sour," he said, and went away.


The Ant And The Dove

An Ant went to the bank of a river to quench its thirst, and was carried
away by the rush of the stream.

*** END OF THE PROJECT GUTENBERG EBOOK FABLES ***
Licence text that is not a fable.
"""


def test_text_loader_splits_by_titles_and_drops_gutenberg_header_footer(tmp_path):
    f = write(tmp_path / "fables.txt", GUTENBERG_BOOK)
    df = load_one(f"text:{f}?form=fable&genre=animals")
    assert df["prompt"].tolist() == ['Write a fable titled "The Fox And The Grapes".',
                                     'Write a fable titled "The Ant And The Dove".']
    assert "sour" in df.loc[0, "text"] and "Licence" not in " ".join(df["text"])
    assert set(df["form"]) == {"fable"} and set(df["genre"]) == {"animals"}


def test_text_loader_blocks_mode_with_first_line_prompts(tmp_path):
    f = write(tmp_path / "poems.txt", "Roses are red,\nviolets are blue.\n\n\nThe sea is wide,\nthe sky is high.\n")
    df = load_one(f"text:{f}?split=blocks&form=poem&prompt_from=first_line")
    assert df["prompt"].tolist() == ["Write a poem that begins: Roses are red,",
                                     "Write a poem that begins: The sea is wide,"]
    with pytest.raises(DataError, match=names("'split'", "'titles'", "'blocks'")):
        load_one(f"text:{f}?split=chapters")


def test_jsonl_with_column_mapping_and_derived_prompts(tmp_path):
    rows = [{"title": "The Golden Bird", "body": "A king had a garden.", "kind": "fairy tale"},
            {"title": "", "body": "A wolf met a lamb. It was hungry.", "kind": "fable", "ask": "Write about a wolf."}]
    f = write(tmp_path / "tales.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    df = load_one(f"jsonl:{f}?text=body&form=kind&prompt=ask")
    assert df["prompt"].tolist() == ['Write a fairy tale titled "The Golden Bird".', "Write about a wolf."]
    assert df["form"].tolist() == ["fairy tale", "fable"]


def test_jsonl_errors_name_the_line_and_the_column(tmp_path):
    f = write(tmp_path / "bad.jsonl", '{"text": "fine"}\n{"text": broken}\n')
    with pytest.raises(DataError, match=names("line 2", "JSON")):
        load_one(f"jsonl:{f}")
    g = write(tmp_path / "nocol.jsonl", '{"story": "x"}\n')
    with pytest.raises(DataError, match=names("'text'")):
        load_one(f"jsonl:{g}")


def test_csv_loader(tmp_path):
    f = tmp_path / "s.csv"
    pd.DataFrame({"q": ["Write a poem about rain.", "Write a story."], "a": ["Rain falls.", "Once."],
                  "g": ["nature", ""]}).to_csv(f, index=False)
    df = load_one(f"csv:{f}?prompt=q&text=a&genre=g&form_default=poem")
    assert df["prompt"].tolist()[0] == "Write a poem about rain."
    assert df["genre"].tolist() == ["nature", ""] and set(df["form"]) == {"poem"}


def test_hf_loader_reads_a_saved_dataset_directory(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"story": ["One day a girl found a map.", "The robot woke up."],
                                "id": ["a", "b"]}).save_to_disk(str(tmp_path / "ds"))
    df = load_one(f"hf:{tmp_path / 'ds'}?text=story&prompt_from=first_sentence")
    assert df["id"].tolist() == ["hf-ds-a", "hf-ds-b"]
    assert df["prompt"].tolist()[0] == "Write a story that begins: One day a girl found a map."


def test_hf_hub_id_offline_fails_fast_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(DataError, match=names("'someone/stories'")):
        load_one("hf:someone/stories:train")
    assert time.perf_counter() - started < 20  # never the long retry loop


def test_hf_hub_unreachable_is_detected_before_datasets_is_asked(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(loaders, "hub_reachable", lambda *a, **k: False)
    with pytest.raises(DataError, match="hub is unreachable"):
        load_one("hf:someone/stories")


def test_sources_combine_and_empty_input_is_an_error(wp_dir, tmp_path):
    df = load_sources([f"writingprompts:{wp_dir}", "builtin?n=3"])
    assert len(df) == 5 and df["id"].is_unique
    with pytest.raises(DataError, match="no dataset given"):
        load_sources([])
    empty = write(tmp_path / "empty.jsonl", "\n")
    with pytest.raises(DataError, match="has no pieces"):
        load_sources([f"jsonl:{empty}"])


def test_fingerprint_changes_when_a_file_changes(wp_dir):
    before = source_fingerprint([f"writingprompts:{wp_dir}"])
    assert before == source_fingerprint([f"writingprompts:{wp_dir}"])
    target = wp_dir / "train.wp_target"
    target.write_text(target.read_text() + "")
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    assert source_fingerprint([f"writingprompts:{wp_dir}"]) != before


@pytest.mark.shared_data
@pytest.mark.parametrize(("spec", "min_rows", "form"), [
    ("writingprompts:{d}/writingprompts", 450, "story"),
    ("tinystories:{d}/tinystories/TinyStories-train_first2MiB.txt", 2000, "story"),
    ("text:{d}/fairy_tales/aesop_townsend.txt?form=fable", 250, "fable"),
    ("text:{d}/fairy_tales/grimm_fairy_tales.txt?form=fairy tale", 55, "fairy tale"),
    ("text:{d}/sonnets/shakespeare_sonnets.txt?split=blocks&form=poem&prompt_from=first_line", 140, "poem"),
    ("jsonl:{d}/fairy_tales/fairy_tales.jsonl?form_default=fairy tale", 380, "fairy tale"),
])
def test_real_datasets_load(shared_datasets, spec, min_rows, form):
    df = load_one(spec.format(d=shared_datasets))
    assert len(df) >= min_rows
    assert set(df["form"]) == {form}
    assert not df["text"].str.contains("PROJECT GUTENBERG").any()
