"""The manuscript's logic (context, undo/redo, saved stories, export) and the token-probability report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.contract import GenerationSettings
from models.sampling import TokenChance, token_chances
from serving.manuscript import (
    MAX_STORIES,
    apply_turn,
    build_context,
    chances_html,
    export_story,
    new_story,
    redo,
    save_story,
    story_choices,
    undo,
)
from tests.conftest import names


def words(text: str) -> int:  # a stand-in tokenizer: one token per word
    return len(text.split())


MANUSCRIPT = ("The mill stood still all winter. Nobody came.\n\nIn spring a girl named Wren climbed the hill. "
              "She found the door open. Inside, flour lay like snow.")


def test_context_keeps_memory_first_the_manuscript_end_and_the_note_before_the_last_paragraph():
    ctx = build_context("Wren is twelve.", MANUSCRIPT, "Keep it gentle.", budget=200, count=words, max_chars=1000)
    assert ctx.prompt.startswith("Wren is twelve.\n\nThe mill stood still")
    assert ctx.prompt.index("[Author's note: Keep it gentle.]") < ctx.prompt.index("In spring a girl")
    assert ctx.left_out_chars == 0 and ctx.tokens == words(ctx.prompt) and ctx.tokens <= ctx.budget
    assert "of 200 tokens" in ctx.describe()


def test_context_drops_the_manuscript_start_when_it_does_not_fit():
    ctx = build_context("Wren is twelve.", MANUSCRIPT, "Keep it gentle.", budget=16, count=words, max_chars=1000)
    assert ctx.tokens <= 16 and ctx.prompt.startswith("Wren is twelve.")  # the memory always stays
    assert ctx.prompt.rstrip().endswith("flour lay like snow.")  # the end of the manuscript stays
    assert "The mill" not in ctx.prompt and ctx.left_out_chars > 0
    assert "do not fit" in ctx.describe()
    chars = build_context("", MANUSCRIPT, "", budget=10_000, count=words, max_chars=60)
    assert len(chars.prompt) <= 60 and chars.prompt.endswith("snow.")
    one_paragraph = build_context("", "She ran. She hid. She waited.", "Fear.", 100, words, 1000).prompt
    assert one_paragraph == "She ran. She hid.\n[Author's note: Fear.]\nShe waited."


def test_undo_removes_a_turn_after_the_writers_edits_and_redo_puts_it_back():
    story = new_story("Mill")
    story = apply_turn(story, "", "Once there was a mill.", {"kind": "generate", "seed": 1})
    story = apply_turn(story, "Once there was a mill.", "Once there was a mill. It turned.", {"kind": "continue"})
    edited = "Once there was an old mill. It turned."  # the writer edits before the model's text
    back = undo(story, edited)
    assert back["text"] == "Once there was an old mill." and len(back["turns"]) == 1
    again = redo(back, back["text"])
    assert again["text"] == edited and len(again["turns"]) == 2 and again["redo"] == []
    first = undo(undo(again, again["text"]), "Once there was an old mill.")
    assert first["text"] == "" and first["turns"] == []  # the first turn wrote everything
    with pytest.raises(ValueError, match=names("undo")):
        undo(first, "")
    with pytest.raises(ValueError, match=names("redo")):
        redo(story, story["text"])
    replaced = apply_turn(story, story["text"], "A new piece.", {"kind": "generate"})
    assert undo(replaced, "A new piece, edited.")["text"] == story["text"]  # a replacement goes back whole


def test_saved_stories_are_listed_newest_first_and_capped():
    stories: dict = {}
    for i in range(MAX_STORIES + 3):
        stories = save_story(stories, {**new_story(f"Story {i}"), "text": f"text {i}"})
    labels = [label for label, _ in story_choices(stories)]
    assert len(stories) == MAX_STORIES and labels[0].startswith(f"Story {MAX_STORIES + 2}")
    untitled = save_story({}, {**new_story(), "text": "one two three four five six seven eight"})
    assert story_choices(untitled)[0][0].startswith("one two three four five six…")
    assert story_choices({"junk": "not a story"}) == []


def test_export_keeps_every_turns_provenance(tmp_path):
    story = apply_turn(new_story("The Mill"), "", "It turned.", {
        "kind": "generate", "seed": 7, "provenance_line": "Written by transformer · creative-writer v8 @champion",
        "settings": {"temperature": 0.8}, "provenance": {"version": "8"}})
    data = json.loads(export_story(story, "json", tmp_path).read_text())
    assert data["text"] == "It turned." and data["turns"][0]["seed"] == 7
    assert data["turns"][0]["provenance"] == {"version": "8"} and "before" not in data["turns"][0]
    md = export_story(story, "md", tmp_path).read_text()
    assert md.startswith("# The Mill") and "seed 7 · Written by transformer · creative-writer v8" in md
    with pytest.raises(ValueError, match="empty"):
        export_story(new_story(), "md", tmp_path)
    with pytest.raises(ValueError, match=names("format")):
        export_story(story, "docx", tmp_path)


def test_token_chances_follow_the_sampling_settings():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 0.0, 0.0]])
    decode = lambda ids: "abcd"[ids[0]]  # noqa: E731
    plain = token_chances(logits, [1, 1], GenerationSettings(temperature=1.0, top_k=0, top_p=1.0,
                                                             repetition_penalty=1.0), decode, top=2)
    assert plain[0].text == "b" and plain[0].p == pytest.approx(float(torch.softmax(logits[0], -1)[1]), abs=1e-4)
    assert [a for a, _ in plain[0].alternatives] == ["a", "b"]
    greedy = token_chances(logits, [1, 1], GenerationSettings(top_k=1, repetition_penalty=1.0), decode)
    assert greedy[0].p == 0.0 and greedy[1].p == 1.0  # top-k 1 could never have drawn "b" first
    penalised = token_chances(logits, [1, 1], GenerationSettings(temperature=1.0, top_k=0, top_p=1.0,
                                                                 repetition_penalty=3.0), decode)
    assert penalised[1].p < plain[1].p  # the second "b" repeats the first


def test_chances_html_marks_the_unsure_tokens():
    page = chances_html([TokenChance("The", 0.9, (("The", 0.9),)), TokenChance(" <mill>", 0.1,
                                                                                 (("barn", 0.5), ("<mill>", 0.1)))])
    assert page.count("class='tok") == 2 and page.count("class='tok unsure'") == 1 and "1 below 30%" in page
    assert "&lt;mill&gt;" in page and "data-p='0.1000'" in page and "barn" in page
    assert "Nothing written yet" in chances_html([])


def test_token_chances_agree_with_the_models_own_score(tiny_tokenizer):
    import math

    from tests.conftest import tiny_writer

    writer = tiny_writer(tiny_tokenizer)
    prompt, text = "A fox finds a key.", "The fox ran to the old mill and hid."
    raw = GenerationSettings(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, form="story")
    chances = writer.token_chances(prompt, text, raw)
    assert "".join(c.text for c in chances) == text
    nll, _ = writer.score([prompt], [text])[0]  # the same tokens plus the end token
    written = -sum(math.log(c.p) for c in chances)
    assert 0 < written < nll and nll - written < 15  # the end token's share is what is left
    assert all(c.alternatives[0][1] >= c.p for c in chances)
    assert writer.prompt_window() > 0


# --- the session object behind the Manuscript tab (plain Python: no Gradio, no model) ---

def _readers():
    from serving.session import Reader

    piece = Reader(count=words, window=40)  # a family that writes a piece for a prompt

    def last_words(text: str) -> tuple[int, int]:  # reads the last 5 words of a text
        tail = " ".join(text.split()[-5:])
        return len(tail.split()), len(tail)

    causal = Reader(count=words, window=40, writes_on=True, lead_window=5, lead_span=last_words)
    return piece, causal


def test_a_session_refuses_turns_it_cannot_write_before_the_model_is_asked():
    from serving.session import ManuscriptSession

    piece, _ = _readers()
    empty = ManuscriptSession()
    with pytest.raises(ValueError):
        empty.start_turn("continue", "A mill.", piece)  # nothing to continue
    with pytest.raises(ValueError):
        empty.start_turn("generate", "  ", piece)  # nothing to write about
    assert not empty.worth_saving() and empty.edit(text="A start.").worth_saving()


def test_a_session_builds_each_turns_context_and_joins_the_written_text():
    from serving.session import WRITE_ON, ManuscriptSession

    piece, causal = _readers()
    session = ManuscriptSession().edit(text=MANUSCRIPT, memory="Wren is twelve.", note="Keep it gentle.")
    generate = session.start_turn("generate", "A girl finds a mill.", piece)
    assert generate.context.prompt == "Wren is twelve.\n\nA girl finds a mill." and not generate.wrote_on
    assert generate.grown("  A new piece. ") == "A new piece."  # Generate replaces the text
    cont = session.start_turn("continue", "", piece)  # a piece for the manuscript's end, with the note in it
    assert "[Author's note: Keep it gentle.]" in cont.context.prompt and cont.context.tokens <= 40
    assert cont.grown("She sneezed.") == MANUSCRIPT + " She sneezed."
    on = session.start_turn("continue", "", causal)  # a causal LM writes on from the text itself
    assert on.wrote_on and on.lead == MANUSCRIPT
    assert on.context.prompt == f"Wren is twelve.\n\n{WRITE_ON}\n\n[Author's note: Keep it gentle.]"
    assert on.grown(" She sneezed.") == MANUSCRIPT + " She sneezed."
    assert "**5 of 5 tokens**" in session.budget_line(causal, "")
    assert "beyond its window" in session.budget_line(causal, "")
    assert session.budget_line(piece, "") == session.context(piece, MANUSCRIPT, "Keep it gentle.").describe()


def test_a_sessions_turns_are_recorded_undone_redone_and_read_again():
    from serving.session import ManuscriptSession

    _, causal = _readers()
    session = ManuscriptSession(max_prompt_chars=1000).edit(text="The mill stood still.", title="Mill")
    turn = session.start_turn("continue", "A mill in winter.", causal)
    settings = {**GenerationSettings(seed=7).model_dump(), "lead": "dropped"}
    meta = session.finish_turn(turn, " Nobody came.", settings, {"family": "transformer"}, "Written by transformer")
    assert session.text == "The mill stood still. Nobody came." and session.prompt == "A mill in winter."
    assert meta["seed"] == 7 and "lead" not in meta["settings"] and session.last_provenance == "Written by transformer"
    prompt, written, again = session.last_passage()
    assert (prompt, written, again["lead"]) == (turn.context.prompt, " Nobody came.", "The mill stood still.")
    assert GenerationSettings.from_dict(again).seed == 7  # what the token-probability view reads back
    assert session.undo().text == "The mill stood still." and session.last_passage() is None
    assert session.redo().text == "The mill stood still. Nobody came."
    caller = {"text": "kept", "turns": []}
    ManuscriptSession(caller).edit(text="changed")
    assert caller["text"] == "kept"  # the session works on its own copy


def test_a_session_leaves_out_what_a_prompt_may_not_hold():
    from serving.session import ManuscriptSession

    piece, _ = _readers()
    session = ManuscriptSession().edit(text="The mill 🌾 stood still.", memory="Wren 🙂 is twelve.")
    prompt = session.start_turn("continue", "", piece).context.prompt
    assert "🌾" not in prompt and "🙂" not in prompt and "stood still." in prompt
    assert "🌾" in ManuscriptSession(reject_emoji=False).edit(text="A 🌾 mill.").start_turn(
        "continue", "", piece).context.prompt


def test_the_lorebook_puts_in_the_entries_the_recent_text_calls_for():
    from serving.manuscript import active_lore, lorebook_text, parse_lorebook

    entries = parse_lorebook("Wren, fox: Wren is a fox who keeps secrets.\n* Mill: The mill burned in winter.\n"
                             "The valley is cold.\nOtter: Otter owes Wren a favour.")
    assert [e["pinned"] for e in entries] == [False, True, True, False]
    assert parse_lorebook(lorebook_text(entries)) == entries
    active = active_lore(entries, "At dawn the FOX crossed the river.")
    assert [e["content"] for e in active] == ["Wren is a fox who keeps secrets.", "The mill burned in winter.",
                                              "The valley is cold."]
    assert "Otter owes" not in " ".join(e["content"] for e in active_lore(entries, "the otters swam"))  # whole words
    with pytest.raises(ValueError, match="line 1"):
        parse_lorebook("Wren:")


def test_lore_joins_the_memory_part_and_the_budget_line_counts_it():
    from serving.session import ManuscriptSession, Reader

    session = ManuscriptSession(new_story()).edit(text="Wren ran to the river.", memory="A fable.",
                                                 lorebook="Wren: Wren is a fox.\nOtter: Otter is sly.")
    reader = Reader(count=words, window=60)
    context = session.context(reader, session.text)
    assert context.prompt.startswith("A fable.\n[Wren is a fox.]") and "Otter is sly" not in context.prompt
    assert "lorebook: 1 of 2 entries" in session.budget_line(reader, "")


def test_the_authors_note_goes_as_deep_as_asked():
    from serving.manuscript import NOTE_FORMAT, build_context

    text = "One.\n\nTwo.\n\nThree."
    marker = NOTE_FORMAT.format("be brief")
    at = {depth: build_context("", text, "be brief", 100, words, 10_000, depth).prompt for depth in (0, 1, 2, 5)}
    assert at[0].endswith(marker) and at[1].index(marker) < at[1].index("Three.")
    assert at[1].index("Two.") < at[1].index(marker) and at[2].index(marker) < at[2].index("Two.")
    assert at[5].startswith(marker)


def test_a_rewritten_generate_turn_becomes_edited_feedback_once_and_other_edits_do_not():
    from serving.session import ManuscriptSession
    from workspace.traffic import FeedbackIn

    piece, causal = _readers()
    rid = "ab" * 16
    session = ManuscriptSession(max_prompt_chars=1000)
    turn = session.start_turn("generate", "A mill in winter.", piece)
    settings = GenerationSettings(seed=3, form="fable").model_dump()
    session.finish_turn(turn, "The mill stood still. Nobody came.", settings, {}, "", rid)
    assert session.edited_turn() is None  # untouched
    assert session.edit(text=session.text + " Then spring.").edited_turn() is None  # only written on after it
    rewrite = session.edit(text="The mill stood still until Wren came with oil.").edited_turn()
    verdict = FeedbackIn(**rewrite)  # what /feedback takes
    assert (verdict.kind, verdict.request_id, verdict.prompt, verdict.form) == ("edited", rid, "A mill in winter.",
                                                                               "fable")
    assert verdict.text == "The mill stood still. Nobody came." and verdict.edited.endswith("with oil.")
    session.mark_edited()
    assert session.edited_turn() is None and session.story["turns"][-1]["edited"] is True  # sent once
    cont = session.start_turn("continue", "", causal)  # a Continue wrote on from the writer's text: no pair
    session.finish_turn(cont, " It creaked.", settings, {}, "", rid)
    assert session.edit(text="Something else entirely.").edited_turn() is None
    old = ManuscriptSession({"text": "Other words.", "turns": [{"kind": "generate", "written": "A piece."}]})
    assert old.edited_turn() is None  # a turn from before the request log had ids


def test_retry_keeps_every_draft_of_a_turn_to_swipe_between_and_a_swipe_never_loses_an_edit():
    from serving.session import MAX_ALTERNATIVES, ManuscriptSession

    _, causal = _readers()
    settings = GenerationSettings(seed=7).model_dump()
    session = ManuscriptSession(max_prompt_chars=1000).edit(text="The mill stood still.")
    with pytest.raises(ValueError, match=names("retry")):
        session.retry_turn(causal)
    session.finish_turn(session.start_turn("continue", "A mill in winter.", causal), " Nobody came.", settings, {}, "")
    session.edit(text="The old mill stood still. Nobody came.")  # the writer's edit before the turn ...
    turn, replaced = session.retry_turn(causal)
    assert session.text == "The old mill stood still." and replaced["written"] == " Nobody came."  # ... stays
    assert turn.kind == "continue" and session.story["redo"] == []  # the retried text is a draft, not a redo
    session.finish_turn(turn, " Snow fell.", settings, {}, "", replaces=replaced)
    last = session.story["turns"][-1]
    assert session.text == "The old mill stood still. Snow fell." and len(session.story["turns"]) == 1
    assert (last["alternatives"], last["kept"]) == ([" Nobody came.", " Snow fell."], 1)
    assert session.drafts_line() == "Draft 2 of 2 of the last turn"
    assert session.swipe(-1).text == "The old mill stood still. Nobody came." and session.drafts_line().startswith(
        "Draft 1 of 2")
    assert session.swipe(1).text == "The old mill stood still. Snow fell."
    assert session.undo().text == "The old mill stood still." and session.drafts_line() == ""
    session.redo()
    session.edit(text=session.text + " I wrote this.")
    with pytest.raises(ValueError, match=names("edits")):
        session.swipe(1)  # the writer's words after the turn would be lost
    generated = ManuscriptSession(max_prompt_chars=1000)
    generated.finish_turn(generated.start_turn("generate", "A mill.", causal), "Piece one.", settings, {}, "")
    for i in range(MAX_ALTERNATIVES + 2):  # a Generate turn replaces the text; the drafts are capped
        turn, replaced = generated.retry_turn(causal)
        generated.finish_turn(turn, f"Piece {i + 2}.", settings, {}, "", replaces=replaced)
    drafts = generated.story["turns"][-1]["alternatives"]
    assert len(drafts) == MAX_ALTERNATIVES and drafts[-1] == generated.text == f"Piece {MAX_ALTERNATIVES + 3}."
    assert generated.swipe(1).text == drafts[0]  # past the last draft: back to the first


def test_a_swipe_back_to_a_draft_gives_the_text_that_draft_wrote_to_the_character():
    from serving.session import ManuscriptSession

    piece, _ = _readers()  # a family that does not write on from the text: its drafts are kept stripped
    settings = GenerationSettings(seed=7).model_dump()
    session = ManuscriptSession(max_prompt_chars=1000).edit(text="The mill stood still.")
    session.finish_turn(session.start_turn("continue", "A mill.", piece), "Nobody came.\n", settings, {}, "")
    first = session.text
    turn, replaced = session.retry_turn(piece)
    session.finish_turn(turn, " Snow fell. \n\n", settings, {}, "", replaces=replaced)
    second = session.text
    assert (first, second) == ("The mill stood still. Nobody came.", "The mill stood still. Snow fell.")
    assert session.swipe(-1).text == first and session.swipe(1).text == second


def test_the_download_is_rewritten_in_one_folder_per_story_and_the_folder_goes_with_the_tab():
    import gc

    from serving.config import load_serving_config
    from serving.ui import build_ui

    blocks = build_ui(lambda: None, load_serving_config(env={}))  # the engine is not asked for an export
    tab = next(fn for fn in blocks.fns.values() if getattr(fn.fn, "__name__", "") == "exported").fn.__self__
    story = {**new_story("The Mill"), "text": "The mill stood still."}
    paths = [tab.exported({tab.story: {**story, "text": story["text"] + " More." * i}, tab.fmt: "md"})
             for i in range(5)]
    other = tab.exported({tab.story: {**new_story("The Mill"), "text": "Another."}, tab.fmt: "json"})
    assert len(set(paths)) == 1 and "More. More. More. More." in Path(paths[0]).read_text()
    assert sorted(p.name for p in tab.exports.iterdir()) == sorted([story["id"], other.split("/")[-2]])
    assert tab.exported({tab.story: new_story(), tab.fmt: "md"}) is None  # nothing to download yet
    folder = tab.exports
    del tab, blocks
    gc.collect()
    assert not folder.exists()


def test_the_draft_kept_after_a_retry_is_a_verdict_only_for_a_generate_turn_the_writer_went_on_with():
    from serving.session import ManuscriptSession

    piece, causal = _readers()
    settings = GenerationSettings(seed=7).model_dump()
    rid = ["a" * 32, "b" * 32]
    session = ManuscriptSession(max_prompt_chars=1000)
    session.finish_turn(session.start_turn("generate", "A mill.", piece), "Nobody came.", settings, {}, "", rid[0])
    assert session.kept_draft(going_on=True) is None  # one draft: nothing was chosen
    turn, replaced = session.retry_turn(piece)
    session.finish_turn(turn, "Snow fell.", settings, {}, "", rid[1], replaces=replaced)
    assert session.story["turns"][-1]["request_ids"] == rid and session.kept_draft() is None  # not gone on yet
    assert session.swipe(-1).story["turns"][-1]["request_id"] == rid[0]  # a swipe names the draft's own row
    verdict = session.kept_draft(going_on=True)
    assert verdict is not None and (verdict["kind"], verdict["request_id"], verdict["text"], verdict["others"]) == (
        "kept", rid[0], "Nobody came.", ["Snow fell."])
    assert session.edit(text="Somebody came at last.").kept_draft(going_on=True) is None  # a rewrite: edited
    session.edit(text="Nobody came. I waited.")
    assert session.kept_draft() is not None
    session.mark_kept()
    assert session.kept_draft(going_on=True) is None  # once
    cont = ManuscriptSession(max_prompt_chars=1000).edit(text="The mill stood still.")
    cont.finish_turn(cont.start_turn("continue", "A mill.", causal), " Nobody came.", settings, {}, "", rid[0])
    turn, replaced = cont.retry_turn(causal)
    cont.finish_turn(turn, " Snow fell.", settings, {}, "", rid[1], replaces=replaced)
    assert cont.kept_draft(going_on=True) is None  # a Continue turn's drafts answer no prompt: no pair
