"""Driving `swiftlike web-ui` from outside: start it as a process on a free port (from WEBUI_SERVER / WEBUI_PORT) and
fill its gradio widgets through playwright. Shared by tests/test_webui_browser.py and scripts/webui_screenshots.py."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DATA = Path(__file__).parent / "data" / "identity.jsonl"
# Waits are upper bounds, stretched on a loaded machine (WEBUI_TEST_SLACK=1 for the bare figures).
SLACK = float(os.environ.get("WEBUI_TEST_SLACK", "3"))


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


def settle(page):
    """Until the page has run what it queued: two animation frames, then a timer. Gradio 6's widgets finish some of
    their work that late (a dropdown's keydown handler first awaits svelte's tick(), an animation frame or a timer;
    a tab shown for the first time gets its widgets' initial props pushed in again a few frames after it renders)."""
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(done))))")


def fill(page, elem_id, value):
    """A textbox's (or a number's) text, typed and left with Tab; typed again until the widget holds it."""
    box = page.locator(f"#{elem_id} input, #{elem_id} textarea").first
    for _ in range(3):
        box.fill(str(value))
        box.press("Tab")
        settle(page)
        if box.input_value() == str(value):
            return
    raise AssertionError(f"#{elem_id} did not keep {str(value)!r}; it shows {box.input_value()!r}")


def pick(page, elem_id, value):
    """A dropdown's value: its listed choice clicked, or (a custom value) typed and Enter; done again until the widget
    holds it (a single-select shows it in its box and has let go of the focus; a multiselect shows it as a token).

    Never Enter then Tab at once: gradio's single-select handles the Enter a frame (or a timer) after the keydown
    (its handler first awaits svelte's tick()), so a Tab pressed meanwhile blurs the box first, the box reverts to the
    old value, and the late Enter commits that reverted text ("" here, a listed choice of the template dropdowns).
    Under load (CI, 2 cores) that lost 5 and 6 tries in a row. Returns the number of tries it took."""
    value = str(value)
    root = page.locator(f"#{elem_id}")
    box = root.locator("input").first
    tokens = root.locator(".token")  # a multiselect shows its values as tokens and empties its box

    def holds():
        if tokens.filter(has_text=value).count():
            return True
        return box.input_value() == value and not box.evaluate("el => el === document.activeElement")

    if holds():  # a multiselect's option or Enter toggles: picking a value it holds would drop it
        return 0
    for attempt in range(1, 7):
        box.click()  # the focus opens the list of choices
        box.fill(value)
        try:
            root.locator("[role=listbox]").wait_for(state="attached", timeout=2000 * SLACK)
        except Exception:  # no list shown (disabled, or gone already): Enter below
            pass
        listed = root.get_by_role("option", name=value, exact=True)  # its aria-label is the choice's text
        if listed.count():
            listed.first.click()  # handled in the mousedown itself, nothing deferred
        else:
            box.press("Enter")
            try:  # committed: a single-select lets go of the focus, a multiselect empties its box
                box.evaluate("""(el, ms) => new Promise((done, fail) => {
                    const t0 = performance.now();
                    const poll = () => document.activeElement !== el || el.value === "" ? done() :
                        performance.now() - t0 > ms ? fail(new Error("Enter not taken")) : setTimeout(poll, 20);
                    poll();
                })""", 2000 * SLACK)
            except Exception:  # not taken (yet): checked below, typed again
                pass
        if box.evaluate("el => el === document.activeElement"):
            box.press("Tab")  # a multiselect keeps the focus after a value; an Enter not taken leaves it too
        settle(page)
        if holds():
            settle(page)  # and still held once whatever the page had queued has run
            if holds():
                return attempt
    raise AssertionError(f"#{elem_id} did not take {value!r}; it shows {box.input_value()!r}")


def tab(page, name):
    """A tab selected, and settled: gradio 6 renders a tab's widgets when it is first shown, then pushes their
    initial values in again a few frames later (what was typed or picked in between is lost)."""
    page.get_by_role("tab", name=name).click()
    page.get_by_role("tab", name=name, selected=True).wait_for()
    settle(page)
    settle(page)


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
