"""javascript/vidstyle.js in a real browser, on a page laid out like the WebUI's tabs.

The page is a stand-in for the WebUI: `gradioApp()` and `onUiLoaded()` as script.js defines
them, a hidden txt2img tab and the Video Stylize tab (ids as the WebUI and vidstyle/ui.py give
them), and a document-level Ctrl+Enter handler standing in for the WebUI's own, which clicks
the current tab's `*_generate` button. Chromium is Debian's, driven by Playwright.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium (apt-get install chromium)"
    ),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="needs the playwright Python package"),
]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCRIPT = Path(__file__).resolve().parent.parent / "javascript" / "vidstyle.js"

PAGE = """<!doctype html>
<html><body>
<gradio-app>
  <div id="tabs">
    <div class="tabitem" id="tab_txt2img" style="display: none"><button id="txt2img_generate">Generate</button></div>
    <div class="tabitem" id="tab_vidstyle" style="display: block">
      <button id="vidstyle_render" onclick="window.renders += 1">Render</button>
      <div id="vidstyle_gallery"><div class="grid-wrap" style="height: 100px; overflow: auto"></div></div>
    </div>
  </div>
</gradio-app>
<script>
  window.renders = 0;
  window.webuiHandled = 0;
  var uiLoadedCallbacks = [];
  function gradioApp() { return document.getElementsByTagName('gradio-app')[0]; }
  function onUiLoaded(callback) { uiLoadedCallbacks.push(callback); }
  function currentTab() {
    return gradioApp().querySelector('#tabs > .tabitem[id^=tab_]:not([style*="display: none"])');
  }
  document.addEventListener('keydown', function(e) {  // stands in for the WebUI's Ctrl+Enter handler
    if ((e.ctrlKey || e.metaKey) && e.key === 'Enter') {
      window.webuiHandled += 1;
      var generate = currentTab().querySelector('button[id$=_generate]');
      if (generate) { generate.click(); }
    }
  });
</script>
</body></html>
"""


def add_frames(page: Any, count: int) -> None:
    page.evaluate(
        """count => {
        const wrap = document.querySelector('#vidstyle_gallery .grid-wrap');
        for (let i = 0; i < count; i++) {
            const item = document.createElement('div');
            item.style.height = '40px';
            wrap.appendChild(item);
        }
    }""",
        count,
    )


def scroll_state(page: Any) -> Any:
    return page.evaluate("""() => {
        const wrap = document.querySelector('#vidstyle_gallery .grid-wrap');
        return {top: wrap.scrollTop, bottom: wrap.scrollHeight - wrap.clientHeight};
    }""")


@pytest.fixture
def page() -> Iterator[Any]:
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page()
            tab.set_content(PAGE)
            tab.add_script_tag(path=str(SCRIPT))
            tab.evaluate("() => uiLoadedCallbacks.forEach(callback => callback())")  # the WebUI's "UI loaded"
            yield tab
        finally:
            browser.close()


def test_ctrl_enter_renders_in_the_video_stylize_tab_only(page: Any) -> None:
    page.keyboard.press("Control+Enter")
    assert page.evaluate("[window.renders, window.webuiHandled]") == [1, 0]  # ours, and the WebUI's handler not reached
    page.keyboard.press("Enter")
    assert page.evaluate("window.renders") == 1
    page.evaluate("""() => {
        document.querySelector('#tab_vidstyle').style.display = 'none';
        document.querySelector('#tab_txt2img').style.display = 'block';
    }""")
    page.keyboard.press("Control+Enter")
    assert page.evaluate("[window.renders, window.webuiHandled]") == [1, 1]  # other tabs keep the WebUI's behaviour


def test_gallery_follows_the_newest_frame_until_the_user_scrolls_back(page: Any) -> None:
    add_frames(page, 10)
    page.wait_for_function(
        "() => { const w = document.querySelector('#vidstyle_gallery .grid-wrap');"
        " return w.scrollHeight > w.clientHeight && w.scrollTop > 0; }"
    )
    state = scroll_state(page)
    assert state["top"] == state["bottom"]
    add_frames(page, 5)
    page.wait_for_function(
        "() => { const w = document.querySelector('#vidstyle_gallery .grid-wrap');"
        " return w.scrollTop === w.scrollHeight - w.clientHeight; }"
    )
    page.evaluate("""() => new Promise(done => {  // the user scrolls back; resolves once the page saw it
        const wrap = document.querySelector('#vidstyle_gallery .grid-wrap');
        wrap.addEventListener('scroll', () => done(), {once: true});
        wrap.scrollTop = 0;
    })""")
    add_frames(page, 5)  # the gallery's observer runs before evaluate returns
    assert scroll_state(page)["top"] == 0  # the user is looking at older frames: left alone
