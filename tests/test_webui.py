"""`swiftlike web-ui` without a browser: the start rules (host/port/lang/auth from flags and the environment, a
non-loopback host without auth and share links refused), the command the Train form builds, the i18n table, and
`swiftlike --help` staying free of gradio and torch. The browser tests are in test_webui_browser.py."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from swiftlike.registry import SwiftlikeError
from swiftlike.webui.settings import resolve_settings

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "swiftlike", *args], capture_output=True, text=True, timeout=timeout,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith(("WEBUI_", "SWIFT"))},
                               **(env or {})})


def test_defaults_and_environment():
    s = resolve_settings(env={})
    assert (s.host, s.port, s.lang, s.auth) == ("127.0.0.1", 7860, "en", None)
    s = resolve_settings(env={"WEBUI_SERVER": "0.0.0.0", "WEBUI_PORT": "6006", "WEBUI_AUTH": "me:pw",
                              "SWIFT_UI_LANG": "zh"})
    assert (s.host, s.port, s.lang, s.auth) == ("0.0.0.0", 6006, "zh", ("me", "pw"))
    # flags win over the environment; swiftlike's own language variable over ms-swift's
    s = resolve_settings(host="localhost", port=7000, lang="en", env={"WEBUI_SERVER": "10.0.0.1",
                                                                      "WEBUI_PORT": "1", "SWIFT_UI_LANG": "zh"})
    assert (s.host, s.port, s.lang, s.auth) == ("localhost", 7000, "en", None)
    assert resolve_settings(env={"SWIFTLIKE_UI_LANG": "zh", "SWIFT_UI_LANG": "en"}).lang == "zh"
    assert resolve_settings(host="::1", env={}).auth is None  # IPv6 loopback needs no login


@pytest.mark.parametrize("kwargs, env, message", [
    ({"host": "0.0.0.0"}, {}, "--host 0.0.0.0 is reachable from the network"),
    ({}, {"WEBUI_SERVER": "192.168.1.5"}, "pass --auth USER:PASSWORD"),
    ({"share": True}, {}, "share links are refused"),
    ({"auth": "nopassword"}, {}, "--auth: expected USER:PASSWORD"),
    ({}, {"WEBUI_PORT": "http"}, "WEBUI_PORT 'http': not a port number"),
    ({"port": 70000}, {}, "--port 70000: a port is 1-65535"),
    ({}, {"SWIFT_UI_LANG": "fr"}, "SWIFT_UI_LANG fr: use en or zh"),
])
def test_refusals(kwargs, env, message):
    with pytest.raises(SwiftlikeError, match=message.replace("(", r"\(").replace(".", r"\.")):
        resolve_settings(env=env, **kwargs)


def test_cli_refuses_network_host_without_auth_in_one_line():
    for args, env in ((["web-ui", "--host", "0.0.0.0"], {}), (["webui"], {"WEBUI_SERVER": "0.0.0.0"}),
                      (["web-ui", "--share"], {})):
        proc = _cli(*args, env=env)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("Error: "), proc.stderr
    assert "--auth USER:PASSWORD" in _cli("web-ui", "--host", "0.0.0.0").stderr


HELP_IMPORTS = r"""
import sys
from swiftlike.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "transformers", "gradio", "pandas") if m in sys.modules)
print("heavy:", ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["web-ui", "--help"], ["webui", "--help"]])
def test_help_imports_no_gradio_nor_torch(args):
    proc = subprocess.run([sys.executable, "-c", HELP_IMPORTS, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().endswith("heavy:"), proc.stderr
    if args == ["--help"]:
        assert "web-ui" in proc.stdout and "webui " not in proc.stdout  # the alias works but is not listed twice
    else:
        assert "WEBUI_SERVER" in proc.stdout and "--auth" in proc.stdout


def test_every_label_has_english_and_chinese():
    from swiftlike.webui.i18n import LABELS, labels

    for key, (en, zh) in LABELS.items():
        assert en.strip() and zh.strip(), key
    assert labels("zh")("tab_train") == "训练" and labels("en")("tab_train") == "Train"
    # every label key the tabs use is in the table
    import re

    used = set()
    for path in (ROOT / "swiftlike" / "webui").glob("*.py"):
        used |= set(re.findall(r"\bL\(\"([a-z_]+)\"\)", path.read_text()))
    assert used and used <= set(LABELS), sorted(used - set(LABELS))
    # the installed-adapters table is headed through the table too (L(f"col_{c}"))
    from swiftlike.webui.adapters_tab import COLUMNS

    assert {f"col_{c}" for c in COLUMNS} <= set(LABELS)
    # and the loss chart's series names (L(f"series_{kind}"), kind from runs.loss_points)
    assert {"series_train", "series_eval"} <= set(LABELS)


def test_command_from_the_form_is_an_argument_list_of_non_defaults():
    from swiftlike.webui.runs import build_command, display

    argv = build_command("sft", {"model_type": "smollm2-135m-instruct", "dataset": ["a b.jsonl", "alpaca-en#50"],
                                 "train_type": "lora", "lora_rank": 8, "learning_rate": 5e-4, "max_steps": 2,
                                 "num_train_epochs": 1.0, "output_dir": "output", "template": None},
                         "--report_to none --system 'You are Nova.'")
    assert argv == ["swiftlike", "sft", "--model_type", "smollm2-135m-instruct", "--dataset", "a b.jsonl",
                    "alpaca-en#50", "--learning_rate", "0.0005", "--max_steps", "2", "--report_to", "none",
                    "--system", "You are Nova."]
    assert display(argv).startswith("swiftlike sft --model_type smollm2-135m-instruct --dataset 'a b.jsonl' ")
    assert build_command("rlhf", {"rlhf_type": "kto"})[:4] == ["swiftlike", "rlhf", "--rlhf_type", "kto"]
    with pytest.raises(SwiftlikeError, match="no option --nonsense"):
        build_command("sft", {"nonsense": 1})
    with pytest.raises(SwiftlikeError, match="stage 'xyz'"):
        build_command("xyz", {})


def test_user_typed_paths_are_checked_like_the_cli(tmp_path):
    from swiftlike.webui.common import check_checkpoint_ref, check_dir
    from swiftlike.webui.preview import check_datasets, check_model

    with pytest.raises(SwiftlikeError, match="no such directory"):
        check_dir(str(tmp_path / "missing"), "--model")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(SwiftlikeError, match="is a file, not a directory"):
        check_dir(str(tmp_path / "f.txt"), "--ckpt_dir")
    with pytest.raises(SwiftlikeError, match="no such directory"):
        check_checkpoint_ref("./output/nope/checkpoint-2")
    assert check_checkpoint_ref("local:acme/nova") == "local:acme/nova"  # a hub ref is the hub's business
    with pytest.raises(SwiftlikeError, match="no config.json"):
        check_model(None, str(tmp_path))
    with pytest.raises(SwiftlikeError, match="no such file or directory"):
        check_datasets([str(tmp_path / "missing.jsonl")])
    with pytest.raises(SwiftlikeError, match="at least one dataset"):
        check_datasets([])


@pytest.mark.slow
def test_pt_and_dpo_runs_started_as_the_train_tab_starts_them_are_found_again(tiny_model, tmp_path, swiftlike_home):
    """The Train tab's runs without a browser: the real `swiftlike pt` and `swiftlike rlhf` as their own processes,
    followed from their files, and found again by a UI that did not start them (a restart)."""
    import json
    import time

    from swiftlike.webui import runs

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"Document {i}: Nova is a model made by Orbit Labs." for i in range(8)) + "\n")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Who are you? ({i})", "chosen": "I am Nova.",
                                         "rejected": "I do not know."}) + "\n" for i in range(8)))
    common = {"model": str(tiny_model), "template": "smollm2", "max_steps": 1, "per_device_train_batch_size": 2,
              "max_length": 64, "lora_rank": 4, "logging_steps": 1, "report_to": ["none"]}
    jobs = [runs.start(runs.build_command("pt", {**common, "dataset": [str(corpus)]}), cwd=str(tmp_path),
                       output_dir="output"),
            runs.start(runs.build_command("rlhf", {**common, "rlhf_type": "dpo", "dataset": [str(pairs)]}),
                       cwd=str(tmp_path), output_dir="output")]
    deadline = time.time() + 240
    while any(j.alive() for j in jobs) and time.time() < deadline:
        time.sleep(1)
    for job in jobs:
        assert job.status() == "finished", job.log()[-3000:]
    runs._PROCS.clear()  # a web-ui restarted: only the job records and the output directory are left
    found = runs.runs(["output"], str(tmp_path))
    assert sorted(r.status for r in found) == ["finished", "finished"]
    assert {r.job.stage for r in found} == {"pt", "rlhf"}
    for run in found:
        assert run.run_dir.is_dir() and runs.checkpoints(run.run_dir)
        p = runs.progress(run)
        assert (p.step, p.total) == (1, 1) and p.loss is not None and p.eta_s is None
        assert [s for _, _, s in runs.loss_points(run.run_dir)] == ["train"]
    # a run directory that no job started is listed too
    other = tmp_path / "output" / "elsewhere" / "v9-20260101-000000"
    other.mkdir(parents=True)
    (other / "args.json").write_text(json.dumps({"stage": "sft"}))
    listed = {r.label.split(" · ")[0]: r.status for r in runs.runs(["output"], str(tmp_path))}
    assert listed["v9-20260101-000000"] == "no checkpoint"


