"""`swiftlike web-ui` in a real browser: a real gradio server (a `swiftlike web-ui` process on a free port, from
WEBUI_SERVER / WEBUI_PORT) driven by Debian's chromium through playwright. The Train form (registry choices searched,
the stage's and the tuner's own options, an upload, the command copied); the preview (supervised span highlighted,
bad rows as file:line, and a Start refused for them); a 2-step run from the Train tab shows its loss chart and
finishes; Chat streams a reply from its adapter and clears; Compare shows two answers; the adapter is pushed to and
installed from a local hub in the Adapters tab (manifest shown, tampered file, wrong base and pickle refused, a wheel
packaged, an adapter removed); Chat and Compare take an installed adapter and a hub ref; Export merges and exports
to a directory and a hub; Stop keeps complete checkpoints; a run outlives its tab, its browser and its web-ui, and a
new web-ui follows and stops it; `--lang zh` shows Chinese labels everywhere; `--auth` is enforced."""
import json
import os
import re
import time
from pathlib import Path

import pytest
from webui_driver import CHROMIUM, DATA
from webui_driver import fill as _fill, pick as _pick, start as _start, stop as _stop, tab as _tab
from webui_driver import SLACK, wait_text as _wait_text

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


def _compare(page, prompt):
    """Ask Compare `prompt` with a repetition penalty (a random model then says more than newlines): both answers
    shown, neither an error."""
    page.locator("#compare-rep input[type=number]").fill("1.5")
    page.locator("#compare-rep input[type=number]").press("Tab")
    _fill(page, "compare-prompt", prompt)
    page.locator("#compare-go").click()
    a, b = page.locator("#compare-answer-a textarea"), page.locator("#compare-answer-b textarea")

    def done(_):
        va, vb = a.input_value(), b.input_value()
        return va.strip() and vb.strip() and "loading" not in va + vb

    _wait_text(page.locator("#compare-answer-b"), done, 180, "two answers not shown")
    assert not a.input_value().startswith("Error") and not b.input_value().startswith("Error"), (a.input_value(),
                                                                                                  b.input_value())


STATE = {}


def test_ui_starts_from_the_environment_variables(page, server):
    assert page.title() == "swiftlike web UI"
    for name in ("Train", "Chat", "Compare", "Adapters", "Export"):
        assert page.get_by_role("tab", name=name).is_visible()
    # the form's command for its defaults: the embedded model
    _wait_text(page.locator("#train-command"), lambda t: "swiftlike sft --model_type smollm2-135m-instruct" in t, 30,
               "no command shown")


def _search(page, elem_id, typed, choose):
    """The options a dropdown offers once `typed` is typed into it (its search); then `choose` is clicked."""
    box = page.locator(f"#{elem_id} input").first
    box.click()
    box.fill("")
    box.press_sequentially(typed, delay=30)
    page.wait_for_timeout(800)
    options = page.locator(f"#{elem_id} ul.option-list li")
    shown = [t.replace("✓", "").strip() for t in options.all_inner_texts()]
    options.filter(has_text=choose).first.click()
    box.press("Tab")
    return shown


