"""Batch generation for a file of prompts (the inference pipeline's logic, free of ZenML).

Prompt files:

- **text** (``.txt`` or any other suffix): one prompt per non-empty line; lines starting with ``#`` are
  comments;
- **JSONL** (``.jsonl``): one object per line with ``prompt`` and optionally ``id``, ``form``, ``genre``
  and ``seed``.

Every prompt is checked like an HTTP request (:func:`serving.schemas.check_prompt`); a bad line fails the
whole file with its line number, before any generation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from serving.planner import BatchGeneration, RequestError, RequestPlanner

log = logging.getLogger(__name__)

COLUMNS = ["id", "prompt", "form", "genre", "seed"]
MAX_PROMPTS = 100_000


class PromptFileError(ValueError):
    """A prompts file is missing, empty or has a bad line; the message names the file and line."""


def file_fingerprint(path: Path) -> str:
    """SHA-256 of the file's bytes (the inference pipeline's cache key for its prompts)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_prompts(path: Path, max_prompt_chars: int = 1000, reject_emoji: bool = True) -> pd.DataFrame:
    """Reads a text or JSONL prompts file into ``id, prompt, form, genre, seed`` rows.

    Missing ``form`` is ``story``, missing ``genre`` empty, missing ``seed`` -1 (the default seed).

    Raises:
        PromptFileError: If the file is missing or empty, or a line is malformed (file and line named).
    """
    from serving.schemas import check_prompt

    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"prompts file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise PromptFileError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    jsonl = path.suffix.lower() == ".jsonl"
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        where = f"{path}:{number}"
        if not line.strip() or (not jsonl and line.lstrip().startswith("#")):
            continue
        row: dict[str, Any] = {"id": f"p{len(rows) + 1}", "form": "story", "genre": "", "seed": -1}
        if jsonl:
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PromptFileError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(data, dict) or "prompt" not in data:
                raise PromptFileError(f"{where}: expected an object with a 'prompt' field")
            unknown = sorted(set(data) - set(COLUMNS))
            if unknown:
                raise PromptFileError(f"{where}: unknown field(s) {unknown}; allowed: {COLUMNS}")
            for key in ("prompt", "form", "genre", "id"):
                if key in data and not isinstance(data[key], str):
                    raise PromptFileError(f"{where}: '{key}' must be a string")
            if "seed" in data and (not isinstance(data["seed"], int) or isinstance(data["seed"], bool)
                                   or data["seed"] < 0):
                raise PromptFileError(f"{where}: 'seed' must be an integer ≥ 0")
            row.update(data)
        else:
            row["prompt"] = line
        if len(row["prompt"]) > max_prompt_chars:
            raise PromptFileError(f"{where}: prompt of {len(row['prompt'])} characters (limit {max_prompt_chars})")
        try:
            row["prompt"] = check_prompt(row["prompt"], reject_emoji)
        except ValueError as exc:
            raise PromptFileError(f"{where}: {exc}") from None
        row["form"], row["genre"] = row["form"].strip().lower(), row["genre"].strip().lower()
        rows.append(row)
        if len(rows) > MAX_PROMPTS:
            raise PromptFileError(f"{path}: more than {MAX_PROMPTS} prompts; split the file")
    if not rows:
        raise PromptFileError(f"{path}: no prompts (empty lines and # comments are skipped)")
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if frame["id"].duplicated().any():
        raise PromptFileError(f"{path}: duplicate id(s) {sorted(frame.loc[frame['id'].duplicated(), 'id'])[:5]}")
    return frame