def test_building_the_app_imports_no_torch():
    """The UI imports torch only when it needs it (a chat, a preview); building every tab does not."""
    code = ("import sys\nfrom swiftlike.webui.app import build_app\nfrom swiftlike.webui.settings import "
            "resolve_settings\nbuild_app(resolve_settings(env={}))\n"
            "print('heavy:', ','.join(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    pytest.importorskip("gradio")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("heavy:"), proc.stdout


def test_form_passes_only_the_chosen_tuners_options():
    from swiftlike.webui.settings import UISettings
    from swiftlike.webui.train_tab import form_options

    def opts(train_type, stage="sft"):
        return form_options(UISettings(), stage, "kto", "smollm2-135m-instruct", "", "", "", ["d.jsonl"], train_type,
                            4, 8, 0.1, "q_proj v_proj", 8, 2, 0.5, 1, 2, 1e-4, 2, 1, 128, 0, 1, "")

    lora = opts("lora")
    assert (lora["lora_rank"], lora["target_modules"]) == (4, ["q_proj", "v_proj"])
    assert "quant_bits" not in lora and "trainable_layers" not in lora and "rlhf_type" not in lora
    assert opts("qlora")["quant_bits"] == 8 and "trainable_layers" not in opts("qlora")
    freeze = opts("freeze")
    assert (freeze["trainable_layers"], freeze["freeze_ratio"]) == (2, 0.5)
    assert not {"lora_rank", "lora_alpha", "quant_bits"} & set(freeze)
    assert not {"lora_rank", "quant_bits", "trainable_layers"} & set(opts("full"))
    assert opts("lora", stage="rlhf")["rlhf_type"] == "kto"
    assert opts("lora")["output_dir"] == "output"  # an empty box: the UI's --output_dir


def test_model_choices_come_from_the_registry_with_plugin_models(plugins):
    import swiftlike
    from swiftlike.webui.common import model_types

    assert "acme-tiny-chat" not in model_types()

    class Acme:
        @swiftlike.hookimpl
        def register_models(self, register):
            register("acme-tiny-chat", hf="acme/Tiny-Chat", template="chatml")

    plugins.add(Acme(), "swiftlike-acme")
    assert "acme-tiny-chat" in model_types() and "smollm2-135m-instruct" in model_types()


def test_commands_are_argument_lists_never_shell_strings():
    from swiftlike.webui import runs

    argv = runs.build_command("sft", {"model_type": "smollm2-135m-instruct"}, "--system 'a; rm -rf ~ $(id)'")
    assert argv[-2:] == ["--system", "a; rm -rf ~ $(id)"]  # one argument, as typed; no shell sees it
    with pytest.raises(SwiftlikeError, match="not a training command"):
        runs.start(["swiftlike", "export", "--to", "x"], cwd=".", output_dir="output")
    for path in (ROOT / "swiftlike" / "webui").glob("*.py"):
        text = path.read_text()
        assert "shell=True" not in text and "os.system(" not in text and "os.popen(" not in text, path


def test_a_failed_runs_error_keeps_the_bad_rows_it_lists(tmp_path, swiftlike_home):
    """The CLI prints bad rows indented under its `Error:` line; the Train tab shows them (file:line), not just the
    first line."""
    from swiftlike.webui.runs import Job

    job = Job(id="x", argv=["swiftlike", "sft"], cwd=str(tmp_path), output_dir="output", stage="sft", started_at=0)
    job.dir.mkdir(parents=True)
    job.log_path.write_text("loading\nError: 1 bad row(s) in the dataset; fix them or pass --skip_bad_rows true:\n"
                            "  /d/bad.jsonl:2: last message is user, not assistant\n")
    assert job.error() == ("Error: 1 bad row(s) in the dataset; fix them or pass --skip_bad_rows true:\n"
                           "  /d/bad.jsonl:2: last message is user, not assistant")
    job.log_path.write_text("Error: --model x: no such directory\nTraceback follows\n")
    assert job.error() == "Error: --model x: no such directory"


@pytest.mark.slow
def test_chat_loads_with_the_system_prompt_and_streams_within_max_new_tokens(tiny_model):
    """chat.load: the system prompt reaches the rendered prompt; the same choices give the cached model;
    stream_reply yields the reply growing, no longer than max_new_tokens."""
    from swiftlike.webui import chat

    loaded = chat.load(None, str(tiny_model), None, "You are Nova.", "smollm2")
    assert chat.load(None, str(tiny_model), None, "You are Nova.", "smollm2") is loaded
    prompt = loaded.template.render([{"role": "user", "content": "Who are you?"}], add_generation_prompt=True)
    assert "You are Nova." in prompt and "Who are you?" in prompt
    other = chat.load(None, str(tiny_model), None, "You are Vega.", "smollm2")
    assert other is not loaded and "You are Vega." in other.template.render([{"role": "user", "content": "hi"}])
    parts = list(chat.stream_reply(loaded, [{"role": "user", "content": "Who are you?"}], max_new_tokens=6,
                                   repetition_penalty=1.5))
    assert len(parts) >= 2 and all(b.startswith(a) for a, b in zip(parts, parts[1:]))
    assert 0 < len(loaded.tokenizer(parts[-1], add_special_tokens=False).input_ids) <= 6 + 1
    with pytest.raises(SwiftlikeError, match="choose a base model or an adapter"):
        chat.load(None, "", "")


@pytest.mark.slow
def test_a_reply_closed_early_stops_generating(tiny_model):
    """Clear in Chat (or a client gone) closes the reply stream: the model stops generating then, rather than
    running to max_new_tokens for nobody."""
    from swiftlike.webui import chat

    loaded = chat.load(None, str(tiny_model), None, None, "smollm2")
    forwards = []
    hook = loaded.model.register_forward_hook(lambda *_: forwards.append(1))
    try:
        stream = chat.stream_reply(loaded, [{"role": "user", "content": "Who are you?"}], max_new_tokens=3000,
                                   repetition_penalty=1.5)
        next(stream), next(stream)
        stream.close()
        after_close = len(forwards)
        assert after_close < 200, after_close  # a piece every few tokens; 3000 forwards had the close been ignored
        import threading
        assert not [t for t in threading.enumerate() if t.daemon and t.is_alive() and "run" in t.name]
    finally:
        hook.remove()


def test_the_webui_extra_is_gradio_6_and_its_absence_is_one_line():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["webui"] == ["gradio>=6,<7"]
    code = ("import sys\nsys.modules['gradio'] = None  # not installed\nfrom swiftlike.cli import main\n"
            "main(['web-ui', '--port', '1'])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if not k.startswith(("WEBUI_", "SWIFT"))})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == 'Error: the web UI needs gradio: pip install -e ".[webui]" (or pip install ' \
                                  '"gradio>=6,<7")', proc.stderr
