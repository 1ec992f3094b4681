"""The request log and writers' feedback: written off the request path, bounded, never failing a request."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from serving.champion import LoadedModel
from serving.config import load_serving_config
from serving.engine import Engine
from serving.planner import RequestError
from serving.schemas import GenerateRequest
from tests.test_serving_unit import PROV
from workspace.config import TrafficSettings
from workspace.db import connect, migrate
from workspace.traffic import (
    FeedbackIn,
    LogRow,
    RequestLog,
    new_request_id,
    prune,
    read_feedback,
    read_gaps,
    read_traffic,
    record_feedback,
)


@pytest.fixture
def db(tmp_path):
    engine = connect(f"sqlite:///{tmp_path / 'traffic.db'}")
    migrate(engine)
    return engine


def row(outcome="ok", **extra) -> LogRow:
    return LogRow(id=new_request_id(), endpoint="generate", outcome=outcome, model_version="3", prompt_chars=20,
                  prompt_text="A fox finds a key.", output_text=["Once a fox."], **extra)


def test_rows_are_written_without_text_unless_the_profile_opts_in(db):
    quiet = RequestLog(lambda: db)
    quiet.record(row())
    assert quiet.flush()
    logged = read_traffic(db)
    assert len(logged) == 1 and logged.loc[0, "prompt_text"] is None and logged.loc[0, "output_text"] is None
    assert logged.loc[0, "status"] == 200 and logged.loc[0, "model_version"] == "3"
    talkative = RequestLog(lambda: db, TrafficSettings(store_text=True))
    talkative.record(row(outcome="4xx", error="form: unknown form"))
    assert talkative.flush()
    logged = read_traffic(db)
    assert logged.loc[1, "prompt_text"] == "A fox finds a key." and logged.loc[1, "output_text"] == ["Once a fox."]
    assert logged.loc[1, "status"] == 400 and quiet.stats()["written"] == 1


def test_an_unreachable_database_loses_rows_counted_and_reported_later(db):
    state = {"down": True}

    def engine():
        if state["down"]:
            raise ConnectionError("database is down")
        return db

    request_log = RequestLog(engine)
    for _ in range(3):
        request_log.record(row())
    assert request_log.flush()
    assert request_log.stats()["lost"] == 3 and "database is down" in request_log.stats()["last_error"]
    state["down"] = False
    request_log.record(row())
    assert request_log.flush()
    assert len(read_traffic(db)) == 1 and read_gaps(db) == 3  # the gap is on record once the database answers


def test_a_full_queue_counts_the_row_lost_instead_of_waiting(db):
    gate = threading.Event()

    def slow():
        gate.wait(5)
        return db

    request_log = RequestLog(slow, TrafficSettings(queue_size=1))
    for _ in range(4):  # one taken by the writer (waiting on the gate), one queued, the rest refused at once
        request_log.record(row())
    assert request_log.stats()["lost"] >= 2
    gate.set()
    assert request_log.flush()
    assert request_log.stats()["written"] + request_log.stats()["lost"] == 4


def test_retention_by_days_and_rows(db):
    request_log = RequestLog(lambda: db, TrafficSettings(prune_every_s=10**6))
    old = datetime.now(UTC) - timedelta(days=40)
    for i in range(5):
        request_log.record(row(at=old + timedelta(days=i * 10)))  # 40, 30, 20, 10 and 0 days old
    assert request_log.flush()
    assert prune(db, TrafficSettings(retention_days=25)) == 2
    assert prune(db, TrafficSettings(retention_days=25, max_rows=2)) == 1
    assert len(read_traffic(db)) == 2


def test_feedback_needs_what_its_kind_names_and_links_to_the_model(db):
    request_log = RequestLog(lambda: db)
    logged = row()
    request_log.record(logged)
    assert request_log.flush()
    base = {"request_id": logged.id, "prompt": "A fox finds a key.", "text": "Once a fox."}
    with pytest.raises(ValueError, match="others"):
        record_feedback(db, FeedbackIn(kind="kept", **base), "ada")
    with pytest.raises(ValueError, match="edited"):
        record_feedback(db, FeedbackIn(kind="edited", **base), "ada")
    record_feedback(db, FeedbackIn(kind="kept", others=["Twice a fox."], **base), "ada")
    record_feedback(db, FeedbackIn(kind="up", **{**base, "request_id": new_request_id()}), "ada")
    feedback = read_feedback(db)
    assert list(feedback["kind"]) == ["kept", "up"] and list(feedback["model_version"]) == ["3", ""]


# --- the engine reports every request ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def writer(tiny_tokenizer):
    from tests.conftest import tiny_writer

    return tiny_writer(tiny_tokenizer)


def logged_engine(writer) -> tuple[Engine, list[LogRow]]:
    from dataclasses import replace

    config = load_serving_config(env={})
    rows: list[LogRow] = []
    engine = Engine(replace(config, batching=replace(config.batching, enabled=False)),
                    loader=lambda source: LoadedModel(writer, PROV, 0.1), observer=rows.append)
    assert engine.load()
    return engine, rows


def test_the_engine_logs_served_refused_and_cancelled_requests(writer):
    engine, rows = logged_engine(writer)
    response = asyncio.run(engine.generate_async(GenerateRequest(prompt="A fox finds a key.", max_new_tokens=8,
                                                                 seed=1, num_drafts=2)))
    ok = rows[-1]
    assert ok.id == response.request_id and ok.outcome == "ok" and ok.drafts == 2 and ok.model_version == "3"
    assert ok.tokens == sum(d.tokens for d in response.drafts) and ok.latency_ms > 0
    assert ok.settings["max_new_tokens"] == 8 and ok.prompt_chars == len("A fox finds a key.")
    assert ok.settings["logit_bias"] == 0  # flat: the monitoring pipeline writes the rows as a Parquet table
    import io

    import pandas as pd

    pd.DataFrame({"settings": [ok.settings]}).to_parquet(io.BytesIO())
    with pytest.raises(RequestError):
        asyncio.run(engine.generate_async(GenerateRequest(prompt="A fox.", form="limerick")))
    assert rows[-1].outcome == "4xx" and "limerick" in rows[-1].error
    _, pieces = engine.stream(GenerateRequest(prompt="A fox finds a key.", max_new_tokens=8, seed=1))
    text = "".join(pieces)
    assert rows[-1].id == pieces.request_id and rows[-1].outcome == "ok"
    assert rows[-1].output_text == [text] and rows[-1].first_chunk_ms is not None
    _, pieces = engine.stream(GenerateRequest(prompt="A fox finds a key.", max_new_tokens=8, seed=1),
                              endpoint="ui")
    next(pieces)
    pieces.close()
    assert rows[-1].outcome == "cancelled" and rows[-1].endpoint == "ui" and len(rows) == 4
    assert engine.admission.in_flight == 0


def test_a_failing_observer_never_fails_the_request(writer):
    from dataclasses import replace

    def broken(_row):
        raise RuntimeError("observer down")

    config = load_serving_config(env={})
    engine = Engine(replace(config, batching=replace(config.batching, enabled=False)),
                    loader=lambda source: LoadedModel(writer, PROV, 0.1), observer=broken)
    assert engine.load()
    response = asyncio.run(engine.generate_async(GenerateRequest(prompt="A fox.", max_new_tokens=4, seed=1)))
    assert response.drafts and response.request_id


def test_feedback_over_http_names_a_wrong_field_and_keeps_the_writer(tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from serving.stories_api import add_feedback_route
    from workspace.store import StoryStore

    store = StoryStore(f"sqlite:///{tmp_path / 'ws.db'}")
    token = store.add_writer("ada")
    app = FastAPI()
    add_feedback_route(app, lambda: store)
    client = TestClient(app)
    body = {"request_id": new_request_id(), "kind": "edited", "prompt": "A fox.", "text": "Once a fox.",
            "edited": "Once upon a time a fox."}
    answer = client.post("/feedback", json=body, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 201 and answer.json()["kind"] == "edited"
    assert client.post("/feedback", json={**body, "kind": "meh"}).json()["detail"][0]["loc"] == ["kind"]
    assert client.post("/feedback", json={**body, "request_id": "x"}).status_code == 400
    refused = client.post("/feedback", json={**body, "edited": None})
    assert refused.status_code == 400 and refused.json()["detail"][0]["loc"] == ["edited"]
    assert client.post("/feedback", content=b"").status_code == 400
    assert list(read_feedback(store.engine)["writer"]) == ["ada"]


def test_a_challenger_writes_a_stable_share_of_stories_and_says_so_in_the_log(writer):
    from dataclasses import replace

    from serving.champion import Provenance

    challenger_prov = Provenance(family="seq2seq", registered_name="cw", version="4", alias="challenger",
                                 mlflow_run_id="r4", training_run_id="t4", source="models:/cw/4", metrics={})
    config = load_serving_config(env={"CW_CHALLENGER_SHARE": "0.3"})
    assert config.canary.share == 0.3 and config.challenger_source().alias == "challenger"
    rows: list[LogRow] = []

    def loader(source):
        return LoadedModel(writer, challenger_prov if source.alias == "challenger" else PROV, 0.1)

    engine = Engine(replace(config, batching=replace(config.batching, enabled=False)), loader=loader,
                    observer=rows.append)
    assert engine.load() and "writes 30% of stories" in engine.challenger_status
    picks = [engine.route(f"story-{i}").provenance.version for i in range(2000)]
    assert 0.27 < picks.count("4") / len(picks) < 0.33
    assert all(engine.route("story-7").provenance.version == picks[7] for _ in range(5))  # sticky
    story = next(f"story-{i}" for i, v in enumerate(picks) if v == "4")
    request = GenerateRequest(prompt="A fox finds a key.", max_new_tokens=6, seed=1, story_id=story)
    response = asyncio.run(engine.generate_async(request))
    assert response.provenance["version"] == "4" and rows[-1].model_version == "4"
    assert rows[-1].model_alias == "challenger" and rows[-1].story_id == story
    _, pieces = engine.stream(request)
    "".join(pieces)
    assert pieces.provenance.version == "4" and rows[-1].model_version == "4"
    assert engine.describe()["canary"]["challenger"]["version"] == "4"

    def no_challenger(source):
        if source.alias == "challenger":
            raise RuntimeError("'cw' has no alias 'challenger'")
        return LoadedModel(writer, PROV, 0.1)

    alone = Engine(config, loader=no_challenger)
    assert alone.load() and "no alias 'challenger'" in alone.challenger_status
    assert alone.route("story-1").provenance.version == "3"


def test_the_ui_sends_a_writers_verdict_on_a_draft_and_refuses_one_it_cannot_make(tmp_path, writer):
    import gradio as gr

    from serving.story_sync import StorySync
    from serving.ui import build_ui
    from workspace.store import StoryStore, Unavailable

    store = StoryStore(f"sqlite:///{tmp_path / 'ws.db'}")
    engine, _ = logged_engine(writer)
    sync = StorySync(lambda: store)
    blocks = build_ui(lambda: engine, load_serving_config(env={}), sync)
    drafts = blocks.drafts_tab
    state = {"prompt": "A fox finds a key.", "texts": ["Once a fox.", "Twice a fox."],
             "request_ids": [new_request_id(), new_request_id()], "form": "fable", "genre": ""}
    drafts.verdict("kept", "Draft 2", state)
    drafts.verdict("down", "Draft 1", state)
    kept = read_feedback(store.engine)
    assert list(kept["kind"]) == ["kept", "down"] and kept.loc[0, "text"] == "Twice a fox."
    assert kept.loc[0, "others"] == ["Once a fox."] and kept.loc[0, "form"] == "fable"
    assert kept.loc[0, "request_id"] == state["request_ids"][1]
    for kind, which, given, said in [("up", "Draft 1", {}, "write drafts first"),
                                     ("up", "Draft 3", state, "no draft 3"),
                                     ("kept", "Draft 1", {**state, "texts": ["Once.", ""]}, "needs another"),
                                     ("up", "Draft 0", state, "no draft 0"), ("up", "drafts", state, "choose a draft"),
                                     ("up", "Draft 1", "not a state", "write drafts first"),
                                     ("up", "Draft 1", {**state, "request_ids": ["x", "y"]}, "cannot be kept")]:
        with pytest.raises(gr.Error, match=said):
            drafts.verdict(kind, which, given)

    def down():
        raise Unavailable("the story database is unavailable: it is down")

    said = StorySync(down).feedback(FeedbackIn(request_id=new_request_id(), kind="up", prompt="p", text="t"))
    assert said == "not kept: the database is unavailable (Unavailable)"



def test_the_openai_endpoints_name_and_score_with_the_challenger_when_it_wrote(writer):
    import json
    from dataclasses import replace

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from serving.champion import Provenance
    from serving.openai_compat import OpenAICompat, add_routes

    challenger_prov = Provenance(family="seq2seq", registered_name="cw", version="4", alias="challenger",
                                 mlflow_run_id="r4", training_run_id="t4", source="models:/cw/4", metrics={})
    config = load_serving_config(env={"CW_CHALLENGER_SHARE": "1"})  # every request goes to the challenger
    engine = Engine(replace(config, batching=replace(config.batching, enabled=False)),
                    loader=lambda source: LoadedModel(writer, challenger_prov if source.alias == "challenger" else PROV,
                                                      0.1))
    assert engine.load()
    assert engine.writer_of({"version": "4", "alias": "challenger"}) is engine.route("any")
    assert engine.writer_of({"version": "3", "alias": "champion"}) is engine.loaded
    app = FastAPI()
    add_routes(app, OpenAICompat(lambda: engine))
    client = TestClient(app)
    body = {"model": "cw", "prompt": "A fox finds a key.", "max_tokens": 6, "seed": 1, "logprobs": 1}
    answer = client.post("/v1/completions", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["system_fingerprint"] == "seq2seq-v4"  # not the champion's v3
    assert answer.json()["choices"][0]["logprobs"]["tokens"]
    streamed = client.post("/v1/completions", json={**body, "stream": True, "logprobs": None})
    first = json.loads(next(line for line in streamed.text.splitlines() if line.startswith("data: {"))[6:])
    assert first["system_fingerprint"] == "seq2seq-v4"


def manuscript_tab(tmp_path, writer):
    """The UI's Manuscript tab over a logged engine, its stories and feedback in a SQLite workspace."""
    from serving.story_sync import StorySync
    from serving.ui import build_ui
    from workspace.store import StoryStore

    store = StoryStore(f"sqlite:///{tmp_path / 'ws.db'}")
    engine, _ = logged_engine(writer)
    blocks = build_ui(lambda: engine, load_serving_config(env={}), StorySync(lambda: store))
    return store, blocks.manuscript_tab


