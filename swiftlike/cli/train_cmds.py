"""`swiftlike sft | pt | rlhf | infer | merge-lora | export` (ms-swift's command lines run with `swiftlike` for
`swift`)."""
from __future__ import annotations

import sys

import click

from ..export import ExportArguments
from ..infer import InferArguments
from ..merge import MergeArguments
from ..train.arguments import IGNORED_FLAGS, PtArguments, SftArguments
from ..train.rlhf.arguments import RLHF_TYPES, RlhfArguments
from .launch import relaunch_under_torchrun
from .quickstart import QUICK_START
from .options import build, command_for, fields_of, ignored_given, options_from, warn_ignored


def _given(ctx, kwargs: dict, cls) -> dict:
    """The field values typed on the command line (defaults left out, so a config file's values stand)."""
    from click.core import ParameterSource

    typed = {k: v for k, v in kwargs.items() if ctx.get_parameter_source(k) is ParameterSource.COMMANDLINE}
    return fields_of(cls, typed)


def _split_config_args(config_args, config):
    from ..registry import SwiftlikeError
    from ..train.config_files import CONFIG_SUFFIXES

    files = [a for a in config_args if "=" not in a and a.lower().endswith(CONFIG_SUFFIXES)]
    overrides = [a for a in config_args if a not in files]
    if config:
        files.insert(0, config)
    if len(files) > 1:
        raise SwiftlikeError(f"one config file at a time (got {', '.join(files)})")
    return (files[0] if files else None), overrides


SFT_HELP = f"""Supervised fine-tuning.

\b
Quick start (CPU, offline, the embedded SmolLM2-135M-Instruct):
  {QUICK_START}

Every option also takes its ms-swift spelling (--sft_type, --tuner_type, --template_type, --custom_train_dataset_path,
--use_hf ...); booleans take a value (--use_dora true), none (--use_dora) or --no-use_dora. `swiftlike sft run.yaml
[key=value ...]` reads a config file (swiftlike's or ms-swift's option names, a run's args.json, or a LLaMA-Factory
training YAML, as `llamafactory-cli train run.yaml`); flags given on the command line override it."""

PT_HELP = """Continued pretraining on raw text: every token carries loss; documents (`text` rows, .txt lines) end
with the end-of-sequence token and are packed into --max_length blocks, each attending only to itself.

\b
  swiftlike pt --model_type smollm2-135m-instruct --dataset corpus.txt --max_length 1024

Takes every model, data, tuner and trainer option of sft, and config files the same way."""

RLHF_HELP = """Preference and RL training on TRL: --rlhf_type dpo | kto | orpo | simpo | cpo | rm | ppo | grpo.

\b
  swiftlike rlhf --rlhf_type dpo --model_type smollm2-135m-instruct --dataset pairs.jsonl
  swiftlike rlhf --rlhf_type dpo --adapters output/…/checkpoint-50 --dataset pairs.jsonl   # sft -> dpo
  swiftlike rlhf --rlhf_type rm --model_type … --dataset pairs.jsonl                       # a reward model
  swiftlike rlhf --rlhf_type rm --rm_type implicit --dataset pairs.jsonl    # reward: beta x log pi/pi_base
  swiftlike rlhf --rlhf_type grpo --reward_funcs accuracy format --dataset prompts.jsonl

Preference rows: ms-swift `messages` + `rejected_response`, TRL `prompt`/`chosen`/`rejected`, LLaMA-Factory
`conversations` + `chosen` + `rejected`; KTO rows carry a boolean `label`; GRPO/PPO take prompts (with an optional
`solution`). Takes every model, data, tuner and trainer option of sft, and config files the same way (also
LLaMA-Factory's dpo/kto/rm/ppo YAML)."""


