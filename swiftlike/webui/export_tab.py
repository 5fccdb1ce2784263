"""The Export tab: `swiftlike merge-lora` and `swiftlike export` run as the CLI runs them (argument lists), their
output streamed as progress."""
from __future__ import annotations

import gradio as gr

from ..registry import SwiftlikeError
from .common import check_checkpoint_ref, error_line, stream_cli
from .runs import display


def merge_command(ckpt, output_dir, dequantize) -> list[str]:
    argv = ["swiftlike", "merge-lora", "--ckpt_dir", check_checkpoint_ref(ckpt)]
    if (output_dir or "").strip():
        argv += ["--output_dir", output_dir.strip()]
    if dequantize:
        argv += ["--dequantize", "true"]
    return argv


def export_command(ckpt, to, merge_lora, private, message, hub_root) -> list[str]:
    if not (to or "").strip():
        raise SwiftlikeError("export needs --to DIR_OR_HUB_REF")
    argv = ["swiftlike", "export", "--ckpt_dir", check_checkpoint_ref(ckpt), "--to", to.strip()]
    if merge_lora:
        argv += ["--merge_lora", "true"]
    if private:
        argv += ["--private", "true"]
    if (message or "").strip():
        argv += ["--message", message.strip()]
    if (hub_root or "").strip():
        argv += ["--hub_root", hub_root.strip()]
    return argv


def _run(make, *values):
    try:
        argv = make(*values)
    except Exception as err:
        yield error_line(err)
        return
    head = f"$ {display(argv)}\n"
    yield head
    for out in stream_cli(argv):
        yield head + out


def build(settings, L):
    with gr.Accordion(L("merge_group"), open=True):
        with gr.Row():
            m_ckpt = gr.Dropdown([], label=L("ckpt_dir"), allow_custom_value=True, elem_id="export-merge-ckpt")
            m_out = gr.Textbox(label=L("merge_output"), elem_id="export-merge-out")
            deq = gr.Checkbox(False, label=L("dequantize"))
            m_btn = gr.Button(L("merge"), variant="primary", elem_id="export-merge")
    with gr.Accordion(L("export_group"), open=True):
        with gr.Row():
            e_ckpt = gr.Dropdown([], label=L("ckpt_dir"), allow_custom_value=True, elem_id="export-ckpt")
            e_to = gr.Textbox(label=L("export_to"), elem_id="export-to")
            e_merge = gr.Checkbox(False, label=L("merge_first"))
        with gr.Row():
            e_private = gr.Checkbox(False, label=L("private"))
            e_msg = gr.Textbox(label=L("commit_message"))
            e_root = gr.Textbox(label=L("hub_root"))
            e_btn = gr.Button(L("export"), variant="primary", elem_id="export-go")
    log = gr.Textbox(label=L("progress"), lines=12, interactive=False, elem_id="export-log")

    def merge(*values):
        yield from _run(merge_command, *values)

    def export(*values):
        yield from _run(export_command, *values)

    m_btn.click(merge, [m_ckpt, m_out, deq], log)
    e_btn.click(export, [e_ckpt, e_to, e_merge, e_private, e_msg, e_root], log)

    def choices():
        from .chat_tab import adapter_choices

        c = adapter_choices(settings)
        return gr.update(choices=c), gr.update(choices=c)

    return {"load": (choices, [], [m_ckpt, e_ckpt])}
