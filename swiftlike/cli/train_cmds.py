"""`swiftlike sft | infer | merge-lora | export` (ms-swift's command lines run with `swiftlike` for `swift`)."""
from __future__ import annotations

import json
import sys

import click

from ..train.args import IGNORED_FLAGS, SftArguments
from .arguments import build, command_for, options_from


@command_for(SftArguments, "sft", short_help="Supervised fine-tuning (LoRA, QLoRA, DoRA, full, freeze).")
@options_from(SftArguments, ignored=IGNORED_FLAGS)
def sft(**kwargs):
    """Supervised fine-tuning. Every option also takes its ms-swift spelling (e.g. --sft_type, --template_type,
    --custom_train_dataset_path); booleans take a value (--use_dora true) or none (--use_dora)."""
    import os

    nproc = int(os.environ.get("NPROC_PER_NODE") or 1)
    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        # ms-swift's launcher convention: re-run this command under torchrun, one process per device
        import subprocess

        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               f"--master_port={os.environ.get('MASTER_PORT', '29500')}", "-m", "swiftlike", *sys.argv[1:]]
        raise SystemExit(subprocess.call(cmd))
    from ..train.sft import sft as run

    run(build(SftArguments, kwargs))
    # The process ends next: spare the interpreter its final collection over every object (~1 s with torch,
    # transformers and a model loaded). Files are closed and checkpoints renamed by now.
    import gc

    gc.freeze()


def _gen_options(func):
    for opt in reversed([
        click.option("--max_new_tokens", "--max-new-tokens", type=int, default=512, show_default=True),
        click.option("--temperature", type=float, default=0.0, show_default=True, help="0 = greedy."),
        click.option("--top_p", "--top-p", type=float, default=1.0, show_default=True),
        click.option("--repetition_penalty", "--repetition-penalty", type=float, default=1.0, show_default=True),
    ]):
        func = opt(func)
    return func


def _model_options(func):
    for opt in reversed([
        click.option("--ckpt_dir", "--ckpt-dir", "--adapters", "ckpt_dir", help="A checkpoint/adapter or merged dir."),
        click.option("--model_type", "--model-type"),
        click.option("--model", "--model_id_or_path"),
        click.option("--model_cache_dir", "--model-cache-dir"),
        click.option("--model_revision", "--model-revision"),
        click.option("--hub", type=click.Choice(["hf", "ms"]), default=None),
        click.option("--template", "--template_type", "template"),
        click.option("--system"),
        click.option("--torch_dtype", "--dtype", "torch_dtype", default="auto", show_default=True),
        click.option("--trust_remote_code", is_flag=False, flag_value=True, type=click.BOOL, default=False),
        click.option("--force", is_flag=True, help="Load an adapter even on a base it was not trained on."),
    ]):
        func = opt(func)
    return func


def _load(kw):
    from ..infer import load_checkpoint

    return load_checkpoint(kw["ckpt_dir"], model_type=kw["model_type"], model=kw["model"],
                           model_cache_dir=kw["model_cache_dir"], revision=kw["model_revision"], hub=kw["hub"],
                           template=kw["template"], system=kw["system"], torch_dtype=kw["torch_dtype"],
                           force=kw["force"], trust_remote_code=kw["trust_remote_code"])