def test_the_manuscript_tab_sends_a_writers_rewrite_of_a_generated_piece_once(tmp_path, writer):
    from models.contract import GenerationSettings
    from serving.session import ManuscriptSession

    store, tab = manuscript_tab(tmp_path, writer)
    session = ManuscriptSession(max_prompt_chars=4000)
    turn = session.start_turn("generate", "A fox finds a key.", session_reader())
    rid = new_request_id()
    session.finish_turn(turn, "The fox found a key.", GenerationSettings(form="fable").model_dump(), {}, "", rid)
    given = {tab.story: session.story, tab.stories: {}, tab.text: "The fox found a key under the old oak and kept it.",
             tab.memory: "", tab.note: "", tab.title: "", tab.lore: "", tab.depth: 1}
    out = tab.keep_edits(given)
    stored = read_feedback(store.engine)
    assert list(stored["kind"]) == ["edited"] and stored.loc[0, "request_id"] == rid
    assert stored.loc[0, "text"] == "The fox found a key." and stored.loc[0, "edited"].endswith("kept it.")
    saved = out[tab.story]
    assert saved["turns"][-1]["edited"] is True and saved["turns"][-1]["request_id"] == rid  # kept on the server
    tab.keep_edits({**given, tab.story: saved, tab.text: given[tab.text] + " Twice."})
    assert len(read_feedback(store.engine)) == 1  # sent once