def test_train_form_follows_stage_and_its_command_is_copyable(browser, server, workdir, tiny_model):
    """The form on a page of its own: registry choices (searchable), the stage's and the tuner's own options, an
    upload, and the command — exactly the non-default options — copied to the clipboard."""
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    pg = context.new_page()
    pg.set_default_timeout(180_000)
    try:
        pg.goto(server)
        command = pg.locator("#train-command")
        _wait_text(command, lambda t: "swiftlike sft" in t, 60, "no command shown")
        # the defaults are swiftlike's: the command holds nothing but the model
        pg.locator("#train-command button[aria-label=Copy]").click()
        pg.wait_for_timeout(300)
        assert pg.evaluate("() => navigator.clipboard.readText()") == "swiftlike sft --model_type smollm2-135m-instruct"
        # model types and datasets from the registry, searchable
        assert _search(pg, "train-model-type", "smol", "smollm2-135m-instruct") == [
            "smollm2-135m-instruct", "smollm2-1_7b-instruct", "smollm2-360m-instruct"]
        assert _search(pg, "train-datasets", "alpaca", "alpaca-en") == ["alpaca-en", "alpaca-zh"]
        _wait_text(command, lambda t: t.split("\n")[-1] == "swiftlike sft --model_type smollm2-135m-instruct "
                   "--dataset alpaca-en", 30, "the registered dataset is not in the command")
        pg.locator("#train-datasets .token-remove, #train-datasets [aria-label^='Remove']").first.click()
        _wait_text(command, lambda t: "--dataset" not in t, 30, "the dataset was not removed")
        # the stage: rlhf shows its type
        assert not pg.locator("#train-rlhf-type").is_visible()
        pg.locator("#train-stage label").filter(has_text="rlhf").click()
        pg.locator("#train-rlhf-type").wait_for(state="visible")
        _pick(pg, "train-rlhf-type", "kto")
        _wait_text(command, lambda t: "swiftlike rlhf --rlhf_type kto --model_type smollm2-135m-instruct" in t, 30,
                   "rlhf command not shown")
        pg.locator("#train-stage label").filter(has_text="pt").click()
        _wait_text(command, lambda t: t.split("\n")[-1].startswith("swiftlike pt --model_type"), 30, "pt not shown")
        pg.locator("#train-rlhf-type").wait_for(state="hidden")
        # the tuner: only its own options are shown, and only they reach the command
        _fill(pg, "train-lora-rank", 4)
        _wait_text(command, lambda t: "--lora_rank 4" in t, 30, "lora rank not in the command")
        pg.set_input_files("#train-upload input[type=file]", str(DATA))
        text = _wait_text(command, lambda t: "identity.jsonl" in t, 60, "the upload is not in the command")
        uploaded = re.search(r"--dataset (\S+identity\.jsonl)", " ".join(text.split())).group(1)
        assert Path(uploaded).read_text() == DATA.read_text() and Path(uploaded) != DATA
        pg.locator("#train-stage label").filter(has_text="sft").click()
        _fill(pg, "train-model-dir", tiny_model)
        _pick(pg, "train-template", "smollm2")
        pg.get_by_text("Preview data", exact=True).first.click()
        pg.locator("#train-preview-btn").click()
        _wait_text(pg.locator("#train-preview"), lambda t: "Rows read: 8" in t, 120, "the upload was not previewed")
        pg.locator("#train-command button[aria-label=Copy]").click()
        pg.wait_for_timeout(300)
        copied = pg.evaluate("() => navigator.clipboard.readText()")
        assert copied.startswith(f"swiftlike sft --model {tiny_model} --template smollm2 --dataset {uploaded} ")
    finally:
        context.close()


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
    text = _wait_text(preview, lambda t: "Nova" in t, 60, "no rendered rows")
    marked = preview.locator("mark.swl-sup").all_inner_texts()
    assert any("I am Nova, made by Orbit Labs." in m for m in marked), (marked, text)
    assert not any("Who are you?" in m for m in marked), marked
    # Start anyway: the run refuses the data before any model loads, and its status lists the row as file:line
    page.locator("#train-start").click()
    status = _wait_text(page.locator("#train-status"), lambda t: "failed" in t or "finished" in t, 180,
                        "the run with a bad row did not end")
    assert "Status: failed" in status and "1 bad row(s)" in status and f"{bad}:2" in status, status
    assert not (workdir / "output").exists() or not list((workdir / "output").glob("*/v*-*"))  # no run dir left
    _clear_datasets(page)  # back to the good file only


def _clear_datasets(page):
    remove = page.locator("#train-datasets .token-remove, #train-datasets [aria-label^='Remove']")
    while remove.count():
        remove.first.click()
        page.wait_for_timeout(200)


