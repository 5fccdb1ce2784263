"""The Chat and Compare tabs: a base model and an adapter (a checkpoint, an installed adapter or a hub ref), replies
streamed from swiftlike.infer; Compare answers one prompt with two adapters (or base vs adapter) side by side."""
from __future__ import annotations

import os
import threading

import gradio as gr

from . import chat, runs
from .common import error_line, installed_adapters, model_types, template_names


def adapter_choices(settings) -> list[str]:
    """Checkpoints of the runs found, newest first, then installed adapters by name."""
    found = []
    for run in runs.runs([settings.output_dir], os.getcwd()):
        found += [str(c) for c in reversed(runs.checkpoints(run.run_dir))]
    return found + installed_adapters()


def _generation(L, prefix, open_=False):
    with gr.Accordion(L("gen_group"), open=open_):
        with gr.Row():
            max_new = gr.Number(128, label=L("max_new_tokens"), precision=0, elem_id=f"{prefix}-max-new")
            temperature = gr.Slider(0, 2, value=0, step=0.05, label=L("temperature"), elem_id=f"{prefix}-temperature")
            top_p = gr.Slider(0.05, 1, value=1, step=0.05, label=L("top_p"), elem_id=f"{prefix}-top-p")
            rep = gr.Slider(1, 2, value=1, step=0.05, label=L("repetition_penalty"), elem_id=f"{prefix}-rep")
    return [max_new, temperature, top_p, rep]


def _gen_kwargs(max_new, temperature, top_p, rep) -> dict:
    return dict(max_new_tokens=int(max_new or 128), temperature=float(temperature or 0), top_p=float(top_p or 1),
                repetition_penalty=float(rep or 1))


def _base_fields(L, prefix):
    with gr.Row():
        base_type = gr.Dropdown([""] + model_types(), value="", label=L("base_model"), filterable=True,
                                allow_custom_value=True, elem_id=f"{prefix}-base-type")
        base_dir = gr.Textbox(label=L("base_dir"), elem_id=f"{prefix}-base-dir")
        template = gr.Dropdown([""] + template_names(), value="", label=L("chat_template"), filterable=True,
                               elem_id=f"{prefix}-template")
    return base_type, base_dir, template


def build_chat(settings, L):
    base_type, base_dir, template = _base_fields(L, "chat")
    with gr.Row():
        adapter = gr.Dropdown([], value=None, label=L("adapter"), allow_custom_value=True, filterable=True,
                              elem_id="chat-adapter", scale=4)
        refresh = gr.Button(L("refresh"), elem_id="chat-refresh", scale=1)
    system = gr.Textbox(label=L("system"), elem_id="chat-system")
    gen = _generation(L, "chat", open_=True)
    bot = gr.Chatbot(label=L("chatbot"), elem_id="chat-bot", height=320)
    with gr.Row():
        msg = gr.Textbox(label=L("message"), elem_id="chat-message", scale=5)
        send = gr.Button(L("send"), variant="primary", elem_id="chat-send", scale=1)
        clear = gr.Button(L("clear"), elem_id="chat-clear", scale=1)
    note = gr.Markdown(elem_id="chat-note")

    stops: dict[str, threading.Event] = {}  # per browser session: Clear ends that session's reply

    def reply(request: gr.Request, text, history, bt, bd, tpl, ad, sys_prompt, *g):
        history = list(history or [])
        if not (text or "").strip():
            yield history, "", gr.update()
            return
        stop = stops[request.session_hash] = threading.Event()
        history.append({"role": "user", "content": text})
        history.append({"role": "assistant", "content": ""})
        yield history, "", L("loading")
        try:
            loaded = chat.load(bt, bd, ad, sys_prompt, tpl)
            messages = [{"role": m["role"], "content": _content(m)} for m in history[:-1]]
            stream = chat.stream_reply(loaded, messages, **_gen_kwargs(*g))
            for partial in stream:
                if stop.is_set():
                    stream.close()  # generation stops too
                    return
                history[-1] = {"role": "assistant", "content": partial}
                yield history, "", chat.describe(loaded)
        except Exception as err:
            history.pop()
            yield history, "", f'<span class="swl-error">{error_line(err)}</span>'
        finally:
            if stops.get(request.session_hash) is stop:  # one Event per reply in flight, not per session ever seen
                del stops[request.session_hash]

    def stop_reply(request: gr.Request):
        if request.session_hash in stops:
            stops[request.session_hash].set()

    inputs = [msg, bot, base_type, base_dir, template, adapter, system, *gen]
    # Clear during a reply: stop it at once (unqueued), then empty the chat in the reply's queue, i.e. after its last
    # update; cleared in any other order, the still-streaming reply would write the conversation back
    queued = dict(concurrency_id="chat-reply", concurrency_limit=1)
    send.click(reply, inputs, [bot, msg, note], **queued)
    msg.submit(reply, inputs, [bot, msg, note], **queued)
    clear.click(stop_reply, None, None, queue=False).then(lambda: ([], ""), None, [bot, note], **queued)
    refresh.click(lambda: gr.update(choices=adapter_choices(settings)), None, adapter)
    return {"load": (lambda: gr.update(choices=adapter_choices(settings)), [], [adapter])}


def _content(message) -> str:
    content = message.get("content")
    if isinstance(content, list):  # gradio may hand back [{"type": "text", "text": ...}]
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return str(content or "")


def build_compare(settings, L):
    base_type, base_dir, template = _base_fields(L, "compare")
    with gr.Row():
        adapter_a = gr.Dropdown([], value=None, label=L("adapter_a"), allow_custom_value=True, filterable=True,
                                elem_id="compare-adapter-a")
        adapter_b = gr.Dropdown([], value=None, label=L("adapter_b"), allow_custom_value=True, filterable=True,
                                elem_id="compare-adapter-b")
        refresh = gr.Button(L("refresh"), elem_id="compare-refresh")
    system = gr.Textbox(label=L("system"), elem_id="compare-system")
    gen = _generation(L, "compare", open_=True)
    prompt = gr.Textbox(label=L("prompt"), elem_id="compare-prompt")
    go = gr.Button(L("compare"), variant="primary", elem_id="compare-go")
    with gr.Row():
        out_a = gr.Textbox(label=L("answer_a"), lines=6, interactive=False, elem_id="compare-answer-a")
        out_b = gr.Textbox(label=L("answer_b"), lines=6, interactive=False, elem_id="compare-answer-b")

    def run(text, bt, bd, tpl, a, b, sys_prompt, *g):
        answers = ["", ""]
        messages = [{"role": "user", "content": text or ""}]
        for i, ad in enumerate((a, b)):
            answers[i] = L("loading")
            yield tuple(answers)
            try:
                loaded = chat.load(bt, bd, ad, sys_prompt, tpl)
                for partial in chat.stream_reply(loaded, messages, **_gen_kwargs(*g)):
                    answers[i] = partial
                    yield tuple(answers)
            except Exception as err:
                answers[i] = error_line(err)
                yield tuple(answers)

    go.click(run, [prompt, base_type, base_dir, template, adapter_a, adapter_b, system, *gen], [out_a, out_b])

    def choices():
        c = adapter_choices(settings)
        return gr.update(choices=c), gr.update(choices=c)

    refresh.click(choices, None, [adapter_a, adapter_b])
    return {"load": (choices, [], [adapter_a, adapter_b])}
