"""The plugin contract: collectors, conflicts, overrides, broken plugins, the env allow-list, TOML fragments."""
import sys
import textwrap

import pytest

import swiftlike
from swiftlike.plugins.catalog import CatalogPlugin
from swiftlike.registry import (ConflictError, ModelSpec, SwiftlikeError, UnknownNameError, get_registry,
                                reset_plugin_manager)


class Models:
    def __init__(self, *names, **fields):
        self.names, self.fields = names, fields

    @swiftlike.hookimpl
    def register_models(self, register):
        for name in self.names:
            register(name, **self.fields)


def test_builtin_catalog_is_a_plugin(plugins):
    reg = get_registry()
    spec = reg.models.get("smollm2-135m-instruct")
    assert isinstance(spec, ModelSpec)
    assert spec.hf == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert spec.plugin == "swiftlike"
    assert {"lora", "qlora", "dora", "full", "freeze"} <= set(reg.tuners.names())
    assert {"hf", "ms", "local"} <= set(reg.hubs.names())


def test_plugin_registers_and_entry_remembers_plugin(plugins):
    plugins.add(Models("acme-7b-chat", hf="acme/Acme-7B-Chat", template="chatml", tags=["acme"]), "acme")
    spec = get_registry().models.get("acme-7b-chat")
    assert (spec.hf, spec.template, spec.plugin) == ("acme/Acme-7B-Chat", "chatml", "acme")
    assert get_registry().counts["acme"]["models"] == 1


def test_unknown_name_suggests(plugins):
    with pytest.raises(UnknownNameError) as err:
        get_registry().models.get("smollm2-135m-instruc")
    assert "did you mean smollm2-135m-instruct" in str(err.value)


def test_unknown_field_is_reported_not_silently_kept(plugins, capsys):
    plugins.add(Models("typo-model", hf="x/y", tempalte="chatml"), "typo")
    assert "typo-model" not in get_registry().models
    assert "plugin typo failed in register_models" in capsys.readouterr().err


def test_conflict_names_both_plugins(plugins, capsys):
    plugins.add(Models("dup-model", hf="a/one"), "first")
    plugins.add(Models("dup-model", hf="b/two"), "second")
    reg = get_registry()
    with pytest.raises(ConflictError) as err:
        reg.models.get("dup-model")
    assert "first" in str(err.value) and "second" in str(err.value)
    assert "override=True" in str(err.value)
    # everything else keeps working
    assert reg.models.get("smollm2-135m-instruct").hf
    assert "conflict" in capsys.readouterr().err


def test_conflict_with_builtin(plugins):
    plugins.add(Models("smollm2-135m-instruct", hf="evil/clone"), "clone")
    with pytest.raises(ConflictError, match="swiftlike and clone"):
        get_registry().models.get("smollm2-135m-instruct")


def test_override_is_logged(plugins, caplog):
    plugins.add(Models("smollm2-135m-instruct", hf="mirror/SmolLM2", override=True), "mirror")
    with caplog.at_level("WARNING", logger="swiftlike.registry"):
        spec = get_registry().models.get("smollm2-135m-instruct")
    assert (spec.hf, spec.plugin) == ("mirror/SmolLM2", "mirror")
    assert "overrides the one from plugin swiftlike" in caplog.text


def test_broken_hook_is_reported_once_and_rest_works(plugins, capsys):
    class Broken:
        @swiftlike.hookimpl
        def register_models(self, register):
            register("half-registered", hf="x/y")
            raise ValueError("database on fire")

    plugins.add(Broken(), "broken-hook")
    plugins.add(Models("ok-model", hf="ok/ok"), "fine")
    reg = get_registry()
    assert "ok-model" in reg.models and "smollm2-135m-instruct" in reg.models
    assert "half-registered" not in reg.models  # a failing collector registers nothing
    err = capsys.readouterr().err
    assert err.count("plugin broken-hook failed in register_models: ValueError: database on fire") == 1


def test_aliases_resolve(plugins):
    plugins.add(Models("newname-7b", hf="o/n", aliases=["oldname-7b"]), "aliased")
    assert get_registry().models.get("oldname-7b").name == "newname-7b"
    assert get_registry().models.get("NewName-7B").name == "newname-7b"


def test_toml_fragment_plugin(plugins, tmp_path):
    (tmp_path / "hello.jinja").write_text("{{ messages[0].content }}\n")
    frag = tmp_path / "catalog.toml"
    frag.write_text(textwrap.dedent("""
        [models.frag-1b]
        hf = "frag/Frag-1B"
        template = "frag"
        tags = ["frag"]
        [templates.frag]
        file = "hello.jinja"
        stop_words = ["</s>"]
        [plugins.frag-pack]
        pip = "swiftlike-frag==1.0"
        summary = "a pack"
    """))
    plugins.add(CatalogPlugin(frag), "frag")
    reg = get_registry()
    assert reg.models.get("frag-1b").plugin == "frag"
    assert reg.templates.get("frag").load_source() == "{{ messages[0].content }}"
    assert reg.plugin_index.get("frag-pack").pip == "swiftlike-frag==1.0"


def test_invalid_toml_fragment_names_file(plugins, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[models.x\nhf = 1\n")
    plugins.add(CatalogPlugin(bad), "badtoml")
    assert "smollm2-135m-instruct" in get_registry().models
    err = capsys.readouterr().err
    assert "plugin badtoml failed" in err and str(bad) in err


def _fake_distribution(root, dist, module, body):
    """A real installed-distribution layout (dist-info + entry_points.txt) on sys.path, no pip needed."""
    (root / f"{module}.py").write_text(body)
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[swiftlike]\n{module} = {module}\n")


@pytest.fixture
def installed_plugins(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, "swiftlike-alpha", "sl_alpha", textwrap.dedent("""
        import swiftlike
        @swiftlike.hookimpl
        def register_models(register):
            register("alpha-1b", hf="alpha/Alpha-1B")
    """))
    _fake_distribution(tmp_path, "swiftlike-beta", "sl_beta", textwrap.dedent("""
        import swiftlike
        @swiftlike.hookimpl
        def register_models(register):
            register("beta-1b", hf="beta/Beta-1B")
    """))
    _fake_distribution(tmp_path, "swiftlike-gamma", "sl_gamma", "raise ImportError('no module named lasers')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for mod in ("sl_alpha", "sl_beta", "sl_gamma"):
        sys.modules.pop(mod, None)
    reset_plugin_manager()


@pytest.mark.parametrize("env, expected", [
    (None, {"alpha-1b", "beta-1b"}),
    ("swiftlike-alpha", {"alpha-1b"}),
    ("swiftlike_beta, swiftlike-alpha", {"alpha-1b", "beta-1b"}),
    ("", set()),
])
def test_env_allow_list(installed_plugins, monkeypatch, capsys, env, expected):
    if env is None:
        monkeypatch.delenv("SWIFTLIKE_PLUGINS", raising=False)
    else:
        monkeypatch.setenv("SWIFTLIKE_PLUGINS", env)
    reset_plugin_manager()
    reg = get_registry()
    assert {n for n in ("alpha-1b", "beta-1b") if n in reg.models} == expected
    assert "smollm2-135m-instruct" in reg.models  # built-ins always load
    err = capsys.readouterr().err
    assert ("swiftlike-gamma failed to load: ImportError: no module named lasers" in err) == (env is None)


def test_registry_errors_are_user_errors():
    assert issubclass(UnknownNameError, SwiftlikeError) and issubclass(ConflictError, SwiftlikeError)
