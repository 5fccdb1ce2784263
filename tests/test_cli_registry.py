"""Every registry CLI command, with and without --json; errors are one line with a non-zero exit."""
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import swiftlike
from swiftlike.cli import cli


@pytest.fixture
def run(plugins):
    class Acme:
        @swiftlike.hookimpl
        def register_models(self, register):
            register("acme-7b-chat", hf="acme/Acme-7B-Chat", ms="acme/Acme-7B-Chat-ms", template="chatml",
                     tags=["acme", "chat"])
            register("acme-7b", hf="acme/Acme-7B", template="default", tags=["acme", "base"])

        @swiftlike.hookimpl
        def register_templates(self, register):
            register("acme", chat_template="{{ messages[0].content }}", default_system="You are Acme.")

        @swiftlike.hookimpl
        def register_datasets(self, register):
            register("acme-data", hf="acme/data", format="alpaca", tags=["sft"])

        @swiftlike.hookimpl
        def register_plugin_index(self, register):
            register("acme-pack", pip="swiftlike-acme==1.0", summary="Acme models")

    plugins.add(Acme(), "acme")
    runner = CliRunner()

    def invoke(*args, ok=True):
        result = runner.invoke(cli, list(args))
        if ok:
            assert result.exit_code == 0, result.output
        return result
    return invoke


def test_version_and_help(run):
    assert run("--version").output.strip() == f"swiftlike, version {swiftlike.__version__}"
    out = run("--help").output
    for cmd in ("models", "templates", "datasets", "plugins", "plugin"):
        assert cmd in out


def test_models_list(run):
    out = run("models", "list").output
    assert out.splitlines()[0].split() == ["NAME", "HF", "MS", "TEMPLATE", "PLUGIN"]
    assert any(line.split()[:2] == ["acme-7b-chat", "acme/Acme-7B-Chat"] for line in out.splitlines())
    rows = json.loads(run("models", "list", "--json").output)
    acme = next(r for r in rows if r["name"] == "acme-7b-chat")
    assert {k: acme[k] for k in ("hf", "ms", "template", "plugin")} == {
        "hf": "acme/Acme-7B-Chat", "ms": "acme/Acme-7B-Chat-ms", "template": "chatml", "plugin": "acme"}
    assert "smollm2-135m-instruct" in {r["name"] for r in rows}


def test_models_list_filters(run):
    rows = json.loads(run("models", "list", "--json", "--tag", "acme").output)
    assert {r["name"] for r in rows} == {"acme-7b-chat", "acme-7b"}
    rows = json.loads(run("models", "list", "--json", "--tag", "acme", "--tag", "base").output)
    assert [r["name"] for r in rows] == ["acme-7b"]
    rows = json.loads(run("models", "list", "--json", "--search", "ACME-7B-CHAT-MS").output)
    assert [r["name"] for r in rows] == ["acme-7b-chat"]
    assert "(none)" in run("models", "list", "--search", "no-such-thing").output


def test_models_show(run):
    data = json.loads(run("models", "show", "acme-7b-chat", "--json").output)
    assert data["hf"] == "acme/Acme-7B-Chat" and data["tags"] == ["acme", "chat"]
    out = run("models", "show", "acme-7b-chat").output
    assert "acme/Acme-7B-Chat" in out and "plugin" in out


def test_unknown_model_is_one_line_error(run):
    result = run("models", "show", "acme-7b-chta", ok=False)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: unknown model 'acme-7b-chta'; did you mean acme-7b-chat, ")
    assert lines[0].endswith("? (see `swiftlike models list`)")


def test_templates_list_and_show(run):
    rows = json.loads(run("templates", "list", "--json").output)
    acme = next(r for r in rows if r["name"] == "acme")
    assert acme["default_system"] == "You are Acme." and acme["plugin"] == "acme"
    assert "You are Acme." in run("templates", "list").output
    data = json.loads(run("templates", "show", "acme", "--json").output)
    assert data["chat_template"] == "{{ messages[0].content }}"


