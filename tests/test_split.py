import pytest

from corpus.builtin import generate_corpus
from corpus.schema import DataError
from corpus.split import assign_splits, bucket, split_fingerprint
from tests.conftest import names


def test_assignment_is_stable_and_independent_of_other_pieces():
    small = assign_splits(generate_corpus(200, seed=1))
    big = assign_splits(generate_corpus(400, seed=1))
    merged = small.merge(big, on="id", suffixes=("_small", "_big"))
    assert len(merged) == 200
    assert (merged["split_small"] == merged["split_big"]).all()  # adding data moves nothing
    assert assign_splits(generate_corpus(200, seed=1)).equals(small)


def test_shares_are_roughly_respected():
    df = assign_splits(generate_corpus(2000, seed=2), validation=0.1, test=0.2)
    shares = df["split"].value_counts(normalize=True)
    assert abs(shares["test"] - 0.2) < 0.03 and abs(shares["validation"] - 0.1) < 0.03


def test_salt_changes_the_assignment_and_bucket_is_in_unit_interval():
    df = generate_corpus(300, seed=3)
    assert not assign_splits(df, salt="a")["split"].equals(assign_splits(df, salt="b")["split"])
    assert all(0 <= bucket(str(i), "s") < 1 for i in range(100))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"validation": 0.0}, names("'validation'", "0", "1")),
    ({"test": 1.2}, names("'test'", "0", "1")),
    ({"validation": 0.5, "test": 0.5}, names("train")),
    ({"min_rows": 50}, names("min_rows=50")),
])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(DataError, match=message):
        assign_splits(generate_corpus(100, seed=4), **kwargs)


def test_fingerprint_follows_the_test_split_content():
    df = assign_splits(generate_corpus(200, seed=5))
    fp = split_fingerprint(df)
    assert fp == split_fingerprint(df.sample(frac=1.0, random_state=0))  # order does not matter
    changed = df.copy()
    idx = changed.index[changed["split"] == "test"][0]
    changed.loc[idx, "text"] += " More."
    assert split_fingerprint(changed) != fp
    train_changed = df.copy()
    train_changed.loc[train_changed.index[train_changed["split"] == "train"][0], "text"] += " More."
    assert split_fingerprint(train_changed) == fp
