"""`swiftlike plugin install|uninstall|available`: community plugin packs by name."""
from __future__ import annotations

import click

from ..registry import get_registry
from .output import echo_json, echo_table


@click.group()
def plugin():
    """Install and remove plugin packs (pip, into this interpreter's environment)."""


@plugin.command("install")
@click.argument("name")
@click.option("--upgrade", "-U", is_flag=True, help="Upgrade if already installed.")
@click.option("--allow-unpinned-deps", "--allow_unpinned_deps", "allow_unpinned_deps", is_flag=True,
              help="For a pinned index entry: also install dependencies the entry does not pin (unverified).")
def plugin_install(name, upgrade, allow_unpinned_deps):
    """Install NAME from the plugin index (sha256-verified when pinned, dependencies included) or a raw pip
    REQUIREMENT."""
    from ..plugins import packs

    res = packs.install(name, upgrade=upgrade, warn=lambda m: click.echo(m, err=True),
                        allow_unpinned_deps=allow_unpinned_deps)
    if res.sha256 and res.unpinned:
        verified = f" (sha256 verified; dependencies NOT pinned: {', '.join(res.unpinned)})"
    elif res.sha256:
        verified = " (sha256 verified" + (f", {len(res.requires)} pinned dependencies" if res.requires else "") + ")"
    else:
        verified = ""
    click.echo(f"installed {res.dist}{verified}; `swiftlike plugins list` shows what it registers")


@plugin.command("uninstall")
@click.argument("name")
def plugin_uninstall(name):
    """Uninstall a plugin pack by index name or distribution name."""
    from ..plugins import packs

    res = packs.uninstall(name)
    click.echo(f"uninstalled {res.dist}")


@plugin.command("available")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugin_available(as_json):
    """List the plugin packs in the index, and which are installed in this environment."""
    from ..plugins.packs import installed_version

    rows = []
    for spec in get_registry().plugin_index:
        row = spec.to_dict()
        for key in ("extra", "base_dir"):
            row.pop(key, None)
        row["source"] = f"pack {spec.pack}" if spec.pack else spec.pip
        row["pinned"] = bool(spec.sha256)
        row["installed"] = installed_version(spec)
        rows.append(row)
    if as_json:
        return echo_json(rows)
    for row in rows:
        row["installed"] = row["installed"] or "no"
    echo_table(rows, ["name", "installed", "pinned", "summary", "source"])


GROUPS = [plugin]