def test_the_manuscript_tab_sends_the_draft_a_writer_went_on_with_as_kept_over_the_others_once(tmp_path, writer):
    from models.contract import GenerationSettings
    from serving.session import ManuscriptSession

    store, tab = manuscript_tab(tmp_path, writer)
    settings = GenerationSettings(form="fable").model_dump()
    session = ManuscriptSession(max_prompt_chars=4000)
    ids = [new_request_id() for _ in range(3)]
    session.finish_turn(session.start_turn("generate", "A fox finds a key.", session_reader()), "The fox found a key.",
                        settings, {}, "", ids[0])
    for i, piece in enumerate(["A key lay in the snow.", "The crow kept the key."], start=1):  # two Retries
        turn, replaced = session.retry_turn(session_reader())
        session.finish_turn(turn, piece, settings, {}, "", ids[i], replaces=replaced)
    session.swipe(-1)  # the writer goes back to the second draft ...
    given = {tab.story: session.story, tab.stories: {}, tab.text: session.text, tab.memory: "", tab.note: "",
             tab.title: "", tab.lore: "", tab.depth: 1}
    assert tab.keep_edits(given)[tab.story]["turns"][-1]["kept_sent"] is False  # ... and only looks at it
    assert read_feedback(store.engine).empty
    out = tab.keep_edits({**given, tab.text: session.text + " It was cold."})  # ... then writes on after it
    stored = read_feedback(store.engine)
    assert list(stored["kind"]) == ["kept"] and stored.loc[0, "request_id"] == ids[1]  # the kept draft's own row
    assert stored.loc[0, "text"] == "A key lay in the snow." and stored.loc[0, "form"] == "fable"
    assert sorted(stored.loc[0, "others"]) == ["The crow kept the key.", "The fox found a key."]
    assert out[tab.story]["turns"][-1]["kept_sent"] is True
    tab.keep_edits({**given, tab.story: out[tab.story], tab.text: session.text + " It was very cold."})
    assert len(read_feedback(store.engine)) == 1  # sent once