@click.command("infer")
@_model_options
@_gen_options
@click.option("--val_dataset", "--val-dataset", "val_dataset", help="Answer every row; write a jsonl of responses.")
@click.option("--result_path", "--result-path", help="Where --val_dataset results go (default: beside the ckpt).")
@click.option("--stream/--no-stream", default=True, show_default=True)
@click.option("--query", help="Answer one query and exit (no interactive chat).")
@click.option("--eval_human", "--load_dataset_config", hidden=True, default=None)
def infer(val_dataset, result_path, stream, query, eval_human, **kw):
    """Chat with a model or checkpoint (history kept; 'clear' resets, 'exit' quits), or answer a dataset."""
    from ..infer import generate

    loaded = _load(kw)
    gen = dict(max_new_tokens=kw["max_new_tokens"], temperature=kw["temperature"], top_p=kw["top_p"],
               repetition_penalty=kw["repetition_penalty"])
    if val_dataset:
        _infer_dataset(loaded, val_dataset, result_path, gen)
        return
    if query is not None:
        click.echo(generate(loaded.model, loaded.template, [{"role": "user", "content": query}], **gen))
        return
    history = []
    click.echo(f"swiftlike chat: {loaded.model_type}" + (f" + {loaded.ckpt_dir}" if loaded.ckpt_dir else "")
               + " — 'clear' resets the history, 'exit' quits")
    while True:
        try:
            text = input("<<< ")
        except EOFError:
            break
        if text.strip() in ("exit", "quit"):
            break
        if text.strip() == "clear":
            history = []
            continue
        history.append({"role": "user", "content": text})
        click.echo(">>> ", nl=False)
        if stream:
            pieces = []
            for piece in generate(loaded.model, loaded.template, history, stream=True, **gen):
                pieces.append(piece)
                click.echo(piece, nl=False)
                sys.stdout.flush()
            answer = "".join(pieces)
            for stop in loaded.template.stop_words:
                answer = answer.split(stop)[0] if stop else answer
            click.echo()
        else:
            answer = generate(loaded.model, loaded.template, history, **gen)
            click.echo(answer)
        history.append({"role": "assistant", "content": answer})


def _infer_dataset(loaded, val_dataset, result_path, gen):
    from pathlib import Path

    from ..data import load_dataset
    from ..infer import generate

    rows = load_dataset([val_dataset], shuffle=False).train
    out = Path(result_path) if result_path else (loaded.ckpt_dir or Path(".")) / "infer_result.jsonl"
    with open(out, "w") as f:
        for row in rows:
            messages = row["messages"]
            prompt = messages[:-1] if messages[-1]["role"] == "assistant" else messages
            response = generate(loaded.model, loaded.template, prompt, **gen)
            label = messages[-1]["content"] if messages[-1]["role"] == "assistant" else None
            f.write(json.dumps({"messages": prompt, "response": response, "label": label},
                               ensure_ascii=False) + "\n")
    click.echo(f"wrote {len(rows)} responses to {out}")


@click.command("merge-lora")
@click.option("--ckpt_dir", "--ckpt-dir", "--adapters", "ckpt_dir", required=True)
@click.option("--output_dir", "--output-dir", default=None, help="Default: CKPT_DIR-merged.")
@click.option("--dequantize", is_flag=True, help="Merge a QLoRA adapter into the 16/32-bit base.")
@click.option("--force", is_flag=True)
@click.option("--torch_dtype", "--dtype", "torch_dtype", default=None)
def merge_lora(ckpt_dir, output_dir, dequantize, force, torch_dtype):
    """Merge a LoRA checkpoint into its base model (writes a complete HF model with its chat template)."""
    from ..train.merge import merge_lora as run

    out = run(ckpt_dir, output_dir, dequantize=dequantize, force=force, torch_dtype=torch_dtype)
    click.echo(f"merged model: {out}\n  chat: swiftlike infer --ckpt_dir {out}")


@click.command("export")
@click.option("--ckpt_dir", "--ckpt-dir", "ckpt_dir", required=True)
@click.option("--to", "to", required=True, help="DIR, or hf:ORG/NAME, ms:ORG/NAME, local:ORG/NAME.")
@click.option("--merge_lora", "--merge-lora", "merge", is_flag=False, flag_value=True, type=click.BOOL,
              default=False, help="Merge the adapter first and export the merged model.")
@click.option("--private", is_flag=True)
@click.option("--message")
def export(ckpt_dir, to, merge, private, message):
    """Export a checkpoint (adapter or merged model) to a directory or a hub."""
    from ..train.merge import export as run, merge_lora as do_merge

    src = do_merge(ckpt_dir) if merge else ckpt_dir
    click.echo(f"exported {src} -> {run(src, to, private=private, message=message)}")


COMMANDS = [sft, infer, merge_lora, export]