def _train_form(page, tiny_model, max_steps, save_steps=1):
    _fill(page, "train-model-dir", tiny_model)
    _pick(page, "train-template", "smollm2")
    _clear_datasets(page)  # whatever an earlier test left there
    _pick(page, "train-datasets", str(DATA))
    for elem, value in (("train-max-steps", max_steps), ("train-batch", 2), ("train-lora-rank", 4),
                        ("train-lora-alpha", 8), ("train-max-length", 128), ("train-logging-steps", 1),
                        ("train-lr", 0.005), ("train-save-steps", save_steps)):
        _fill(page, elem, value)


def test_two_step_run_from_the_train_tab_shows_its_loss_and_finishes(page, workdir, tiny_model):
    _train_form(page, tiny_model, 2)
    _fill(page, "train-extra", "--report_to none --lora_dropout 0")
    command = _wait_text(page.locator("#train-command"), lambda t: "--lora_dropout 0" in t, 30, "command not updated")
    flat = " ".join(command.split())
    assert f"swiftlike sft --model {tiny_model} --template smollm2 --dataset {DATA}" in flat, flat
    assert "--max_steps 2" in flat and "--lora_rank 4" in flat and "--model_type" not in flat
    page.locator("#train-start").click()
    msg = _wait_text(page.locator("#train-start-msg"), lambda t: "started" in t and "--max_steps 2 " in t or
                     "Error" in t, 30, "no start message")
    assert "started: swiftlike sft" in msg, msg
    status = page.locator("#train-status")
    # (the run before it, refused for its bad row, is not this one)
    text = _wait_text(status, lambda t: "finished" in t or "failed" in t and "bad row" not in t, 300,
                      "run did not end")
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
    page.locator("#chat-clear").click()
    page.locator('#chat-bot [data-testid="user"]').first.wait_for(state="detached", timeout=30_000)
    page.wait_for_timeout(2000)  # a reply still streaming when Clear was clicked must not write the chat back
    assert page.locator('#chat-bot [data-testid="user"]').count() == 0
    assert page.locator('#chat-bot [data-testid="bot"]').count() == 0


def test_compare_shows_two_answers(page, tiny_model):
    _tab(page, "Compare")
    _fill(page, "compare-base-dir", tiny_model)
    _pick(page, "compare-template", "smollm2")  # B is the bare base: a model dir of no registered type
    _pick(page, "compare-adapter-a", STATE["ckpt"])
    _fill(page, "compare-max-new", 24)
    _compare(page, "Who made you?")


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
    config.write_text(config.read_text().replace('"r": 5', '"r": 4'))
    page.locator("#adapters-verify").click()
    _wait_text(result, lambda t: t.startswith("ok: nova"), 30, "verify did not pass once the file was restored")
    # the manifest: base, tuner, rank, datasets, metrics
    page.locator("#adapters-show").click()
    shown = _wait_text(page.locator("#adapters-manifest"), lambda t: '"datasets"' in t, 30, "no manifest shown")
    for part in ('"base_model_type": "tiny-llama"', '"tuner": "lora"', '"r": 4', str(DATA.name), '"metrics"',
                 '"loss"'):
        assert part in shown, (part, shown)
    # the wrong base is refused before anything is installed, in the CLI's words
    _fill(page, "adapters-install-name", "nova-on-smollm2")
    _fill(page, "adapters-base", "smollm2-135m-instruct")
    page.locator("#adapters-install").click()
    text = _wait_text(result, lambda t: "Error" in t or "installed" in t, 60, "no answer to a wrong base")
    assert "trained on 'tiny-llama', the base model is 'smollm2-135m-instruct'" in text and "nothing installed" in text
    assert not (workdir / "home" / "adapters" / "nova-on-smollm2").exists()
    _fill(page, "adapters-install-name", "")
    _fill(page, "adapters-base", "")