def test_autosave_sends_only_what_changed_and_never_from_a_state_left_behind(tmp_path, writer):
    from serving.story_sync import story_digest

    store, tab = manuscript_tab(tmp_path, writer)
    boxes = {tab.memory: "", tab.note: "", tab.title: "", tab.lore: "", tab.depth: 1, tab.stories: {}}
    assert tab.autosave({**boxes, tab.story: {"id": "s1", "text": ""}, tab.text: ""}) == {}  # nothing to keep yet
    first = tab.autosave({**boxes, tab.story: {"id": "s1", "text": ""}, tab.text: "The lamp went out."})[tab.story]
    story_id = first["server_id"]
    assert first["server_version"] == 1 and first["saved_digest"] == story_digest(first)
    assert tab.autosave({**boxes, tab.story: first, tab.text: "The lamp went out."}) == {}  # unchanged: no save
    second = tab.autosave({**boxes, tab.story: first, tab.text: "The lamp went out. Then the fog came."})[tab.story]
    assert second["server_version"] == 2
    # the browser's state still names version 1 after this server saved 2: a tick from it is left out
    assert tab.autosave({**boxes, tab.story: first, tab.text: "The lamp went out!"}) == {}
    with tab.writing_lock(second):  # a turn is being written on the story: its own save comes at its end
        assert tab.autosave({**boxes, tab.story: second, tab.text: "Fog."}) == {}
    writer_ = store.local_writer()
    assert [v["version"] for v in store.versions(writer_, story_id)] == [2, 1]
    same = store.update(writer_, story_id, 2, {"text": "The lamp went out. Then the fog came."})
    assert same["version"] == 2  # the store makes no version for a save that changes nothing


