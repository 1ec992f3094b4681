"""Screenshots of the writing UI for the README: ``python docs/ui_screenshot.py [URL] [OUT]``.

Opens ``URL`` (default http://127.0.0.1:3000/ui/) in headless Debian chromium, writes a prompt with two
drafts and saves the page once both have streamed in.
"""

from __future__ import annotations

import sys

from playwright.sync_api import sync_playwright

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def main(url: str = "http://127.0.0.1:3000/ui/", out: str = "docs/images/ui-writing.png") -> None:
    """Fills the form, generates two drafts and saves a full-page screenshot."""
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
        browser.close()
    print(f"saved {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
