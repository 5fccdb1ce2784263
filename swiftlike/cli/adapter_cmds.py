"""`swiftlike adapter push|install|list|show|remove|verify|merge|package`: the adapter marketplace (no torch import)."""
from __future__ import annotations

import click

from .output import echo_fields, echo_json, echo_table

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
hub_root_option = click.option("--hub_root", "--hub-root", "hub_root",
                               help="Root of the local: hub (default: $SWIFTLIKE_LOCAL_HUB).")
allow_pickle_option = click.option("--allow-pickle", "--allow_pickle", "allow_pickle", is_flag=True,
                                   help="Accept pickle weights (.bin/.pt/.pkl/.pth/.ckpt): they can run code.")


@click.group()
def adapter():
    """Publish adapters to a hub (hf:, ms:, local:ORG/NAME[@REV]), install them by name, package them as wheels.

    \b
      swiftlike adapter push output/…/checkpoint-50 hf:acme/nova-lora
      swiftlike adapter install hf:acme/nova-lora
      swiftlike infer --ckpt_dir nova-lora
    """


@adapter.command("push")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.argument("ref")
@click.option("--private", is_flag=True, help="Make the repo private (local: readable by you only, an existing "
                                             "repo too; hf: an existing public repo is refused; ms: new repos).")
@click.option("--message", "-m", help="Commit message.")
@click.option("--version", "version", help="Adapter version in swiftlike.json (default 0.1.0 or the manifest's).")
@hub_root_option
@allow_pickle_option
def adapter_push(directory, ref, private, message, version, hub_root, allow_pickle):
    """Validate DIRECTORY's manifest, then publish it (PEFT files, swiftlike.json, README.md card) to REF."""
    from ..adapters.publish import push

    pushed = push(directory, ref, private=private, message=message, hub_root=hub_root, allow_pickle=allow_pickle,
                  version=version, require_manifest=True)
    click.echo(f"pushed {directory} -> {pushed}\n  install: swiftlike adapter install {pushed}")


@adapter.command("install")
@click.argument("ref")
@click.option("--name", help="Install under this name (default: the repo's name).")
@hub_root_option
@allow_pickle_option
@click.option("--base", help="Refuse unless the adapter fits this base (model dir or model type).")
def adapter_install(ref, name, hub_root, allow_pickle, base):
    """Install REF into the adapter store: its manifest first (fields, paths and sizes checked), then the files it
    lists (sha256 verified); an update replaces the installed version atomically."""
    from ..adapters.store import install

    installed = install(ref, name=name, allow_pickle=allow_pickle, hub_root=hub_root, base=base)
    done = "installed" if installed.fresh else "already installed:"
    click.echo(f"{done} {installed.install.get('ref')} (revision {installed.install.get('revision')}) as "
               f"{installed.name}: {installed.path}\n  chat: swiftlike infer --ckpt_dir {installed.name}")


@adapter.command("list")
@json_option
def adapter_list(as_json):
    """Installed adapters and adapters registered by plugins."""
    from ..adapters.store import list_adapters

    rows = [a.row() for a in list_adapters()]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        row["size"] = _human(row["size"])
    echo_table(rows, ["name", "ref", "base_model_type", "tuner", "rank", "size", "installed_at"])


@adapter.command("show")
@click.argument("name")
@json_option
def adapter_show(name, as_json):
    """One adapter's manifest and where it is installed."""
    from ..adapters.store import get

    data = get(name).details()
    if as_json:
        echo_json(data)
        return
    files = data.pop("files", {})
    data.pop("template_text", None)
    evaluations = data.pop("evaluations", None) or []
    data["files"] = ", ".join(f"{rel} ({_human(e.get('size', 0))})" for rel, e in files.items())
    if isinstance(data.get("recipe"), dict):
        data["recipe"] = _recipe_line(data["recipe"])
    for i, e in enumerate(reversed(evaluations)):  # the newest first
        data["evaluation" if i == 0 else f"evaluation {i + 1}"] = _evaluation_line(e)
    echo_fields(data)


def _recipe_line(r: dict) -> str:
    """How `adapter merge` made it: method, density, and each source with its weight and manifest sha256."""
    density = f" density {r['density']}" if r.get("density") is not None else ""
    parts = [f"{s.get('name')}{' (' + s['ref'] + ')' if s.get('ref') else ''} x{w:g} "
             f"[sha256 {str(s.get('manifest_sha256'))[:12]}]" for s, w in zip(r.get("sources") or [],
                                                                            r.get("weights") or [])]
    return f"{r.get('method')}{density} of " + ", ".join(parts)


