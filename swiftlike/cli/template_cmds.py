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


def _load_messages(path: str, row: int | None = None) -> list:
    """Messages from a JSON file (a list of messages or {"messages": [...]}), `-` (that JSON on stdin), or a
    dataset file (.jsonl/.csv, or a .json array of rows) in any training format: its first row, or --row N."""
    import sys

    if path == "-":
        return _messages_from_json(sys.stdin.read(), "<stdin>")
    file = Path(path)
    if not file.is_file():
        raise click.ClickException(f"{path}: file not found")
    text = file.read_text(encoding="utf-8-sig")
    if file.suffix.lower() == ".json" and row is None:
        data = _parse_json(text, path)
        if not (isinstance(data, list) and data and _is_dataset_row(data[0])):
            return _messages_from_json(text, path)
    return _dataset_row(file, row or 1)


def _is_dataset_row(item) -> bool:
    from ..data.formats import detect_format

    return isinstance(item, dict) and bool(detect_format(item) or detect_format(item, prompt=True))


def _parse_json(text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise click.ClickException(f"{where}:{err.lineno}: invalid JSON: {err.msg}") from None


def _messages_from_json(text: str, where: str) -> list:
    data = _parse_json(text, where)
    if isinstance(data, dict):
        if "messages" not in data:
            raise click.ClickException(f"{where}: expected a list of messages or an object with 'messages'")
        data = data["messages"]
    if not isinstance(data, list) or not data:
        raise click.ClickException(f"{where}: 'messages' must be a non-empty list")
    for i, m in enumerate(data):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise click.ClickException(f"{where}: messages[{i}] needs a string 'role'")
        if "content" not in m and "tool_calls" not in m:
            raise click.ClickException(f"{where}: messages[{i}] has no 'content'")
    return data


def _dataset_row(file: Path, number: int) -> list:
    """The messages of row `number` (1 = the first row) of a dataset file, through the training formats."""
    from ..data.errors import DatasetError
    from ..data.loading import convert_records
    from ..data.readers import read_file

    if number < 1:
        raise click.ClickException(f"--row {number}: rows are numbered from 1")
    try:
        for i, record in enumerate(read_file(file), 1):
            if i < number:
                continue
            rows, problems = convert_records([record])
            if not rows:  # a prompt: the row may end with the user's turn
                rows, problems = convert_records([record], prompts=True)
            if not rows:
                raise click.ClickException(str(problems[0]))
            return rows[0]["messages"]
    except DatasetError as err:
        raise click.ClickException(str(err)) from None
    raise click.ClickException(f"{file}: has fewer than {number} rows")


def _load_tokenizer(ref: str):
    """A tokenizer from a local directory (optionally holding a .gguf) or a model type (resolved as sft resolves
    it: the hub cache, a download, or the embedded model's source)."""
    from transformers import AutoTokenizer

    path = Path(ref)
    try:
        if not path.is_dir():
            from ..models.resolve import resolve_model
            from ..registry import get_registry

            if ref not in get_registry().models:
                raise click.ClickException(f"--tokenizer {ref}: not a directory nor a known model type (see "
                                           f"`swiftlike models list`)")
            path = resolve_model(ref).path
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "tokenizer.json").exists() and not (path / "tokenizer_config.json").exists() and ggufs:
            return AutoTokenizer.from_pretrained(str(path), gguf_file=ggufs[0].name)
        return AutoTokenizer.from_pretrained(str(path))
    except click.ClickException:
        raise
    except Exception as err:  # transformers and the hubs raise many types; the user needs the one line
        raise click.ClickException(f"--tokenizer {ref}: cannot load tokenizer: {err}") from None


def _render_error(name, err) -> click.ClickException:
    return click.ClickException(f"template {name}: {type(err).__name__}: {err}")


@click.group("template")
def template():
    """Render, encode and verify chat templates."""


MESSAGES_HELP = ("A JSON file of messages (a list of {role, content}, or {\"messages\": [...]}), - for that JSON on "
                 "stdin, or a dataset file (.jsonl/.csv/.json rows in any training format): its first row or --row N.")


@template.command("render")
@click.argument("name")
@click.option("--messages", "messages_file", required=True, help=MESSAGES_HELP)
@click.option("--row", type=int, default=None, help="Which row of a dataset file (1 = the first).")
@click.option("--no_generation_prompt", "--no-generation-prompt", "no_generation_prompt", is_flag=True,
              help="Do not append the assistant header. By default it is appended when the last message is "
                   "not an assistant message (i.e. the text is a prompt); a conversation ending with an "
                   "assistant reply is rendered as training text either way.")
@click.option("--system", default=None, help="System prompt when the messages have none (overrides the default).")
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Write here instead of stdout.")
def render_cmd(name, messages_file, row, no_generation_prompt, system, output):
    """Print exactly the text template NAME makes of the messages (no trailing newline added)."""
    messages = _load_messages(messages_file, row)
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
@click.option("--messages", "messages_file", required=True, help=MESSAGES_HELP)
@click.option("--row", type=int, default=None, help="Which row of a dataset file (1 = the first).")
@click.option("--tokenizer", "tokenizer_ref", required=True, help="Tokenizer directory or registry model type.")
@click.option("--system", default=None, help="System prompt when the messages have none.")
@click.option("--loss_mode", "--loss-mode", "--loss_scale", "loss_mode",
              type=click.Choice(["default", "last_round", "all"]), default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print {input_ids, labels} as JSON only.")
def encode_cmd(name, messages_file, row, tokenizer_ref, system, loss_mode, as_json):
    """Tokenize the messages and show which tokens are supervised (labels != -100)."""
    messages = _load_messages(messages_file, row)
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