def test_adapters_tab_refuses_pickle_packages_a_wheel_and_removes(page, workdir):
    import shutil

    from swiftlike.adapters.publish import push
    from swiftlike.checkpoint import write_manifest

    pickled = workdir / "pickled-ckpt"
    shutil.copytree(STATE["ckpt"], pickled)
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")  # a pickle (of the int 1)
    write_manifest(pickled, {k: v for k, v in json.loads((pickled / "swiftlike.json").read_text()).items()
                             if k != "files"})
    result = page.locator("#adapters-result")
    # push refuses it from the UI
    _fill(page, "adapters-push-dir", pickled)
    _fill(page, "adapters-push-ref", "local:acme/pickled")
    page.locator("#adapters-push").click()
    text = _wait_text(result, lambda t: "adapter_model.bin" in t or "pushed" in t, 60, "no push result")
    assert "adapter_model.bin: pickle file" in text and not (workdir / "hub" / "acme" / "pickled").exists(), text
    # a publisher who means it pushed it anyway: install refuses it unless pickle is accepted
    push(pickled, "local:acme/pickled", allow_pickle=True, hub_root=str(workdir / "hub"))
    _fill(page, "adapters-ref", "local:acme/pickled")
    page.locator("#adapters-install").click()
    text = _wait_text(result, lambda t: "local:acme/pickled" in t, 60, "no install result")
    assert "adapter_model.bin: pickle file (.bin)" in text and "--allow-pickle" in text, text
    assert not (workdir / "home" / "adapters" / "pickled").exists()
    page.locator("#adapters-allow-pickle input").check()
    page.locator("#adapters-install").click()
    text = _wait_text(result, lambda t: "installed local:acme/pickled" in t or "allow" not in t, 60, "no install")
    assert " as pickled" in text, text
    page.locator("#adapters-allow-pickle input").uncheck()
    _wait_text(page.locator("#adapters-table"), lambda t: "pickled" in t, 30, "pickled not listed")
    # remove it
    _pick(page, "adapters-name", "pickled")
    page.locator("#adapters-remove").click()
    text = _wait_text(result, lambda t: "removed" in t or "Error" in t, 30, "no remove result")
    assert text.startswith("removed pickled"), text
    _wait_text(page.locator("#adapters-table"), lambda t: "pickled" not in t and "nova" in t, 30, "still listed")
    assert not (workdir / "home" / "adapters" / "pickled").exists()
    # package the run's checkpoint as a plugin wheel
    page.get_by_text("Package as a plugin wheel", exact=True).first.click()
    _fill(page, "adapters-pkg-dir", STATE["ckpt"])
    _fill(page, "adapters-dist", "swiftlike-adapter-nova")
    _fill(page, "adapters-wheel-dir", workdir / "dist")
    page.locator("#adapters-package").click()
    text = _wait_text(result, lambda t: "built" in t or "Error" in t, 60, "no package result")
    wheels = list((workdir / "dist").glob("swiftlike_adapter_nova-*-py3-none-any.whl"))
    assert len(wheels) == 1 and f"built {wheels[0]}" in text, text
    import zipfile

    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "swiftlike_adapter_nova/adapter/adapter_model.safetensors" in names, names


