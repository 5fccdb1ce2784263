"""The gradio app: one Blocks with the Train, Chat, Compare, Adapters and Export tabs, in the chosen language."""
from __future__ import annotations

import sys

import gradio as gr

from . import adapters_tab, chat_tab, export_tab, train_tab
from .common import CSS
from .i18n import labels
from .settings import UISettings


def build_app(settings: UISettings) -> gr.Blocks:
    L = labels(settings.lang)
    loads = []
    with gr.Blocks(title=L("title"), analytics_enabled=False) as demo:
        gr.Markdown(f"# {L('title')}\n{L('intro')}", elem_id="swl-title")
        with gr.Tabs():
            with gr.Tab(L("tab_train"), id="train", elem_id="tab-train"):
                loads.append(train_tab.build(settings, L))
            with gr.Tab(L("tab_chat"), id="chat", elem_id="tab-chat"):
                loads.append(chat_tab.build_chat(settings, L))
            with gr.Tab(L("tab_compare"), id="compare", elem_id="tab-compare"):
                loads.append(chat_tab.build_compare(settings, L))
            with gr.Tab(L("tab_adapters"), id="adapters", elem_id="tab-adapters"):
                loads.append(adapters_tab.build(settings, L))
            with gr.Tab(L("tab_export"), id="export", elem_id="tab-export"):
                loads.append(export_tab.build(settings, L))
        # a page load (a reload, a new browser) finds the runs, checkpoints and adapters again
        for hooks in loads:
            for name in ("load", "command"):
                if name in hooks:
                    fn, inputs, outputs = hooks[name]
                    demo.load(fn, inputs, outputs, show_progress="hidden")
    return demo


def launch(settings: UISettings, *, block: bool = True):
    demo = build_app(settings)
    demo.queue(default_concurrency_limit=4)
    print(f"swiftlike web-ui: {settings.url} (language {settings.lang}"
          f"{', login required' if settings.auth else ''})", file=sys.stderr, flush=True)
    return demo.launch(server_name=settings.host, server_port=settings.port, auth=settings.auth, share=False,
                       inbrowser=False, prevent_thread_lock=not block, quiet=True, css=CSS,
                       footer_links=["gradio"], ssr_mode=False)
