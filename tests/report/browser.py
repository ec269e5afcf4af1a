"""A real browser for the report tests: headless Debian `chromium`, driven over the DevTools protocol.

The protocol runs over `--remote-debugging-pipe` (JSON messages separated by NUL bytes on file
descriptors 3 and 4), so no websocket library and no port are needed. `check_page` loads one page from
file:// and returns what a person would notice: console errors, images that do not decode, requests that
leave the machine, and the text on the page; it also saves a screenshot.

    from tests.report.browser import check_page, require_chromium
    require_chromium()  # skips the test, with the reason, when chromium is absent
    result = check_page(run_dir / "report.html", tmp_path / "report.png")
    assert result["console_errors"] == [] and result["images_decoded"] == result["images"]
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

BROWSERS = ("chromium", "chromium-browser")
INSTALL = "apt-get install -y chromium (make test installs it when it runs as root)"
TIMEOUT = 60.0  # seconds for the whole page check; chromium's own startup takes about a second

# Each image decoded by the browser (img.decode() resolves and the picture has a size), or not.
DECODE_IMAGES = """Promise.all(Array.from(document.images).map(img =>
    img.decode().then(() => img.naturalWidth > 0 && img.naturalHeight > 0, () => false)))"""


def find_chromium() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def require_chromium() -> str:
    """The chromium executable, or a pytest skip that says how to install it."""
    path = find_chromium()
    if path is None:
        pytest.skip(f"chromium is not installed, so the page is not checked in a browser: {INSTALL}")
    return path


class DevTools:
    """One chromium process and a DevTools session on one page, over the remote-debugging pipe."""

    def __init__(self, executable: str, profile: Path, width: int, height: int):
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()

        def wire_pipes():  # in the child: chromium reads commands on fd 3 and writes replies on fd 4
            # via copies above 9, so that a pipe end that is itself fd 3 or 4 is neither clobbered nor
            # left close-on-exec (dup2 onto the same number changes nothing)
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        args = [
            executable,
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",  # chromium's sandbox refuses to run as root, as `make test` may
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # a report must not reach the network
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire_pipes,
            close_fds=False,  # else fds 3 and 4, set up after the fork, would be closed before exec
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.messages: queue.Queue = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self.next_id = 0
        self.session: str | None = None
        threading.Thread(target=self.read_messages, daemon=True).start()

    def read_messages(self) -> None:
        buffer = b""
        while chunk := os.read(self.from_browser, 1 << 16):
            buffer += chunk
            *complete, buffer = buffer.split(b"\0")
            for message in complete:
                self.messages.put(json.loads(message))
        self.messages.put(None)  # the browser closed the pipe

    def call(self, method: str, deadline: float, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its reply; events that arrive meanwhile are kept in order."""
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if self.session is not None and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self.receive(deadline, method)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"chromium: {method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str, deadline: float) -> None:
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self.receive(deadline, event))

    def receive(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        try:
            message = self.messages.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise TimeoutError(f"chromium: no {waiting_for} within {TIMEOUT:.0f} s") from None
        if message is None:
            raise RuntimeError(
                f"chromium exited (code {self.process.poll()}) while waiting for {waiting_for}"
            )
        return message

    def close(self) -> None:
        try:
            self.call("Browser.close", time.monotonic() + 5)
        except (OSError, RuntimeError, TimeoutError):
            pass  # already gone: nothing left to close
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.to_browser)


def console_errors(events: list[dict[str, Any]]) -> list[str]:
    """What the DevTools console would show in red: console.error calls, uncaught exceptions and the
    browser's own error entries (a resource that failed to load, a blocked request)."""
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append(details.get("exception", {}).get("description") or details.get("text", ""))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(f"{params['entry'].get('url', '')}: {params['entry']['text']}")
    return errors


def external_requests(events: list[dict[str, Any]]) -> list[str]:
    """URLs the page asked for that are neither inline (data:) nor the page itself (file:)."""
    urls = (e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent")
    return [url for url in urls if not url.startswith(("data:", "file:"))]


def evaluate(tools: DevTools, expression: str, deadline: float) -> Any:
    result = tools.call(
        "Runtime.evaluate", deadline, expression=expression, awaitPromise=True, returnByValue=True
    )
    if "exceptionDetails" in result:
        raise RuntimeError(f"chromium: {expression[:40]!r} raised {result['exceptionDetails']}")
    return result["result"].get("value")


def check_page(html_path: Path, screenshot: Path, width: int = 1100, height: int = 900) -> dict[str, Any]:
    """Load `html_path` in headless chromium from file://, and return
    {"console_errors": [str], "images": n, "images_decoded": n, "external_requests": [url],
     "text": the page's visible text, "title": str, "screenshot_size": (width, height) in pixels};
    the whole page, not only the first screen, is saved as a PNG to `screenshot`."""
    executable = require_chromium()
    deadline = time.monotonic() + TIMEOUT
    with tempfile.TemporaryDirectory(prefix="trainlab-chromium-") as profile:
        tools = DevTools(executable, Path(profile), width, height)
        try:
            target = tools.call("Target.createTarget", deadline, url="about:blank")["targetId"]
            tools.session = tools.call("Target.attachToTarget", deadline, targetId=target, flatten=True)[
                "sessionId"
            ]
            for domain in ("Runtime", "Log", "Page", "Network"):
                tools.call(f"{domain}.enable", deadline)
            tools.call(
                "Emulation.setDeviceMetricsOverride",
                deadline,
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            tools.call("Page.navigate", deadline, url=Path(html_path).resolve().as_uri())
            tools.wait_for("Page.loadEventFired", deadline)
            decoded = evaluate(tools, DECODE_IMAGES, deadline)
            text = evaluate(tools, "document.body ? document.body.innerText : ''", deadline)
            title = evaluate(tools, "document.title", deadline)
            size = tools.call("Page.getLayoutMetrics", deadline)["cssContentSize"]
            full = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
            shot = tools.call(
                "Page.captureScreenshot", deadline, format="png", clip=full, captureBeyondViewport=True
            )
        finally:
            tools.close()
    png = base64.b64decode(shot["data"])
    screenshot = Path(screenshot)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.write_bytes(png)
    return {
        "console_errors": console_errors(tools.events),
        "images": len(decoded),
        "images_decoded": sum(decoded),
        "external_requests": external_requests(tools.events),
        "text": text,
        "title": title,
        "screenshot_size": png_size(png),
    }


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, which follows the 8-byte signature and 8 bytes of header."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
