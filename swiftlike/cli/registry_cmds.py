"""`swiftlike models|templates|datasets|tuners|rewards|hubs|plugins list/show`: read-only views of the registry (no torch
import)."""
from __future__ import annotations

import click

from ..registry import get_registry
from .output import echo_fields, echo_json, echo_table

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _public(spec) -> dict:
    data = spec.to_dict()
    data.pop("base_dir", None)
    if not data.get("extra"):
        data.pop("extra", None)
    return data


# ---------------------------------------------------------------- models
@click.group()
def models():
    """Model types: hub ids, chat template, LoRA targets."""


@models.command("list")
@json_option
@click.option("--tag", "tags", multiple=True, help="Only models with this tag (repeatable: all must match).")
@click.option("--search", help="Only names or hub ids containing this text (case-insensitive).")
def models_list(as_json, tags, search):
    """List model types."""
    rows = []
    for spec in get_registry().models:
        if tags and not set(tags) <= set(spec.tags):
            continue
        if search and not any(search.lower() in (v or "").lower() for v in (spec.name, spec.hf, spec.ms)):
            continue
        rows.append(_public(spec))
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, ["name", "hf", "ms", "template", "plugin"])


@models.command("show")
@click.argument("name")
@json_option
def models_show(name, as_json):
    """Show one model type (aliases and near-misses are resolved)."""
    data = _public(get_registry().models.get(name))
    echo_json(data) if as_json else echo_fields(data)


# ---------------------------------------------------------------- templates
@click.group()
def templates():
    """Chat templates."""


@templates.command("list")
@json_option
def templates_list(as_json):
    """List chat templates."""
    rows = [{"name": s.name, "default_system": s.default_system, "stop_words": s.stop_words, "plugin": s.plugin,
             "file": s.file} for s in get_registry().templates]
    echo_json(rows) if as_json else echo_table(rows, ["name", "default_system", "plugin"])


@templates.command("show")
@click.argument("name")
@json_option
def templates_show(name, as_json):
    """Show one chat template with its jinja source."""
    spec = get_registry().templates.get(name)
    data = _public(spec)
    data["chat_template"] = spec.load_source()
    echo_json(data) if as_json else echo_fields(data)


# ---------------------------------------------------------------- datasets
@click.group()
def datasets():
    """Registered datasets."""


@datasets.command("list")
@json_option
def datasets_list(as_json):
    """List registered datasets."""
    rows = [_public(s) for s in get_registry().datasets]
    echo_json(rows) if as_json else echo_table(rows, ["name", "hf", "ms", "path", "format", "plugin"])


@datasets.command("show")
@click.argument("name")
@json_option
def datasets_show(name, as_json):
    """Show one registered dataset."""
    data = _public(get_registry().datasets.get(name))
    echo_json(data) if as_json else echo_fields(data)


# ---------------------------------------------------------------- tuners, hubs
def _external_option(f):
    return click.option("--external_plugins", "--custom_register_path", multiple=True,
                        help="Python files loaded first, as training loads them (swiftlike hooks, ms-swift's orms).")(f)


def _simple_group(kind: str, summary: str, columns: list[str]):
    """`swiftlike KIND list|show` for a registry table whose entries are shown as they are."""
    group = click.Group(kind, help=summary)

    @group.command("list")
    @json_option
    @_external_option
    def list_(as_json, external_plugins):
        if external_plugins:
            from ..plugins.external import load_external_plugins

            load_external_plugins(external_plugins)
        rows = [_public(s) for s in getattr(get_registry(), kind)]
        echo_json(rows) if as_json else echo_table(rows, columns)

    list_.help = f"List {kind}."

    @group.command("show")
    @click.argument("name")
    @json_option
    def show(name, as_json):
        data = _public(getattr(get_registry(), kind).get(name))
        echo_json(data) if as_json else echo_fields(data)

    show.help = f"Show one of the {kind}."
    return group


tuners = _simple_group("tuners", "Training methods (--train_type): LoRA, QLoRA, DoRA, full, freeze and plugins'.",
                       ["name", "summary", "requires_peft", "plugin"])
rewards = _simple_group("rewards", "Reward functions for GRPO (--reward_funcs): accuracy, format, length and plugins'.",
                        ["name", "summary", "plugin"])
hubs = _simple_group("hubs", "Where models, datasets and adapters are downloaded from and pushed to (HUB:ORG/NAME).",
                     ["name", "summary", "plugin"])


# ---------------------------------------------------------------- plugins
@click.group()
def plugins():
    """Loaded plugins."""


def plugin_rows() -> list[dict]:
    reg = get_registry()
    pm = reg.pm
    rows = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked
            continue
        from .. import __version__

        rows.append({
            "name": name,
            "version": pm.versions.get(name, __version__ if name in pm.builtin_names else None),
            "builtin": name in pm.builtin_names,
            "hooks": pm.hook_names(plugin),
            "registers": reg.counts.get(name, {}),
        })
    return rows


@plugins.command("list")
@json_option
def plugins_list(as_json):
    """List loaded plugins, their hooks and how many entries each registered."""
    rows = plugin_rows()
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        row["registers"] = ", ".join(f"{k}={v}" for k, v in sorted(row["registers"].items()))
    echo_table(rows, ["name", "version", "hooks", "registers"])


GROUPS = [models, templates, datasets, tuners, rewards, hubs, plugins]
