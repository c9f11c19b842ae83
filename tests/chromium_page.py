"""Open a page in headless Chromium and report what a reader's browser saw: console and network errors, every
request it made, its images (decoded or not), its tables, and optionally a full-page screenshot.

It speaks the DevTools protocol over a pipe (`--remote-debugging-pipe`: JSON messages separated by NUL bytes on
file descriptors 3 and 4), so it needs nothing but Debian's `chromium` package. Used by tests/test_report_html.py,
and by hand for the README's screenshot:

    python tests/chromium_page.py runs/report/index.html --screenshot docs/report.png
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BINARY = "chromium"
STATE = """JSON.stringify({
  images: Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth,
                                                 src: i.src.slice(0, 40)})),
  tables: Array.from(document.querySelectorAll('table')).map(t => t.id),
  figures: Array.from(document.querySelectorAll('figure')).map(f => f.id),
  brokenLinks: Array.from(document.querySelectorAll('a[href^="#"]'))
                    .filter(a => !document.getElementById(decodeURIComponent(a.hash.slice(1)))).map(a => a.hash),
  height: document.documentElement.scrollHeight,
})"""


@dataclass
class PageLoad:
    """What the browser saw. errors: console messages, log entries of level error and uncaught exceptions;
    requests: every URL the page asked for (the page itself included); state: images, tables, figures,
    in-page links that lead nowhere, page height (see STATE)."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    screenshot: bytes | None = None


def available() -> bool:
    return shutil.which(BINARY) is not None


class _Pipe:
    """A Chromium process and the DevTools protocol over its pipe."""

    def __init__(self, profile: str) -> None:
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def fds() -> None:  # the child reads commands on fd 3 and answers on fd 4
            read, write = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.process = subprocess.Popen(
            [BINARY, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}",
             "about:blank"],
            preexec_fn=fds, close_fds=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buffer, self.next_id, self.events = b"", 0, []

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_chrome, json.dumps(message).encode() + b"\0")
        answer = self.wait(lambda m, i=self.next_id: m.get("id") == i, timeout)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def wait(self, done: Any, timeout: float) -> dict:
        end = time.monotonic() + timeout
        while True:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                message = json.loads(raw)
                self.events.append(message)
                if done(message):
                    return message
            ready, _, _ = select.select([self.from_chrome], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self.from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium exited")
            self.buffer += chunk

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
            self.process.wait(10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            os.close(self.to_chrome)
            os.close(self.from_chrome)


def load(page: Path, screenshot: bool = False, width: int = 1280) -> PageLoad:
    """Load `page` (a file) as a reader would, wait for its load event, and collect what happened."""
    with tempfile.TemporaryDirectory() as profile:
        pipe = _Pipe(profile)
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.call(f"{domain}.enable", session=session)
            pipe.call("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)
            pipe.call("Page.navigate", {"url": Path(page).resolve().as_uri()}, session)
            pipe.wait(lambda m: m.get("method") == "Page.loadEventFired", 60)
            result = pipe.call("Runtime.evaluate", {"expression": STATE, "returnByValue": True}, session)
            seen = PageLoad(state=json.loads(result["result"]["value"]))
            if screenshot:
                shot = pipe.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                                 session)
                seen.screenshot = base64.b64decode(shot["data"])
            seen.errors, seen.requests = _errors(pipe.events), _requests(pipe.events)
            return seen
        finally:
            pipe.close()


def _errors(events: list[dict]) -> list[str]:
    out = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Log.entryAdded" and params["entry"]["level"] == "error":
            out.append(f"{params['entry']['text']} ({params['entry'].get('url', '')})")
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            out.append(params["exceptionDetails"]["text"])
    return out


def _requests(events: list[dict]) -> list[str]:
    """Every requested URL, data: URLs cut to their first 40 characters."""
    urls = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    return [url[:40] if url.startswith("data:") else url for url in urls]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="load a page in headless Chromium and say what it saw")
    parser.add_argument("page", type=Path)
    parser.add_argument("--screenshot", type=Path, help="write a full-page PNG screenshot here")
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()
    seen = load(args.page, screenshot=args.screenshot is not None, width=args.width)
    if args.screenshot:
        args.screenshot.write_bytes(seen.screenshot or b"")
    state = seen.state
    print(f"errors: {seen.errors or 'none'}; requests: {seen.requests}; tables: {len(state['tables'])}; "
          f"images: {len(state['images'])}, decoded: {sum(i['complete'] and i['width'] > 0 for i in state['images'])}; "
          f"broken links: {state['brokenLinks'] or 'none'}; height: {state['height']} px")
