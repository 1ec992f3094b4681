"""The writing UI in real headless Chromium (Debian's ``chromium`` driven by Playwright)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.serving, pytest.mark.browser]

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str:
    """Debian's chromium, or a skip that says how to get it."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium not installed (apt-get install -y chromium; .ci/run does this)")
    return path


@pytest.fixture(scope="module")
def page():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (in requirements-dev)")
    executable = chromium_path()
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 1100})
            yield tab
        finally:
            browser.close()


def write(page, url: str, prompt: str) -> None:
    """Opens the UI, types the prompt and presses Generate."""
    page.goto(url + "/ui/", wait_until="load")
    page.locator("#prompt textarea").wait_for(timeout=30_000)
    page.locator("#prompt textarea").fill(prompt)
    page.locator("#generate").click()


def test_generate_in_the_browser_shows_text_and_provenance(served, page):
    write(page, served.url, "A fox finds a silver key under a stone.")
    draft = page.locator("#draft-0 textarea")
    page.wait_for_function("el => el.value.length > 10", arg=draft.element_handle(), timeout=60_000)
    provenance = page.locator("#provenance")
    provenance.filter(has_text="Written by seq2seq").wait_for(timeout=60_000)
    text = provenance.inner_text()
    assert "creative-writer v1 @champion" in text and "seed" in text
    seed_value = page.locator("#seed input").input_value()
    assert seed_value.isdigit()  # the seed that wrote it, ready to reuse
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-generate.png"), full_page=True)

    # reuse the seed: the same text again
    first = draft.input_value()
    page.locator("#reuse-seed input").check()
    # watch the box: the new run must first replace the text (it streams again from empty), then end equal
    page.evaluate("""([el, old]) => { window.__replaced = false;
        window.__watch = setInterval(() => { if (el.value !== old) window.__replaced = true; }, 1); }""",
                  [draft.element_handle(), first])
    page.locator("#generate").click()
    page.wait_for_function("([el, old]) => window.__replaced && el.value === old",
                           arg=[draft.element_handle(), first], timeout=60_000)


def test_bad_prompt_shows_a_readable_message_not_a_traceback(served, page):
    write(page, served.url, "   ")
    toast = page.get_by_text("the prompt is empty")
    toast.first.wait_for(timeout=30_000)
    body = page.content()
    assert "Traceback" not in body and 'File "' not in body


def test_a_preset_sets_the_sliders_and_writes_with_them(served, page):
    page.goto(served.url + "/ui/", wait_until="load")
    page.locator("#prompt textarea").wait_for(timeout=30_000)
    page.get_by_text("Sampling", exact=True).first.click()  # the accordion holding the sliders
    page.locator("#preset input").click()
    page.get_by_role("option", name="steady: stays on the prompt", exact=False).click()
    temperature = page.locator("#temperature input[type=number]")
    page.wait_for_function("el => el.value === '0.7'", arg=temperature.element_handle(), timeout=15_000)
    assert page.locator("#min-p input[type=number]").input_value() == "0.05"
    page.locator("#prompt textarea").fill("A crow counts the stars.")
    page.locator("#generate").click()
    provenance = page.locator("#provenance")
    provenance.filter(has_text="temperature 0.7").wait_for(timeout=60_000)  # written with the preset's values


