"""`swiftlike template render|encode|check`: inspect what a chat template produces.

torch/transformers are imported inside the commands, so importing this module stays cheap.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

# Conversations `template check` renders with both templates (roles alternate; system first when present).
CHECK_CASES = {
    "single": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"}],
    "multi": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"},
              {"role": "user", "content": "Who are you"}, {"role": "assistant", "content": "  I am an assistant  "}],
    "prompt": [{"role": "user", "content": "Hello"}],
    "multi_prompt": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"},
                     {"role": "user", "content": "Tell me a joke\nin two lines"}],
}
for _name in list(CHECK_CASES):
    CHECK_CASES["system_" + _name] = [{"role": "system", "content": "You are a pirate."}] + CHECK_CASES[_name]


def _load_template(name, tokenizer=None, system=None):
    from ..registry.errors import SwiftlikeError
    from ..templates import get_template

    try:
        return get_template(name, tokenizer, system=system)
    except SwiftlikeError as err:
        raise click.ClickException(str(err)) from None
    except (OSError, ValueError) as err:
        raise click.ClickException(f"template {name}: {err}") from None


def _load_messages(path: str) -> list:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise click.ClickException(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise click.ClickException(f"{path}: invalid JSON: {err}") from None
    if isinstance(data, dict):
        if "messages" not in data:
            raise click.ClickException(f"{path}: expected a list of messages or an object with 'messages'")
        data = data["messages"]
    if not isinstance(data, list) or not data:
        raise click.ClickException(f"{path}: 'messages' must be a non-empty list")
    for i, m in enumerate(data):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise click.ClickException(f"{path}: messages[{i}] needs a string 'role'")
        if "content" not in m and "tool_calls" not in m:
            raise click.ClickException(f"{path}: messages[{i}] has no 'content'")
    return data


def _load_tokenizer(ref: str):
    """A tokenizer from a local directory (optionally holding a .gguf) or a registry model name."""
    from transformers import AutoTokenizer

    path = Path(ref)
    try:
        if path.is_dir():
            ggufs = sorted(path.glob("*.gguf"))
            if not (path / "tokenizer.json").exists() and not (path / "tokenizer_config.json").exists() and ggufs:
                return AutoTokenizer.from_pretrained(str(path), gguf_file=ggufs[0].name)
            return AutoTokenizer.from_pretrained(str(path))
        from ..registry import get_registry
        from ..registry.specs import resolve_callable

        models = get_registry().models
        if ref not in models:
            raise click.ClickException(f"--tokenizer {ref}: not a directory nor a known model type")
        spec = models.get(ref)
        if spec.source:
            return _load_tokenizer(str(resolve_callable(spec.source)(spec, None)))
        return AutoTokenizer.from_pretrained(spec.hf or spec.ms)
    except click.ClickException:
        raise
    except Exception as err:  # transformers raises many types; the user needs the one line
        raise click.ClickException(f"--tokenizer {ref}: cannot load tokenizer: {err}") from None


def _render_error(name, err) -> click.ClickException:
    return click.ClickException(f"template {name}: {type(err).__name__}: {err}")


@click.group("template")
def template():
    """Render, encode and verify chat templates."""


@template.command("render")
@click.argument("name")
@click.option("--messages", "messages_file", required=True, type=click.Path(dir_okay=False),
              help="JSON file: a list of {role, content} messages (or {\"messages\": [...]}).")
@click.option("--no-generation-prompt", is_flag=True,
              help="Do not append the assistant header. By default it is appended when the last message is "
                   "not an assistant message (i.e. the text is a prompt); a conversation ending with an "
                   "assistant reply is rendered as training text either way.")
@click.option("--system", default=None, help="System prompt when the messages have none (overrides the default).")
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Write here instead of stdout.")
def render_cmd(name, messages_file, no_generation_prompt, system, output):
    """Print exactly the text template NAME makes of the messages (no trailing newline added)."""
    messages = _load_messages(messages_file)
    tpl = _load_template(name, system=system)
    add_prompt = not no_generation_prompt and messages[-1].get("role") != "assistant"
    try:
        text = tpl.render(messages, add_generation_prompt=add_prompt)
    except Exception as err:
        raise _render_error(name, err) from None
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


@template.command("encode")
@click.argument("name")
@click.option("--messages", "messages_file", required=True, type=click.Path(dir_okay=False),
              help="JSON file: a list of {role, content} messages.")
@click.option("--tokenizer", "tokenizer_ref", required=True, help="Tokenizer directory or registry model type.")
@click.option("--system", default=None, help="System prompt when the messages have none.")
@click.option("--loss-mode", type=click.Choice(["default", "last_round", "all"]), default="default")
@click.option("--json", "as_json", is_flag=True, help="Print {input_ids, labels} as JSON only.")
def encode_cmd(name, messages_file, tokenizer_ref, system, loss_mode, as_json):
    """Tokenize the messages and show which tokens are supervised (labels != -100)."""
    messages = _load_messages(messages_file)
    tokenizer = _load_tokenizer(tokenizer_ref)
    from ..templates import get_template

    tpl = _load_template(name, tokenizer, system=system)
    tpl = get_template(tpl.spec, tokenizer, system=system, loss_mode=loss_mode)
    try:
        enc = tpl.encode(messages)
    except Exception as err:
        raise _render_error(name, err) from None
    if as_json:
        click.echo(json.dumps({"input_ids": enc["input_ids"], "labels": enc["labels"]}))
        return
    click.echo(f"input_ids ({enc['length']}): {enc['input_ids']}")
    click.echo(f"labels: {enc['labels']}")
    click.echo("supervised text in green:")
    parts = []
    for tok, lab in zip(enc["input_ids"], enc["labels"]):
        piece = tokenizer.decode([tok])
        parts.append(click.style(piece, fg="green", bold=True) if lab != -100 else click.style(piece, dim=True))
    click.echo("".join(parts))


def first_difference(a: str, b: str) -> int:
    """Index of the first differing character, or -1 when equal."""
    if a == b:
        return -1
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def check_against(tpl, tokenizer) -> list[tuple[str, bool, str]]:
    """Per case: (case, add_generation_prompt, problem or '') comparing tpl with tokenizer.chat_template."""
    results = []
    for case, messages in CHECK_CASES.items():
        for gen in (False, True):
            if gen and messages[-1]["role"] == "assistant":
                continue
            outcome = []
            for render in (lambda: tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen,
                                                                 **tpl.render_kwargs),
                           lambda: tpl.render(messages, add_generation_prompt=gen, inject_system=False)):
                try:
                    outcome.append(("ok", render()))
                except Exception as err:
                    outcome.append(("error", str(err)))
            (kind_a, official), (kind_b, ours) = outcome
            if (kind_a, official) == (kind_b, ours):
                results.append((case, gen, ""))
                continue
            if kind_a != kind_b:
                problem = f"official {kind_a}: {official[:80]!r}; swiftlike {kind_b}: {ours[:80]!r}"
            else:
                i = first_difference(official, ours)
                problem = (f"first difference at char {i}: official {official[i:i + 30]!r} vs swiftlike "
                           f"{ours[i:i + 30]!r}")
            results.append((case, gen, problem))
    return results


@template.command("check")
@click.argument("name")
@click.option("--tokenizer", "tokenizer_ref", required=True,
              help="Tokenizer directory (or registry model type) whose own chat_template is the reference.")
def check_cmd(name, tokenizer_ref):
    """Compare template NAME with a tokenizer's own chat_template on built-in conversations; exit 1 on any
    difference."""
    tokenizer = _load_tokenizer(tokenizer_ref)
    if not getattr(tokenizer, "chat_template", None):
        raise click.ClickException(f"--tokenizer {tokenizer_ref}: tokenizer has no chat_template to compare with")
    tpl = _load_template(name, tokenizer)
    results = check_against(tpl, tokenizer)
    failed = 0
    for case, gen, problem in results:
        label = f"{case}{' +generation_prompt' if gen else ''}"
        if problem:
            failed += 1
            click.echo(f"DIFF {label}: {problem}")
        else:
            click.echo(f"ok   {label}")
    click.echo(f"{len(results) - failed}/{len(results)} identical")
    if failed:
        raise click.exceptions.Exit(1)