def generate_for_prompts(model: Any, prompts: pd.DataFrame, generation: BatchGeneration, provenance: dict[str, Any],
                         batch_size: int = 16, progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """One generation per prompt row, with the settings and provenance on every row.

    Each form and genre is planned like an HTTP request (:class:`~serving.planner.RequestPlanner`, with the
    code's serving defaults: the same prompt, seed and settings write the same text here and from the API).
    Rows are batched by form and genre (through :meth:`~models.contract.WriterModel.generate_rows`, so a
    row's text depends only on its prompt, seed and settings). Forms and genres are checked against the
    model first.

    Args:
        model: A model-contract object.
        prompts: Rows from :func:`read_prompts`.
        generation: The run's settings (a row's seed ≥ 0 replaces ``generation.seed``).
        provenance: What wrote the text (family, registry version, alias, run ids).
        batch_size: Rows per model call.
        progress: Called with (rows done, rows total) after each batch.

    Raises:
        ValueError: If a row's form or genre is unknown to the model (row id named).
    """
    planner = RequestPlanner()
    controls = model.controls()
    out = prompts.copy()
    out["seed"] = [int(s) if s >= 0 else generation.seed for s in out["seed"]]
    groups = list(out.groupby(["form", "genre"], sort=False))  # in order of first appearance
    planned = []  # every group is planned (its form and genre checked) before anything is written
    for (form, genre), group in groups:
        try:
            planned.append(planner.settings(generation, generation.seed, controls, form=form, genre=genre,
                                            vocab_size=int(getattr(model, "vocab_size", 0) or 0),
                                            words=getattr(model, "word_token_ids", None),
                                            **generation.fixed()))
        except RequestError as exc:  # the group's first row is the file's first row with this problem
            raise ValueError(f"prompt {group['id'].iloc[0]}: {exc}") from None
    shared = {k: v for k, v in planned[0].model_dump().items() if k not in {"seed", "form", "genre"}} if planned else {}
    texts: dict[int, str] = {}
    done, total = 0, len(out)
    started = time.perf_counter()
    for (_, group), group_settings in zip(groups, planned, strict=True):
        for start in range(0, len(group), batch_size):
            part = group.iloc[start: start + batch_size]
            for index, text in zip(part.index, model.generate_rows(list(zip(part["prompt"], part["seed"],
                                                                            strict=True)), group_settings),
                                   strict=True):
                texts[index] = text
            done += len(part)
            if progress is not None:
                progress(done, total)
    out["text"] = [texts[i] for i in out.index]
    out["tokens"] = [model.count_tokens(t) for t in out["text"]]
    out["seconds"] = round(time.perf_counter() - started, 3)
    for key in ("family", "registered_name", "version", "alias", "training_run_id", "mlflow_run_id", "runtime",
                "served_file"):
        out[key] = str(provenance.get(key, ""))
    out["settings"] = json.dumps(shared, sort_keys=True)
    return out


def write_generations(frame: pd.DataFrame, path: Path) -> Path:
    """Writes generations as JSONL (``.jsonl``) or CSV (``.csv``), replacing the file atomically."""
    path = Path(path)
    if path.suffix.lower() not in {".jsonl", ".csv"}:
        raise ValueError(f"output {path}: use a .jsonl or .csv file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    if path.suffix.lower() == ".csv":
        frame.to_csv(tmp, index=False)
    else:
        frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
    tmp.replace(path)
    return path


def generations_html(frame: pd.DataFrame, limit: int = 200) -> str:
    """A readable page of generations: what wrote them, then prompt and text for each row."""
    from html import escape

    from corpus.html_parts import STYLE

    first = frame.iloc[0] if len(frame) else {}
    head = (f"{escape(str(first.get('family', '')))} · {escape(str(first.get('registered_name', '')))} "
            f"v{escape(str(first.get('version', '')))} @{escape(str(first.get('alias', '')))}") if len(frame) else ""
    rows = "".join(
        f"<tr><td>{escape(str(r.id))}</td><td>{escape(r.prompt)}<br><small>{escape(r.form)} {escape(r.genre)} · "
        f"seed {r.seed}</small></td><td style='white-space:pre-wrap'>{escape(r.text)}</td><td>{r.tokens}</td></tr>"
        for r in frame.head(limit).itertuples())
    more = f"<p>… and {len(frame) - limit} more rows in the artifact.</p>" if len(frame) > limit else ""
    settings = escape(str(first.get("settings", ""))) if len(frame) else ""
    return (f"<html><head><meta charset='utf-8'><style>{STYLE}</style></head><body>"
            f"<h1>Generations ({len(frame)})</h1><p>Written by <b>{head}</b>; settings {settings}.</p>"
            f"<table><tr><th>id</th><th>prompt</th><th>text</th><th>tokens</th></tr>{rows}</table>{more}"
            "</body></html>")