def _training_command(name: str, cls, run_name: str, *, help: str, short_help: str, stages: tuple):
    """`swiftlike NAME [CONFIG] [KEY=VALUE] --options`: one command per stage, all with config files."""

    @command_for(cls, name, short_help=short_help, help=help)
    @click.argument("config_args", nargs=-1, metavar="[CONFIG.yaml|json] [KEY=VALUE]...")
    @click.option("--config", "config", help="A YAML/JSON file of options (swiftlike's or ms-swift's names, a "
                  "run's args.json, or a LLaMA-Factory training YAML); flags given here override it.")
    @options_from(cls, ignored=IGNORED_FLAGS)
    @click.pass_context
    def command(ctx, config_args, config, **kwargs):
        # ms-swift's launcher variables (NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT): checked,
        # then this command re-runs under torchrun, one process per device on each node
        relaunch_under_torchrun()
        from .. import stages as stage_functions
        from ..train.config_files import merge_arguments

        config, overrides = _split_config_args(config_args, config)
        args, ignored = merge_arguments(cls, config=config, overrides=overrides, cli=_given(ctx, kwargs, cls),
                                        stage=stages)
        warn_ignored(sorted(set(ignored) | set(ignored_given(kwargs))))
        getattr(stage_functions, run_name)(args)
        _skip_final_collection()

    return command


sft = _training_command("sft", SftArguments, "sft", help=SFT_HELP, stages=("sft",),
                        short_help="Supervised fine-tuning (LoRA, QLoRA, DoRA, full, freeze).")
pt = _training_command("pt", PtArguments, "pt", help=PT_HELP, stages=("pt",),
                       short_help="Continued pretraining on raw text.")
rlhf = _training_command("rlhf", RlhfArguments, "rlhf", help=RLHF_HELP, stages=RLHF_TYPES,
                         short_help="DPO, KTO, ORPO, SimPO, CPO, reward models, PPO, GRPO.")


def _skip_final_collection() -> None:
    """The process ends next: spare the interpreter its final collection over every object (~1 s with torch,
    transformers and a model loaded). Files are closed and checkpoints renamed by then."""
    import gc

    gc.freeze()


@command_for(InferArguments, "infer", short_help="Chat with a model or checkpoint, or answer a dataset.")
@options_from(InferArguments, ignored={"eval_human", "load_dataset_config"})
def infer(**kwargs):
    """Chat with a model or checkpoint (history kept; 'clear' resets, 'exit' quits), answer one --query, or
    answer every row of --val_dataset into infer_result/<time>.jsonl."""
    from ..infer import answer_prompts, default_result_path, generate, load_checkpoint

    args = build(InferArguments, kwargs)
    args.check_backend()
    if args.use_vllm:  # refused in one line where vLLM cannot run, before anything loads
        from ..infer.vllm_backend import require_vllm

        require_vllm()
    prompts = None
    if args.val_dataset:  # the file is checked before the model loads
        from ..data import load_prompts

        prompts = load_prompts(args.val_dataset)
    if args.num_threads:
        import torch

        torch.set_num_threads(args.num_threads)
    if args.use_vllm:
        from ..infer.vllm_backend import load_checkpoint_vllm

        loaded = load_checkpoint_vllm(args.ckpt_dir, force=args.force, options=args)
    else:
        loaded = load_checkpoint(args.ckpt_dir, force=args.force, options=args.model_arguments())
    gen = args.generation()
    if prompts is not None:
        out = answer_prompts(loaded, prompts, args.result_path or default_result_path(), **gen)
        click.echo(f"wrote {len(prompts)} responses to {out}")
    elif args.query is not None:
        click.echo(generate(loaded.model, loaded.template, [{"role": "user", "content": args.query}], **gen))
    else:
        _chat(loaded, args.stream, gen)
    _skip_final_collection()


def _chat(loaded, stream: bool, gen: dict) -> None:
    from ..infer import generate

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


