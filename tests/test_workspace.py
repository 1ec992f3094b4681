"""The story store and its REST API: versions, stale edits, writers, caps, a database that is down, kill -9."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from infra.processes import free_port
from serving.middleware import GuardMiddleware
from serving.stories_api import EXPORT_FORMAT, add_story_routes
from workspace.config import WorkspaceSettings
from workspace.schemas import StoryFields
from workspace.store import Conflict, Invalid, NotFound, StoryStore, Unavailable

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path) -> StoryStore:
    return StoryStore(f"sqlite:///{tmp_path}/stories.db", WorkspaceSettings(max_lorebook_entries=3))


@pytest.fixture
def client(store) -> TestClient:
    app = FastAPI()
    add_story_routes(app, lambda: store)
    return TestClient(app)


def test_every_save_is_a_new_version_and_a_stale_edit_is_refused_with_the_newest(store):
    me = store.local_writer()
    story = store.create(me, StoryFields(title="The fox", text="Once"))
    assert story["version"] == 1
    second = store.update(me, story["id"], 1, {"text": "Once upon a time"})
    assert (second["version"], second["text"], second["title"]) == (2, "Once upon a time", "The fox")
    with pytest.raises(Conflict) as refused:
        store.update(me, story["id"], 1, {"text": "a stale tab's text"})
    assert refused.value.status == 409 and refused.value.field == "version"
    assert refused.value.extra["current_version"] == 2
    assert refused.value.extra["current"]["text"] == "Once upon a time"
    assert [v["version"] for v in store.versions(me, story["id"])] == [2, 1]
    assert store.get(me, story["id"], 1)["text"] == "Once"


def test_restoring_an_old_version_adds_one_and_loses_nothing(store):
    me = store.local_writer()
    story = store.create(me, StoryFields(text="first"))
    store.update(me, story["id"], 1, {"text": "second"})
    restored = store.restore_version(me, story["id"], 1, 2)
    assert (restored["version"], restored["text"], restored["origin"]) == (3, "first", "restore of v1")
    assert [v["version"] for v in store.versions(me, story["id"])] == [3, 2, 1]
    with pytest.raises(Conflict):
        store.restore_version(me, story["id"], 1, 2)  # made on version 2, which is no longer the newest


def test_delete_is_soft_and_undone(store):
    me = store.local_writer()
    story = store.create(me, StoryFields(title="Keep me"))
    store.delete(me, story["id"])
    assert store.list(me) == [] and [s["id"] for s in store.list(me, deleted=True)] == [story["id"]]
    with pytest.raises(NotFound):
        store.update(me, story["id"], 1, {"text": "x"})
    assert store.undelete(me, story["id"])["deleted"] is False
    assert [s["title"] for s in store.list(me)] == ["Keep me"]


def test_a_writer_never_sees_another_writers_story(store):
    ann, bo = store.writer_for_token(store.add_writer("ann")), store.writer_for_token(store.add_writer("bo"))
    assert ann is not None and bo is not None and ann != bo
    story = store.create(ann, StoryFields(title="Ann's"))
    for attempt in (lambda: store.get(bo, story["id"]), lambda: store.update(bo, story["id"], 1, {"text": "x"}),
                    lambda: store.delete(bo, story["id"]), lambda: store.versions(bo, story["id"])):
        with pytest.raises(NotFound):
            attempt()
    assert store.list(bo) == [] and len(store.list(ann)) == 1
    assert store.writer_for_token("not a token") is None


def test_tokens_are_stored_hashed_and_names_are_unique(store, tmp_path):
    token = store.add_writer("cleo")
    assert token.encode() not in (tmp_path / "stories.db").read_bytes()
    with pytest.raises(Invalid) as refused:
        store.add_writer("cleo")
    assert refused.value.field == "name"


def test_caps_are_refused_naming_the_field(store):
    me = store.local_writer()
    lore = [{"keys": [f"k{i}"], "content": "x"} for i in range(4)]
    with pytest.raises(Invalid) as refused:
        store.create(me, StoryFields.model_validate({"lorebook": lore}))
    assert refused.value.field == "lorebook"
    story = store.create(me, StoryFields())
    with pytest.raises(Invalid) as refused:
        store.update(me, story["id"], 1, {"title": "t" * 201})
    assert refused.value.field == "title"
    assert store.get(me, story["id"])["version"] == 1  # nothing half-written


def test_a_database_that_is_down_is_unavailable_with_the_reason():
    with pytest.raises(Unavailable) as refused:
        StoryStore("postgresql+psycopg2://nobody@127.0.0.1:1/stories")
    assert refused.value.status == 503 and "unavailable" in str(refused.value)


def test_two_writers_of_one_version_one_wins_one_gets_409(store):
    me = store.local_writer()
    story = store.create(me, StoryFields(text="start"))
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def edit(text: str) -> None:
        barrier.wait()
        try:
            store.update(me, story["id"], 1, {"text": text})
            outcomes.append("saved")
        except Conflict:
            outcomes.append("409")

    threads = [threading.Thread(target=edit, args=(t,)) for t in ("tab one", "tab two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["409", "saved"]
    assert store.get(me, story["id"])["version"] == 2


def test_the_api_round_trip(client):
    made = client.post("/stories", json={"title": "Fox", "text": "Once", "lorebook": [{"keys": ["Fox"],
                                                                                        "content": "a red fox"}]})
    assert made.status_code == 201
    sid = made.json()["id"]
    assert client.get("/stories").json()["stories"][0]["id"] == sid
    saved = client.put(f"/stories/{sid}", json={"version": 1, "text": "Once upon"})
    assert saved.status_code == 200 and saved.json()["version"] == 2 and saved.json()["lorebook"][0]["keys"] == ["Fox"]
    stale = client.put(f"/stories/{sid}", json={"version": 1, "text": "stale"})
    assert stale.status_code == 409
    assert stale.json()["current_version"] == 2 and stale.json()["current"]["text"] == "Once upon"
    assert [v["version"] for v in client.get(f"/stories/{sid}/versions").json()["versions"]] == [2, 1]
    assert client.get(f"/stories/{sid}/versions/1").json()["text"] == "Once"
    assert client.post(f"/stories/{sid}/versions/1/restore", json={"version": 2}).json()["version"] == 3
    assert client.delete(f"/stories/{sid}").status_code == 204
    assert client.get("/stories").json()["stories"] == []
    assert client.post(f"/stories/{sid}/undelete").status_code == 200
    md = client.get(f"/stories/{sid}/export", params={"format": "md"})
    assert md.status_code == 200 and md.text.startswith("# Fox") and "Once" in md.text
    exported = client.get(f"/stories/{sid}/export").json()
    assert exported["format"] == EXPORT_FORMAT and exported["exported_from"]["version"] == 3
    copy = client.post("/stories/import", json=exported)
    assert copy.status_code == 201 and copy.json()["id"] != sid and copy.json()["text"] == "Once"
    assert copy.json()["origin"] == "import"


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), [
    ("post", "/stories", {"title": "x", "colour": "red"}, 400, "colour"),
    ("post", "/stories", {"title": 5}, 400, "title"),
    ("post", "/stories", {"lorebook": [{"keys": ["a"]}] * 4}, 400, "lorebook"),
    ("post", "/stories", {"turns": [{"feedback": "meh"}]}, 400, "turns.0.feedback"),
    ("put", "/stories/{id}", {"text": "no version"}, 400, "version"),
    ("put", "/stories/{id}", {"version": 0}, 400, "version"),
    ("get", "/stories/{id}/versions/first", None, 400, "version"),
    ("get", "/stories/{id}/versions/9", None, 404, "version"),
    ("get", "/stories/0123", None, 404, "id"),
    ("get", "/stories/{id}/export?format=docx", None, 400, "format"),
    ("post", "/stories/import", {"story": {}}, 400, "format"),
])
def test_bad_requests_get_a_status_and_the_field(client, method, path, body, status, field):
    sid = client.post("/stories", json={}).json()["id"]
    response = getattr(client, method)(path.format(id=sid), **({"json": body} if body is not None else {}))
    assert response.status_code == status, response.text
    assert response.json()["detail"][0]["loc"] == [field]


def test_a_body_that_is_not_json_is_a_400(client):
    response = client.post("/stories", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["detail"][0]["loc"] == ["body"]


def test_the_guard_lets_writers_in_with_their_own_token_and_keeps_them_apart(store):
    ann_token = store.add_writer("ann")
    app = FastAPI()
    add_story_routes(app, lambda: store)
    guarded = GuardMiddleware(app, token="shared", max_body_bytes=100, story_body_bytes=10_000,
                              writer_token=lambda t: store.writer_for_token(t) is not None)
    client = TestClient(guarded)
    assert client.get("/stories").status_code == 401
    assert client.get("/stories", headers={"authorization": "Bearer wrong"}).status_code == 401
    as_ann = {"authorization": f"Bearer {ann_token}"}
    sid = client.post("/stories", json={"text": "x" * 500}, headers=as_ann).json()["id"]  # over the prompt cap
    shared = {"authorization": "Bearer shared"}
    assert client.get(f"/stories/{sid}", headers=shared).status_code == 404  # the shared writer is not ann
    assert client.get(f"/stories/{sid}", headers=as_ann).status_code == 200
    big = client.post("/stories", json={"text": "x" * 20_000}, headers=as_ann)
    assert big.status_code == 413


# --- a real server killed at random moments -----------------------------------------------------------------
SERVER = textwrap.dedent("""
    import sys, uvicorn
    from fastapi import FastAPI
    from serving.stories_api import add_story_routes
    from workspace.store import StoryStore
    store = StoryStore(sys.argv[1])
    app = FastAPI()
    add_story_routes(app, lambda: store)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
