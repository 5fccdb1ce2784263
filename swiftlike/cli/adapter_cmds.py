"""`swiftlike adapter search|info|push|install|list|show|remove|verify|merge|package|keygen|trust`: the
adapter marketplace (no torch import)."""
from __future__ import annotations

import click

from .output import echo_fields, echo_json, echo_table

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
hub_root_option = click.option("--hub_root", "--hub-root", "hub_root",
                               help="Root of the local: hub (default: $SWIFTLIKE_LOCAL_HUB).")
allow_pickle_option = click.option("--allow-pickle", "--allow_pickle", "allow_pickle", is_flag=True,
                                   help="Accept pickle weights (.bin/.pt/.pkl/.pth/.ckpt): they can run code.")
sign_option = click.option("--sign", "sign", metavar="KEY",
                           help="Sign the manifest with $SWIFTLIKE_HOME/keys/KEY.key (`swiftlike adapter keygen KEY`).")


@click.group()
def adapter():
    """Publish adapters to a hub (hf:, ms:, local:ORG/NAME[@REV]), install them by name, package them as wheels.

    \b
      swiftlike adapter push output/…/checkpoint-50 hf:acme/nova-lora
      swiftlike adapter search nova --base smollm2-135m-instruct
      swiftlike adapter info hf:acme/nova-lora
      swiftlike adapter install hf:acme/nova-lora
      swiftlike infer --ckpt_dir nova-lora

    \b
    Signed adapters:
      swiftlike adapter keygen acme && swiftlike adapter push DIR hf:acme/nova-lora --sign acme
      swiftlike adapter trust add acme.pub && swiftlike adapter install hf:acme/nova-lora --require-signature
    """


@adapter.command("search")
@click.argument("query", required=False)
@click.option("--base", help="Only adapters for this base model type (see `swiftlike models list`).")
@click.option("--tuner", help="Only adapters of this tuner (lora, qlora, dora, …).")
@click.option("--hub", help="Search this hub only (hf, ms, local); default: every hub that can search.")
@click.option("--limit", default=20, show_default=True, type=int, help="At most this many adapters per hub.")
@hub_root_option
@json_option
def adapter_search(query, base, tuner, hub, limit, hub_root, as_json):
    """Find published adapters by name (QUERY), base model type and tuner on the hubs. The table goes to stdout,
    which hubs answered (and why the others did not) to stderr; --json holds both."""
    from ..adapters.search import COLUMNS, search
    from ..registry import SwiftlikeError

    result = search(query, base=base, tuner=tuner, hub=hub, limit=limit, hub_root=hub_root)
    if not result.answered:  # one line: the hub's own reason, or every hub's
        raise SwiftlikeError(result.status_lines()[0] if hub else "no hub answered: " +
                             "; ".join(result.status_lines()))
    if as_json:
        echo_json({"rows": result.rows, "hubs": result.hubs})
    else:
        rows = [{**r, "signed": {True: "yes", False: "no"}.get(r["signed"])} for r in result.rows]
        echo_table(rows, list(COLUMNS))
        for line in result.status_lines():
            click.echo(line, err=True)


@adapter.command("info")
@click.argument("ref")
@hub_root_option
@json_option
def adapter_info(ref, hub_root, as_json):
    """A published adapter's manifest (checked as an install would), model card, files and sizes, metrics and
    signature status, without installing it: only swiftlike.json, swiftlike.sig and README.md are fetched."""
    from ..adapters.remote_info import remote_info

    data = remote_info(ref, hub_root=hub_root)
    if as_json:
        echo_json(data)
        return
    card = data.pop("card")
    files = data.pop("files")
    evaluations = data.pop("evaluations")
    manifest = data.pop("manifest")
    data["signature"] = data["signature"]["summary"]
    data["size"] = _human(data["size"])
    data["template"] = manifest.get("template")
    data["datasets"] = ", ".join(map(str, manifest.get("datasets") or [])) or None
    data["step"] = manifest.get("step")
    data["created"] = manifest.get("created")
    data["metrics"] = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                for k, v in data["metrics"].items()) or None
    for i, e in enumerate(reversed(evaluations)):  # the newest first
        data["evaluation" if i == 0 else f"evaluation {i + 1}"] = _evaluation_line(e)
    data["files"] = ", ".join(f"{rel} ({_human(e['size'])})" for rel, e in files.items())
    problems = data.pop("repository")
    data["repository"] = ("not listed by the hub" if problems is None else
                          "every file as the manifest says" if not problems else
                          "; ".join(problems) + " (an install refuses it)")
    echo_fields(data)
    if card:
        click.echo(f"\n--- README.md ---\n{card.rstrip()}")


@adapter.command("push")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.argument("ref")
@click.option("--private", is_flag=True, help="Make the repo private (local: readable by you only, an existing "
                                             "repo too; hf: an existing public repo is refused; ms: new repos).")