@command_for(MergeArguments, "merge-lora", short_help="Merge a LoRA checkpoint into its base model.")
@options_from(MergeArguments)
def merge_lora(**kwargs):
    """Merge a LoRA checkpoint into its base model (writes a complete HF model with its chat template)."""
    from ..merge import merge_lora as run
    from ..registry import SwiftlikeError

    args = build(MergeArguments, kwargs)
    if not args.ckpt_dir:
        raise SwiftlikeError("merge-lora needs --ckpt_dir DIR_OR_NAME_OR_REF")
    out = run(args.ckpt_dir, args.output_dir, dequantize=args.dequantize, force=args.force,
              overwrite=args.overwrite, options=args.model_arguments())
    click.echo(f"merged model: {out}\n  chat: swiftlike infer --ckpt_dir {out}")


@command_for(ExportArguments, "export", short_help="Export a checkpoint: a directory, a hub, GGUF or quantized.")
@options_from(ExportArguments)
def export(**kwargs):
    """Export a checkpoint (adapter or merged model) to a directory or a hub (HUB:ORG/NAME[@BRANCH]); with
    --to_gguf OUT.gguf the merged model as one GGUF file for llama.cpp/Ollama; with --quant_method bnb|gptq|awq
    --quant_bits 4|8 --to DIR the merged model quantized."""
    from ..export import check_target, export as run
    from ..merge import merge_lora as do_merge
    from ..registry import SwiftlikeError

    args = build(ExportArguments, kwargs)
    if not args.ckpt_dir:
        raise SwiftlikeError("export needs --ckpt_dir DIR_OR_NAME_OR_REF")
    if args.to_gguf and args.quant_method:
        raise SwiftlikeError("export: --to_gguf and --quant_method are two exports; give one")
    if args.sign and (args.to_gguf or args.quant_method or not args.to or not check_target(args.to)):
        raise SwiftlikeError(f"export --sign {args.sign}: signatures travel with a hub push (--to HUB:ORG/NAME)")
    if args.sign:
        from ..adapters.keys import load_private_key

        load_private_key(args.sign)  # before any merge: a missing key is refused first
    if args.to_gguf:
        from ..export import to_gguf

        if args.to:
            raise SwiftlikeError("export --to_gguf OUT.gguf writes one file; drop --to")
        out = to_gguf(args.ckpt_dir, args.to_gguf, gguf_type=args.gguf_type, dequantize=args.dequantize,
                      force=args.force, overwrite=args.overwrite, options=args.model_arguments())
        click.echo(f"exported {args.ckpt_dir} -> {out} (GGUF {args.gguf_type})")
        return
    if args.quant_method:
        from ..export import to_quantized

        if not args.to:
            raise SwiftlikeError("export --quant_method needs --to DIR (the quantized model's directory)")
        report = to_quantized(args.ckpt_dir, args.to, method=args.quant_method, bits=args.quant_bits,
                              dataset=args.dataset, val_dataset=args.val_dataset, dequantize=args.dequantize,
                              force=args.force, overwrite=args.overwrite, options=args.model_arguments(),
                              n_samples=args.quant_n_samples)
        held = report["heldout"]
        click.echo(f"exported {args.ckpt_dir} -> {report['dir']} ({args.quant_method} {args.quant_bits}-bit)\n"
                   f"  held-out loss on {held['rows']} rows: fp32 {held['fp32_loss']:.4f}  "
                   f"{args.quant_method}-{args.quant_bits}bit {held['quantized_loss']:.4f}  "
                   f"(delta {held['delta']:+.4f}; {report['dir']}/quantization.json)")
        if report.get("calibration", {}).get("same_as_heldout"):
            click.echo("  note: calibrated on the held-out rows themselves; give --dataset CALIB and --val_dataset "
                       "HELDOUT for a fair loss", err=True)
        return
    if not args.to:
        raise SwiftlikeError("export needs --to DIR_OR_HUB_REF, --to_gguf OUT.gguf, or --quant_method M --to DIR")
    check_target(args.to)
    src = do_merge(args.ckpt_dir, overwrite=args.overwrite, options=args.model_arguments()) if args.merge_lora \
        else args.ckpt_dir
    where = run(src, args.to, private=args.private, message=args.message, hub_root=args.hub_root, sign=args.sign)
    click.echo(f"exported {src} -> {where}")


COMMANDS = [sft, pt, rlhf, infer, merge_lora, export]