""")


def _start(url: str, port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-c", SERVER, url, str(port)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/stories", timeout=1)
            return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise AssertionError("the story server did not start")


@pytest.mark.serving
def test_every_acknowledged_save_survives_kill_9(tmp_path):
    """50 edits and 10 model turns from a scripted client; the server is killed (SIGKILL) at random moments."""
    url, port, rng = f"sqlite:///{tmp_path}/stories.db", free_port(), random.Random(7)
    server = _start(url, port)
    base = f"http://127.0.0.1:{port}"
    acknowledged: dict[int, str] = {}
    kills = 0
    try:
        sid = httpx.post(f"{base}/stories", json={"title": "Kill test"}).json()["id"]
        acknowledged[1] = ""
        version, text = 1, ""
        kill_at = sorted(rng.sample(range(60), 6))
        for step in range(60):
            turn = step % 6 == 5  # 10 model turns among 50 edits
            text += f" turn {step}." if turn else f" edit {step}."
            body = {"version": version, "text": text}
            if turn:
                body["turns"] = [{"text": f"turn {step}.", "seed": step, "provenance": {"model": "test"}}]
            if step in kill_at:  # SIGKILL while this save may be in flight
                threading.Timer(rng.uniform(0.0, 0.02), lambda s=server: s.send_signal(signal.SIGKILL)).start()
            try:
                reply = httpx.put(f"{base}/stories/{sid}", json=body, timeout=5,
                                  headers={"x-save-origin": "turn" if turn else "autosave"})
                if reply.status_code == 200:
                    version = reply.json()["version"]
                    acknowledged[version] = text
            except httpx.TransportError:
                pass
            if server.poll() is not None or step in kill_at:
                server.wait(timeout=10)
                kills += 1
                server = _start(url, port)
                current = httpx.get(f"{base}/stories/{sid}").json()  # carry on from what the server kept
                version, text = current["version"], current["text"]
        assert kills >= 6
        versions = httpx.get(f"{base}/stories/{sid}/versions").json()["versions"]
        numbers = [v["version"] for v in versions]
        assert numbers == list(range(numbers[0], 0, -1))  # in order, no gaps, nothing half-written
        for number, saved_text in acknowledged.items():
            assert httpx.get(f"{base}/stories/{sid}/versions/{number}").json()["text"] == saved_text
        assert len(acknowledged) >= 40
    finally:
        server.kill()
        server.wait(timeout=10)


# --- the Manuscript tab's stories on the server (serving/story_sync.py) ---------------------------------------
def ui_story(text: str = "Once", **extra) -> dict:
    from serving.manuscript import apply_turn, new_story

    story = {**new_story("A fox"), "text": text, "memory": "a red fox", "note": "keep it short", **extra}
    return apply_turn(story, text, text + " The end.", {"kind": "continue", "seed": 3, "settings": {"top_k": 5},
                                                        "provenance": {"family": "transformer", "version": "6"},
                                                        "prompt": "continue"})


def test_the_ui_story_round_trips_through_the_store_with_its_turns(store):
    from serving.story_sync import SERVER_ID, SERVER_VERSION, StorySync

    sync = StorySync(lambda: store)
    saved = sync.save(ui_story())
    assert not saved.warning and saved.story[SERVER_VERSION] == 1
    record = store.get(store.local_writer(), saved.story[SERVER_ID])
    assert (record["authors_note"], record["memory"], record["text"]) == ("keep it short", "a red fox", "Once The end.")
    assert record["turns"][0]["provenance"]["version"] == "6" and record["turns"][0]["before"] == "Once"
    again = sync.save({**saved.story, "text": "Once. Edited."})
    assert again.story[SERVER_VERSION] == 2 and again.story[SERVER_ID] == saved.story[SERVER_ID]
    opened = sync.open(saved.story[SERVER_ID])
    assert (opened["text"], opened["note"], opened["turns"][0]["seed"]) == ("Once. Edited.", "keep it short", 3)


def test_a_ui_save_on_a_stale_version_keeps_both_texts(store):
    from serving.story_sync import SERVER_ID, StorySync

    sync = StorySync(lambda: store)
    first = sync.save(ui_story()).story
    other_tab = sync.save({**first, "text": "the other tab's text"}).story  # version 2
    stale = sync.save({**first, "text": "this tab's text"})  # still says version 1
    assert stale.warning and "conflicting copy" in stale.story["title"]
    me = store.local_writer()
    assert store.get(me, other_tab[SERVER_ID])["text"] == "the other tab's text"
    assert store.get(me, stale.story[SERVER_ID])["text"] == "this tab's text"


def test_with_the_database_down_the_ui_keeps_the_story_and_sends_it_later(store):
    from serving.story_sync import SERVER_ID, SERVER_PREFIX, UNSYNCED, StorySync

    down = {"now": True}

    def maybe_store() -> StoryStore:
        if down["now"]:
            raise Unavailable("the story database is unavailable: connection refused")
        return store

    sync = StorySync(maybe_store)
    kept = sync.save(ui_story())
    assert kept.story[UNSYNCED] and kept.warning and kept.story["text"] == "Once The end."
    assert sync.listed() == [] and sync.choices({kept.story["id"]: kept.story})[0][1] == kept.story["id"]
    down["now"] = False
    sent = sync.save(kept.story)
    assert not sent.warning and not sent.story.get(UNSYNCED) and sent.story[SERVER_ID]
    listed = sync.choices({sent.story["id"]: sent.story})  # once on the server, listed once, from there
    assert [value for _, value in listed] == [SERVER_PREFIX + sent.story[SERVER_ID]]


@pytest.mark.team
def test_the_store_runs_on_postgresql_beside_mlflows_tables():
    """The same store on the team stack's PostgreSQL (in MLflow's own database: the version tables differ)."""
    from infra.team import TeamLayout, down, start_postgres
    from infra.team import psql as run_sql
    from tests.conftest import postgres_folder

    base = postgres_folder("cw-stories-pg-")
    layout = TeamLayout(base / "team", free_port(), free_port(), free_port())
    try:
        url = start_postgres(layout).replace("postgresql://", "postgresql+psycopg2://")
        run_sql(layout, "CREATE TABLE IF NOT EXISTS alembic_version (version_num varchar(32))", database="mlflow")
        store = StoryStore(url)
        me = store.local_writer()
        story = store.create(me, StoryFields(title="On Postgres", text="One."))
        assert store.update(me, story["id"], 1, {"text": "One. Two."})["version"] == 2
        with pytest.raises(Conflict):
            store.update(me, story["id"], 1, {"text": "stale"})
        ann = store.writer_for_token(store.add_writer("ann"))
        with pytest.raises(NotFound):
            store.get(ann, story["id"])
        assert StoryStore(url).get(me, story["id"])["text"] == "One. Two."  # migrations run again: no change
        tables = run_sql(layout, "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables "
                                 "WHERE schemaname = 'public'", database="mlflow")
        assert {"stories", "story_versions", "writers", "workspace_alembic_version", "alembic_version"} <= set(
            tables.strip().split(","))
    finally:
        down(layout)