def _evaluation_line(e: dict) -> str:
    """One `swiftlike eval` result: when, on what data, and each metric (beside the base model's)."""
    data = ", ".join(f"{d.get('name')} ({d.get('rows')} rows, sha256 {str(d.get('sha256'))[:12]})"
                     for d in e.get("datasets") or []) or ", ".join(e.get("tasks") or []) or "?"
    base = e.get("baseline") or {}

    def num(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    scores = ", ".join(f"{k} {num(v)}" + (f" (base {num(base[k])})" if base.get(k) is not None else "")
                       for k, v in (e.get("metrics") or {}).items())
    return f"{e.get('date', '?')} {e.get('backend', 'native')} on {data}: {scores}"


@adapter.command("remove")
@click.argument("name")
def adapter_remove(name):
    """Delete an installed adapter from the store."""
    from ..adapters.store import remove

    click.echo(f"removed {name} ({remove(name)})")


@adapter.command("verify")
@click.argument("name")
def adapter_verify(name):
    """Re-hash every file of an installed adapter (and check its manifest is the one installed); exit 1 naming the
    first that does not match."""
    from ..adapters.store import verify

    found = verify(name)
    click.echo(f"ok: {name}: {len(found.manifest.get('files', {}))} files match swiftlike.json ({found.path})")


@adapter.command("merge")
@click.argument("adapters", nargs=-1, required=True)
@click.option("--method", required=True, type=click.Choice(
    ["linear", "cat", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune"]),
    help="How to combine (PEFT add_weighted_adapter): cat keeps every adapter exactly (rank = sum of ranks); svd "
         "re-factors the sum to the largest rank; linear, ties, dare_*, magnitude_prune need equal ranks.")
@click.option("--weights", help="One weight per adapter, comma-separated (default 1 each).")
@click.option("--density", type=float, help="ties, dare_linear, dare_ties, magnitude_prune: share of weights kept "
                                            "(0 < D <= 1).")
@click.option("--name", required=True, help="Name of the new adapter in the store.")
@click.option("--overwrite", is_flag=True, help="Replace an installed adapter of that name (atomically).")
def adapter_merge(adapters, method, weights, density, name, overwrite):
    """Combine ADAPTERS (installed names or checkpoint dirs, one base) into a new adapter NAME in the store; its
    swiftlike.json records the recipe (each source's manifest sha256, method, weights, density).

    \b
      swiftlike adapter merge nova-lora terse-lora --method cat --name nova-terse
      swiftlike adapter merge a b --method ties --density 0.5 --weights 1,0.7 --name ab
      swiftlike serve --model_type smollm2-135m-instruct --adapters nova-terse=nova-terse
    """
    from ..combine import merge_adapters
    from ..registry import SwiftlikeError

    parsed = None
    if weights is not None:
        try:
            parsed = [float(w) for w in weights.split(",")]
        except ValueError:
            raise SwiftlikeError(f"--weights {weights!r}: give numbers separated by commas, e.g. 1,0.5") from None
    made = merge_adapters(list(adapters), method=method, name=name, weights=parsed, density=density,
                          overwrite=overwrite, progress=lambda msg: click.echo(f"merge: {msg}", err=True))
    cfg = made.manifest.get("tuner_config") or {}
    click.echo(f"merged {', '.join(adapters)} ({method}) -> {made.name} (r={cfg.get('r')}): {made.path}\n"
               f"  chat: swiftlike infer --ckpt_dir {made.name}\n"
               f"  publish: swiftlike adapter push {made.path} hf:ORG/{made.name}")


@adapter.command("package")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--name", "dist", required=True, help="Distribution name, e.g. swiftlike-adapter-nova "
                                                      "(registers the adapter `nova`).")
@click.option("--output", "-o", default="dist", show_default=True, help="Where the wheel is written.")
@click.option("--version", "version", help="Wheel and adapter version (default 0.1.0 or the manifest's).")
@allow_pickle_option
def adapter_package(directory, dist, output, version, allow_pickle):
    """Build a pip-installable wheel that registers the adapter as a plugin."""
    from ..adapters.wheel import adapter_name_for, package

    wheel = package(directory, dist, output=output, version=version, allow_pickle=allow_pickle)
    click.echo(f"built {wheel}\n  pip install {wheel}   # then: swiftlike infer --ckpt_dir {adapter_name_for(dist)}")


def _human(size) -> str:
    size = float(size or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"
