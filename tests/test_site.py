"""The documentation site: the state diagram is the code's, the version is told in one place,
the site builds in strict mode, and its pages render in a browser (headless Chromium).

The site's tools are the ``docs`` extra and Debian's ``chromium``; without them the tests that
need them are skipped, unless SANSFLOW_SITE_TESTS=required (as in CI), when they fail.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import http.server
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import sansflow
from sansflow._state import RECEIVE_TRANSITIONS, SEND_TRANSITIONS, SendEvent, SendState

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / ".ci" / "artifacts"  # git-ignored; CI keeps what is there


def needs(available: bool, what: str) -> None:
    if not available:
        message = f"{what} is not installed"
        if os.environ.get("SANSFLOW_SITE_TESTS") == "required":
            pytest.fail(message)
        pytest.skip(message)


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("state_diagram",
                                                  ROOT / "scripts" / "state_diagram.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_state_diagram_is_the_tables() -> None:
    script = load_script()
    assert script.OUTPUT.read_text() == script.render(SEND_TRANSITIONS, RECEIVE_TRANSITIONS), (
        "docs/images/states.svg is out of date: run python scripts/state_diagram.py")


def test_the_state_diagram_changes_with_the_tables() -> None:
    script = load_script()
    changed = {**SEND_TRANSITIONS, SendState.EOF_SENT: {SendEvent.SHUTDOWN: SendState.EOF_SENT}}
    assert script.render(changed, RECEIVE_TRANSITIONS) != script.OUTPUT.read_text()


def test_the_version_is_told_in_one_place() -> None:
    assert importlib.metadata.version("sansflow") == sansflow.__version__
    changelog = (ROOT / "CHANGELOG.md").read_text()
    latest = re.search(r"^## (\S+)", changelog, re.MULTILINE)
    assert latest is not None
    assert latest[1] == sansflow.__version__


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built in strict mode: a broken link or reference fails the build."""
    needs(importlib.util.find_spec("mkdocs") is not None, "mkdocs (the docs extra)")
    site_dir = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stderr
    return site_dir


def test_the_site_builds_every_page(site: Path) -> None:
    api = (site / "api" / "core" / "index.html").read_text()
    for name in ("Flow", "Ok", "Eof", "Error", "FlowState", "TlsLayer"):
        assert f'id="sansflow.{name}"' in api
    assert (site / "images" / "states.svg").read_bytes() == (
        ROOT / "docs" / "images" / "states.svg").read_bytes()
    performance = (site / "performance" / "index.html").read_text()
    assert "bulk" in performance
    assert "--8<--" not in performance


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    """The site over HTTP on loopback: search runs in a web worker, which file:// forbids."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class Chromium:
    """Headless Chromium driven through the DevTools protocol on a pipe (fds 3 and 4), so
    that nothing but the standard library is needed."""

    def __init__(self, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Out of the way of 3 and 4, which the browser must get.
        inherit = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
                   for fd in (to_browser_r, from_browser_w)]
        os.close(to_browser_r)
        os.close(from_browser_w)

        def give_pipes() -> None:
            os.dup2(inherit[0], 3)
            os.dup2(inherit[1], 4)

        self._process = subprocess.Popen(
            [shutil.which("chromium") or "chromium", "--headless", "--no-sandbox",
             "--disable-gpu", "--remote-debugging-pipe", f"--user-data-dir={profile}",
             "--no-first-run", "--disable-background-networking", "--disable-extensions",
             "--disable-component-update", "--disable-sync", "--window-size=1280,900",
             "--hide-scrollbars", "about:blank"],
            pass_fds=(3, 4), preexec_fn=give_pipes, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        for fd in inherit:
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target,
                                  flatten=True)["sessionId"]
        self.call("Page.enable", session=True)

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                assert "error" not in reply, reply
                result: dict[str, Any] = reply["result"]
                return result
            self.events.append(reply)

    def _receive(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_browser, 1 << 16)
            assert chunk, "chromium exited"
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def open(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._receive())

    def evaluate(self, expression: str) -> Any:
        reply = self.call("Runtime.evaluate", session=True, expression=expression,
                          returnByValue=True, awaitPromise=True)
        return reply["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 30) -> Any:
        """The value of ``expression`` once it is truthy, polled: pages render in their own
        time (a bounded wait, not a timing assertion)."""
        deadline = time.monotonic() + seconds
        while not (value := self.evaluate(expression)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return value

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(AssertionError):  # it went already
            self.call("Browser.close")
        self._process.wait(timeout=30)
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    needs(shutil.which("chromium") is not None, "chromium")
    chromium = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield chromium
    finally:
        chromium.close()


SEARCH_RESULTS = "document.querySelectorAll('.md-search-result__item').length"


def search(browser: Chromium, query: str) -> int:
    """Type ``query`` into the search box; how many results the page lists."""
    browser.evaluate(f"""(() => {{
        const box = document.querySelector('.md-search__input');
        box.focus();
        box.value = {json.dumps(query)};
        box.dispatchEvent(new Event('input', {{bubbles: true}}));
        box.dispatchEvent(new KeyboardEvent('keyup', {{bubbles: true, key: 'e'}}));
    }})()""")
    return int(browser.wait_for(SEARCH_RESULTS))


def test_the_index_shows_the_state_diagram_and_search(browser: Chromium, served: str) -> None:
    browser.open(f"{served}/")
    drawn = browser.wait_for("""(() => {
        const img = document.querySelector('img#state-diagram');
        return img && img.complete && img.naturalWidth > 0
            && img.getBoundingClientRect().width > 300;
    })()""")
    browser.evaluate("document.querySelector('img#state-diagram')?.scrollIntoView()")
    browser.screenshot(ARTIFACTS / "site-index.png")
    assert drawn, "the state diagram did not render"
    assert search(browser, "half-close") > 0


def test_the_api_page_renders_with_search(browser: Chromium, served: str) -> None:
    browser.open(f"{served}/api/core/")
    assert browser.wait_for("!!document.getElementById('sansflow.Flow')")
    browser.screenshot(ARTIFACTS / "site-api.png")
    assert search(browser, "FlowPair") > 0
