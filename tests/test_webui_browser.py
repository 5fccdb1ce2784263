"""`swiftlike web-ui` in a real browser: a real gradio server (a `swiftlike web-ui` process on a free port, from
WEBUI_SERVER / WEBUI_PORT) driven by Debian's chromium through playwright. A 2-step run started from the Train tab
shows its loss chart and finishes; Chat streams a reply from its adapter; Compare shows two answers; the adapter is
pushed to and installed from a local hub in the Adapters tab; `--lang zh` shows Chinese labels."""
import json
import os
import re
from pathlib import Path

import pytest
from webui_driver import CHROMIUM, DATA
from webui_driver import fill as _fill, pick as _pick, start as _start, stop as _stop, tab as _tab
from webui_driver import wait_text as _wait_text

pytestmark = pytest.mark.slow

pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
if not os.path.exists(CHROMIUM):
    pytest.skip("no chromium: apt-get install -y chromium (.ci/run installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("webui")


@pytest.fixture(scope="module")
def server(workdir):
    proc, url = _start(workdir, workdir / "home")
    yield url
    _stop(proc)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(browser, server):
    pg = browser.new_page(viewport={"width": 1280, "height": 1400})
    pg.set_default_timeout(180_000)  # generous: CI machines may be loaded
    pg.goto(server)
    pg.wait_for_selector("#train-command")
    yield pg
    pg.close()


STATE = {}


def test_ui_starts_from_the_environment_variables(page, server):
    assert page.title() == "swiftlike web UI"
    for name in ("Train", "Chat", "Compare", "Adapters", "Export"):
        assert page.get_by_role("tab", name=name).is_visible()
    # the form's command for its defaults: the embedded model
    _wait_text(page.locator("#train-command"), lambda t: "swiftlike sft --model_type smollm2-135m-instruct" in t, 30,
               "no command shown")


def test_preview_highlights_the_supervised_span_and_lists_bad_rows(page, workdir, tiny_model):
    bad = workdir / "bad.jsonl"
    lines = DATA.read_text().splitlines()
    bad.write_text("\n".join([lines[0], '{"messages": [{"role": "user"}]}', lines[1]]) + "\n")
    _fill(page, "train-model-dir", tiny_model)
    _pick(page, "train-template", "smollm2")
    _pick(page, "train-datasets", str(bad))
    page.get_by_text("Preview data", exact=True).first.click()
    page.locator("#train-preview-btn").click()
    preview = page.locator("#train-preview")
    text = _wait_text(preview, lambda t: "Bad rows" in t, 120, "no bad rows listed")
    assert f"{bad}:2" in text
    # the good rows of this file still render, with the answer (and only the answer) highlighted
    _wait_text(preview, lambda t: "Nova" in t, 60, "no rendered rows")
    marked = preview.locator("mark.swl-sup").all_inner_texts()
    assert any("I am Nova, made by Orbit Labs." in m for m in marked), marked
    assert not any("Who are you?" in m for m in marked), marked
    # back to the good file only
    remove = page.locator("#train-datasets .token-remove, #train-datasets [aria-label^='Remove']")
    while remove.count():
        remove.first.click()
        page.wait_for_timeout(200)


def _train_form(page, tiny_model, max_steps):
    _fill(page, "train-model-dir", tiny_model)
    _pick(page, "train-template", "smollm2")
    _pick(page, "train-datasets", str(DATA))
    for elem, value in (("train-max-steps", max_steps), ("train-batch", 2), ("train-lora-rank", 4),
                        ("train-lora-alpha", 8), ("train-max-length", 128), ("train-logging-steps", 1),
                        ("train-lr", 0.005), ("train-save-steps", 1)):
        _fill(page, elem, value)


def test_two_step_run_from_the_train_tab_shows_its_loss_and_finishes(page, workdir, tiny_model):
    _train_form(page, tiny_model, 2)
    _fill(page, "train-extra", "--report_to none --lora_dropout 0")
    command = _wait_text(page.locator("#train-command"), lambda t: "--lora_dropout 0" in t, 30, "command not updated")
    flat = " ".join(command.split())
    assert f"swiftlike sft --model {tiny_model} --template smollm2 --dataset {DATA}" in flat, flat
    assert "--max_steps 2" in flat and "--lora_rank 4" in flat and "--model_type" not in flat
    page.locator("#train-start").click()
    msg = _wait_text(page.locator("#train-start-msg"), lambda t: "started" in t or "Error" in t, 30,
                     "no start message")
    assert "started: swiftlike sft" in msg, msg
    status = page.locator("#train-status")
    text = _wait_text(status, lambda t: "finished" in t or "failed" in t, 300, "run did not end")
    assert "Status: finished" in text and "step 2/2" in text, text + page.locator("#train-log textarea").input_value()
    ckpts = sorted((workdir / "output").glob("*/v*-*/checkpoint-2"))
    assert len(ckpts) == 1 and (ckpts[0] / "swiftlike.json").exists()
    STATE["ckpt"] = str(ckpts[0])
    assert str(ckpts[0]) in text
    # the loss chart is drawn from logging.jsonl (two points)
    rows = [json.loads(x) for x in (ckpts[0].parent / "logging.jsonl").read_text().splitlines()]
    assert sum("loss" in r for r in rows) == 2
    page.wait_for_selector("#train-loss canvas, #train-loss svg", timeout=30_000)
    assert "swiftlike sft done" in page.locator("#train-log textarea").input_value()
    # a reload finds the run again, from its job record and its output directory
    page.reload()
    page.wait_for_selector("#train-command")
    _wait_text(page.locator("#train-status"), lambda t: "finished" in t, 180, "run not found after a reload")


def test_chat_streams_a_reply_from_the_adapter(page):
    _tab(page, "Chat")
    page.locator("#chat-refresh").click()
    _pick(page, "chat-adapter", STATE["ckpt"])
    page.evaluate("""() => {
        window.__seen = new Set();
        const bot = document.querySelector('#chat-bot');
        new MutationObserver(() => {
            const msgs = bot.querySelectorAll('[data-testid="bot"]');
            if (msgs.length) window.__seen.add(msgs[msgs.length - 1].innerText);
        }).observe(bot, {subtree: true, childList: true, characterData: true});
    }""")
    # a 2-step adapter on a random model: greedy decoding repeats one token, a repetition penalty makes it talk
    _fill(page, "chat-max-new", 40)
    page.locator("#chat-rep input[type=number]").fill("1.5")
    page.locator("#chat-rep input[type=number]").press("Tab")
    _fill(page, "chat-message", "Who are you?")
    page.locator("#chat-send").click()
    note = _wait_text(page.locator("#chat-note"), lambda t: STATE["ckpt"] in t or "Error" in t, 180,
                      "no model loaded")
    assert "Error" not in note, note
    bot = page.locator('#chat-bot [data-testid="bot"]').last
    _wait_text(bot, lambda t: len(t.strip()) > 0, 60, "no reply")
    page.wait_for_timeout(3000)
    seen = [s for s in page.evaluate("() => Array.from(window.__seen)") if s.strip()]
    assert len(seen) >= 2, f"the reply did not arrive in pieces: {seen!r}"
    user = page.locator('#chat-bot [data-testid="user"]').last.inner_text()
    assert "Who are you?" in user


def test_compare_shows_two_answers(page, tiny_model):
    _tab(page, "Compare")
    _fill(page, "compare-base-dir", tiny_model)
    _pick(page, "compare-template", "smollm2")  # B is the bare base: a model dir of no registered type
    _pick(page, "compare-adapter-a", STATE["ckpt"])
    _fill(page, "compare-max-new", 24)
    page.locator("#compare-rep input[type=number]").fill("1.5")
    page.locator("#compare-rep input[type=number]").press("Tab")
    _fill(page, "compare-prompt", "Who made you?")
    page.locator("#compare-go").click()
    a, b = page.locator("#compare-answer-a textarea"), page.locator("#compare-answer-b textarea")

    def done(_):
        va, vb = a.input_value(), b.input_value()
        return va.strip() and vb.strip() and "loading" not in va + vb

    _wait_text(page.locator("#compare-answer-b"), done, 180, "two answers not shown")
    assert not a.input_value().startswith("Error") and not b.input_value().startswith("Error"), (a.input_value(),
                                                                                                  b.input_value())


def test_adapter_pushed_and_installed_from_a_local_hub(page, workdir):
    _tab(page, "Adapters")
    page.get_by_text("Push a checkpoint", exact=True).first.click()
    _fill(page, "adapters-push-dir", STATE["ckpt"])
    _fill(page, "adapters-push-ref", "local:acme/nova")
    page.locator("#adapters-push").click()
    result = page.locator("#adapters-result")
    text = _wait_text(result, lambda t: "pushed" in t or "Error" in t, 60, "no push result")
    assert "-> local:acme/nova" in text, text
    assert (workdir / "hub" / "acme" / "nova").is_dir()
    _fill(page, "adapters-ref", "local:acme/nova")
    page.locator("#adapters-install").click()
    text = _wait_text(result, lambda t: "installed" in t or "Error" in t, 60, "no install result")
    assert "installed local:acme/nova" in text and " as nova" in text, text
    table = page.locator("#adapters-table")
    _wait_text(table, lambda t: "nova" in t and "lora" in t, 30, "adapter not listed")
    page.locator("#adapters-verify").click()
    _wait_text(result, lambda t: t.startswith("ok: nova"), 30, "verify did not pass")
    # a tampered file is refused in the CLI's words
    config = workdir / "home" / "adapters" / "nova" / "adapter_config.json"
    config.write_text(config.read_text().replace('"r": 4', '"r": 5'))
    page.locator("#adapters-verify").click()
    text = _wait_text(result, lambda t: "Error" in t, 30, "tampering not reported")
    assert "adapter_config.json: sha256 mismatch" in text


def test_export_tab_merges_the_adapter(page, workdir):
    _tab(page, "Export")
    _pick(page, "export-merge-ckpt", STATE["ckpt"])
    _fill(page, "export-merge-out", workdir / "merged")
    page.locator("#export-merge").click()
    log = page.locator("#export-log textarea")
    _wait_text(page.locator("#export-log"), lambda t: "[exit" in log.input_value(), 180, "merge did not end")
    text = log.input_value()
    assert text.startswith(f"$ swiftlike merge-lora --ckpt_dir {STATE['ckpt']} --output_dir {workdir / 'merged'}")
    assert "merged model:" in text and text.rstrip().endswith("[exit 0]"), text
    assert (workdir / "merged" / "config.json").exists()
    # a path that is not there is refused before anything runs, as the CLI refuses it
    _pick(page, "export-merge-ckpt", str(workdir / "nope" / "checkpoint-9"))
    page.locator("#export-merge").click()
    _wait_text(page.locator("#export-log"), lambda t: "no such directory" in log.input_value(), 30, "no refusal")
    assert log.input_value().startswith("Error: --ckpt_dir ")


def test_stop_ends_a_run_and_keeps_its_last_complete_checkpoint(page, workdir, tiny_model):
    _tab(page, "Train")
    _train_form(page, tiny_model, 2000)
    _wait_text(page.locator("#train-command"), lambda t: "--max_steps 2000" in t, 30, "command not updated")
    page.locator("#train-start").click()
    msg = _wait_text(page.locator("#train-start-msg"), lambda t: "started" in t and "2000" in t or "Error" in t, 30,
                     "no start message")
    assert "Error" not in msg, msg
    status = page.locator("#train-status")
    _wait_text(status, lambda t: "running" in t and "checkpoint-" in t, 240, "no checkpoint while running")
    page.locator("#train-stop").click()
    text = _wait_text(status, lambda t: "Status: stopped" in t or "finished" in t, 120, "run did not stop")
    assert "Status: stopped" in text and "/2000" in text, text
    run_dir = Path(re.search(r"(\S+/v\d+-\d{8}-\d{6})", text).group(1))
    checkpoints = sorted(run_dir.glob("checkpoint-*"))
    assert checkpoints and all((c / "swiftlike.json").exists() for c in checkpoints), checkpoints
    assert not (run_dir / "checkpoint-2000").exists()


def test_chinese_ui_shows_chinese_labels(browser, workdir):
    proc, url = _start(workdir, workdir / "home", "--lang", "zh")
    try:
        pg = browser.new_page()
        pg.goto(url)
        pg.set_default_timeout(180_000)
        pg.wait_for_selector("#train-command")
        for name in ("训练", "对话", "对比", "适配器", "导出"):
            assert pg.get_by_role("tab", name=name).is_visible()
        assert pg.locator("#train-start").inner_text().strip() == "开始训练"
        assert "训练阶段" in pg.locator("#train-stage").inner_text()
        assert pg.title() == "swiftlike 网页界面"
        # a restarted UI finds the runs again, from the job records and the output directory
        _wait_text(pg.locator("#train-status"), lambda t: "状态" in t and ("已停止" in t or "已完成" in t), 180,
                   "runs not found after a restart")
        pg.close()
    finally:
        _stop(proc)


def test_auth_is_required_when_given(workdir):
    """--auth: nothing but the login page answers without the password; the right one opens the app."""
    import http.cookiejar
    import urllib.error
    import urllib.parse
    import urllib.request

    proc, url = _start(workdir, workdir / "home", "--auth", "me:secret")
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url + "config", timeout=10)
        assert err.value.code == 401
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with pytest.raises(urllib.error.HTTPError):
            opener.open(url + "login", urllib.parse.urlencode({"username": "me", "password": "nope"}).encode())
        opener.open(url + "login", urllib.parse.urlencode({"username": "me", "password": "secret"}).encode())
        with opener.open(url + "config", timeout=10) as r:
            assert r.status == 200 and "swiftlike web UI" in r.read().decode()
    finally:
        _stop(proc)