def test_datasets_list_and_show(run):
    rows = json.loads(run("datasets", "list", "--json").output)
    assert next(r for r in rows if r["name"] == "acme-data")["format"] == "alpaca"
    assert "acme-data" in run("datasets", "list").output
    assert json.loads(run("datasets", "show", "acme-data", "--json").output)["hf"] == "acme/data"


def test_plugins_list(run):
    rows = json.loads(run("plugins", "list", "--json").output)
    by_name = {r["name"]: r for r in rows}
    assert by_name["acme"]["registers"] == {"models": 2, "templates": 1, "datasets": 1, "plugins": 1}
    assert "register_models" in by_name["acme"]["hooks"]
    assert by_name["swiftlike"]["version"] == swiftlike.__version__
    assert by_name["swiftlike.tuners"]["registers"]["tuners"] >= 5
    out = run("plugins", "list").output
    assert "models=2" in out and out.splitlines()[0].split() == ["NAME", "VERSION", "HOOKS", "REGISTERS"]


def test_plugin_available(run):
    rows = json.loads(run("plugin", "available", "--json").output)
    assert {"name": "acme-pack", "pip": "swiftlike-acme==1.0"}.items() <= next(
        r for r in rows if r["name"] == "acme-pack").items()
    assert "acme-pack" in run("plugin", "available").output


def test_debug_env_shows_traceback():
    env = {**os.environ, "SWIFTLIKE_DEBUG": "1"}
    proc = subprocess.run([sys.executable, "-m", "swiftlike", "models", "show", "nope-model"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    env.pop("SWIFTLIKE_DEBUG")
    proc = subprocess.run([sys.executable, "-m", "swiftlike", "models", "show", "nope-model"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("Error: unknown model 'nope-model'")


def test_list_commands_do_not_import_torch():
    code = ("import sys; from swiftlike.cli import main\n"
            "for argv in (['--help'], ['models','list'], ['templates','list'], ['datasets','list'], ['plugins','list']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'numpy') if m in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in proc.stderr, proc.stderr[-2000:]


def test_tuners_and_hubs_list_and_show(run):
    out = run("tuners", "list").output
    assert out.splitlines()[0].split() == ["NAME", "SUMMARY", "REQUIRES_PEFT", "PLUGIN"]
    rows = json.loads(run("tuners", "list", "--json").output)
    assert {"lora", "qlora", "dora", "full", "freeze"} <= {r["name"] for r in rows}
    assert json.loads(run("tuners", "show", "qlora", "--json").output)["quantized"] is True
    rows = json.loads(run("hubs", "list", "--json").output)
    assert {"hf", "ms", "local"} <= {r["name"] for r in rows}
    assert "huggingface_hub" in run("hubs", "show", "hf").output
    bad = run("tuners", "show", "lorra", ok=False)
    assert bad.exit_code == 1 and "did you mean lora" in bad.output and "swiftlike tuners list" in bad.output


def test_export_to_an_unknown_hub_prefix_is_refused(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "adapter_config.json").write_text("{}")
    proc = subprocess.run([sys.executable, "-m", "swiftlike", "export", "--ckpt_dir", str(ckpt), "--to",
                           "hff:acme/nova"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "'hff' is not a registered hub (hubs: hf, local, ms" in proc.stderr
    assert not (tmp_path / "hff:acme").exists() and list(tmp_path.iterdir()) == [ckpt]


def test_closed_pipe_ends_quietly():
    """`swiftlike models list | head -1`: the reader closes the pipe; the command ends with 0 and says nothing."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write: every write fails with EPIPE
    proc = subprocess.run([sys.executable, "-m", "swiftlike", "models", "list"], stdout=write,
                          stderr=subprocess.PIPE, text=True)
    os.close(write)
    assert (proc.returncode, proc.stderr) == (0, "")
    proc = subprocess.run(f"{sys.executable} -m swiftlike models list | head -1", shell=True, capture_output=True,
                          text=True)
    assert proc.stdout.split() == ["NAME", "HF", "MS", "TEMPLATE", "PLUGIN"] and proc.stderr == ""
