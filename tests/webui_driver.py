"""Driving `swiftlike web-ui` from outside: start it as a process on a free port (from WEBUI_SERVER / WEBUI_PORT) and
fill its gradio widgets through playwright. Shared by tests/test_webui_browser.py and scripts/webui_screenshots.py."""
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DATA = Path(__file__).parent / "data" / "identity.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(workdir: Path, home: Path, *args, timeout=360):
    port = free_port()
    env = {**os.environ, "WEBUI_SERVER": "127.0.0.1", "WEBUI_PORT": str(port), "SWIFTLIKE_HOME": str(home),
           "SWIFTLIKE_LOCAL_HUB": str(workdir / "hub")}
    env.pop("SWIFTLIKE_UI_LANG", None)
    env.pop("SWIFT_UI_LANG", None)
    log = open(workdir / f"webui-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "swiftlike", "web-ui", *args], cwd=workdir, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"web-ui exited {proc.returncode}: {(workdir / f'webui-{port}.log').read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError("web-ui did not answer in time")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def fill(page, elem_id, value):
    box = page.locator(f"#{elem_id} input, #{elem_id} textarea").first
    box.fill(str(value))
    box.press("Tab")


def pick(page, elem_id, value):
    """A dropdown's value (custom values allowed): type it, Enter; typed again until the widget holds it."""
    box = page.locator(f"#{elem_id} input").first
    tokens = page.locator(f"#{elem_id} .token")  # a multiselect shows its values as tokens and empties its box
    for attempt in range(6):  # a dropdown made visible (or updated) a moment ago can drop the Enter (seen in CI)
        box.click()
        box.fill(str(value))
        # the listed choice itself when there is one (an Enter was dropped 5 times in a row once in CI); Enter
        # for a custom value
        option = page.locator(f"#{elem_id} [role=option]").filter(
            has_text=re.compile(rf"^\s*{re.escape(str(value))}\s*$"))
        if option.count():
            option.first.click()
        else:
            box.press("Enter")
        box.press("Tab")
        page.wait_for_timeout(200 * (attempt + 1))
        # a single-select that dropped the Enter reverts to its old value on blur: compare, never accept ""
        if box.input_value() == str(value) or tokens.filter(has_text=str(value)).count():
            return
    raise AssertionError(f"#{elem_id} did not take {value!r}; it shows {box.input_value()!r}")


def tab(page, name):
    page.get_by_role("tab", name=name).click()


# Waits are upper bounds, stretched on a loaded machine (WEBUI_TEST_SLACK=1 for the bare figures).
SLACK = float(os.environ.get("WEBUI_TEST_SLACK", "3"))


def wait_text(locator, predicate, timeout_s, what):
    """The locator's text once `predicate` holds, polled for up to timeout_s * SLACK seconds."""
    deadline = time.time() + timeout_s * SLACK
    text = ""
    while time.time() < deadline:
        text = locator.inner_text()
        if predicate(text):
            return text
        time.sleep(0.5)
    raise AssertionError(f"{what}; last seen: {text!r}")