def test_chat_and_compare_take_an_installed_adapter_and_a_hub_ref(page, workdir, tiny_model):
    """Besides a checkpoint: an installed adapter's name and a hub ref, in Chat (its base found from the manifest)
    and side by side in Compare."""
    _tab(page, "Chat")
    page.locator("#chat-refresh").click()
    for adapter in ("nova", "local:acme/nova"):
        _pick(page, "chat-adapter", adapter)
        _fill(page, "chat-message", "Who are you?")
        page.locator("#chat-send").click()
        note = _wait_text(page.locator("#chat-note"), lambda t: "tiny-llama + " in t and "loading" not in t or
                          "Error" in t, 180, f"{adapter}: no model loaded")
        assert "Error" not in note and str(workdir / "home" / "adapters") in note, note
        bot = page.locator('#chat-bot [data-testid="bot"]').last
        _wait_text(bot, lambda t: len(t.strip()) > 0, 60, f"{adapter}: no reply")
        page.locator("#chat-clear").click()
        page.locator('#chat-bot [data-testid="user"]').first.wait_for(state="detached", timeout=30_000)
    page.reload()  # empty answer boxes: the answers below are this comparison's
    page.wait_for_selector("#train-command")
    _tab(page, "Compare")
    _fill(page, "compare-base-dir", tiny_model)
    _pick(page, "compare-template", "smollm2")
    _pick(page, "compare-adapter-a", "nova")
    _pick(page, "compare-adapter-b", "local:acme/nova")
    _fill(page, "compare-max-new", 24)  # a random model: a repetition penalty makes it say more than newlines
    _compare(page, "Who trained you?")


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
    # export: to a directory, then to a hub ref (the local hub of SWIFTLIKE_LOCAL_HUB)
    _pick(page, "export-ckpt", STATE["ckpt"])
    for to, where in ((str(workdir / "exported"), workdir / "exported"),
                      ("local:acme/nova-export", workdir / "hub" / "acme" / "nova-export")):
        _fill(page, "export-to", to)
        page.locator("#export-go").click()
        _wait_text(page.locator("#export-log"), lambda t: log.input_value().startswith(f"$ swiftlike export --ckpt_dir "
                   f"{STATE['ckpt']} --to {to}") and "[exit" in log.input_value(), 180, f"export to {to} did not end")
        assert log.input_value().rstrip().endswith("[exit 0]"), log.input_value()
        assert where.is_dir() and list(where.rglob("adapter_model.safetensors")), sorted(where.rglob("*"))
    assert not (workdir / "exported" / "optimizer.pt").exists()


def test_stop_ends_a_run_and_keeps_its_last_complete_checkpoint(page, workdir, tiny_model):
    _tab(page, "Train")
    _train_form(page, tiny_model, 2000)
    _wait_text(page.locator("#train-command"), lambda t: "--max_steps 2000" in t, 30, "command not updated")
    page.locator("#train-start").click()
    msg = _wait_text(page.locator("#train-start-msg"), lambda t: "started" in t and "2000" in t or "Error" in t, 30,
                     "no start message")
    assert "Error" not in msg, msg
    status = page.locator("#train-status")
    text = _wait_text(status, lambda t: "running" in t and "checkpoint-" in t or "Status: failed" in t, 240,
                      "no checkpoint while running")
    assert "Status: failed" not in text, text
    page.locator("#train-stop").click()
    text = _wait_text(status, lambda t: "Status: stopped" in t or "finished" in t, 120, "run did not stop")
    assert "Status: stopped" in text and "/2000" in text, text
    run_dir = Path(re.search(r"(\S+/v\d+-\d{8}-\d{6})", text).group(1))
    checkpoints = sorted(run_dir.glob("checkpoint-*"))
    assert checkpoints and all((c / "swiftlike.json").exists() for c in checkpoints), checkpoints
    assert not (run_dir / "checkpoint-2000").exists()


def _steps(run_dir):
    from swiftlike.webui.runs import log_rows

    return max((int(r.get("step", 0)) for r in log_rows(run_dir)), default=0)


def _advances(run_dir, what, by=3, timeout_s=60):
    first = _steps(run_dir)
    deadline = time.time() + timeout_s * SLACK
    while time.time() < deadline:
        if _steps(run_dir) >= first + by:
            return
        time.sleep(0.5)
    raise AssertionError(f"{what}: the run stayed at step {_steps(run_dir)} (from {first})")


