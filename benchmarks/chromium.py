"""Open a local HTML page in headless Chromium: console errors, the images that loaded, a screenshot.

    report = open_page("runs/mine/inspect/epoch_003.html", screenshot="page.png")
    report.errors          # console errors, uncaught exceptions, failed loads: [] for a good page
    report.images          # <img> elements on the page
    report.broken          # the sources of the images that do not load, once every image is asked for

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
messages ending in a NUL byte, on file descriptors 3 and 4), so no websocket or browser-automation
package is needed. :func:`find_chromium` says whether a browser is installed.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hhcl.files import write_bytes_atomically

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

# Asks for every image of the page (lazy ones too) and reports which ones loaded.
IMAGE_CHECK = """(async () => {
  const images = [...document.images];
  const inView = images.filter(image => image.getBoundingClientRect().top < innerHeight);
  const loadedInView = inView.filter(image => image.complete && image.naturalWidth > 0).length;
  const lazy = images.filter(image => image.loading === "lazy").length;
  for (const image of images) image.loading = "eager";
  await Promise.allSettled(images.map(image => image.decode()));
  const broken = images.filter(image => !(image.complete && image.naturalWidth > 0)).map(image => image.src);
  return JSON.stringify({images: images.length, inView: inView.length, loadedInView, lazy, broken});
})()"""
# True once every image in the first screen has finished loading (or failed).
IN_VIEW_SETTLED = """[...document.images].filter(image => image.getBoundingClientRect().top < innerHeight)
  .every(image => image.complete)"""


@dataclass
class PageReport:
    """What the browser saw: errors, images (``in_view`` of them in the first screen, ``lazy`` marked so)."""

    errors: list[str] = field(default_factory=list)
    images: int = 0
    in_view: int = 0
    loaded_in_view: int = 0
    lazy: int = 0
    broken: list[str] = field(default_factory=list)
    screenshot: Path | None = None


def find_chromium() -> str | None:
    """The path of an installed Chromium or Chrome, or None."""
    return next((found for name in BROWSER_NAMES if (found := shutil.which(name))), None)


class DevTools:
    """One headless browser and one page, spoken to over the DevTools pipe."""

    def __init__(self, browser: str, width: int, height: int, timeout: float) -> None:
        self.timeout = timeout
        self.profile = tempfile.TemporaryDirectory(prefix="hhcl-chromium-")
        to_browser_read, self.to_browser = os.pipe()
        self.from_browser, from_browser_write = os.pipe()
        # the child's ends above 9, so that placing them at 3 and 4 cannot overwrite one with the other
        to_browser_read, from_browser_write = (_above_nine(fd) for fd in (to_browser_read, from_browser_write))
        command = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--no-first-run", "--no-default-browser-check", "--hide-scrollbars", "--remote-debugging-pipe",
                   f"--user-data-dir={self.profile.name}", f"--window-size={width},{height}", "about:blank"]
        # the browser reads fd 3 and writes fd 4: bash places the pipe ends there (sh takes one digit only)
        wrapper = ["bash", "-c", f'exec "$@" 3<&{to_browser_read} 4>&{from_browser_write}', "bash", *command]
        self.log = tempfile.TemporaryFile()  # the browser's own messages, quoted when it fails
        self.process = subprocess.Popen(wrapper, pass_fds=(to_browser_read, from_browser_write),
                                        stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self.messages: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=self.session)
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session=self.session)

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self.from_browser, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self.messages.put(json.loads(message))
        self.messages.put(None)

    def _next_message(self, deadline: float) -> dict:
        try:
            message = self.messages.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise TimeoutError(f"Chromium did not answer within {self.timeout:.0f} s") from None
        if message is None:
            self.log.seek(0)
            said = self.log.read().decode(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError("Chromium closed the DevTools pipe; it said: " + " | ".join(said))
        return message

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and return its result; the events that arrive meanwhile are kept."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._next_message(deadline)
            if answer.get("id") != self.next_id:
                self.events.append(answer)
                continue
            if "error" in answer:
                raise RuntimeError(f"{method}: {answer['error'].get('message')}")
            return answer.get("result", {})

    def wait_for_event(self, method: str, since: int = 0) -> dict:
        """The first event ``method`` from ``self.events[since]`` on, waiting for it when it has not come yet."""
        deadline = time.monotonic() + self.timeout
        seen = since
        while True:
            for event in self.events[seen:]:
                if event.get("method") == method:
                    return event
            seen = len(self.events)
            self.events.append(self._next_message(deadline))

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, session=self.session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads (``Log`` entries of level error)."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console: " + " ".join(str(arg.get("value", arg.get("description")))
                                                    for arg in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                found.append("exception: " + str(details.get("exception", {}).get("description", details.get("text"))))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                found.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
        return found

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.to_browser)
        os.close(self.from_browser)
        self.log.close()
        self.profile.cleanup()


def _above_nine(descriptor: int) -> int:
    """A copy of ``descriptor`` numbered 10 or more; the original is closed."""
    import fcntl

    copy = fcntl.fcntl(descriptor, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(descriptor)
    return copy


def open_page(page: str | os.PathLike, screenshot: str | os.PathLike | None = None, width: int = 1280,
              height: int = 900, full_page: bool = False, browser: str | None = None,
              timeout: float = 60.0) -> PageReport:
    """Load ``page`` (a local file) in headless Chromium, ``width`` x ``height`` pixels; check it; take a picture.

    The first screen's images must load by themselves (lazy loading); then every image is asked
    for, and the screenshot (PNG) shows the first screen, or the whole page with ``full_page``.
    """
    browser = browser or find_chromium()
    if browser is None:
        raise FileNotFoundError("no Chromium found; install it, e.g. `apt-get install -y chromium`")
    tools = DevTools(browser, width, height, timeout)
    try:
        before = len(tools.events)
        tools.call("Page.navigate", {"url": Path(page).resolve().as_uri()}, session=tools.session)
        tools.wait_for_event("Page.loadEventFired", since=before)
        deadline = time.monotonic() + timeout
        while not tools.evaluate(IN_VIEW_SETTLED) and time.monotonic() < deadline:
            time.sleep(0.1)
        report = PageReport()
        images = json.loads(tools.evaluate(IMAGE_CHECK))
        report.images, report.in_view, report.lazy = images["images"], images["inView"], images["lazy"]
        report.loaded_in_view, report.broken = images["loadedInView"], images["broken"]
        if screenshot is not None:
            options = {"format": "png"}
            if full_page:
                size = tools.call("Page.getLayoutMetrics", session=tools.session)["cssContentSize"]
                options.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": size["width"],
                                                                 "height": size["height"], "scale": 1})
            data = tools.call("Page.captureScreenshot", options, session=tools.session)["data"]
            report.screenshot = write_bytes_atomically(screenshot, base64.b64decode(data))
        time.sleep(0.2)  # let the errors of late loads arrive
        tools.call("Runtime.evaluate", {"expression": "0"}, session=tools.session)
        report.errors = tools.errors()
        return report
    finally:
        tools.close()


__all__ = ["PageReport", "find_chromium", "open_page"]