@click.option("--message", "-m", help="Commit message.")
@click.option("--version", "version", help="Adapter version in swiftlike.json (default 0.1.0 or the manifest's).")
@hub_root_option
@allow_pickle_option
@sign_option
def adapter_push(directory, ref, private, message, version, hub_root, allow_pickle, sign):
    """Validate DIRECTORY's manifest, then publish it (PEFT files, swiftlike.json, README.md card, and with --sign
    swiftlike.sig) to REF."""
    from ..adapters.publish import push

    pushed = push(directory, ref, private=private, message=message, hub_root=hub_root, allow_pickle=allow_pickle,
                  version=version, require_manifest=True, sign=sign)
    signed = f" (signed with key {sign})" if sign else ""
    click.echo(f"pushed {directory} -> {pushed}{signed}\n  install: swiftlike adapter install {pushed}")


@adapter.command("install")
@click.argument("ref")
@click.option("--name", help="Install under this name (default: the repo's name).")
@hub_root_option
@allow_pickle_option
@click.option("--base", help="Refuse unless the adapter fits this base (model dir or model type).")
@click.option("--require-signature", "--require_signature", "require_signature", is_flag=True, default=None,
              help="Refuse unsigned adapters and unknown publishers (default: require_signature in "
                   "$SWIFTLIKE_HOME/config.toml). A bad signature is always refused.")
def adapter_install(ref, name, hub_root, allow_pickle, base, require_signature):
    """Install REF into the adapter store: its manifest and signature first (fields, paths, sizes and signature
    checked), then the files it lists (sha256 verified); an update replaces the installed version atomically."""
    from ..adapters.store import install

    installed = install(ref, name=name, allow_pickle=allow_pickle, hub_root=hub_root, base=base,
                        require_signature=require_signature or None)
    done = "installed" if installed.fresh else "already installed:"
    lines = [f"{done} {installed.install.get('ref')} (revision {installed.install.get('revision')}) as "
             f"{installed.name}: {installed.path}",
             f"  {installed.note or 'signature: ' + installed.signature().describe()}"]
    lines.append(f"  base model licence: {installed.manifest.get('license') or 'not stated'} "
                 f"({installed.manifest.get('base_model') or installed.manifest.get('base_model_type') or '?'})")
    lines.append(f"  chat: swiftlike infer --ckpt_dir {installed.name}")
    click.echo("\n".join(lines))


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
    click.echo(f"ok: {name}: {len(found.manifest.get('files', {}))} files match swiftlike.json ({found.path})\n"
               f"  signature: {found.signature().describe()}")


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
@sign_option
def adapter_package(directory, dist, output, version, allow_pickle, sign):
    """Build a pip-installable wheel that registers the adapter as a plugin."""
    from ..adapters.wheel import adapter_name_for, package

    wheel = package(directory, dist, output=output, version=version, allow_pickle=allow_pickle, sign=sign)
    click.echo(f"built {wheel}\n  pip install {wheel}   # then: swiftlike infer --ckpt_dir {adapter_name_for(dist)}")


def _human(size) -> str:
    size = float(size or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


# ---------------------------------------------------------------- keys and trusted publishers
@adapter.command("keygen")
@click.argument("name")
@click.option("--force", is_flag=True, help="Replace an existing key pair of that name.")
def adapter_keygen(name, force):
    """Make an ed25519 key pair $SWIFTLIKE_HOME/keys/NAME.key (private, mode 0600) and NAME.pub (share this one);
    sign pushes with `swiftlike adapter push DIR REF --sign NAME`."""
    from ..adapters.keys import keygen

    info = keygen(name, force=force)
    click.echo(f"key {info.name}: id {info.key_id}\n  public key (share it): {info.path}\n"
               f"  sign: swiftlike adapter push DIR REF --sign {info.name}\n"
               f"  others trust it with: swiftlike adapter trust add {info.name}.pub")


@adapter.group("trust")
def trust():
    """Trusted publishers: the ed25519 public keys in $SWIFTLIKE_HOME/trusted_keys/ that signatures are checked
    against."""


@trust.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", help="The publisher's name (default: the file's name without .pub).")
def trust_add(file, name):
    """Trust the public key in FILE (PEM or OpenSSH ed25519)."""
    from ..adapters.keys import trust_add as add

    info = add(file, name=name)
    click.echo(f"trusted {info.name} (key {info.key_id}): {info.path}")


@trust.command("list")
@json_option
def trust_list(as_json):
    """Trusted publishers: name, key id, file."""
    from ..adapters.keys import trust_list as listed

    rows = [{"name": k.name, "key_id": k.key_id, "path": str(k.path)} for k in listed()]
    echo_json(rows) if as_json else echo_table(rows, ["name", "key_id", "path"])


@trust.command("remove")
@click.argument("name")
def trust_remove(name):
    """Stop trusting publisher NAME (adapters it signed then count as signed by an unknown publisher)."""
    from ..adapters.keys import trust_remove as remove

    click.echo(f"removed trusted key {name} ({remove(name)})")