def test_a_run_outlives_its_tab_its_browser_and_its_web_ui(browser, workdir, tiny_model):
    """Start a long run from one web-ui, close the tab and the browser, end that web-ui: the run goes on; a new
    web-ui finds it running, follows it live, and its Stop ends it with complete checkpoints."""
    proc, url = _start(workdir, workdir / "home")
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 1400})
        pg = context.new_page()
        pg.set_default_timeout(180_000)
        pg.goto(url)
        pg.wait_for_selector("#train-command")
        _train_form(pg, tiny_model, 100000, save_steps=20)
        _fill(pg, "train-extra", "--report_to none")
        _wait_text(pg.locator("#train-command"), lambda t: "--max_steps 100000" in t and "--save_steps 20" in t, 30,
                   "command not updated")
        pg.locator("#train-start").click()
        msg = _wait_text(pg.locator("#train-start-msg"), lambda t: "100000" in t or "Error" in t, 30, "no start")
        assert "started" in msg, msg
        status = pg.locator("#train-status")
        text = _wait_text(status, lambda t: "Status: running" in t and "checkpoint-" in t, 240, "no checkpoint")
        # live: step / total, elapsed and an ETA
        assert re.search(r"step \d+/100000 · elapsed \d+:\d\d(:\d\d)? · ETA \d+:\d\d", text), text
        run_dir = Path(re.search(r"(\S+/v\d+-\d{8}-\d{6})", text).group(1))
        context.close()  # the tab and the browser window are gone
        _advances(run_dir, "with no browser open")
    finally:
        _stop(proc)  # and so is the web-ui that started it
    _advances(run_dir, "after its web-ui ended")
    proc, url = _start(workdir, workdir / "home")
    try:
        pg = browser.new_page(viewport={"width": 1280, "height": 1400})
        pg.set_default_timeout(180_000)
        pg.goto(url)
        pg.wait_for_selector("#train-command")
        status = pg.locator("#train-status")
        first = _wait_text(status, lambda t: "Status: running" in t and str(run_dir) in t, 120,
                           "the new web-ui does not show the run running")
        step = int(re.search(r"step (\d+)/100000", first).group(1))
        _wait_text(status, lambda t: int(re.search(r"step (\d+)/", t).group(1)) > step, 60, "not followed live")
        pg.locator("#train-stop").click()
        text = _wait_text(status, lambda t: "Status: stopped" in t or "failed" in t, 120, "run did not stop")
        assert "Status: stopped" in text, text
        pg.close()
    finally:
        _stop(proc)
    checkpoints = sorted(run_dir.glob("checkpoint-*"))
    assert checkpoints and all((c / "swiftlike.json").exists() for c in checkpoints), checkpoints
    assert not (run_dir / ".staging").exists() or not any((run_dir / ".staging").iterdir())


# What may stay Latin on the Chinese page: the stage names (they are the commands), timers, the command, paths.
LATIN_OK = re.compile(r"sft|pt|rlhf|[\d.:]+\s*s?|swiftlike .*|/\S+")


def _english_lines(pg):
    """Lines of the visible page with Latin letters and no Chinese, but for what may stay Latin."""
    for button in pg.locator("button.label-wrap:not(.open)").all():  # every accordion open
        if button.is_visible():
            button.click()
    pg.wait_for_timeout(800)
    # the adapters table's cells are data, not labels (its headers are checked)
    table = pg.locator("#adapters-table")
    data = {t.strip() for t in table.inner_text().splitlines()} if table.is_visible() else set()
    data -= {t.strip() for t in pg.locator("#adapters-table th").all_inner_texts()}
    lines = [ln.strip() for ln in pg.locator("body").inner_text().splitlines()]
    return [ln for ln in lines if re.search(r"[A-Za-z]", ln) and not re.search(r"[\u4e00-\u9fff]", ln)
            and not LATIN_OK.fullmatch(ln) and ln not in data]


def test_chinese_ui_shows_chinese_labels(browser, workdir):
    """--lang zh in a browser set to Chinese (gradio's own widget texts follow the browser): every label, the
    adapters table's headers and the loss chart's are Chinese."""
    proc, url = _start(workdir, workdir / "home", "--lang", "zh")
    try:
        pg = browser.new_page(locale="zh-CN", viewport={"width": 1280, "height": 1400})
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
        pg.wait_for_selector("#train-loss canvas, #train-loss svg")
        english = {}
        for name in ("训练", "对话", "对比", "适配器", "导出"):
            _tab(pg, name)
            english[name] = _english_lines(pg)
        assert not any(english.values()), english
        _tab(pg, "适配器")
        headers = pg.locator("#adapters-table th").all_inner_texts()
        assert any("名称" in h for h in headers) and any("基座模型类型" in h for h in headers), headers
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
