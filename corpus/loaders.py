"""Loaders: every data source becomes one frame of the data contract (``corpus.schema``).

A source is named by a *spec*, ``SCHEME[:TARGET][?key=value&key=value]``:

=====================================  ==========================================================
``builtin?n=6000&seed=13``             the project's own procedural corpus (``corpus.builtin``)
``writingprompts:DIR?split=train``     fairseq WritingPrompts: ``DIR/{split}.wp_source`` + ``.wp_target``
``tinystories:FILE``                   stories separated by ``<|endoftext|>``; the first sentence becomes
                                       the prompt and the rest of the story the piece
``text:FILE?split=titles&form=fable``  a plain-text book: Gutenberg header/footer dropped, then split by
                                       title lines (``split=titles``) or blank-line blocks (``split=blocks``)
``jsonl:FILE?prompt=title&text=body``  one JSON object a line; column names configurable
``csv:FILE?prompt=title&text=body``    a CSV file with a header; column names configurable
``hf:NAME[:SPLIT]?text=story``         a Hugging Face dataset (hub id, or a directory from
                                       ``Dataset.save_to_disk``); fails fast when the hub is unreachable
=====================================  ==========================================================

Every loader accepts ``limit=N`` (keep the first N pieces). Sources without a prompt column derive one
(``prompt_from=title|first_sentence|first_line``; see each loader). Several specs combine by
concatenation; ids are prefixed by the source so they never collide.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

import pandas as pd

from core.network import hub_reachable
from corpus import builtin
from corpus.schema import COLUMNS, DataError, make_frame, validate_frame

Records = list[dict[str, str]]


@dataclass(frozen=True)
class Spec:
    """A parsed data-source spec."""

    scheme: str
    target: str = ""
    options: dict[str, str] = field(default_factory=dict)
    raw: str = ""

    def opt(self, key: str, default: str = "") -> str:
        """Returns option ``key`` or ``default``."""
        return self.options.get(key, default)

    def int_opt(self, key: str, default: int) -> int:
        """Returns option ``key`` as an int, with a clear error if it is not one."""
        value = self.options.get(key)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise DataError(f"{self.raw}: option '{key}' must be a whole number, got '{value}'") from None


def parse_spec(raw: str) -> Spec:
    """Parses ``SCHEME[:TARGET][?key=value&...]``.

    Args:
        raw: The spec as the user wrote it.

    Returns:
        The parsed spec.

    Raises:
        DataError: If the scheme is unknown or a required target is missing.
    """
    text = raw.strip()
    query = ""
    if "?" in text:
        text, query = text.split("?", 1)
    scheme, _, target = text.partition(":")
    scheme = scheme.strip().lower()
    if scheme not in LOADERS:
        raise DataError(f"unknown dataset scheme '{scheme}' in '{raw}'; known schemes: {', '.join(sorted(LOADERS))}")
    if scheme != "builtin" and not target:
        raise DataError(f"dataset spec '{raw}' needs a target, e.g. '{scheme}:path/to/file'")
    options = dict(parse_qsl(query, keep_blank_values=True))
    return Spec(scheme=scheme, target=target, options=options, raw=raw)


def _read_text(path: Path, where: str) -> str:
    """Reads a UTF-8 file with errors that name the file and the byte offset."""
    if not path.is_file():
        raise DataError(f"{where}: file not found: {path}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{where}: {path} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "re-encode it as UTF-8"
        ) from None


def _limit(records: Records, spec: Spec) -> Records:
    limit = spec.int_opt("limit", 0)
    return records[:limit] if limit > 0 else records


FIRST_SENTENCE = re.compile(r"^(.+?[.!?][\"'”’)]*)(\s+|$)", re.S)


def split_first_sentence(text: str) -> tuple[str, str]:
    """Splits ``text`` into its first sentence and the rest (a cheap rule: up to the first . ! or ?)."""
    stripped = text.strip()
    m = FIRST_SENTENCE.match(stripped)
    if not m:
        return stripped, ""
    return m.group(1).strip(), stripped[m.end():].strip()


def load_builtin(spec: Spec) -> Records:
    """The built-in procedural corpus; options ``n`` (pieces) and ``seed``."""
    n = spec.int_opt("n", 6000)
    seed = spec.int_opt("seed", 13)
    if n < 1:
        raise DataError(f"{spec.raw}: option 'n' must be at least 1, got {n}")
    return _limit([builtin.generate_piece(seed, i) for i in range(n)], spec)


def load_writingprompts(spec: Spec) -> Records:
    """Fairseq WritingPrompts: ``{split}.wp_source`` (prompts) and ``{split}.wp_target`` (stories).

    Text is kept as it is in the files (tokenised, ``<newline>`` markers, ``[ WP ]`` tags): the cleaning
    step undoes those artefacts, counted, like every other rule. Option ``split`` picks the file pair
    (default: the only pair in the directory, else ``train``).
    """
    root = Path(spec.target)
    if not root.is_dir():
        raise DataError(f"{spec.raw}: directory not found: {root}")
    split = spec.opt("split")
    if not split:
        pairs = sorted(p.stem for p in root.glob("*.wp_source"))
        split = pairs[0] if len(pairs) == 1 else "train"
    src, tgt = root / f"{split}.wp_source", root / f"{split}.wp_target"
    prompts = _read_text(src, spec.raw).splitlines()
    stories = _read_text(tgt, spec.raw).splitlines()
    if len(prompts) != len(stories):
        raise DataError(
            f"{spec.raw}: {src.name} has {len(prompts)} lines but {tgt.name} has {len(stories)}; "
            "they must pair line by line"
        )
    records = [
        {"id": f"wp-{split}-{i:07d}", "source": "writingprompts", "form": "story", "genre": "",
         "prompt": p, "text": s}
        for i, (p, s) in enumerate(zip(prompts, stories, strict=True))
        if p.strip() and s.strip()
    ]
    return _limit(records, spec)


def load_tinystories(spec: Spec) -> Records:
    """TinyStories-style text: stories separated by ``<|endoftext|>``.

    A story's first sentence becomes its prompt and the rest of the story its piece, so the model learns
    to continue from an opening line; stories with nothing after their first sentence are skipped. A
    story cut off at the end of the file (no closing punctuation) is dropped.
    """
    path = Path(spec.target)
    raw = _read_text(path, spec.raw)
    chunks = [c.strip() for c in raw.split("<|endoftext|>")]
    if chunks and chunks[-1] and not re.search(r"[.!?\"”']\s*$", chunks[-1]):
        chunks = chunks[:-1]  # the last story of a truncated sample
    records: Records = []
    for i, chunk in enumerate(chunks):
        if not chunk:
            continue
        first, rest = split_first_sentence(chunk)
        if not rest:
            continue
        records.append({"id": f"tinystories-{path.stem}-{i:07d}", "source": "tinystories", "form": "story",
                        "genre": spec.opt("genre"), "prompt": first, "text": rest})
    return _limit(records, spec)


GUTENBERG_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
GUTENBERG_END = re.compile(
    r"^(\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG.*|End of (the )?Project Gutenberg.*)$", re.M | re.I
)


def strip_gutenberg(text: str) -> str:
    """Removes a Project Gutenberg header (up to ``*** START OF ...``) and footer (from ``*** END OF ...``)."""
    start = GUTENBERG_START.search(text)
    if start:
        text = text[start.end():]
    end = GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text


def _is_title(line: str) -> bool:
    words = line.split()
    return (
        0 < len(words) <= 12
        and not re.search(r"[.,;:!?\"”]$", line.strip())
        and line.strip()[0].isalpha()
        and line.strip()[0].isupper()
    )


def split_by_titles(text: str, min_gap: int = 2) -> list[tuple[str, str]]:
    """Splits a book into ``(title, body)`` pieces.

    A title is a short line (≤ 12 words, starting with a capital, not ending in punctuation) with at
    least ``min_gap`` blank lines before it and a blank line after it.
    """
    lines = text.splitlines()
    titles: list[int] = []
    for i, line in enumerate(lines):
        if not line.strip() or not _is_title(line):
            continue
        before = i >= min_gap and all(not lines[j].strip() for j in range(i - min_gap, i))
        after = i + 1 < len(lines) and not lines[i + 1].strip()
        if before and after:
            titles.append(i)
    pieces = []
    for k, start in enumerate(titles):
        end = titles[k + 1] if k + 1 < len(titles) else len(lines)
        body = "\n".join(lines[start + 1: end]).strip()
        if body:
            pieces.append((lines[start].strip(), body))
    return pieces


def split_by_blocks(text: str) -> list[tuple[str, str]]:
    """Splits text into blank-line separated blocks; returns ``("", block)`` pairs."""
    return [("", b.strip()) for b in re.split(r"\n\s*\n", text) if b.strip()]


def _title_case(title: str) -> str:
    return title.title() if title.isupper() else title


def derive_prompt(form: str, title: str, body: str, how: str) -> str:
    """Writes a prompt for a piece that has none.

    Args:
        form: The piece's form (story, fable, poem, ...).
        title: Its title, possibly empty.
        body: Its text.
        how: ``title`` (“Write a fable titled …”), ``first_line`` (“Write a poem that begins: …”) or
            ``first_sentence``; ``title`` falls back to ``first_line`` when there is no title.

    Returns:
        The prompt.
    """
    if how == "title" and title:
        return f"Write {'an' if form[0] in 'aeiou' else 'a'} {form} titled \"{_title_case(title)}\"."
    if how == "first_sentence":
        first, _ = split_first_sentence(body)
        return f"Write {'an' if form[0] in 'aeiou' else 'a'} {form} that begins: {first}"
    first_line = next((ln.strip() for ln in body.splitlines() if ln.strip()), "")
    return f"Write {'an' if form[0] in 'aeiou' else 'a'} {form} that begins: {first_line}"


def load_text(spec: Spec) -> Records:
    """A plain-text book of tales, fables or poems.

    Options: ``split`` (``titles``, the default, or ``blocks``), ``form`` (default ``story``), ``genre``,
    ``prompt_from`` (``title``, ``first_line`` or ``first_sentence``; default ``title``), ``min_gap``
    (blank lines before a title, default 2). The Gutenberg header and footer are removed here because
    titles cannot be found inside the licence text; the cleaning step's ``gutenberg`` rule catches any
    boilerplate lines left inside pieces.
    """
    path = Path(spec.target)
    text = strip_gutenberg(_read_text(path, spec.raw).replace("\r\n", "\n"))
    mode = spec.opt("split", "titles")
    if mode == "titles":
        pieces = split_by_titles(text, min_gap=spec.int_opt("min_gap", 2))
    elif mode == "blocks":
        pieces = split_by_blocks(text)
    else:
        raise DataError(f"{spec.raw}: option 'split' must be 'titles' or 'blocks', got '{mode}'")
    if not pieces:
        raise DataError(f"{spec.raw}: found no pieces in {path} with split={mode}")
    form, how = spec.opt("form", "story"), spec.opt("prompt_from", "title")
    records = [
        {"id": f"text-{path.stem}-{i:06d}", "source": path.stem, "form": form, "genre": spec.opt("genre"),
         "prompt": derive_prompt(form, title, body, how), "text": body}
        for i, (title, body) in enumerate(pieces)
    ]
    return _limit(records, spec)


def _map_columns(rows: list[dict], spec: Spec, where: str) -> Records:
    """Maps user columns onto the contract (``prompt=COL&text=COL&id=COL&form=COL&genre=COL&title=COL``)."""
    if not rows:
        return []
    cols = {c: spec.opt(c, c) for c in ("id", "prompt", "text", "form", "genre", "title", "source")}
    have = set(rows[0])
    if cols["text"] not in have:
        raise DataError(f"{where}: no text column '{cols['text']}' (columns: {sorted(have)}); set text=COLUMN")
    form_default, how = spec.opt("form_default", "story"), spec.opt("prompt_from", "title")
    records: Records = []
    stem = Path(spec.target).stem or spec.scheme
    for i, row in enumerate(rows):
        text = str(row.get(cols["text"]) or "")
        form = str(row.get(cols["form"]) or form_default)
        prompt = row.get(cols["prompt"])
        if prompt is None or (isinstance(prompt, float) and pd.isna(prompt)) or not str(prompt).strip():
            prompt = derive_prompt(form, str(row.get(cols["title"]) or ""), text, how)
        source = str(row.get(cols["source"]) or stem)
        rid = row.get(cols["id"])
        records.append({
            "id": f"{spec.scheme}-{stem}-{rid if rid not in (None, '') else f'{i:07d}'}",
            "source": source, "form": form, "genre": str(row.get(cols["genre"]) or ""),
            "prompt": str(prompt), "text": text,
        })
    return records


def load_jsonl(spec: Spec) -> Records:
    """One JSON object per line; see :func:`_map_columns` for the column options."""
    path = Path(spec.target)
    rows = []
    for n, line in enumerate(_read_text(path, spec.raw).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{spec.raw}: {path} line {n} is not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{spec.raw}: {path} line {n} is a JSON {type(obj).__name__}, expected an object")
        rows.append(obj)
    return _limit(_map_columns(rows, spec, f"{spec.raw} ({path})"), spec)


def load_csv(spec: Spec) -> Records:
    """A CSV file with a header row; see :func:`_map_columns` for the column options."""
    path = Path(spec.target)
    text = _read_text(path, spec.raw)
    try:
        from io import StringIO

        frame = pd.read_csv(StringIO(text), dtype=str, keep_default_na=False, sep=spec.opt("sep", ","))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{spec.raw}: {path} is not a readable CSV ({exc})") from None
    return _limit(_map_columns(frame.to_dict("records"), spec, f"{spec.raw} ({path})"), spec)


def load_hf(spec: Spec) -> Records:
    """A Hugging Face dataset: ``hf:NAME[:SPLIT]``, NAME a hub id or a ``save_to_disk`` directory.

    With no network the hub path fails at once with a clear message (``HF_HUB_OFFLINE=1`` is honoured,
    and otherwise the hub is probed with a 3 s connection before ``datasets`` is asked, so the call
    never hangs in retries). Column options as for jsonl/csv.
    """
    import datasets

    name, _, split = spec.target.partition(":")
    split = split or spec.opt("split", "train")
    local = Path(name)
    if local.is_dir():
        loaded = datasets.load_from_disk(str(local))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"{spec.raw}: split '{split}' not in {local} (splits: {sorted(loaded)})")
            loaded = loaded[split]
    else:
        offline = os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "True") or os.environ.get(
            "HF_DATASETS_OFFLINE", "") in ("1", "true", "True")
        if not offline and not hub_reachable():
            raise DataError(
                f"{spec.raw}: the Hugging Face hub is unreachable, so dataset '{name}' cannot be downloaded. "
                "Download it where you are online (Dataset.save_to_disk) and use hf:DIR, or export it to "
                "jsonl/csv and use those loaders"
            )
        try:
            loaded = datasets.load_dataset(name, split=split)
        except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, ...)
            raise DataError(
                f"{spec.raw}: could not load Hugging Face dataset '{name}' split '{split}': {exc}"
            ) from None
    return _limit(_map_columns(list(loaded), spec, spec.raw), spec)


LOADERS: dict[str, Callable[[Spec], Records]] = {
    "builtin": load_builtin,
    "writingprompts": load_writingprompts,
    "tinystories": load_tinystories,
    "text": load_text,
    "jsonl": load_jsonl,
    "csv": load_csv,
    "hf": load_hf,
}


# Schemes whose target is a local file or directory (run.py checks these exist before a pipeline starts).
LOCAL_SCHEMES: frozenset[str] = frozenset({"writingprompts", "tinystories", "text", "jsonl", "csv"})


def load_one(raw_spec: str) -> pd.DataFrame:
    """Loads one source spec into a frame of the data contract."""
    spec = parse_spec(raw_spec)
    return make_frame(LOADERS[spec.scheme](spec), where=raw_spec)


def load_sources(specs: list[str] | str) -> pd.DataFrame:
    """Loads and concatenates several sources.

    Args:
        specs: One spec or a list of specs.

    Returns:
        One frame of the data contract.

    Raises:
        DataError: If there are no specs, a source fails to load, or the sources together are empty.
    """
    if isinstance(specs, str):
        specs = [specs]
    if not specs:
        raise DataError("no dataset given: pass at least one source spec, e.g. 'builtin'")
    frames = [load_one(s) for s in specs]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if frame.empty:
        raise DataError(f"the dataset {specs} has no pieces")
    return validate_frame(frame, where=" + ".join(specs))


def source_fingerprint(specs: list[str] | str) -> str:
    """A short fingerprint of the files behind the specs (path, size, modification time).

    Passed to the ingest step as a parameter so that ZenML's cache notices edited data files.
    """
    if isinstance(specs, str):
        specs = [specs]
    h = hashlib.sha256()
    for raw in specs:
        h.update(raw.encode())
        spec = parse_spec(raw)
        target = Path(spec.target.split(":")[0]) if spec.target else None
        if target is None or not target.exists():
            continue
        files = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
        for p in files:
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


__all__ = ["COLUMNS", "LOADERS", "Spec", "load_one", "load_sources", "parse_spec", "source_fingerprint"]