def test_the_manuscript_is_edited_continued_undone_saved_and_reopened(served, page):
    page.goto(served.url + "/ui/", wait_until="load")
    page.evaluate("() => localStorage.clear()")
    page.reload(wait_until="load")
    page.locator("#prompt textarea").wait_for(timeout=30_000)
    page.get_by_role("tab", name="Manuscript").click()
    page.locator("#prompt textarea").fill("A fox finds a silver key under a stone.")
    page.locator("#story-title").locator("input, textarea").first.fill("The Silver Key")
    manuscript = page.locator("#manuscript textarea")
    page.locator("#ms-generate").click()
    page.locator("#ms-provenance").filter(has_text="Written by seq2seq").wait_for(timeout=60_000)
    generated = manuscript.input_value()
    assert len(generated) > 5

    # the writer edits the text, then the model continues from the end of the edited text
    edited = "Wren wrote this line herself. " + generated
    manuscript.fill(edited)
    page.locator("#memory textarea").fill("Wren is a fox who keeps secrets.")
    page.locator("#budget").filter(has_text="tokens").wait_for(timeout=30_000)
    assert "memory" in page.locator("#budget").inner_text()
    page.locator("#ms-continue").click()
    # the turn is over when the text has grown and the provenance line is the turn's own again (it reads
    # "Writing…" from the turn's first update to its last; before the first, it is still the Generate turn's)
    page.wait_for_function("([el, old, prov]) => el.value.length > old.length + 3 && el.value.startsWith("
                           "old.trimEnd()) && prov.innerText.includes('Written by seq2seq')",
                           arg=[manuscript.element_handle(), edited, page.locator("#ms-provenance").element_handle()],
                           timeout=60_000)
    page.wait_for_timeout(500)  # the turn's last update
    continued = manuscript.input_value()

    # the probability view of the last passage: one shaded span per token, with its probability
    page.locator("#show-probs input").check()
    page.locator("#probs-legend").wait_for(timeout=30_000)
    spans = page.locator("#probs .tok")
    assert spans.count() > 1 and "tokens" in page.locator("#probs-legend").inner_text()
    probabilities = [float(p) for p in spans.evaluate_all("els => els.map(e => e.dataset.p)")]
    assert all(0 <= p <= 1 for p in probabilities) and max(probabilities) > 0
    assert "%" in spans.first.get_attribute("title")  # the tooltip: its probability and the alternatives

    # undo takes back the model's continuation and keeps the writer's edit; redo puts it back
    page.locator("#ms-undo").click()
    page.wait_for_function("([el, old]) => el.value === old.trimEnd()", arg=[manuscript.element_handle(), edited],
                           timeout=30_000)
    page.locator("#ms-redo").click()
    page.wait_for_function("([el, want]) => el.value === want", arg=[manuscript.element_handle(), continued],
                           timeout=30_000)

    # Retry writes the continuation again with the next seed; the two drafts are swiped between with ◀ ▶
    page.locator("#ms-retry").click()
    page.locator("#ms-drafts").filter(has_text="Draft 2 of 2").wait_for(timeout=60_000)
    page.wait_for_timeout(500)  # the turn's last update
    retried = manuscript.input_value()
    assert retried.startswith(edited.rstrip()) and retried != continued
    page.locator("#ms-previous-draft").click()
    page.wait_for_function("([el, want]) => el.value === want", arg=[manuscript.element_handle(), continued],
                           timeout=30_000)
    assert "Draft 1 of 2" in page.locator("#ms-drafts").inner_text()
    page.locator("#ms-next-draft").click()
    page.wait_for_function("([el, want]) => el.value === want", arg=[manuscript.element_handle(), retried],
                           timeout=30_000)
    page.locator("#ms-previous-draft").click()  # the first draft is the one kept for the rest of the test
    page.wait_for_function("([el, want]) => el.value === want", arg=[manuscript.element_handle(), continued],
                           timeout=30_000)
    page.wait_for_timeout(1000)  # the browser stores the story

    # a reload starts empty; the saved story is listed and reopens with its text and memory
    page.reload(wait_until="load")
    page.locator("#prompt textarea").wait_for(timeout=30_000)
    page.get_by_role("tab", name="Manuscript").click()
    page.locator("#stories input").click()
    page.get_by_role("option", name="The Silver Key", exact=False).first.click()
    page.locator("#open-story").click()
    page.wait_for_function("([el, want]) => el.value === want", arg=[manuscript.element_handle(), continued],
                           timeout=30_000)
    assert page.locator("#memory textarea").input_value() == "Wren is a fox who keeps secrets."
    assert page.locator("#story-title").locator("input, textarea").first.input_value() == "The Silver Key"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-manuscript.png"), full_page=True)

    # a fresh browser profile (nothing in its local storage) finds the story on the server
    fresh = page.context.browser.new_context(viewport={"width": 1280, "height": 1100})
    try:
        other = fresh.new_page()
        other.goto(served.url + "/ui/", wait_until="load")
        assert other.evaluate("() => localStorage.length") == 0
        other.locator("#prompt textarea").wait_for(timeout=30_000)
        other.get_by_role("tab", name="Manuscript").click()
        other.locator("#stories input").click()
        other.get_by_role("option", name="The Silver Key", exact=False).first.click()
        other.locator("#open-story").click()
        text = other.locator("#manuscript textarea")
        other.wait_for_function("([el, want]) => el.value === want", arg=[text.element_handle(), continued],
                                timeout=30_000)
        assert other.locator("#memory textarea").input_value() == "Wren is a fox who keeps secrets."
    finally:
        fresh.close()
    versions = httpx.get(served.url + "/stories", timeout=10).json()["stories"]
    assert any(s["title"] == "The Silver Key" and s["version"] >= 3 for s in versions)  # turns and edits saved


def test_a_writer_signs_in_and_the_manuscript_autosaves_into_their_own_stories(guarded_empty, page):
    from workspace.store import StoryStore

    store = StoryStore(f"sqlite:///{guarded_empty.log_path.parent / 'workspace.db'}")
    token = store.add_writer("ada")
    context = page.context.browser.new_context(viewport={"width": 1280, "height": 1100})
    try:
        tab = context.new_page()
        tab.goto(guarded_empty.url + "/ui/", wait_until="load")  # no token yet: the sign-in form
        tab.locator("#token").fill(token)
        tab.get_by_role("button", name="Sign in").click(no_wait_after=True)  # the UI then loads on its own
        tab.locator("#prompt textarea").wait_for(timeout=30_000)
        tab.get_by_role("tab", name="Manuscript").click()
        tab.locator("#stories").filter(has_text="Saved stories · ada").wait_for(timeout=30_000)
        tab.locator("#story-title").locator("input, textarea").first.fill("Ada's Lamp")
        tab.locator("#manuscript textarea").fill("The lamp went out at midnight.")  # typed: no box left, no turn

        def stories(bearer: str) -> list[dict]:
            got = httpx.get(guarded_empty.url + "/stories", headers={"Authorization": f"Bearer {bearer}"}, timeout=10)
            return got.json()["stories"]

        for _ in range(40):  # the tab's timer saves within AUTOSAVE_SECONDS (5 s)
            if stories(token):
                break
            tab.wait_for_timeout(500)
        (saved,) = stories(token)
        assert saved["title"] == "Ada's Lamp" and saved["version"] == 1
        text = httpx.get(f"{guarded_empty.url}/stories/{saved['id']}", headers={"Authorization": f"Bearer {token}"},
                         timeout=10).json()["text"]
        assert text == "The lamp went out at midnight."
        assert stories("s3cret") == []  # the shared token's writer does not see ada's story
        tab.wait_for_timeout(6_000)  # a tick with nothing changed saves no new version
        assert stories(token)[0]["version"] == 1
    finally:
        context.close()
