"""The Adapters tab: the marketplace of swiftlike.adapters — installed adapters with their manifest, install from a
ref, push a checkpoint, verify, remove, package as a plugin wheel. Errors are the CLI's words."""
from __future__ import annotations

import json

import gradio as gr

from .common import check_dir, error_line

COLUMNS = ["name", "ref", "base_model_type", "tuner", "rank", "size", "installed_at"]  # `adapter list`'s columns


def _table(L):
    """The installed adapters as `swiftlike adapter list` lists them, headed in the UI's language."""
    import pandas as pd

    from ..adapters.store import list_adapters

    rows = [a.row() for a in list_adapters()]
    return pd.DataFrame([[r.get(c) for c in COLUMNS] for r in rows], columns=[L(f"col_{c}") for c in COLUMNS])


def _ok(text: str) -> str:
    return text


def _err(err) -> str:
    return f'<span class="swl-error">{error_line(err)}</span>'


def build(settings, L):
    table = gr.Dataframe(headers=[L(f"col_{c}") for c in COLUMNS], label=L("installed"), interactive=False, elem_id="adapters-table")
    with gr.Row():
        name = gr.Dropdown([], label=L("adapter_name"), allow_custom_value=True, elem_id="adapters-name")
        show_btn = gr.Button(L("show"), elem_id="adapters-show")
        verify_btn = gr.Button(L("verify"), elem_id="adapters-verify")
        remove_btn = gr.Button(L("remove"), variant="stop", elem_id="adapters-remove")
        refresh_btn = gr.Button(L("refresh"), elem_id="adapters-refresh")
    result = gr.Markdown(elem_id="adapters-result")
    manifest = gr.Code(label=L("manifest"), language="json", interactive=False, lines=8, max_lines=24,
                       elem_id="adapters-manifest")
    with gr.Accordion(L("install_group"), open=True):
        with gr.Row():
            ref = gr.Textbox(label=L("ref"), placeholder="local:acme/nova", elem_id="adapters-ref")
            install_name = gr.Textbox(label=L("install_name"), elem_id="adapters-install-name")
            hub_root = gr.Textbox(label=L("hub_root"), elem_id="adapters-hub-root")
        with gr.Row():
            base = gr.Textbox(label=L("base_check"), elem_id="adapters-base")
            allow_pickle = gr.Checkbox(False, label=L("allow_pickle"), elem_id="adapters-allow-pickle")
            install_btn = gr.Button(L("install"), variant="primary", elem_id="adapters-install")
    with gr.Accordion(L("push_group"), open=False):
        with gr.Row():
            push_dir = gr.Textbox(label=L("ckpt_dir"), elem_id="adapters-push-dir")
            push_ref = gr.Textbox(label=L("ref"), placeholder="local:acme/nova", elem_id="adapters-push-ref")
            private = gr.Checkbox(False, label=L("private"))
            message = gr.Textbox(label=L("commit_message"))
            push_btn = gr.Button(L("push"), elem_id="adapters-push")
    with gr.Accordion(L("package_group"), open=False):
        with gr.Row():
            pkg_dir = gr.Textbox(label=L("ckpt_dir"), elem_id="adapters-pkg-dir")
            dist = gr.Textbox(label=L("dist_name"), placeholder="swiftlike-adapter-nova", elem_id="adapters-dist")
            wheel_dir = gr.Textbox("dist", label=L("wheel_dir"), elem_id="adapters-wheel-dir")
            pkg_btn = gr.Button(L("package"), elem_id="adapters-package")

    def refreshed(current=None):
        table_df = _table(L)
        names = list(table_df.iloc[:, 0]) if len(table_df) else []
        return table_df, gr.update(choices=names, value=current if current in names else (names[0] if names else None))

    def show(n):
        from ..adapters.store import get

        try:
            data = get(n).details()
            data.pop("template_text", None)
            return "", json.dumps(data, indent=1, ensure_ascii=False, default=str)
        except Exception as err:
            return _err(err), ""

    def verify(n):
        from ..adapters.store import verify as run

        try:
            found = run(n)
            return f"ok: {n}: {len(found.manifest.get('files', {}))} files match swiftlike.json ({found.path})"
        except Exception as err:
            return _err(err)

    def remove(n):
        from ..adapters.store import remove as run

        try:
            msg = f"removed {n} ({run(n)})"
        except Exception as err:
            msg = _err(err)
        return (msg, *refreshed())

    def install(r, nm, root, b, pickle_ok):
        from ..adapters.store import install as run

        try:
            got = run((r or "").strip(), name=(nm or "").strip() or None, allow_pickle=bool(pickle_ok),
                      hub_root=(root or "").strip() or None, base=(b or "").strip() or None)
            done = "installed" if got.fresh else "already installed:"
            msg = f"{done} {got.install.get('ref')} (revision {got.install.get('revision')}) as {got.name}: {got.path}"
            current = got.name
        except Exception as err:
            msg, current = _err(err), None
        return (msg, *refreshed(current))

    def push(d, r, priv, m, root):
        from ..adapters.publish import push as run

        try:
            directory = check_dir(d, "DIRECTORY")
            pushed = run(directory, (r or "").strip(), private=bool(priv), message=m or None,
                         hub_root=(root or "").strip() or None, require_manifest=True)
            return f"pushed {directory} -> {pushed}"
        except Exception as err:
            return _err(err)

    def package(d, dist_name, out):
        from ..adapters.wheel import package as run

        try:
            directory = check_dir(d, "DIRECTORY")
            wheel = run(directory, (dist_name or "").strip(), output=(out or "dist").strip())
            return f"built {wheel}"
        except Exception as err:
            return _err(err)

    show_btn.click(show, name, [result, manifest])
    verify_btn.click(verify, name, result)
    remove_btn.click(remove, name, [result, table, name])
    refresh_btn.click(refreshed, name, [table, name])
    install_btn.click(install, [ref, install_name, hub_root, base, allow_pickle], [result, table, name])
    push_btn.click(push, [push_dir, push_ref, private, message, hub_root], result)
    pkg_btn.click(package, [pkg_dir, dist, wheel_dir], result)
    return {"load": (refreshed, [], [table, name])}
