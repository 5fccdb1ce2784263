"""The Train tab: a form that builds the `swiftlike sft|pt|rlhf` command (shown, copyable), runs it as its own process,
and follows any run — started here, before a restart, or found in the output directory — live from its files."""
from __future__ import annotations

import html
import os
import time

import gradio as gr

from ..registry import SwiftlikeError
from . import preview as previews
from . import runs
from .common import dataset_names, error_line, model_types, template_names, tuner_names

LORA_TYPES = ("lora", "qlora", "dora")
EMBEDDED = "smollm2-135m-instruct"


def _num(value, kind=float):
    if value is None or value == "":
        return None
    return kind(value)


def form_options(settings, stage, rlhf_type, model_type, model_dir, template, system, datasets, train_type,
                 lora_rank, lora_alpha, lora_dropout, target_modules, quant_bits, trainable_layers, freeze_ratio,
                 num_train_epochs, max_steps, learning_rate, batch_size, grad_acc, max_length, save_steps,
                 logging_steps, output_dir) -> dict:
    """The form as option values (the field names of the stage's arguments)."""
    opts: dict = {}
    if stage == "rlhf":
        opts["rlhf_type"] = rlhf_type
    if model_dir and model_dir.strip():
        opts["model"] = model_dir.strip()
    else:
        opts["model_type"] = model_type or None
    opts["template"] = template or None
    opts["system"] = system or None
    opts["dataset"] = list(datasets or [])
    opts["train_type"] = train_type
    if train_type in LORA_TYPES:
        opts.update(lora_rank=_num(lora_rank, int), lora_alpha=_num(lora_alpha, int),
                    lora_dropout=_num(lora_dropout), target_modules=(target_modules or "").split() or None)
    if train_type == "qlora":
        opts["quant_bits"] = _num(quant_bits, int)
    if train_type == "freeze":
        opts["trainable_layers"] = _num(trainable_layers, int) or None
        opts["freeze_ratio"] = _num(freeze_ratio) or None
    opts.update(num_train_epochs=_num(num_train_epochs), max_steps=_num(max_steps, int),
                learning_rate=_num(learning_rate), per_device_train_batch_size=_num(batch_size, int),
                gradient_accumulation_steps=_num(grad_acc, int), max_length=_num(max_length, int),
                save_steps=_num(save_steps, int) or None, logging_steps=_num(logging_steps, int),
                output_dir=(output_dir or "").strip() or settings.output_dir)
    return opts