def test_a_turn_started_from_what_an_autosave_saved_meanwhile_is_saved_on_it_not_as_a_copy(tmp_path, writer):
    from serving.story_sync import story_digest

    store, tab = manuscript_tab(tmp_path, writer)
    boxes = {tab.memory: "", tab.note: "", tab.title: "", tab.lore: "", tab.depth: 1, tab.stories: {}}
    v1 = tab.autosave({**boxes, tab.story: {"id": "s2", "text": ""}, tab.text: "A bell rang."})[tab.story]
    asked = {**boxes, tab.story: v1, tab.text: "A bell rang twice."}  # the writer edits and asks for a turn ...
    started = story_digest(tab.session(asked).story)
    v2 = tab.autosave(asked)[tab.story]  # ... while the edit is autosaved (a left box, the timer)
    assert v2["server_version"] == 2
    session = tab.session(asked)
    session.finish_turn(session.start_turn("continue", "A bell.", session_reader()), " Nobody came.", {}, {}, "",
                        new_request_id())
    out = tab.kept(asked, session, "turn", started)[tab.story]  # the turn's save, from version 1's state
    assert out["server_version"] == 3 and out["server_id"] == v1["server_id"] and "Nobody came." in out["text"]
    assert len(store.list(store.local_writer())) == 1  # no conflicting copy
    other = store.update(store.local_writer(), v1["server_id"], 3, {"text": "Another device wrote this."})
    assert other["version"] == 4
    copy = tab.kept(asked, session, "turn", started)[tab.story]  # a real conflict still keeps both texts
    assert copy["title"].endswith("(conflicting copy)") and len(store.list(store.local_writer())) == 2


