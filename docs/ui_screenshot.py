"""Screenshots of the writing UI for the README: ``python docs/ui_screenshot.py [URL] [OUT] [MANUSCRIPT_OUT]``.

Opens ``URL`` (default http://127.0.0.1:3000/ui/) in headless Debian chromium, writes a prompt with two
drafts and saves the page once both have streamed in; then, in the Manuscript tab, writes a piece with a
memory, continues it with an author's note, shows the token probabilities and saves that page too.
"""

from __future__ import annotations

import sys

from playwright.sync_api import sync_playwright

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def main(url: str = "http://127.0.0.1:3000/ui/", out: str = "docs/images/ui-writing.png",
         manuscript_out: str = "docs/images/ui-manuscript.png") -> None:
    """Fills the form, generates two drafts, then a manuscript, and saves full-page screenshots."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url, wait_until="load")
        page.locator("#prompt textarea").fill("A lighthouse keeper finds a message in a bottle written in her "
                                              "own handwriting.")
        page.locator("#drafts-n input[type=number]").fill("2")
        page.locator("#drafts-n input[type=number]").press("Enter")
        page.locator("#seed input").fill("11")
        page.locator("#reuse-seed input").check()
        page.locator("#generate").click()
        page.locator("#provenance").filter(has_text="Written by").wait_for(timeout=120_000)
        page.wait_for_timeout(500)
        page.screenshot(path=out, full_page=True)
        page.get_by_role("tab", name="Manuscript").click()
        page.locator("#story-title").locator("input, textarea").first.fill("The Keeper's Bottle")
        page.locator("#memory textarea").fill("Mara has kept the lighthouse alone for forty years.")
        page.locator("#ms-generate").click()
        page.locator("#ms-provenance").filter(has_text="Written by").wait_for(timeout=120_000)
        page.locator("#authors-note textarea").fill("The tone turns hopeful.")
        before = page.locator("#manuscript textarea").input_value()
        page.locator("#ms-continue").click()
        page.wait_for_function("old => { const v = document.querySelector('#manuscript textarea').value;"
                               " if (v === window.__last && v !== old) return true; window.__last = v; return false; }",
                               arg=before, polling=3000, timeout=180_000)  # written on, then still for 3 s
        page.locator("#show-probs input").check()
        page.locator("#probs-legend").wait_for(timeout=60_000)
        page.wait_for_timeout(500)
        page.screenshot(path=manuscript_out, full_page=True)
        browser.close()
    print(f"saved {out} and {manuscript_out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