def _fmt_s(seconds) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def build(settings, L):
    """The tab's components and events (inside a gr.Blocks)."""
    cwd = os.getcwd()
    dflt = runs.defaults("sft")
    types = model_types()
    with gr.Row():
        stage = gr.Radio(list(runs.STAGES), value="sft", label=L("stage"), elem_id="train-stage")
        from ..train.rlhf.arguments import RLHF_TYPES

        rlhf_type = gr.Dropdown(list(RLHF_TYPES), value="dpo", label=L("rlhf_type"), visible=False,
                                elem_id="train-rlhf-type")
    with gr.Row():
        model_type = gr.Dropdown(types, value=EMBEDDED if EMBEDDED in types else None, label=L("model_type"),
                                 filterable=True, allow_custom_value=True, elem_id="train-model-type")
        model_dir = gr.Textbox(label=L("model_dir"), elem_id="train-model-dir")
        template = gr.Dropdown([""] + template_names(), value="", label=L("template"), filterable=True,
                               elem_id="train-template")
    system = gr.Textbox(label=L("system"), elem_id="train-system")
    with gr.Row():
        datasets = gr.Dropdown(dataset_names(), value=[], multiselect=True, allow_custom_value=True,
                               label=L("datasets"), elem_id="train-datasets", scale=3)
        upload = gr.File(label=L("upload"), file_types=[".jsonl", ".json", ".csv", ".txt"], elem_id="train-upload",
                         scale=1)
    with gr.Accordion(L("preview"), open=False):
        preview_btn = gr.Button(L("preview"), elem_id="train-preview-btn")
        preview_html = gr.HTML(elem_id="train-preview")
    with gr.Accordion(L("tuner_group"), open=True):
        with gr.Row():
            train_type = gr.Dropdown(tuner_names(), value=dflt["train_type"], label=L("train_type"),
                                     elem_id="train-type")
        with gr.Row(visible=True) as lora_row:
            lora_rank = gr.Number(dflt["lora_rank"], label=L("lora_rank"), precision=0, elem_id="train-lora-rank")
            lora_alpha = gr.Number(dflt["lora_alpha"], label=L("lora_alpha"), precision=0, elem_id="train-lora-alpha")
            lora_dropout = gr.Number(dflt["lora_dropout"], label=L("lora_dropout"), elem_id="train-lora-dropout")
            target_modules = gr.Textbox(" ".join(dflt["target_modules"]), label=L("target_modules"),
                                        elem_id="train-target-modules")
        with gr.Row(visible=False) as qlora_row:
            quant_bits = gr.Dropdown([4, 8], value=4, label=L("quant_bits"), elem_id="train-quant-bits")
        with gr.Row(visible=False) as freeze_row:
            trainable_layers = gr.Number(None, label=L("trainable_layers"), precision=0,
                                         elem_id="train-trainable-layers")
            freeze_ratio = gr.Number(None, label=L("freeze_ratio"), elem_id="train-freeze-ratio")
    with gr.Accordion(L("trainer_group"), open=True):
        with gr.Row():
            epochs = gr.Number(dflt["num_train_epochs"], label=L("num_train_epochs"), elem_id="train-epochs")
            max_steps = gr.Number(dflt["max_steps"], label=L("max_steps"), precision=0, elem_id="train-max-steps")
            lr = gr.Number(dflt["learning_rate"], label=L("learning_rate"), elem_id="train-lr")
            batch = gr.Number(dflt["per_device_train_batch_size"], label=L("per_device_train_batch_size"),
                              precision=0, elem_id="train-batch")
        with gr.Row():
            grad_acc = gr.Number(dflt["gradient_accumulation_steps"], label=L("gradient_accumulation_steps"),
                                 precision=0, elem_id="train-grad-acc")
            max_length = gr.Number(dflt["max_length"], label=L("max_length"), precision=0, elem_id="train-max-length")
            save_steps = gr.Number(0, label=L("save_steps"), precision=0, elem_id="train-save-steps")
            logging_steps = gr.Number(dflt["logging_steps"], label=L("logging_steps"), precision=0,
                                      elem_id="train-logging-steps")
        with gr.Row():
            output_dir = gr.Textbox(settings.output_dir, label=L("output_dir"), elem_id="train-output-dir")
            extra = gr.Textbox(label=L("extra_args"), placeholder="--report_to none --seed 7", elem_id="train-extra")
    command = gr.Code(label=L("command"), language="shell", interactive=False, wrap_lines=True, buttons=["copy"],
                      lines=2, max_lines=8, show_line_numbers=False, elem_id="train-command")
    with gr.Row():
        start_btn = gr.Button(L("start"), variant="primary", elem_id="train-start")
        stop_btn = gr.Button(L("stop"), variant="stop", elem_id="train-stop")
        refresh_btn = gr.Button(L("refresh"), elem_id="train-refresh")
    start_msg = gr.Markdown(elem_id="train-start-msg")
    run_pick = gr.Dropdown([], label=L("runs"), elem_id="train-runs")
    status_md = gr.Markdown(L("no_run"), elem_id="train-status")
    loss_plot = gr.LinePlot(x="step", y="loss", color="series", x_title=L("step"), y_title=L("loss"),
                            color_title=L("series"), label=L("loss_chart"), elem_id="train-loss", height=260)
    log_box = gr.Textbox(label=L("log_tail"), lines=12, max_lines=12, autoscroll=True, interactive=False,
                         elem_id="train-log")
    timer = gr.Timer(2.0)

    form = [stage, rlhf_type, model_type, model_dir, template, system, datasets, train_type, lora_rank, lora_alpha,
            lora_dropout, target_modules, quant_bits, trainable_layers, freeze_ratio, epochs, max_steps, lr, batch,
            grad_acc, max_length, save_steps, logging_steps, output_dir]

    def argv_of(values, extra_text):
        return runs.build_command(values[0], form_options(settings, *values), extra_text)

    def show_command(*values):
        *values, extra_text = values
        try:
            return runs.display(argv_of(values, extra_text))
        except (SwiftlikeError, ValueError, TypeError) as err:
            return f"# {error_line(err)}"

    # one queue for every field's update, in order: separate listeners would run concurrently and an older form's
    # command could land after a newer one's (a stage change overwriting the rlhf type picked right after it)
    for comp in form + [extra]:
        comp.change(show_command, form + [extra], command, show_progress="hidden", concurrency_id="train-command",
                    concurrency_limit=1, trigger_mode="always_last")

    def on_stage(value):
        return gr.update(visible=value == "rlhf")

    stage.change(on_stage, stage, rlhf_type)

    def on_tuner(value):
        return (gr.update(visible=value in LORA_TYPES), gr.update(visible=value == "qlora"),
                gr.update(visible=value == "freeze"))

    train_type.change(on_tuner, train_type, [lora_row, qlora_row, freeze_row])

    def on_upload(file, current):
        if not file:
            return gr.update()
        path = file if isinstance(file, str) else getattr(file, "name", None) or str(file)
        chosen = list(current or [])
        if path not in chosen:
            chosen.append(path)
        return gr.update(value=chosen, choices=sorted(set(dataset_names()) | set(chosen)))

    upload.upload(on_upload, [upload, datasets], datasets)

    def do_preview(stage_v, rlhf_v, model_type_v, model_dir_v, template_v, system_v, datasets_v):
        p = previews.preview(list(datasets_v or []), stage=stage_v, rlhf_type=rlhf_v,
                             model_type=None if (model_dir_v or "").strip() else model_type_v,
                             model_dir=(model_dir_v or "").strip() or None, template=template_v or None,
                             system=system_v or None)
        return previews.to_html(p, L)

    preview_btn.click(do_preview, [stage, rlhf_type, model_type, model_dir, template, system, datasets],
                      preview_html)

    def output_dirs(out_dir=None):
        return [d for d in {settings.output_dir, (out_dir or "").strip()} if d]

    def run_choices(out_dir=None):
        return [(r.label, r.key) for r in runs.runs(output_dirs(out_dir), cwd)]

    def do_start(*values):
        *values, extra_text = values
        try:
            argv = argv_of(values, extra_text)
            opts = form_options(settings, *values)
            previews.check_model(opts.get("model_type"), opts.get("model"))
            previews.check_datasets(opts["dataset"])
            if os.path.isfile(opts["output_dir"]):
                raise SwiftlikeError(f"--output_dir {opts['output_dir']}: is a file, not a directory")
            job = runs.start(argv, cwd=cwd, output_dir=opts["output_dir"])
        except Exception as err:  # shown as the CLI would print it
            return f'<span class="swl-error">{error_line(err)}</span>', gr.update()
        choices = run_choices(values[-1])
        return (f"{L('started')}: `{runs.display(argv)}`",
                gr.update(choices=choices, value=f"job:{job.id}"))

    start_btn.click(do_start, form + [extra], [start_msg, run_pick])

    def refresh(out_dir, current):
        choices = run_choices(out_dir)
        keys = [k for _, k in choices]
        return gr.update(choices=choices, value=current if current in keys else (keys[0] if keys else None))

    refresh_btn.click(refresh, [output_dir, run_pick], run_pick)

    def follow(key, out_dir):
        if not key:
            return L("no_run"), None, ""
        run = runs.find(key, output_dirs(out_dir), cwd)
        if run is None:
            return L("no_run"), None, ""
        p = runs.progress(run)
        total = f"/{p.total}" if p.total else ""
        word = L(run.status) if run.status in ("running", "finished", "stopped", "failed", "no checkpoint") else \
            L("stopping") if run.status == "stopping" else run.status
        lines = [f"**{L('status')}: {word}** · {L('step')} {p.step}{total} · {L('elapsed')} {_fmt_s(p.elapsed_s)}"
                 f" · {L('eta')} {_fmt_s(p.eta_s)}" + (f" · {L('loss')} {p.loss:.4f}" if p.loss is not None else "")]
        if run.run_dir:
            lines.append(f"`{run.run_dir}`")
        cks = runs.checkpoints(run.run_dir)
        if cks:
            lines.append(f"{L('checkpoints')}: " + ", ".join(f"`{c}`" for c in cks))
        if run.job is not None and run.status == "failed" and run.job.error():
            lines.append('<span class="swl-error">' + html.escape(run.job.error()).replace("\n", "<br>") + "</span>")
        pts = runs.loss_points(run.run_dir)
        plot = None
        if pts:
            import pandas as pd

            plot = pd.DataFrame([(step, loss, L(f"series_{kind}")) for step, loss, kind in pts],
                                columns=["step", "loss", "series"])
        log = runs.tail(run.job.log()) if run.job is not None else ""
        return "\n\n".join(lines), plot, log

    def follow_and_label(key, out_dir, last):
        """follow(), and this page's runs list relabelled when a run's status changed (running -> finished)."""
        shown = follow(key, out_dir)
        choices = [list(c) for c in run_choices(out_dir)]
        if choices != last:
            return (*shown, gr.update(choices=[tuple(c) for c in choices]), choices)
        return (*shown, gr.update(), last)

    last_choices = gr.State([])
    timer.tick(follow_and_label, [run_pick, output_dir, last_choices],
               [status_md, loss_plot, log_box, run_pick, last_choices], show_progress="hidden")
    run_pick.change(follow, [run_pick, output_dir], [status_md, loss_plot, log_box], show_progress="hidden")

    def do_stop(key, out_dir):
        run = runs.find(key, output_dirs(out_dir), cwd) if key else None
        if run is None or run.job is None:
            return L("no_run")
        runs.stop(run.job)
        time.sleep(0.2)
        return L("stopping")

    stop_btn.click(do_stop, [run_pick, output_dir], start_msg)

    def on_load(out_dir):
        choices = run_choices(out_dir)
        return gr.update(choices=choices, value=choices[0][1] if choices else None)

    return {"load": (on_load, [output_dir], [run_pick]), "command": (show_command, form + [extra], command)}
