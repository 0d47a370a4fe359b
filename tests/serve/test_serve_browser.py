"""The web chat page in headless Chromium (Debian's chromium, driven by Playwright).

Skips only when no chromium binary is installed (`make test`'s setup installs Debian's
`chromium`; the `playwright` package is a test dependency). Playwright drives the system
browser; `playwright install` (which downloads browsers) is never needed.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect
from serve_support import IMAGE_MARK, Server

pytestmark = pytest.mark.slow  # real runs / several processes: `make test-fast` skips this module

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

# Every text the last assistant bubble shows, as it changes (to see the answer stream in).
RECORD_PARTIALS = """
window.__partials = [];
document.addEventListener("DOMContentLoaded", () => {
  new MutationObserver(() => {
    const bubbles = document.querySelectorAll(".msg.assistant .text");
    if (bubbles.length) window.__partials.push(bubbles[bubbles.length - 1].textContent);
  }).observe(document.getElementById("log"), {subtree: true, childList: true, characterData: true});
});
"""


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium binary (install it: apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright  # a test dependency (requirements-dev.txt): no skip

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        yield browser
        browser.close()


def last_answer(page, turns: int) -> str:
    """The answer of the conversation's ``turns``-th reply once it is complete. Playwright's locator
    assertions, not ``wait_for_function``: the page's CSP forbids eval, which a polled predicate needs."""
    replies = page.locator(".msg.assistant")
    expect(replies).to_have_count(turns, timeout=60_000)
    expect(replies.last).not_to_have_class(re.compile(r"\bpending\b"), timeout=60_000)
    return page.locator(".msg.assistant .text").last.text_content()


def test_page_chat_with_image_streams_the_answer(browser, slow_server: Server, char_reference, image_root: Path,
                                                 serve_dir: Path):
    page = browser.new_page()
    hosts = []
    page.on("request", lambda request: hosts.append(urlparse(request.url).netloc or request.url.split(":")[0]))
    page.add_init_script(RECORD_PARTIALS)
    page.goto(slow_server.url + "/")
    expect(page.locator("#model")).to_have_text("char_chat-tiny", timeout=30_000)
    page.fill("#max-tokens", "24")

    # turn 1: attach an image, ask, watch the answer arrive piece by piece
    page.set_input_files("#file", str(image_root / "blue.png"))
    page.wait_for_selector("#attachment img")
    page.fill("#prompt", "describe the image")
    page.click("#send")
    answer1 = last_answer(page, 1)
    blue = (image_root / "blue.png").read_bytes()
    assert answer1 == char_reference.answer(f"{IMAGE_MARK}\ndescribe the image", images=[blue], max_new_tokens=24)
    partials = [p for p in page.evaluate("window.__partials") if p]
    assert len(set(partials)) >= 5, partials  # seen growing, not appearing at once
    assert all(answer1.startswith(p) for p in partials)
    assert page.locator(".msg.user img").count() == 1
    page.screenshot(path=str(serve_dir / "chat_page.png"))

    # turn 2: the page sends the whole conversation
    page.fill("#prompt", "and what shape?")
    page.click("#send")
    answer2 = last_answer(page, 2)
    history = [(f"{IMAGE_MARK}\ndescribe the image", answer1)]
    assert answer2 == char_reference.answer("and what shape?", history, images=[blue], max_new_tokens=24)

    # clear: the next question starts a new conversation
    page.click("#clear")
    assert page.locator(".msg").count() == 0
    page.fill("#prompt", "and what shape?")
    page.press("#prompt", "Enter")
    assert last_answer(page, 1) == char_reference.answer("and what shape?", max_new_tokens=24)

    # no external assets: every request went to the server itself (images are data: URLs)
    assert {h for h in hosts if h not in ("data", "blob")} == {urlparse(slow_server.url).netloc}
    page.close()


def test_page_shows_server_errors(browser, slow_server: Server, image_root: Path):
    page = browser.new_page()
    page.goto(slow_server.url + "/")
    expect(page.locator("#model")).to_have_text("char_chat-tiny", timeout=30_000)
    page.fill("#max-tokens", "100000")  # over the server's --max-tokens
    page.fill("#prompt", "hello")
    page.click("#send")
    page.wait_for_selector(".msg.error")
    assert "max_tokens=100000" in page.locator(".msg.error").text_content()
    # the failed turn is dropped: the conversation goes on
    page.fill("#max-tokens", "4")
    page.fill("#prompt", "hello")
    page.click("#send")
    assert last_answer(page, 1) is not None and page.locator(".msg.assistant").count() == 1
    page.close()


def test_page_asks_for_the_api_key_once_and_keeps_it_in_memory_only(browser, auth_server: Server, char_reference):
    from serve_support import API_KEYS

    page = browser.new_page()
    statuses: list[tuple[str, int]] = []
    page.on("response", lambda response: statuses.append((urlparse(response.url).path, response.status)))
    page.goto(auth_server.url + "/")
    expect(page.locator("#key-form")).to_be_visible(timeout=30_000)
    expect(page.locator("#model")).to_have_text("API key needed")
    assert ("/v1/models", 401) in statuses

    page.fill("#api-key", "sk-test-wrong")  # refused: the page asks again
    page.click("#key-submit")
    expect(page.locator("#key-error")).to_have_text(re.compile("refused"), timeout=30_000)
    expect(page.locator("#key-form")).to_be_visible()

    page.fill("#api-key", API_KEYS[0])
    page.click("#key-submit")
    expect(page.locator("#model")).to_have_text("char_chat-tiny", timeout=30_000)
    expect(page.locator("#key-form")).to_be_hidden()
    page.fill("#max-tokens", "8")
    history: list[tuple[str, str]] = []
    for turn, question in enumerate(["hello there", "is it big?"], start=1):  # the key is asked for once
        page.fill("#prompt", question)
        page.click("#send")
        answer = last_answer(page, turn)
        assert answer == char_reference.answer(question, history, max_new_tokens=8)
        history.append((question, answer))
    assert [s for p, s in statuses if p == "/v1/chat/completions"] == [200, 200]
    # nothing stored: no cookie, no web storage; a reload forgets the key
    assert page.context.cookies() == []
    assert page.evaluate("[localStorage.length, sessionStorage.length]") == [0, 0]
    page.reload()
    expect(page.locator("#key-form")).to_be_visible(timeout=30_000)
    page.close()