def test_each_signed_in_writer_saves_opens_and_rates_only_their_own_stories_in_the_ui(tmp_path, writer):
    from types import SimpleNamespace

    from serving.manuscript_ui import WHO
    from serving.story_sync import SERVER_PREFIX

    store, tab = manuscript_tab(tmp_path, writer)
    tokens = {name: store.add_writer(name) for name in ("ada", "bo")}

    def request(token: str = "", bearer: str = ""):  # what Gradio hands a handler: the page's cookies and headers
        return SimpleNamespace(cookies={"cw_token": token} if token else {},
                               headers={"authorization": f"Bearer {bearer}"} if bearer else {})

    ada = tab.sync.writer_of(request(tokens["ada"]))
    assert ada.name == "ada" and tab.sync.writer_of(request(bearer=tokens["bo"])).name == "bo"
    assert tab.sync.writer_of(request("not-a-writer")) is None and tab.sync.writer_of(request()) is None
    boxes = {tab.memory: "", tab.note: "", tab.title: "", tab.lore: "", tab.depth: 1, tab.stories: {}}
    autosave = tab.as_writer(tab.autosave)
    saved = autosave({**boxes, tab.story: {"id": "a1", "text": ""}, tab.text: "Ada's lighthouse."},
                     request(tokens["ada"]))[tab.story]
    assert [s["id"] for s in store.list(store.writer_for_token(tokens["ada"]))] == [saved["server_id"]]
    assert store.list(store.writer_for_token(tokens["bo"])) == [] and store.list(store.local_writer()) == []
    listed = tab.list_saved({}, request(tokens["bo"]))
    assert listed["choices"] == [] and listed["label"] == "Saved stories · bo"
    assert tab.list_saved({}, request(tokens["ada"]))["label"] == "Saved stories · ada"
    reopen = tab.as_writer(tab.reopen)
    given = {tab.saved: SERVER_PREFIX + saved["server_id"], tab.stories: {}, tab.show: False}
    assert reopen(given, request(tokens["ada"]))[tab.text] == "Ada's lighthouse."
    with pytest.raises(Exception, match=r"no story|not found|No story"):  # another writer's story is not found
        reopen(given, request(tokens["bo"]))
    assert WHO not in given  # the handler's inputs are not changed in place


def session_reader():
    from serving.session import Reader

    return Reader(count=lambda t: len(t.split()), window=200, writes_on=False)


@pytest.mark.serving
def test_a_real_server_whose_database_is_down_still_serves_and_counts_the_lost_rows(tmp_path, tiny_tokenizer):
    import httpx

    from infra.local_server import Server
    from infra.processes import free_port
    from tests.serving_support import register_tiny_champion

    uri = register_tiny_champion(tmp_path, tiny_tokenizer)
    down = f"postgresql+psycopg2://nobody:none@127.0.0.1:{free_port()}/workspace"  # nothing listens there
    server = Server({"MLFLOW_TRACKING_URI": uri, "BENTOML_HOME": str(tmp_path / "bentoml"), "CW_API_TOKEN": "",
                     "CW_DATABASE_URL": down}, tmp_path / "server.log")
    try:
        server.wait(ready=True)
        for seed in range(3):
            answer = httpx.post(f"{server.url}/generate", json={"prompt": "A fox finds a key.", "seed": seed,
                                                                "max_new_tokens": 8}, timeout=60)
            assert answer.status_code == 200 and answer.json()["request_id"], answer.text
        assert httpx.post(f"{server.url}/stories", json={"title": "t"}, timeout=30).status_code == 503
        deadline, stats = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            stats = httpx.get(f"{server.url}/model", timeout=30).json()["request_log"]
            if stats["lost"] >= 3:
                break
            time.sleep(0.5)
        assert stats["lost"] >= 3 and stats["written"] == 0 and stats["last_error"], stats
    finally:
        server.stop()
