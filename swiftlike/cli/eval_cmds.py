"""`swiftlike eval`: score a checkpoint, several adapters together, or a base model on a dataset or a benchmark."""
from __future__ import annotations

import click

from ..eval.arguments import EvalArguments
from .options import build, command_for, options_from

EVAL_HELP = """Generate answers for a dataset's prompts and score them against its references.

\b
  swiftlike eval --ckpt_dir output/…/checkpoint-50 --val_dataset eval.jsonl
  swiftlike eval --adapters a1 a2 a3 --val_dataset eval.jsonl          # together, beside the base
  swiftlike eval --model_type smollm2-135m-instruct --val_dataset eval.jsonl
  swiftlike eval --ckpt_dir C --eval_backend lm_eval --tasks mmlu,ceval-valid,cmmlu
  swiftlike eval --ckpt_dir RM_CHECKPOINT --val_dataset pairs.jsonl   # a reward model ranks preference pairs

Metrics: BLEU-4 and ROUGE-1/2/L (jieba words, as LLaMA-Factory), exact match, and the loss and perplexity of the
reference answers (teacher-forced); for a reward model (--rlhf_type rm) the share of pairs whose chosen answer
scores higher (accuracy), the mean margin and scores. Writes eval_result/<time>/metrics.json and
predictions.jsonl (into the checkpoint for one local checkpoint, else --output_dir or the working directory) and
records the metrics in an adapter checkpoint's swiftlike.json and model card."""


@command_for(EvalArguments, "eval", short_help="Score checkpoints or adapters on a dataset or benchmark.",
             help=EVAL_HELP)
@options_from(EvalArguments)
def eval_(**kwargs):
    from ..eval import evaluate

    args = build(EvalArguments, kwargs)
    outcome = evaluate(args)
    click.echo(outcome.table)
    click.echo(f"wrote {outcome.directory}/metrics.json" +
               (" and predictions.jsonl" if (outcome.directory / "predictions.jsonl").exists() else ""))
    for path in outcome.recorded:
        click.echo(f"recorded in {path}/swiftlike.json and its model card")
    import gc

    gc.freeze()  # the process ends next: spare the final collection (see train_cmds)


COMMANDS = [eval_]
